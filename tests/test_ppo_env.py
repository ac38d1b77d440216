"""The cart-pole environment (ppo/cartpole.py), the vector env PPO trains on (common.vector.VectorEnv,
and the numpy CartPoleVecEnv that follows its contract), and the control policies
played through the one episode runner."""
import numpy as np
import pytest

from common.episodes import run_episodes
from common.policies import ConstantPolicy, RandomPolicy, control_policies
from common.spaces import Box
from common.vector import VectorEnv
from ppo import EvalResult, as_vec_env
from ppo.cartpole import MAX_EPISODE_STEPS, CartPoleEnv, CartPoleVecEnv, cartpole_step


def test_cartpole_one_step_matches_classic_dynamics():
    # From rest, pushing right: the classic CartPole-v1 numbers.
    (x, x_dot, theta, theta_dot), term = cartpole_step((0.0, 0.0, 0.0, 0.0), True)
    assert (x, theta) == (0.0, 0.0) and not term
    assert x_dot == pytest.approx(0.19512195, abs=1e-7)
    assert theta_dot == pytest.approx(-0.29268292, abs=1e-7)
    state = np.zeros((4, 2))
    new, term = cartpole_step(state, np.array([True, False]), np.sin, np.cos)
    assert np.array(new)[1].tolist() == pytest.approx([0.19512195, -0.19512195])


def test_cartpole_terminates_and_truncates():
    env = CartPoleEnv()
    env.reset(seed=0)
    steps, term = 0, False
    while not term:  # always pushing right topples the pole quickly
        _, r, term, trunc, _ = env.step(1)
        steps += 1
        assert r == 1.0 and not trunc
    assert 5 < steps < 100
    short = CartPoleEnv(max_episode_steps=3)
    short.reset(seed=0)
    results = [short.step(a)[3] for a in (0, 1, 0)]
    assert results == [False, False, True]
    assert MAX_EPISODE_STEPS == 500


def test_vector_env_auto_resets_and_reports_final_observation():
    env = VectorEnv([CartPoleEnv(max_episode_steps=4), CartPoleEnv(max_episode_steps=6)])
    ref = CartPoleEnv(max_episode_steps=4)
    obs, infos = env.reset(seed=10)
    ref_obs, _ = ref.reset(seed=10)
    np.testing.assert_array_equal(obs[0], ref_obs)  # env i seeded with seed + i
    assert obs.shape == (2, 4) and obs.dtype == np.float32 and len(infos["env_infos"]) == 2
    for step in range(4):
        obs, rew, term, trunc, infos = env.step(np.array([0, 0]))
        ref_obs, *_ = ref.step(0)
    assert trunc.tolist() == [True, False] and not term.any()
    np.testing.assert_array_equal(infos["final_observation"][0], ref_obs)  # last obs of the episode
    assert infos["final_info"][1] is None
    assert np.abs(obs[0]).max() <= 0.05  # a fresh start state, not the terminal one
    obs, rew, term, trunc, infos = env.step(np.array([0, 0]))
    assert "final_observation" not in infos  # nothing ended this step


def test_numpy_vec_env_matches_vector_env_of_single_envs():
    a = VectorEnv([CartPoleEnv(max_episode_steps=30) for _ in range(3)])
    b = CartPoleVecEnv(3, max_episode_steps=30)
    oa, _ = a.reset(seed=3)
    ob, _ = b.reset(seed=3)
    np.testing.assert_array_equal(oa, ob)
    rng = np.random.default_rng(0)
    for _ in range(80):  # crosses terminations and truncations
        act = rng.integers(0, 2, 3)
        ra, rb = a.step(act), b.step(act)
        np.testing.assert_allclose(ra[0], rb[0], rtol=1e-6, atol=1e-6)
        for i in (1, 2, 3):
            np.testing.assert_array_equal(ra[i], rb[i])
        assert len(rb[4]["env_infos"]) == 3
        if "final_observation" in ra[4]:
            ended = ra[2] | ra[3]
            np.testing.assert_allclose(ra[4]["final_observation"][ended], rb[4]["final_observation"][ended],
                                       rtol=1e-6, atol=1e-6)


def test_env_state_snapshot_continues_identically():
    env = VectorEnv([CartPoleEnv(), CartPoleEnv()])
    env.reset(seed=1)
    for _ in range(7):
        env.step(np.array([0, 1]))
    state = env.get_state()
    after = [env.step(np.array([1, 0]))[0] for _ in range(20)]
    env.set_state(state)
    again = [env.step(np.array([1, 0]))[0] for _ in range(20)]
    np.testing.assert_array_equal(np.array(after), np.array(again))


def test_as_vec_env_accepts_the_documented_inputs():
    assert as_vec_env(CartPoleEnv).num_envs == 1
    assert as_vec_env([CartPoleEnv] * 3).num_envs == 3
    assert as_vec_env([CartPoleEnv(), CartPoleEnv()]).num_envs == 2
    assert as_vec_env(CartPoleEnv()).num_envs == 1
    vec = CartPoleVecEnv(2)
    assert as_vec_env(vec) is vec
    with pytest.raises(TypeError):
        as_vec_env(42)
    bad = CartPoleEnv()
    bad.observation_space = Box(0, 1, (3,))
    with pytest.raises(ValueError, match="spaces"):
        VectorEnv([CartPoleEnv(), bad])


def test_control_policies_on_the_same_seeds_with_action_counts():
    def evaluate(policy, envs, n, seed=7):
        return EvalResult.from_episodes(run_episodes(envs, policy, n, seed), n_actions=2, seed=seed)

    right = evaluate(ConstantPolicy(1), CartPoleEnv(), 4)
    assert right.action_counts == [0, sum(right.episode_lengths)]
    assert evaluate(ConstantPolicy(1), CartPoleEnv(), 4).episode_returns == right.episode_returns
    # The random control is re-seeded per episode: same seeds, same returns, on one env or three.
    rand = [evaluate(RandomPolicy(2), CartPoleEnv(), 6), evaluate(RandomPolicy(2, seed=99), CartPoleEnv(), 6),
            evaluate(RandomPolicy(2), [CartPoleEnv() for _ in range(3)], 6)]
    assert rand[0].episode_returns == rand[1].episode_returns == rand[2].episode_returns
    assert min(rand[0].action_counts) > 0
    assert len(set(rand[0].episode_returns)) > 1  # the episodes differ from each other
    controls = control_policies(2, names=("left", "right"))
    assert set(controls) == {"random", "always left", "always right"}
    assert evaluate(controls["always right"], CartPoleEnv(), 4).episode_returns == right.episode_returns


def test_random_control_takes_only_legal_actions():
    for masked in (0, 1):
        episodes = run_episodes([CartPoleEnv(masked_action=masked) for _ in range(2)], RandomPolicy(2), 4, seed=1)
        taken = {a for ep in episodes for a in ep.actions}
        assert taken == {1 - masked}
    # The mask reaches the policy from the info of the observation it acts on.
    seen = []

    class Spy(RandomPolicy):
        def __call__(self, obs, info=None):
            seen.append(np.asarray(info["action_mask"]).tolist())
            return super().__call__(obs, info)

    run_episodes(CartPoleEnv(masked_action=1), Spy(2), 1, seed=0)
    assert seen and all(m == [True, False] for m in seen)

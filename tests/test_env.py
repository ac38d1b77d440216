"""The text-scheduling environment on a tiny base checkpoint: API contract, determinism,
the action mattering, real training, episode end, bad input, vector env, snapshots, PPO."""
import dataclasses

import numpy as np
import pytest
import torch

from common.policies import ConstantPolicy, RandomPolicy, control_policies
from env import (PHI, TEXT, BandPolicy, EnvConfig, EnvError, RewardConfig,
                 TextSchedulingEnv, check_env, load_base, make_vec_env, rescore, run_policy)
from infinito.checkpoint import CheckpointError

SHORT = EnvConfig(max_steps=4, inner_steps=2, inner_lr=2e-4, reward=RewardConfig())  # reward v2, a slow optimiser


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base(base_dir):
    return base_dir / "base.pt"  # tests/conftest.py


@pytest.fixture(scope="module")
def assets(base):
    return load_base(base, SHORT)


def make(assets, **changes):
    return TextSchedulingEnv(assets, SHORT.replace(**changes) if changes else SHORT)


def run(env, actions, seed=0):
    obs, info = env.reset(seed=seed)
    out = [(obs, 0.0)]
    for a in actions:
        obs, r, *_ = env.step(a)
        out.append((obs, r))
    return out


def same(a, b):
    return all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b)) and len(a) == len(b)


def test_api_contract(base):
    env = TextSchedulingEnv(base)  # the defaults: 50 steps of 5 inner steps, batch 4 x 128 cropped to 64
    assert env.observation_space.shape == (7,) and env.action_space.n == 3
    assert env.observation_space.high.tolist() == [1, 10, 20, 20, 1, 1, 1] and env.observation_space.low.sum() == 0
    assert env.assets.seq_len == 64 and env.config.max_steps == 50 and env.config.inner_steps == 5
    check_env(env, seed=3)
    obs, info = env.reset(seed=1)
    assert info["mode"] == "TEXT" and info["action_history"] == () and info["memory_util"] == 1 / 32
    assert info["ppl"] == pytest.approx(np.exp(info["loss_text"]))
    obs, r, term, trunc, info = env.step(PHI)
    assert info["mode"] == "PHI" and info["action_history"] == (PHI,) and info["step"] == 1
    assert obs.tolist() == pytest.approx([info[k] for k in ("consciousness", "phi", "loss_text", "loss_phi",
                                                            "memory_util", "t_norm", "time_left")])
    assert info["time_left"] == pytest.approx(49 / 50)


def test_check_env_lists_every_problem():
    class Broken:
        observation_space = dataclasses.make_dataclass("S", ["shape", "low", "high"])((2,), np.zeros(2), np.ones(2))
        action_space = dataclasses.make_dataclass("A", ["n"])(2)

        def reset(self, seed=None, options=None):
            return np.array([0.5, 2.0]), {}  # float64 and out of bounds

        def step(self, action):  # accepts anything, random observations
            return np.random.rand(2).astype(np.float32), 1, False, 0, {}

    with pytest.raises(EnvError) as e:
        check_env(Broken())
    msg = str(e.value)
    for part in ("float32", "outside [low, high]", "not a bool", "not deterministic", "invalid actions must raise"):
        assert part in msg, part
    assert "\n" not in msg


def test_same_seed_same_trajectory_other_seed_differs(assets):
    actions = [TEXT, PHI, 2, PHI]
    a, b = run(make(assets), actions, seed=5), run(make(assets), actions, seed=5)
    assert same(a, b)
    c = run(make(assets), actions, seed=6)
    assert not np.array_equal(a[0][0], c[0][0])


def test_action_matters_and_parameters_change(assets):
    env_a, env_b = make(assets), make(assets)
    obs_a, _ = env_a.reset(seed=2)
    obs_b, _ = env_b.reset(seed=2)
    assert np.array_equal(obs_a, obs_b)
    before = [p.detach().clone() for p in env_a.model.parameters()]
    next_a = env_a.step(TEXT)[0]
    next_b = env_b.step(PHI)[0]
    assert not np.allclose(next_a[:4], next_b[:4])  # C, Φ, loss_text, loss_phi all depend on the action
    changed = [not torch.equal(p0, p1) for p0, p1 in zip(before, env_a.model.parameters())]
    assert sum(changed) > len(changed) // 2  # a real optimiser step moved the weights


def test_reset_restores_the_base_model_and_empties_memory(assets):
    env = make(assets)
    first = run(env, [PHI, PHI, PHI], seed=4)
    assert env.model.memory.utilisation > 1 / 32
    again = run(env, [PHI, PHI, PHI], seed=4)
    assert same(first, again)
    env.reset(seed=4)
    assert env.model.memory.utilisation == 1 / 32  # emptied, then the reset's single inner step wrote once


def test_episode_end_is_a_termination_the_observation_sees(assets):
    env = make(assets, max_steps=3)
    obs, _ = env.reset(seed=0)
    assert obs[6] == 1.0  # time_left
    steps = [env.step(TEXT) for _ in range(3)]
    assert [s[2:4] for s in steps] == [(False, False), (False, False), (True, False)]
    assert [float(s[0][6]) for s in steps] == pytest.approx([2 / 3, 1 / 3, 0.0])
    with pytest.raises(EnvError, match="after the episode ended"):
        env.step(TEXT)
    env = make(assets, max_steps=2, terminate_at_max_steps=False)  # the old time-limit reading
    env.reset(seed=0)
    assert [env.step(TEXT)[2:4] for _ in range(2)] == [(False, False), (False, True)]


def test_first_step_reward_is_zero_then_reward_v2(assets):
    env = make(assets)
    env.reset(seed=0)
    _, r1, *_, info1 = env.step(PHI)
    _, r2, *_, info2 = env.step(PHI)
    assert r1 == 0.0 and set(info1["reward_terms"].values()) == {0.0}
    assert r2 != 0.0 and r2 == pytest.approx(sum(info2["reward_terms"].values()))
    assert info2["reward_terms"]["delta_phi"] == pytest.approx(0.5 * (info2["phi"] - info1["phi"]))
    env = make(assets, reward={**SHORT.reward.to_dict(), "zero_first_step": False})
    env.reset(seed=0)
    assert env.step(PHI)[1] != 0.0


def test_t_norm_counts_steps_since_c_exceeded_threshold(assets):
    env = make(assets, max_steps=4, c_threshold=2.0)  # C <= 1 never exceeds it
    env.reset(seed=0)
    assert [env.step(TEXT)[0][5] for _ in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    env = make(assets, c_threshold=-1.0)  # always exceeded
    env.reset(seed=0)
    assert env.step(TEXT)[0][5] == 0.0


def test_bad_input_raises_one_clear_error(base, assets, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        TextSchedulingEnv(tmp_path / "missing.pt")
    wrong = tmp_path / "agent.pt"
    torch.save({"kind": "ppo-agent", "format_version": 1}, wrong)
    with pytest.raises(CheckpointError, match="infinito-base"):
        TextSchedulingEnv(wrong)
    env = make(assets)
    with pytest.raises(EnvError, match="before reset"):
        env.step(TEXT)
    env.reset(seed=0)
    for bad in (3, -1, 1.0, "TEXT", True, None, np.array([0, 1])):
        with pytest.raises(EnvError, match="invalid action") as e:
            env.step(bad)
        assert "\n" not in str(e.value)
    assert env.step(np.int64(1))[4]["mode"] == "PHI" and env.step(np.array(2))[4]["mode"] == "MIXED"
    with pytest.raises(EnvError):
        EnvConfig(inner_steps=0)
    with pytest.raises(EnvError, match="measurement_batch_size"):
        TextSchedulingEnv(assets, SHORT.replace(measurement_batch_size=2))  # shared assets built for another config


def test_dropout_is_deterministic_and_leaves_the_global_rng_alone(assets):
    drop = dataclasses.replace(assets, model_config={**assets.model_config, "dropout": 0.3})
    actions = [TEXT, PHI, TEXT]

    def traj(perturb):
        env = TextSchedulingEnv(drop, SHORT)
        obs, _ = env.reset(seed=9)
        out = [obs]
        for a in actions:
            torch.manual_seed(perturb)  # the caller uses the global RNG between steps
            state = torch.get_rng_state()
            out.append(env.step(a)[0])
            assert torch.equal(state, torch.get_rng_state())  # the env did not consume it
        return out

    a, b = traj(1), traj(2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_vector_env_auto_resets_and_reports_final_observation(assets):
    vec = make_vec_env(assets, 2, SHORT.replace(max_steps=2))
    single = make(assets, max_steps=2)
    obs, infos = vec.reset(seed=10)
    ref = [single.reset(seed=11)[0]]
    assert obs.shape == (2, 7) and obs.dtype == np.float32 and np.array_equal(obs[1], ref[0])  # env i: seed + i
    actions = np.array([[TEXT, PHI], [TEXT, TEXT]])
    obs, r, term, trunc, infos = vec.step(actions[0])
    ref.append(single.step(PHI)[0])
    assert "final_observation" not in infos and not (term | trunc).any()
    obs, r, term, trunc, infos = vec.step(actions[1])
    last = single.step(TEXT)
    assert term.tolist() == [True, True] and not trunc.any()  # the observation shows the time left
    assert np.array_equal(infos["final_observation"][1], last[0])
    assert infos["final_info"][1]["action_history"] == (PHI, TEXT)
    assert [i["step"] for i in infos["env_infos"]] == [0, 0]  # rows are the next episodes' first observations
    assert obs[1][5] == 0.0 and infos["env_infos"][1]["action_history"] == ()
    with pytest.raises(ValueError, match="2 environments"):
        vec.step([TEXT])


def test_threaded_vector_env_gives_the_same_results(assets):
    cfg = SHORT.replace(max_steps=2)
    seq, par = make_vec_env(assets, 3, cfg), make_vec_env(assets, 3, cfg, workers=2)
    assert par._pool is not None
    rng = np.random.default_rng(0)
    for vec in (seq, par):
        vec.reset(seed=1)
    for _ in range(3):  # crosses an auto-reset
        actions = rng.integers(3, size=3)
        a, b = seq.step(actions), par.step(actions)
        assert all(np.array_equal(x, y) for x, y in zip(a[:4], b[:4]))
        assert ("final_observation" in a[4]) == ("final_observation" in b[4])
    par.close()
    drop = dataclasses.replace(assets, model_config={**assets.model_config, "dropout": 0.1})
    assert make_vec_env(drop, 2, cfg, workers=2)._pool is None  # global-RNG users are stepped sequentially


def test_state_round_trip_continues_exactly(assets, tmp_path):
    env = make(assets)
    env.reset(seed=3)
    env.step(PHI)
    state = env.get_state()
    torch.save(state, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)  # plain types and tensors only
    cont = [env.step(a) for a in (TEXT, 2, PHI)]
    other = make(assets)
    other.set_state(state)
    again = [other.step(a) for a in (TEXT, 2, PHI)]
    for x, y in zip(cont, again):
        assert np.array_equal(x[0], y[0]) and x[1:4] == y[1:4] and x[4]["action_history"] == y[4]["action_history"]
    other.set_state(state)  # the state was not consumed by the first restore
    assert np.array_equal(other.step(TEXT)[0], cont[0][0])
    with pytest.raises(EnvError, match="does not fit"):
        other.set_state({"model": {}})


def test_runner_and_control_policies(assets):
    env = make(assets, max_steps=3)
    controls = control_policies(len(env.config.modes), env.config.mode_names)
    assert list(controls) == ["random", "always TEXT", "always PHI", "always MIXED"]
    runs = run_policy(env, controls["always PHI"], n_episodes=3, seed=7)
    s = runs.summary()
    assert runs.seeds == [7, 8, 9] and runs.lengths == [3, 3, 3] and s["action_mix"] == [0.0, 1.0]
    assert s["return"]["ci95_low"] <= s["return"]["mean"] <= s["return"]["ci95_high"]
    assert runs.returns == pytest.approx([sum(t["reward"]) for t in runs.traces])
    r1 = run_policy(env, RandomPolicy(3, seed=0), n_episodes=2, seed=1)
    r2 = run_policy(env, RandomPolicy(3, seed=99), n_episodes=2, seed=1)  # re-seeded per episode by the runner
    assert [t["action"] for t in r1.traces] == [t["action"] for t in r2.traces] and r1.returns == r2.returns
    # re-scoring the same episodes under another reward equals running them under it
    assert rescore(runs, env.config.reward).returns == runs.returns
    window = RewardConfig(phi_low=5.5)
    direct = run_policy(make(assets, max_steps=3, reward=window.to_dict()), controls["always PHI"], 3, seed=7)
    assert rescore(runs, window).returns == pytest.approx(direct.returns, abs=1e-12)
    band = BandPolicy(3.0, 6.0)
    assert band(np.array([0.4, 6.5, 0, 0, 0, 0]), {}) == PHI and band(np.array([0.4, 5.0, 0, 0, 0, 0]), {}) == TEXT
    assert controls["always MIXED"].action == 2


def test_parallel_runner_equals_the_sequential_one(assets):
    envs = [make(assets, max_steps=3) for _ in range(2)]
    for policy in (RandomPolicy(3, seed=0), BandPolicy(3.0, 6.0)):
        one = run_policy(envs[0], policy, n_episodes=5, seed=11)
        two = run_policy(envs, policy, n_episodes=5, seed=11)
        assert two.seeds == one.seeds == [11, 12, 13, 14, 15]
        assert two.returns == one.returns and two.lengths == one.lengths
        assert [t["action"] for t in two.traces] == [t["action"] for t in one.traces]
        assert [t["phi"] for t in two.traces] == [t["phi"] for t in one.traces]
    assert run_policy(envs, ConstantPolicy(0), n_episodes=1, seed=3).seeds == [3]


def test_rollout_monitor_means_and_action_fractions(assets):
    from env import RolloutMonitor
    vec = make_vec_env(assets, 2, SHORT.replace(max_steps=2))
    mon = RolloutMonitor(vec.envs[0].config)
    assert mon.pop() == {}
    vec.reset(seed=0)
    seen = []
    for actions in ([0, 1], [2, 1], [0, 0]):  # the second step ends both episodes (max_steps 2)
        _, _, _, _, infos = vec.step(np.array(actions))
        mon.observe(infos)
        finals = infos.get("final_info") or [None, None]
        seen += [f if f is not None else i for i, f in zip(infos["env_infos"], finals)]
    out = mon.pop()
    assert out["env/action_frac_text"] == pytest.approx(3 / 6) and out["env/action_frac_phi"] == pytest.approx(2 / 6)
    assert out["env/action_frac_mixed"] == pytest.approx(1 / 6)
    assert out["env/phi"] == pytest.approx(np.mean([i["phi"] for i in seen]))
    assert out["env/perplexity"] == pytest.approx(np.mean([i["ppl"] for i in seen]))
    assert mon.pop() == {}  # means restart after every pop


def test_ppo_trains_on_the_vector_env_and_resumes_exactly(assets, tmp_path):
    from ppo import PPO, CheckpointCallback, PPOConfig  # tests may import ppo; env/ itself does not

    cfg = PPOConfig(total_timesteps=16, n_steps=4, minibatch_size=4, n_epochs=1, pi_hidden=(8,), vf_hidden=(8,),
                    progress_bar=False, seed=0)
    straight = PPO(make_vec_env(assets, 2, SHORT), cfg).learn()  # 2 updates, crossing an episode end

    def stop_after_first(trainer):
        if trainer.global_step >= 8:
            trainer.request_stop("test")

    from ppo import FunctionCallback
    first = PPO(make_vec_env(assets, 2, SHORT), cfg)
    first.learn(callbacks=[CheckpointCallback(every=8, path=str(tmp_path / "{step}.pt")),
                           FunctionCallback(on_update_end=stop_after_first)])
    resumed = PPO.load(str(tmp_path / "8.pt"), make_vec_env(assets, 2, SHORT))
    resumed.learn()
    assert resumed.global_step == straight.global_step == 16
    assert all(torch.equal(a, b) for a, b in zip(straight.policy.parameters(), resumed.policy.parameters()))


def test_the_phi_loss_trains_toward_the_band_the_reward_prices(assets):
    """One band: `--env reward.phi_low=...` moves the band PHI and MIXED train toward, not only the
    one the reward and the report use; the default band is the model's own."""
    default = make(assets)
    assert (default.model.cfg.phi_low, default.model.cfg.phi_high) == default.config.reward.band == (3.0, 6.0)
    moved = make(assets, reward=RewardConfig(phi_low=6.5, phi_high=8.0))  # the snapshot's Φ (~6.7) now inside
    assert (moved.model.cfg.phi_low, moved.model.cfg.phi_high) == (6.5, 8.0)
    assert moved.model.cfg.phi_star == 7.25  # the target point: the new band's midpoint
    moved.reset(seed=0)
    _, _, _, _, info = moved.step(PHI)
    default.reset(seed=0)
    _, _, _, _, same_seed = default.step(PHI)
    assert info["phi"] != same_seed["phi"]  # the Φ loss's pull differs, so the model does

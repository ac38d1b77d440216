"""Teacher start (ppo/cloning.py): behaviour cloning of a hand-written cart-pole controller."""
import numpy as np
import pytest
import torch

from ppo import PPO, PPOConfig
from ppo.cartpole import CartPoleEnv, CartPoleVecEnv
from ppo.cloning import clone, greedy_agreement, teacher_data


def controller(obs, info=None) -> int:
    """Push toward where the pole is falling (angle and angular velocity, a little cart position)."""
    x, x_dot, theta, theta_dot = obs
    return int(theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0)


@pytest.fixture(scope="module")
def cloned():
    agent = PPO(CartPoleVecEnv(4), PPOConfig(progress_bar=False, seed=3))
    result = clone(agent, [CartPoleEnv() for _ in range(2)], controller, n_episodes=12, seed=100, epochs=80)
    return agent, result


def test_the_clone_acts_like_its_teacher_where_it_goes_and_scores_like_it(cloned):
    agent, result = cloned
    assert result.teacher_mean_return == 500.0 and result.samples == 12 * 500
    assert result.agreement >= 0.99
    envs = [CartPoleEnv() for _ in range(2)]
    # on the states the clone visits itself (other seeds than the teacher's), the same greedy action
    assert greedy_agreement(agent, envs, controller, n_episodes=6, seed=5000) >= 0.99
    theirs = [teacher_data(CartPoleEnv(), controller, 6, 5000, 0.99)[3]]
    mine = agent.evaluate(envs, n_episodes=6, seed=5000)
    low, high = mine.ci95
    assert low <= float(np.mean(theirs)) <= high and mine.mean_reward == 500.0


def test_the_clone_keeps_exploring_and_its_critic_knows_the_teacher(cloned):
    """Smoothing 0.1: about a tenth of the probability stays on the other action, so PPO still
    samples it. Cart-pole's returns-to-go depend on the step, which the state does not show, so
    the best critic predicts their mean there: the value head starts at the teacher's level."""
    agent, result = cloned
    assert 0.05 <= result.other_prob <= 0.15
    obs, _, togo, _ = teacher_data(CartPoleEnv(), controller, 2, 100, agent.config.gamma)
    values = agent.policy.value(torch.from_numpy(agent.obs_normalizer(obs))).detach().numpy()
    assert abs(values.mean() - togo.mean()) < 0.1 * togo.mean()
    fresh = PPO(CartPoleVecEnv(4), PPOConfig(progress_bar=False, seed=3))  # an untrained critic is far off
    assert abs(fresh.policy.value(torch.from_numpy(obs)).detach().numpy().mean() - togo.mean()) > 0.5 * togo.mean()


def test_cloning_is_deterministic_and_records_in_seed_order():
    runs = []
    for _ in range(2):
        agent = PPO(CartPoleVecEnv(2), PPOConfig(progress_bar=False, seed=1))
        clone(agent, [CartPoleEnv(), CartPoleEnv()], controller, n_episodes=2, seed=7, epochs=2)
        runs.append([p.detach().clone() for p in agent.policy.parameters()])
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(*runs))
    obs, actions, togo, returns = teacher_data([CartPoleEnv(), CartPoleEnv()], controller, 2, 7, gamma=1.0)
    assert togo[0] == returns[0] and togo[499] == 1.0  # the first episode's steps come first, in order
    assert list(actions[:5]) == [controller(o) for o in obs[:5]]
    with pytest.raises(ValueError, match="smoothing"):
        clone(PPO(CartPoleVecEnv(1), PPOConfig(progress_bar=False)), CartPoleEnv(), controller, 1, 0, smoothing=1.0)

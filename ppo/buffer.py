"""Rollout storage and Generalised Advantage Estimation.

Shapes: T = n_steps, N = num_envs, S = observation shape, A = number of actions.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    episode_end: np.ndarray,
    gamma: float,
    gae_lambda: float,
) -> Tuple[np.ndarray, np.ndarray]:
    """GAE(gamma, lambda) of Schulman et al. 2016. All inputs [T, N]; returns (adv, returns).

    ``next_values[t]`` is the value of the state reached by step t: V(s_{t+1}) inside an
    episode, V(final observation) when the episode was truncated (time limit: the
    future still had value), and 0 when it terminated. ``episode_end[t]`` (terminated
    or truncated) stops the lambda-recursion from leaking into the next episode.
    """
    T = len(rewards)
    advantages = np.zeros_like(values, dtype=np.float32)
    deltas = rewards + gamma * next_values - values  # [T, N]
    carry = (gamma * gae_lambda) * (1.0 - episode_end.astype(np.float32))  # [T, N]
    last = np.zeros_like(values[0], dtype=np.float32)
    for t in reversed(range(T)):
        last = deltas[t] + carry[t] * last
        advantages[t] = last
    return advantages, advantages + values


class RolloutBuffer:
    """Preallocated arrays for one rollout; the trainer writes row t at step t."""

    def __init__(self, n_steps: int, num_envs: int, obs_shape: Sequence[int], n_actions: int, with_masks: bool):
        T, N = n_steps, num_envs
        self.n_steps, self.num_envs = T, N
        self.obs = np.zeros((T, N, *obs_shape), np.float32)  # normalised, as the policy saw them
        self.actions = np.zeros((T, N), np.int64)
        self.logprobs = np.zeros((T, N), np.float32)  # log pi_old(action|obs) of the acting policy
        self.values = np.zeros((T, N), np.float32)  # V_old(obs), as the acting policy saw it
        self.rewards = np.zeros((T, N), np.float32)  # after reward scaling
        self.terminated = np.zeros((T, N), bool)
        self.truncated = np.zeros((T, N), bool)
        # Which episode (counted since the environments' reset) and which step of it each decision was
        # made at: members of a group at the same pair met the same seed (ppo/groups.py).
        self.episode = np.zeros((T, N), np.int64)
        self.episode_step = np.zeros((T, N), np.int64)
        self.masks: Optional[np.ndarray] = np.ones((T, N, n_actions), bool) if with_masks else None
        # Final observations of truncated episodes, for bootstrapping: (t, env, obs[S]).
        self.truncation_obs: list[Tuple[int, int, np.ndarray]] = []

    def clear(self) -> None:
        self.truncation_obs.clear()

    def next_values(self, values: np.ndarray, last_values: np.ndarray, truncation_values: np.ndarray) -> np.ndarray:
        """Bootstrap targets for GAE. values [T, N], last_values [N] = V(obs after the
        rollout), truncation_values [K] = V(truncation_obs[k]) -> next_values [T, N]."""
        nxt = np.empty_like(values)
        nxt[:-1] = values[1:]
        nxt[-1] = last_values
        # After an episode ends, row t+1 holds the *reset* state of a new episode,
        # whose value must not flow back into the finished one.
        nxt[self.terminated | self.truncated] = 0.0
        for (t, env, _), v in zip(self.truncation_obs, truncation_values):
            nxt[t, env] = v
        return nxt

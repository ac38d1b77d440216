"""Cart-pole balancing (Barto, Sutton & Anderson 1983): a classic-control environment for checking
this PPO implementation against known results (tests, bench/ppo_classic.py), no gymnasium.

Physics and limits follow the classic CartPole-v1 task: Euler steps of 0.02 s, force
+-10 N, pole half-length 0.5 m, failure beyond 12 degrees or 2.4 m, reward 1 for
every step (including the failing one), episodes truncated after 500 steps, start
state uniform in [-0.05, 0.05]^4. The equations of motion are those of Florian
(2007), "Correct equations for the dynamics of the cart-pole system", without
friction.

``CartPoleEnv`` is one Gymnasium-style environment; ``CartPoleVecEnv`` steps N of
them with one set of numpy operations and follows the vector-env contract of
``common.vector`` (training only: evaluation plays single environments).
Both share ``cartpole_step`` (floats with ``math`` for one cart, numpy arrays for
N) and seed env i with ``seed + i`` the same way, so their trajectories agree (to
the last bit unless numpy's vectorised sin/cos differ from libm's by an ulp).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from common.spaces import Box, Discrete

GRAVITY, CART_MASS, POLE_MASS, HALF_LENGTH, FORCE, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
TOTAL_MASS = CART_MASS + POLE_MASS
POLE_MASS_LENGTH = POLE_MASS * HALF_LENGTH
THETA_LIMIT = 12 * 2 * math.pi / 360
X_LIMIT = 2.4
MAX_EPISODE_STEPS = 500

_HIGH = np.array([X_LIMIT * 2, np.finfo(np.float32).max, THETA_LIMIT * 2, np.finfo(np.float32).max], np.float32)


def cartpole_step(state, push_right, sin=math.sin, cos=math.cos):
    """One Euler step. ``state`` = (x, x_dot, theta, theta_dot) as four floats, or a
    [4, N] array for N carts (then pass ``sin=np.sin, cos=np.cos``); ``push_right``:
    bool or [N] bool. Returns (new state as a tuple of the same kind, terminated).

    Plain floats for one cart: ~5x faster than numpy on length-1 arrays.
    """
    x, x_dot, theta, theta_dot = state
    force = (2.0 * push_right - 1.0) * FORCE
    c, s = cos(theta), sin(theta)
    temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * s) / TOTAL_MASS
    theta_acc = (GRAVITY * s - c * temp) / (HALF_LENGTH * (4.0 / 3.0 - POLE_MASS * c * c / TOTAL_MASS))
    x_acc = temp - POLE_MASS_LENGTH * theta_acc * c / TOTAL_MASS
    x, x_dot = x + TAU * x_dot, x_dot + TAU * x_acc
    theta, theta_dot = theta + TAU * theta_dot, theta_dot + TAU * theta_acc
    terminated = (abs(x) > X_LIMIT) | (abs(theta) > THETA_LIMIT)  # works for floats and arrays
    return (x, x_dot, theta, theta_dot), terminated


def _initial_state(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-0.05, 0.05, size=4)


class CartPoleEnv:
    """One cart-pole, Gymnasium-style: ``reset(seed)`` -> (obs, info), ``step(a)`` ->
    (obs, 1.0, terminated, truncated, info). ``masked_action`` (test aid): if set,
    that action is reported illegal in ``info["action_mask"]``."""

    uses_global_rng = False  # its own generator: safe to step on threads (common.vector, common.episodes)

    def __init__(self, max_episode_steps: int = MAX_EPISODE_STEPS, masked_action: Optional[int] = None):
        self.observation_space = Box(-_HIGH, _HIGH)
        self.action_space = Discrete(2)
        self.max_episode_steps = max_episode_steps
        self.masked_action = masked_action
        self._rng = np.random.default_rng()
        self._state = (0.0, 0.0, 0.0, 0.0)
        self._steps = 0

    def _info(self) -> dict:
        if self.masked_action is None:
            return {}
        mask = np.ones(2, bool)
        mask[self.masked_action] = False
        return {"action_mask": mask}

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._state = tuple(float(v) for v in _initial_state(self._rng))
        self._steps = 0
        return np.array(self._state, np.float32), self._info()

    def step(self, action: int):
        self._state, terminated = cartpole_step(self._state, action == 1)
        self._steps += 1
        truncated = self._steps >= self.max_episode_steps
        return np.array(self._state, np.float32), 1.0, terminated, truncated, self._info()

    def get_state(self) -> dict:
        return {"state": list(self._state), "steps": self._steps, "rng": self._rng.bit_generator.state}

    def set_state(self, s: dict) -> None:
        self._state, self._steps = tuple(s["state"]), int(s["steps"])
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = s["rng"]


class CartPoleVecEnv:
    """``num_envs`` cart-poles stepped as one numpy batch, with auto-reset."""

    def __init__(self, num_envs: int = 1, max_episode_steps: int = MAX_EPISODE_STEPS):
        self.num_envs = num_envs
        self.observation_space = Box(-_HIGH, _HIGH)
        self.action_space = Discrete(2)
        self.max_episode_steps = max_episode_steps
        self._rngs = [np.random.default_rng() for _ in range(num_envs)]
        self._state = np.zeros((4, num_envs))  # variable-major: unpacks into 4 row views
        self._steps = np.zeros(num_envs, np.int64)
        self._rewards = np.ones(num_envs)

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self._rngs = [np.random.default_rng(seed + i) for i in range(self.num_envs)]
        self._state = np.stack([_initial_state(rng) for rng in self._rngs], axis=1)
        self._steps[:] = 0
        return self._state.T.astype(np.float32), {"env_infos": [{} for _ in range(self.num_envs)]}

    def step(self, actions: np.ndarray):
        new, terminated = cartpole_step(self._state, np.asarray(actions) == 1, np.sin, np.cos)
        self._state = np.array(new)
        self._steps += 1
        truncated = self._steps >= self.max_episode_steps
        obs = self._state.T.astype(np.float32)  # [N, 4]
        infos: dict = {"env_infos": [{} for _ in range(self.num_envs)]}
        ended = terminated | truncated
        if ended.any():
            infos["final_observation"] = obs.copy()
            infos["final_info"] = [{} if e else None for e in ended]
            for i in np.flatnonzero(ended):
                self._state[:, i] = _initial_state(self._rngs[i])
                obs[i] = self._state[:, i]
            self._steps[ended] = 0
        return obs, self._rewards.copy(), terminated, truncated, infos

    def get_state(self) -> dict:
        return {"state": torch.from_numpy(self._state.copy()), "steps": torch.from_numpy(self._steps.copy()),
                "rngs": [rng.bit_generator.state for rng in self._rngs]}

    def set_state(self, s: dict) -> None:
        self._state, self._steps = s["state"].numpy().copy(), s["steps"].numpy().copy()
        self._rngs = [np.random.default_rng() for _ in range(self.num_envs)]
        for rng, st in zip(self._rngs, s["rngs"]):
            rng.bit_generator.state = st

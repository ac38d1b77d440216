"""The policy protocol, and the control policies every trained agent is compared with.

A policy is any callable `policy(obs, info) -> action` acting on one raw
observation (and the info dict that came with it, e.g. for an action mask).
One with a `reset(seed)` method is re-seeded by the episode runner at the start
of every episode, so it meets the same randomness whenever it meets the same
seed; one with an `observe(action, reward)` method is told each step's reward
(a bandit learns from it). Trained agents (`ppo.TrainedPolicy`), the controls below and hand-written
schedules (`env.BandPolicy`) all follow it, and `common.episodes` runs any of them.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

MASK_KEY = "action_mask"  # the info key of a bool [A] array of legal actions, where an env has them


def constant_name(action_name: str) -> str:
    """The control that always takes one action: "always TEXT"."""
    return f"always {action_name}"


class ConstantPolicy:
    """Always the same action ("always TEXT", ...)."""

    def __init__(self, action: int, name: str | None = None):
        self.action = int(action)
        self.name = name or constant_name(str(self.action))

    def __call__(self, obs, info=None) -> int:
        return self.action


class RandomPolicy:
    """Uniform over the legal actions (`info["action_mask"]` when present), from its own generator."""

    name = "random"

    def __init__(self, n_actions: int, seed: int = 0):
        self.n_actions = int(n_actions)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs, info=None) -> int:
        mask = (info or {}).get(MASK_KEY)
        legal = np.arange(self.n_actions) if mask is None else np.flatnonzero(np.asarray(mask, bool))
        return int(legal[self.rng.integers(len(legal))])


class Exp3S:
    """A non-stationary multi-armed bandit over the actions: Exp3.S (Auer, Cesa-Bianchi, Freund and
    Schapire 2002, "The nonstochastic multiarmed bandit problem", section 8), the algorithm Graves
    et al. (2017, "Automated Curriculum Learning for Neural Networks") use to choose training tasks.
    It sees rewards, never observations, and starts afresh every episode (`reset`).

    p_i = (1 - gamma) w_i / sum(w) + gamma / K; after arm a earns x in [0, 1]:
    w_j <- w_j exp(gamma x_hat_j / K) + (e alpha / K) sum(w), with x_hat_a = x / p_a, 0 for the others.
    Rewards reach [0, 1] as in Graves et al.: clipped between the 20th and 80th percentiles of the
    rewards seen so far this episode, then scaled (0.5 while those two are equal).
    Defaults of the order Auer et al. give for a horizon of T decisions (alpha = 1 / T,
    gamma = min(1, sqrt(K ln(K T) / T))), not tuned on this project's environment: with 3 modes and
    25 decisions, gamma 0.72 and alpha 0.04."""

    def __init__(self, n_actions: int, horizon: int, gamma: float | None = None, alpha: float | None = None,
                 seed: int = 0):
        k, t = int(n_actions), max(int(horizon), 1)
        self.n_actions = k
        self.gamma = gamma if gamma is not None else min(1.0, math.sqrt(k * math.log(k * t) / t))
        self.alpha = alpha if alpha is not None else 1.0 / t
        self.name = f"bandit (Exp3.S, gamma {self.gamma:.2f}, alpha {self.alpha:.3f})"
        self.reset(seed)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.weights = np.ones(self.n_actions)
        self.seen: list[float] = []

    def probabilities(self) -> np.ndarray:
        return (1 - self.gamma) * self.weights / self.weights.sum() + self.gamma / self.n_actions

    def __call__(self, obs, info=None) -> int:
        return int(self.rng.choice(self.n_actions, p=self.probabilities()))

    def observe(self, action: int, reward: float) -> None:
        self.seen.append(float(reward))
        low, high = np.percentile(self.seen, [20, 80])
        x = 0.5 if high <= low else (min(max(reward, low), high) - low) / (high - low)
        self.update(action, x)

    def update(self, action: int, x: float) -> None:
        """One Exp3.S step: arm `action` earned `x` in [0, 1]."""
        k, w = self.n_actions, self.weights
        gain = np.zeros(k)
        gain[action] = x / self.probabilities()[action]
        w = w * np.exp(self.gamma * gain / k) + math.e * self.alpha / k * w.sum()
        self.weights = w / w.sum()  # the rule is scale-free: normalising keeps the numbers finite


def control_policies(n_actions: int, names: Sequence[str] | None = None, seed: int = 0) -> dict:
    """The constant controls: random, and one constant policy per action ("always <name>")."""
    names = list(names) if names is not None else [str(a) for a in range(n_actions)]
    out = {RandomPolicy.name: RandomPolicy(n_actions, seed)}
    for a in range(n_actions):
        out[constant_name(names[a])] = ConstantPolicy(a, constant_name(names[a]))
    return out

"""The policy protocol, and the control policies every trained agent is compared with.

A policy is any callable `policy(obs, info) -> action` acting on one raw
observation (and the info dict that came with it, e.g. for an action mask).
One with a `reset(seed)` method is re-seeded by the episode runner at the start
of every episode, so it meets the same randomness whenever it meets the same
seed. Trained agents (`ppo.TrainedPolicy`), the controls below and hand-written
schedules (`env.BandPolicy`) all follow it, and `common.episodes` runs any of them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

MASK_KEY = "action_mask"  # the info key of a bool [A] array of legal actions, where an env has them


class ConstantPolicy:
    """Always the same action ("always TEXT", ...)."""

    def __init__(self, action: int, name: str | None = None):
        self.action = int(action)
        self.name = name or f"always {self.action}"

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


def control_policies(n_actions: int, names: Sequence[str] | None = None, seed: int = 0) -> dict:
    """The SPEC's controls: random, and one constant policy per action ("always <name>")."""
    names = list(names) if names is not None else [str(a) for a in range(n_actions)]
    out = {"random": RandomPolicy(n_actions, seed)}
    for a in range(n_actions):
        out[f"always {names[a]}"] = ConstantPolicy(a, f"always {names[a]}")
    return out

"""Control policies and a hand-written adaptive one. A policy is any callable
`policy(obs, info) -> action`; one with a `reset(seed)` method is re-seeded at
the start of every evaluation episode, so it meets the same seeds every time.
"""
from __future__ import annotations

import numpy as np

from .config import MODES, PHI, TEXT


class ConstantPolicy:
    """Always the same action ("always TEXT", ...)."""

    def __init__(self, action: int, name: str | None = None):
        self.action = int(action)
        self.name = name or f"always {MODES[self.action][0] if self.action < len(MODES) else self.action}"

    def __call__(self, obs, info) -> int:
        return self.action


class RandomPolicy:
    """Uniform over the actions, from its own generator (re-seeded per episode by the runner)."""

    name = "random"

    def __init__(self, n_actions: int = len(MODES), seed: int = 0):
        self.n_actions = int(n_actions)
        self.rng = np.random.default_rng(seed)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs, info) -> int:
        return int(self.rng.integers(self.n_actions))


class BandPolicy:
    """Hand-written adaptive schedule: train Φ while it is outside [low, high]
    (shrunk by `margin` on both sides), train text otherwise. Reads Φ from the
    observation (index 1), so it works on raw observations."""

    name = "adaptive (PHI outside the Φ band, else TEXT)"

    def __init__(self, low: float = 3.0, high: float = 6.0, margin: float = 0.0,
                 inside: int = TEXT, outside: int = PHI):
        self.low, self.high, self.margin = low, high, margin
        self.inside, self.outside = int(inside), int(outside)

    def __call__(self, obs, info) -> int:
        phi = float(obs[1])
        return self.inside if self.low + self.margin <= phi <= self.high - self.margin else self.outside


def control_policies(n_actions: int = len(MODES), names=tuple(m[0] for m in MODES), seed: int = 0) -> dict:
    """The SPEC's controls: random, and one constant policy per action."""
    out = {"random": RandomPolicy(n_actions, seed)}
    for a in range(n_actions):
        out[f"always {names[a]}"] = ConstantPolicy(a, f"always {names[a]}")
    return out

"""The scheduling environment's policies: the controls with mode names, and a hand-written adaptive one.

Policies follow `common.policies`' protocol: `policy(obs, info) -> action`.
"""
from __future__ import annotations

from common.policies import control_policies as _controls

from . import config
from .config import PHI, TEXT


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


def control_policies(n_actions: int | None = None, names=None, seed: int = 0) -> dict:
    """The SPEC's controls named by mode: random, always TEXT, always PHI, always MIXED, ...
    (default: one per mode of env/config.py's MODES)."""
    if n_actions is None:
        n_actions, names = len(config.MODES), names or [m[0] for m in config.MODES]
    return _controls(n_actions, names, seed)

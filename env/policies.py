"""The scheduling environment's policies: the controls with mode names, a band policy for
hand-written experiments, and the bandit control (the rule families are in env/schedules.py).

Policies follow `common.policies`' protocol: `policy(obs, info) -> action`.
"""
from __future__ import annotations

from common.policies import Exp3S
from common.policies import control_policies as _controls
from infinito.config import PHI_BAND

from . import config
from .config import PHI, TEXT


class BandPolicy:
    """Hand-written adaptive schedule: train Φ while it is outside [low, high]
    (shrunk by `margin` on both sides), train text otherwise. Reads Φ from the
    observation (index 1), so it works on raw observations."""

    name = "adaptive (PHI outside the Φ band, else TEXT)"

    def __init__(self, low: float = PHI_BAND[0], high: float = PHI_BAND[1], margin: float = 0.0,
                 inside: int = TEXT, outside: int = PHI, name: str | None = None):
        self.low, self.high, self.margin = low, high, margin
        self.inside, self.outside = int(inside), int(outside)
        self.name = name or self.name

    def __call__(self, obs, info) -> int:
        phi = float(obs[1])
        return self.inside if self.low + self.margin <= phi <= self.high - self.margin else self.outside


def control_policies(n_actions: int | None = None, names=None, seed: int = 0) -> dict:
    """The constant controls named by mode: random, always TEXT, always PHI, always MIXED, ...
    (default: one per mode of env/config.py's MODES)."""
    if n_actions is None:
        n_actions, names = len(config.MODES), names or [m[0] for m in config.MODES]
    return _controls(n_actions, names, seed)


def bandit(env_cfg) -> Exp3S:
    """The bandit control: Exp3.S over the modes, reset every episode, its horizon the episode's length."""
    return Exp3S(len(env_cfg.modes), env_cfg.max_steps)

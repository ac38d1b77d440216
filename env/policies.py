"""The scheduling environment's constant controls with mode names, and the bandit control
(hand-written schedules and the rule families are in env/schedules.py).

Policies follow `common.policies`' protocol: `policy(obs, info) -> action`.
"""
from __future__ import annotations

from common.policies import Exp3S
from common.policies import control_policies as _controls

from . import config


def control_policies(n_actions: int | None = None, names=None, seed: int = 0) -> dict:
    """The constant controls named by mode: random, always TEXT, always PHI, always MIXED, ...
    (default: one per mode of env/config.py's MODES)."""
    if n_actions is None:
        n_actions, names = len(config.MODES), names or [m[0] for m in config.MODES]
    return _controls(n_actions, names, seed)


def bandit(env_cfg) -> Exp3S:
    """The bandit control: Exp3.S over the modes, reset every episode, its horizon the episode's length."""
    return Exp3S(len(env_cfg.modes), env_cfg.max_steps)

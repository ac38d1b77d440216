"""The scheduling environment's bandit control (the constant controls are
`common.policies.control_policies(len(cfg.modes), cfg.mode_names)`; hand-written schedules and
the rule families are in env/schedules.py).

Policies follow `common.policies`' protocol: `policy(obs, info) -> action`.
"""
from __future__ import annotations

from common.policies import Exp3S


def bandit(env_cfg) -> Exp3S:
    """The bandit control: Exp3.S over the modes, reset every episode, its horizon the episode's length."""
    return Exp3S(len(env_cfg.modes), env_cfg.max_steps)

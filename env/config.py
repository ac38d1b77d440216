"""Environment configuration (the rewards and their constants are in env/reward.py).

It and its reward convert to and from plain dicts, so they can ride along in a
PPO checkpoint's `extra` and rebuild the same environment later.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

from .errors import EnvError
from .reward import ProgressReward, known_fields, reward_from_dict

# (name, w_text, w_phi): the three training modes the agent chooses between. A mode may carry a
# fourth number, its step size: the inner learning rate is inner_lr x lr_scale for that decision
# (1 when omitted; docs/env.md "Modes that carry a step size").
MODES = (("TEXT", 1.0, 0.0), ("PHI", 0.1, 1.0), ("MIXED", 0.5, 0.5))
TEXT, PHI, MIXED = 0, 1, 2


def _mode(m) -> tuple:
    """(name, w_text, w_phi, lr_scale) from a 3- or 4-item mode."""
    name, w_text, w_phi, *rest = m
    if len(rest) > 1:
        raise ValueError("too many items")
    return (str(name), float(w_text), float(w_phi), float(rest[0]) if rest else 1.0)


def step_size_modes(weights: dict, scales) -> tuple:
    """Every loss-weight mode of `weights` ({name: (w_text, w_phi)}) at every lr scale, named
    "<name>@<scale>" ("TEXT@0.5"), in the order name-major, scale ascending."""
    return tuple((f"{n}@{s:g}", wt, wp, float(s)) for n, (wt, wp) in weights.items() for s in sorted(scales))


@dataclass
class EnvConfig:
    max_steps: int = 50          # decisions per episode; the episode ends (terminated) after this many
    inner_steps: int = 5         # real optimiser steps per decision
    # The inner optimiser: the fresh AdamW each episode trains the model with ("inner_", so no name
    # is shared with the base stage's lr / batch_size or PPO's settings).
    inner_batch_size: int = 4    # training batch rows ...
    seq_len: int = 128           # ... of this many tokens (cropped to the model's context)
    inner_lr: float = 6e-4       # the fresh AdamW made at every reset (the demo's; tiny and paper use 2e-4)
    inner_beta1: float = 0.9
    inner_beta2: float = 0.98
    inner_weight_decay: float = 0.01
    inner_grad_clip: float = 1.0
    measurement_batch_size: int = 4  # rows of the fixed measurement batch (validation split, seq_len tokens each)
    measurement_seed: int = 0    # picks that batch's windows once, at construction
    c_threshold: float = 0.6     # t_norm counts the steps since C last exceeded this
    terminate_at_max_steps: bool = True  # the observation shows the time left, so the end is `terminated`
    modes: tuple = field(default_factory=lambda: MODES)  # (name, w_text, w_phi[, lr_scale]) per action
    device: str = "cpu"
    cache_dir: str | None = None  # token-id cache; default: <checkpoint dir>/cache, as train.py writes it
    reward: object = field(default_factory=ProgressReward)  # any reward of env/reward.py (default: progress, docs/env.md)

    def __post_init__(self) -> None:
        if isinstance(self.reward, dict):
            self.reward = reward_from_dict(self.reward)
        try:
            self.modes = tuple(_mode(m) for m in self.modes)
        except (TypeError, ValueError):
            raise EnvError(f"invalid env config: modes must be a list of [name, w_text, w_phi] or "
                           f"[name, w_text, w_phi, lr_scale], got "
                           f"{self.modes!r}") from None
        problems = []
        for name in ("max_steps", "inner_steps", "inner_batch_size", "seq_len", "measurement_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if not self.inner_lr > 0:
            problems.append("inner_lr must be > 0")
        if not (0 <= self.inner_beta1 < 1 and 0 <= self.inner_beta2 < 1):
            problems.append("inner_beta1 and inner_beta2 must be in [0, 1)")
        if self.inner_weight_decay < 0 or self.inner_grad_clip <= 0:
            problems.append("inner_weight_decay must be >= 0 and inner_grad_clip > 0")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", str(self.device)):
            problems.append(f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        if len(self.modes) < 1 or any(wt < 0 or wp < 0 or wt + wp == 0 for _, wt, wp, _ in self.modes):
            problems.append("modes need non-negative weights, not both zero")
        if any(not (0 < s <= 100) for *_, s in self.modes):  # also refuses NaN
            problems.append("a mode's lr_scale must be in (0, 100]")
        if len(set(self.mode_names)) != len(self.modes):
            problems.append("mode names must differ")
        if problems:
            raise EnvError("invalid env config: " + "; ".join(problems))

    @property
    def mode_names(self) -> tuple:
        return tuple(m[0] for m in self.modes)

    @property
    def has_step_sizes(self) -> bool:
        """True when some mode trains at another learning rate than inner_lr."""
        return any(m[3] != 1.0 for m in self.modes)

    def to_dict(self) -> dict:
        """Plain types only (lists, not tuples), so it fits JSON and weights_only checkpoints."""
        d = asdict(self)
        # a scale of 1 is left out: three-item modes keep the form (and cache keys) they always had
        d["modes"] = [list(m[:3]) if m[3] == 1.0 else list(m) for m in self.modes]
        d["reward"] = self.reward.to_dict()  # with its name, so from_dict rebuilds the same kind
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EnvConfig":
        return cls(**known_fields(cls, d, "env config"))

    def replace(self, **changes) -> "EnvConfig":
        """A copy with `changes` (checked like a new config); the reward object is kept, not rebuilt."""
        return EnvConfig.from_dict({**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})

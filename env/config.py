"""Environment and reward configuration: every constant of SPEC §5 lives here.

Both dataclasses convert to and from plain dicts, so they can ride along in a
PPO checkpoint's `extra` and rebuild the same environment later.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .errors import EnvError

# (name, w_text, w_phi): the three training modes the agent chooses between.
MODES = (("TEXT", 1.0, 0.0), ("PHI", 0.1, 1.0), ("MIXED", 0.5, 0.5))
TEXT, PHI, MIXED = 0, 1, 2


@dataclass
class RewardConfig:
    """r = w_dc·ΔC + w_dphi·ΔΦ + w_ppl·(P_prev − P)/max(P_prev, 1) − w_mem·memory_util
         − w_jump·(|ΔΦ| − jump_limit)   if |ΔΦ| > jump_limit
         + Φ band + PPL band + C band          (see env/reward.py)
    The defaults are SPEC §5's reward v2."""
    w_dc: float = 1.0
    w_dphi: float = 0.5
    w_ppl: float = 0.1
    w_mem: float = 0.2
    jump_limit: float = 1.0
    w_jump: float = 0.8
    # Φ band: −w_phi_below·(phi_low − Φ) below, −w_phi_above·(Φ − phi_high) above, +phi_bonus inside
    phi_low: float = 3.0
    phi_high: float = 6.0
    w_phi_below: float = 0.3
    w_phi_above: float = 0.6
    phi_bonus: float = 0.1
    # perplexity band: −w_ppl_below·(ppl_low − P)/ppl_below_scale below, −w_ppl_above·(P − ppl_high)/ppl_above_scale above
    ppl_low: float = 10.0
    ppl_high: float = 200.0
    w_ppl_below: float = 2.0
    ppl_below_scale: float = 10.0
    w_ppl_above: float = 0.3
    ppl_above_scale: float = 100.0
    # C band: −w_c_below·(c_low − C) below, −w_c_above·(C − c_high) above, +c_bonus inside
    c_low: float = 0.3
    c_high: float = 0.7
    w_c_below: float = 0.2
    w_c_above: float = 0.2
    c_bonus: float = 0.05
    # SPEC: "r = 0 on the first step" of an episode (the first step() after reset)
    zero_first_step: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not self.phi_low < self.phi_high:
            problems.append("phi_low must be < phi_high")
        if not self.ppl_low < self.ppl_high:
            problems.append("ppl_low must be < ppl_high")
        if not self.c_low < self.c_high:
            problems.append("c_low must be < c_high")
        if not (self.ppl_below_scale > 0 and self.ppl_above_scale > 0):
            problems.append("ppl_below_scale and ppl_above_scale must be > 0")
        if self.jump_limit < 0:
            problems.append("jump_limit must be >= 0")
        if problems:
            raise EnvError("invalid reward config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RewardConfig":
        return cls(**_known(cls, d, "reward config"))


@dataclass
class EnvConfig:
    max_steps: int = 50          # decisions per episode; the episode ends (truncated) after this many
    inner_steps: int = 5         # real optimiser steps per decision
    batch_size: int = 4          # training batch rows ...
    seq_len: int = 128           # ... of this many tokens (cropped to the model's context)
    lr: float = 2e-4             # the fresh AdamW made at every reset
    beta1: float = 0.9
    beta2: float = 0.98
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_batch_size: int = 4     # rows of the fixed held-out batch (validation split, seq_len tokens each)
    heldout_seed: int = 0        # picks the held-out windows once, at construction
    c_threshold: float = 0.6     # t_norm counts the steps since C last exceeded this
    terminate_at_max_steps: bool = False  # True: report the end as `terminated` instead of `truncated`
    modes: tuple = MODES         # (name, w_text, w_phi) per action
    device: str = "cpu"
    cache_dir: str | None = None  # token-id cache; default: <checkpoint dir>/cache, as train.py writes it
    reward: RewardConfig = field(default_factory=RewardConfig)

    def __post_init__(self) -> None:
        if isinstance(self.reward, dict):
            self.reward = RewardConfig.from_dict(self.reward)
        self.modes = tuple((str(n), float(wt), float(wp)) for n, wt, wp in self.modes)
        problems = []
        for name in ("max_steps", "inner_steps", "batch_size", "seq_len", "eval_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if not self.lr > 0:
            problems.append("lr must be > 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            problems.append("beta1 and beta2 must be in [0, 1)")
        if self.weight_decay < 0 or self.grad_clip <= 0:
            problems.append("weight_decay must be >= 0 and grad_clip > 0")
        if len(self.modes) < 1 or any(wt < 0 or wp < 0 or wt + wp == 0 for _, wt, wp in self.modes):
            problems.append("modes need non-negative weights, not both zero")
        if problems:
            raise EnvError("invalid env config: " + "; ".join(problems))

    @property
    def mode_names(self) -> tuple:
        return tuple(m[0] for m in self.modes)

    def to_dict(self) -> dict:
        """Plain types only (lists, not tuples), so it fits JSON and weights_only checkpoints."""
        d = asdict(self)
        d["modes"] = [list(m) for m in self.modes]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EnvConfig":
        return cls(**_known(cls, d, "env config"))

    def replace(self, **changes) -> "EnvConfig":
        return EnvConfig.from_dict({**self.to_dict(), **changes})


def _known(cls, d: dict, what: str) -> dict:
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise EnvError(f"unknown {what} key(s): {', '.join(unknown)}")
    return dict(d)

"""Every PPO knob in one dataclass.

Defaults are the classic PPO settings (Schulman et al. 2017, the 1M-step
MuJoCo/classic-control column), the usual starting point. The config is stored
in checkpoints as a plain dict (``to_dict``) so that ``torch.load(...,
weights_only=True)`` can read it back.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from common.fields import checked_fields

from .groups import GROUP_BASELINES


@dataclass
class PPOConfig:
    # --- run length and schedules -------------------------------------------------
    # Planned total env steps (over all environments); the annealing reaches 0 here. A
    # new value on resume moves that end without a jump in the rate (docs/ppo.md).
    total_timesteps: int = 1_000_000
    learning_rate: float = 3e-4
    anneal_lr: bool = False  # linear decay to 0 at total_timesteps
    clip_range: float = 0.2
    anneal_clip_range: bool = False  # linear decay to 0 at total_timesteps

    # --- rollout -------------------------------------------------------------------
    n_steps: int = 2048  # steps per environment per rollout; batch = n_steps * num_envs
    gamma: float = 0.99
    gae_lambda: float = 0.95

    # --- update --------------------------------------------------------------------
    minibatch_size: int = 64  # samples per gradient step, over all environments (SB3 calls it batch_size)
    n_epochs: int = 10
    normalize_advantage: bool = True  # per minibatch
    # Shared-seed groups (ppo/groups.py): the vector env's environments i // group_size start every
    # episode from the same seed, and the advantage compares each with the rest of its group, which
    # removes what the episode's seed adds to every member's return. group_baseline (used when
    # group_size > 1): "loo" (return-to-go minus the others' mean), "loo+gae" (GAE's advantage minus
    # the others' mean) or "none" (GAE's advantage: shared seeds only).
    group_size: int = 1
    group_baseline: str = "loo+gae"
    clip_range_vf: Optional[float] = None  # None: no value clipping
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5  # global norm over all parameters; <= 0 disables
    target_kl: Optional[float] = None  # stop the update once a minibatch exceeds it
    adam_eps: float = 1e-5

    # --- network -------------------------------------------------------------------
    pi_hidden: Tuple[int, ...] = (128, 128)
    vf_hidden: Tuple[int, ...] = (128, 128)
    activation: str = "tanh"  # "tanh" or "relu"

    # --- normalisation -------------------------------------------------------------
    normalize_obs: bool = True
    obs_clip: float = 10.0
    normalize_reward: bool = False  # divide rewards by running std of discounted return
    reward_clip: float = 10.0
    norm_eps: float = 1e-8

    # --- reproducibility / runtime -------------------------------------------------
    seed: int = 0
    # Small MLPs run faster on one thread (docs/ppo.md has the measurement); 0 leaves
    # torch's thread count alone.
    torch_threads: int = 1
    device: str = "cpu"
    progress_bar: bool = True

    def __post_init__(self) -> None:
        self.pi_hidden = tuple(int(h) for h in self.pi_hidden)
        self.vf_hidden = tuple(int(h) for h in self.vf_hidden)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field (called on every construction)."""
        def bad(name: str, why: str) -> None:
            raise ValueError(f"PPOConfig.{name}={getattr(self, name)!r} is invalid: {why}")

        for name in ("total_timesteps", "n_steps", "minibatch_size", "n_epochs"):
            if int(getattr(self, name)) < 1:
                bad(name, "must be a positive integer")
        for name in ("learning_rate", "ent_coef", "vf_coef", "obs_clip", "reward_clip"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                bad(name, "must be a finite number >= 0")
        if not 0.0 < self.clip_range:
            bad("clip_range", "must be > 0")
        if self.clip_range_vf is not None and not self.clip_range_vf > 0:
            bad("clip_range_vf", "must be > 0 or None")
        if self.target_kl is not None and not self.target_kl > 0:
            bad("target_kl", "must be > 0 or None")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "must lie in [0, 1]")
        if not self.adam_eps > 0 or not self.norm_eps > 0:
            bad("adam_eps" if not self.adam_eps > 0 else "norm_eps", "must be > 0")
        for name in ("pi_hidden", "vf_hidden"):
            if any(h < 1 for h in getattr(self, name)):
                bad(name, "layer sizes must be positive")
        if int(self.group_size) < 1:
            bad("group_size", "must be a positive integer (1: no groups)")
        if self.group_baseline not in GROUP_BASELINES:
            bad("group_baseline", f"use one of {', '.join(repr(b) for b in GROUP_BASELINES)}")
        if self.activation not in ("tanh", "relu"):
            bad("activation", "use 'tanh' or 'relu'")
        if self.torch_threads < 0:
            bad("torch_threads", "must be >= 0 (0 = leave torch's setting alone)")

    # Checkpoints hold plain types only: tuples become lists, everything else is
    # already an int/float/bool/str/None.
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["pi_hidden"] = list(self.pi_hidden)
        d["vf_hidden"] = list(self.vf_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PPOConfig":
        return cls(**checked_fields(cls, d, "PPOConfig"))

    def replace(self, **overrides: Any) -> "PPOConfig":
        """A copy with some fields changed (validated); unknown names raise ValueError."""
        d = self.to_dict()
        d.update(overrides)
        return self.from_dict(d)

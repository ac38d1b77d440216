"""Evaluation results: per-episode returns of seeded episodes and their summary.

Episodes are played by the one runner (`common.episodes.run_episodes`): episode
k from `reset(seed=seed + k)`, so every policy evaluated with the same seed —
trained agent or control — meets the same start states.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from common.stats import ci95_halfwidth


@dataclass
class EvalResult:
    """Per-episode returns/lengths and their summary. ``std_reward`` is the sample
    std (ddof=1); ``ci95`` is the Student-t 95% interval of the mean."""

    episode_returns: list
    episode_lengths: list
    action_counts: list = field(default_factory=list)  # times each action was taken, all episodes
    deterministic: bool = True
    seed: int = 0
    step: Optional[int] = None  # global training step, set by PPO.add_evaluation
    is_best: bool = False  # set by PPO.add_evaluation: highest mean so far
    extra: dict = field(default_factory=dict)  # room for callers (e.g. environment statistics)

    @classmethod
    def from_episodes(cls, episodes: Sequence, n_actions: int, seed: int, deterministic: bool = True,
                      extra: Optional[dict] = None) -> "EvalResult":
        """From `common.episodes.Episode`s (seeds seed, seed+1, ...)."""
        counts = np.bincount([a for ep in episodes for a in ep.actions], minlength=n_actions).tolist()
        return cls([ep.total_reward for ep in episodes], [ep.length for ep in episodes], counts, deterministic,
                   seed, extra=dict(extra or {}))

    @property
    def n_episodes(self) -> int:
        return len(self.episode_returns)

    @property
    def mean_reward(self) -> float:
        return float(np.mean(self.episode_returns))

    @property
    def std_reward(self) -> float:
        return float(np.std(self.episode_returns, ddof=1)) if self.n_episodes > 1 else 0.0

    @property
    def mean_ep_length(self) -> float:
        return float(np.mean(self.episode_lengths))

    @property
    def ci95(self) -> tuple:
        half = ci95_halfwidth(self.std_reward, self.n_episodes)
        return (self.mean_reward - half, self.mean_reward + half)

    def to_dict(self) -> dict:
        """Plain types only: fits JSON and weights_only checkpoints."""
        low, high = self.ci95
        return {"step": self.step, "mean_reward": self.mean_reward, "std_reward": self.std_reward,
                "ci95_low": low, "ci95_high": high, "mean_ep_length": self.mean_ep_length,
                "n_episodes": self.n_episodes, "action_counts": [int(c) for c in self.action_counts],
                "deterministic": self.deterministic, "seed": self.seed,
                "is_best": self.is_best,
                "episode_returns": [float(r) for r in self.episode_returns],
                "episode_lengths": [int(n) for n in self.episode_lengths], "extra": dict(self.extra)}

    @classmethod
    def from_dict(cls, d: dict) -> "EvalResult":
        return cls(list(d["episode_returns"]), list(d["episode_lengths"]), list(d.get("action_counts", [])),
                   d["deterministic"], d["seed"], d.get("step"), bool(d.get("is_best", False)),
                   dict(d.get("extra", {})))

"""Policy evaluation over N seeded episodes, and the over-fitting test against the best.

Evaluation never changes training state: the observation normaliser is used frozen
and stochastic actions come from a generator seeded with the evaluation seed, so
the same seed gives the same episodes whichever policy is evaluated (the basis for
comparing against control policies).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from .policy import sample_from_probs
from .vec_env import is_env_factory, is_vec_env

# Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964  # Cornish-Fisher expansion to 1/df^2: error < 1e-3 for df > 30
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


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
    extra: dict = field(default_factory=dict)  # room for callers (e.g. action mix)

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
        if self.n_episodes < 2:
            return (self.mean_reward, self.mean_reward)
        half = t_quantile_975(self.n_episodes - 1) * self.std_reward / math.sqrt(self.n_episodes)
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


class ConstantPolicy:
    """Control policy: always the same action (e.g. "always TEXT")."""

    def __init__(self, action: int):
        self.action = int(action)

    def act(self, obs, mask=None, deterministic=False, rng=None) -> np.ndarray:
        return np.full(len(obs), self.action, np.int64)


class RandomPolicy:
    """Control policy: uniform over the legal actions, whatever ``deterministic`` says."""

    def __init__(self, n_actions: int):
        self.n_actions = int(n_actions)

    def act(self, obs, mask=None, deterministic=False, rng=None) -> np.ndarray:
        legal = np.ones((len(obs), self.n_actions)) if mask is None else np.asarray(mask, np.float64)
        return sample_from_probs(legal, rng)


def evaluate_policy(
    policy: Any,
    env: Any,
    n_episodes: int = 10,
    deterministic: bool = True,
    seed: int = 0,
    obs_normalizer: Optional[Any] = None,
    mask_key: Optional[str] = "action_mask",
    step_hook: Optional[Callable[[dict], None]] = None,
) -> EvalResult:
    """Run ``n_episodes`` complete episodes of ``policy`` (an ``ActorCritic`` or any
    object with ``act(obs, mask, deterministic, rng) -> actions``, e.g. the control
    policies above).

    ``env``: a single Gymnasium-style env (or a factory for one): episode k is reset
    with ``seed + k``, so every policy meets the same start states. Or a vector env:
    ``reset(seed)`` seeds env i with ``seed + i`` and env i contributes a fixed quota
    of episodes (so short episodes are not over-represented because they finish
    first; envs past their quota keep stepping, uncounted, until all are done).
    ``step_hook`` gets every step's info dict (the vector env's infos dict), e.g. to
    measure environment-specific statistics.
    """
    if n_episodes < 1:
        raise ValueError("n_episodes must be >= 1")
    rng = np.random.default_rng(seed)
    normalize = obs_normalizer if obs_normalizer is not None else (lambda o, update=False: np.asarray(o, np.float32))
    returns, lengths, taken = [], [], []

    def act(obs: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
        return policy.act(normalize(obs, update=False), mask, deterministic=deterministic, rng=rng)

    if is_vec_env(env):
        N, n_actions = env.num_envs, env.action_space.n
        quota = np.array([n_episodes // N + (i < n_episodes % N) for i in range(N)])
        done_count = np.zeros(N, int)
        ep_ret, ep_len = np.zeros(N), np.zeros(N, int)
        obs, infos = env.reset(seed=seed)
        while (done_count < quota).any():
            mask = infos.get(mask_key) if mask_key else None
            actions = act(obs, mask)
            taken.append(actions[done_count < quota])  # only episodes that will be counted
            obs, rew, term, trunc, infos = env.step(actions)
            if step_hook is not None:
                step_hook(infos)
            ep_ret += rew
            ep_len += 1
            for i in np.flatnonzero(term | trunc):
                if done_count[i] < quota[i]:
                    returns.append(float(ep_ret[i]))
                    lengths.append(int(ep_len[i]))
                    done_count[i] += 1
                ep_ret[i], ep_len[i] = 0.0, 0
    else:
        single = env() if is_env_factory(env) else env
        n_actions = single.action_space.n
        for k in range(n_episodes):
            obs, info = single.reset(seed=seed + k)
            total, length, ended = 0.0, 0, False
            while not ended:
                mask = info.get(mask_key) if mask_key and mask_key in info else None
                action = act(np.asarray(obs)[None], None if mask is None else np.asarray(mask, bool)[None])
                taken.append(action)
                obs, r, te, tr, info = single.step(int(action[0]))
                if step_hook is not None:
                    step_hook(info)
                total, length, ended = total + float(r), length + 1, bool(te or tr)
            returns.append(total)
            lengths.append(length)
    counts = np.bincount(np.concatenate(taken), minlength=n_actions).tolist()
    return EvalResult(returns, lengths, counts, deterministic=deterministic, seed=seed)


def compare_to_best(result: EvalResult, best: EvalResult, std_factor: float, drop_pct: float,
                    min_std: float = 0.0) -> dict:
    """Over-fitting test of the project spec: flagged when the std exceeds
    ``std_factor`` x the best evaluation's std (floored at ``min_std``, so a perfectly
    consistent best does not flag every later bit of noise), or the mean is more than
    ``drop_pct`` percent below the best mean. Returns change_pct, overfit, reasons."""
    scale = max(abs(best.mean_reward), 1e-8)
    change_pct = 100.0 * (result.mean_reward - best.mean_reward) / scale
    reasons = []
    ref_std = max(best.std_reward, min_std)
    if result.std_reward > std_factor * ref_std:
        reasons.append(f"std {result.std_reward:.3g} > {std_factor:g} x best std {ref_std:.3g}")
    if change_pct < -drop_pct:
        reasons.append(f"mean {change_pct:+.1f}% vs best (limit -{drop_pct:g}%)")
    return {"change_pct": change_pct, "overfit": bool(reasons), "reasons": reasons}

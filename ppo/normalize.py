"""Running observation normalisation and reward scaling.

Statistics are kept in float64 (a float32 mean drifts after ~1e7 samples) and are
exported as tensors so that they can live in a ``weights_only`` checkpoint.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


class RunningMeanStd:
    """Mean and (population) variance of every sample seen so far.

    Batches are merged with the parallel-variance formula of Chan, Golub & LeVeque
    (1979), so the result equals the statistics of all samples taken at once.
    """

    def __init__(self, shape: Sequence[int] = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)  # 1 until data arrives: identity scaling
        self.count = 0.0

    def update(self, x: np.ndarray) -> None:
        """x: [B, *shape]."""
        n = x.shape[0]
        if n == 0:
            return
        # (sum / n rather than np.mean/np.var: those cost 3-7 us of Python per call,
        # which matters when called once per environment step.)
        b_mean = x.sum(axis=0, dtype=np.float64) / n
        b_var = np.square(x - b_mean).sum(axis=0) / n
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta**2 * (self.count * n / total)
        self.mean = self.mean + delta * (n / total)
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict:
        return {"mean": torch.tensor(np.asarray(self.mean)), "var": torch.tensor(np.asarray(self.var)),
                "count": float(self.count)}

    def load_state_dict(self, state: dict) -> None:
        mean = state["mean"].detach().cpu().to(torch.float64).numpy().copy()
        if mean.shape != self.mean.shape:
            raise ValueError(f"normaliser shape {mean.shape} does not match {self.mean.shape}")
        self.mean = mean
        self.var = state["var"].detach().cpu().to(torch.float64).numpy().copy()
        self.count = float(state["count"])


class ObsNormalizer:
    """``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` with running statistics.

    Disabled, it only casts to float32, so callers need no special case.
    """

    def __init__(self, shape: Sequence[int], clip: float = 10.0, eps: float = 1e-8, enabled: bool = True):
        self.rms = RunningMeanStd(shape)
        self.clip, self.eps, self.enabled = float(clip), float(eps), bool(enabled)
        self._refresh()

    def _refresh(self) -> None:
        # float32 copies of the affine map, so normalising is two float32 ops.
        self._shift = self.rms.mean.astype(np.float32)
        self._scale = (1.0 / np.sqrt(self.rms.var + self.eps)).astype(np.float32)

    def __call__(self, obs: np.ndarray, update: bool = False) -> np.ndarray:
        """obs [B, *shape] -> float32 [B, *shape]. ``update=False`` = frozen (evaluation)."""
        obs = np.asarray(obs, dtype=np.float32)
        if not self.enabled:
            return obs
        if update:
            self.rms.update(obs)
            self._refresh()
        out = (obs - self._shift) * self._scale
        return np.maximum(np.minimum(out, self.clip, out=out), -self.clip, out=out)

    # Settings (clip, eps, enabled) come from the config; only statistics are state.
    def state_dict(self) -> dict:
        return {"rms": self.rms.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state["rms"])
        self._refresh()


class RewardScaler:
    """Divide rewards by the running std of the discounted return (not of the reward).

    This is the scaling of Engstrom et al. 2020 ("Implementation Matters"): it keeps
    value targets O(1) whatever the reward scale, without shifting the reward (a shift
    would change which policy is optimal when episodes can end early).
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8, enabled: bool = True):
        self.rms = RunningMeanStd(())
        self.returns = np.zeros(num_envs, np.float64)  # discounted return so far, per env
        self.gamma, self.clip, self.eps, self.enabled = float(gamma), float(clip), float(eps), bool(enabled)

    def __call__(self, rewards: np.ndarray, episode_end: np.ndarray) -> np.ndarray:
        """rewards [N], episode_end [N] bool -> scaled float32 rewards [N] (updates stats)."""
        if not self.enabled:
            return np.asarray(rewards, dtype=np.float32)
        self.returns = self.returns * self.gamma + rewards
        self.rms.update(self.returns)
        self.returns[episode_end] = 0.0
        scaled = rewards / np.sqrt(self.rms.var + self.eps)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict:
        return {"rms": self.rms.state_dict(), "returns": torch.tensor(self.returns)}

    def load_state_dict(self, state: dict) -> None:
        self.rms.load_state_dict(state["rms"])
        returns = state["returns"].cpu().to(torch.float64).numpy()
        # A different number of environments after resume: the per-env running returns
        # cannot be mapped, so they restart from 0 (the std estimate itself is kept).
        self.returns = returns.copy() if returns.shape == self.returns.shape else np.zeros_like(self.returns)

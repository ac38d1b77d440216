"""Minimal Gymnasium-compatible spaces, so no environment needs gymnasium.

PPO only reads `observation_space.shape` and `action_space.n`; `low`/`high`
document the observation and let `check_env` verify it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


class Box:
    """Vectors `low <= x <= high` elementwise, of a fixed shape (float32 by default)."""

    def __init__(self, low, high, shape: Sequence[int] | None = None, dtype=np.float32):
        shape = np.broadcast_shapes(np.shape(low), np.shape(high)) if shape is None else shape
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.low = np.broadcast_to(np.asarray(low, dtype=self.dtype), self.shape).copy()
        self.high = np.broadcast_to(np.asarray(high, dtype=self.dtype), self.shape).copy()

    def contains(self, x) -> bool:
        x = np.asarray(x)
        return x.shape == self.shape and bool(np.all(x >= self.low) and np.all(x <= self.high))

    def __repr__(self) -> str:
        return f"Box(low={self.low.tolist()}, high={self.high.tolist()}, dtype={self.dtype.name})"


class Discrete:
    """Actions 0 .. n-1."""

    def __init__(self, n: int):
        if int(n) < 1:
            raise ValueError(f"Discrete(n={n}) needs n >= 1")
        self.n = int(n)
        self.shape = ()
        self.dtype = np.dtype(np.int64)

    def contains(self, a) -> bool:
        return 0 <= int(a) < self.n

    def __repr__(self) -> str:
        return f"Discrete({self.n})"

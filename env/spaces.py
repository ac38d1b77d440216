"""Minimal Gymnasium-like spaces, so the environment needs no gymnasium (and no ppo/)."""
from __future__ import annotations

import numpy as np


class Box:
    """Float32 vectors with low <= x <= high elementwise."""

    def __init__(self, low, high):
        self.low = np.asarray(low, dtype=np.float32).copy()
        self.high = np.asarray(high, dtype=np.float32).copy()
        if self.low.shape != self.high.shape:
            raise ValueError("Box low and high must have the same shape")
        self.shape = self.low.shape
        self.dtype = np.dtype(np.float32)

    def contains(self, x) -> bool:
        x = np.asarray(x)
        return x.shape == self.shape and bool(np.all(x >= self.low) and np.all(x <= self.high))

    def __repr__(self) -> str:
        return f"Box(low={self.low.tolist()}, high={self.high.tolist()}, dtype=float32)"


class Discrete:
    """Actions 0 .. n-1."""

    def __init__(self, n: int):
        self.n = int(n)
        self.shape = ()
        self.dtype = np.dtype(np.int64)

    def contains(self, a) -> bool:
        return 0 <= int(a) < self.n

    def __repr__(self) -> str:
        return f"Discrete({self.n})"

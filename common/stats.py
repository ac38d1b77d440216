"""Mean, sample std and the Student-t 95 % confidence interval of a mean (no scipy)."""
from __future__ import annotations

import math
from typing import Iterable

# Two-sided 95 % Student-t quantiles t_{0.975, df} for df = 1..30 (standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_Z975 = 1.959964


def t975(df: int) -> float:
    """t_{0.975, df}: the table up to 30 degrees of freedom; beyond, the Cornish–Fisher expansion
    of the t quantile around the normal one to order 1/df² (error < 1e-3 there)."""
    if df < 1:
        raise ValueError("need at least 2 samples (df >= 1) for a confidence interval")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def ci95_halfwidth(std: float, n: int) -> float:
    """Half-width of the 95 % interval of a mean of n samples with sample std `std` (0 when n < 2)."""
    return t975(n - 1) * std / math.sqrt(n) if n > 1 else 0.0


def summarize(values: Iterable[float]) -> dict:
    """n, mean, std (ddof 1), ci95_low / ci95_high (Student t; the mean itself when n < 2)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("summarize needs at least one value")
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    half = ci95_halfwidth(std, n)
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}

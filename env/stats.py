"""Mean, sample std and the Student-t 95% confidence interval of a mean (no scipy)."""
from __future__ import annotations

import math

# two-sided 95% Student-t quantiles t_{0.975, df}
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
         10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110,
         18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060,
         26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
_Z975 = 1.960


def t975(df: int) -> float:
    """t_{0.975, df}: the table where it has df, else linear in 1/df between neighbours (error < 0.002)."""
    if df < 1:
        raise ValueError("need at least 2 samples (df >= 1) for a confidence interval")
    if df in _T975:
        return _T975[df]
    keys = sorted(_T975)
    lo = max(k for k in keys if k < df)
    hi = min((k for k in keys if k > df), default=None)
    t_lo, inv_lo = _T975[lo], 1 / lo
    t_hi, inv_hi = (_Z975, 0.0) if hi is None else (_T975[hi], 1 / hi)
    return t_hi + (t_lo - t_hi) * (1 / df - inv_hi) / (inv_lo - inv_hi)


def summarize(values) -> dict:
    """n, mean, std (ddof 1), ci95_low / ci95_high (Student t; the mean itself when n < 2)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("summarize needs at least one value")
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    half = t975(n - 1) * std / math.sqrt(n) if n > 1 else 0.0
    return {"n": n, "mean": mean, "std": std, "ci95_low": mean - half, "ci95_high": mean + half}

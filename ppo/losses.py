"""The PPO objective's terms, as functions of per-sample tensors [B].

Kept apart from the update loop so that clipping can be tested on hand-made numbers.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def clipped_surrogate_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip_range: float) -> torch.Tensor:
    """-E[min(r A, clip(r, 1-eps, 1+eps) A)] (Schulman et al. 2017, eq. 7).

    Taking the pessimistic (min) term means that once the ratio has moved past the
    clip boundary in the direction that helps, the gradient through it is zero: no
    incentive to move the policy further from the one that collected the data.
    """
    return -torch.min(advantages * ratio, advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)).mean()


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
               clip_range_vf: Optional[float]) -> torch.Tensor:
    """Mean squared error to the GAE returns; with ``clip_range_vf``, the pessimistic
    max of the plain and the clipped error, where the clipped prediction may move at
    most ``clip_range_vf`` from the value at collection time (as in OpenAI baselines)."""
    if clip_range_vf is None:
        return F.mse_loss(values, returns)
    clipped = old_values + (values - old_values).clamp(-clip_range_vf, clip_range_vf)
    return torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()


def approx_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """KL(pi_old || pi_new) from samples of log(pi_new/pi_old) drawn under pi_old:
    the "k3" estimator E[(r - 1) - log r] (Schulman 2020), unbiased and never < 0."""
    return ((log_ratio.exp() - 1.0) - log_ratio).mean()


def clip_fraction(log_ratio: torch.Tensor, clip_range: float) -> torch.Tensor:
    """Share of samples whose ratio lies outside [1-clip, 1+clip]."""
    return ((log_ratio.exp() - 1.0).abs() > clip_range).float().mean()

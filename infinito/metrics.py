"""Integration metrics INFINITO reports about itself: Φ, the Φ loss, and their parts.

Φ ("phi") is a fixed, documented function of the model's hidden states and
attention probabilities on the current batch. It is bounded in [0, 10],
differentiable, and batch-size invariant (computed per sequence, then averaged
over the batch, so duplicating a batch leaves it unchanged).

Components, each in [0, 1] by construction (nothing clamps them: a clamp would
hide a wrong formula and cut the gradient at the edges), computed per sequence
on the final residual stream h (T, C) after the memory read:

- coherence:   mean over t of (1 + cos(h̃_t, h̃_{t+1})) / 2, where h̃ is h with
               its per-sequence mean removed (centering stops the shared
               "anisotropy" direction of a trained transformer from pinning
               every cosine near 1).
- integration: mean |cos| between the means of the four quarters of the
               sequence (how much the parts of the sequence share a common
               summary), on the un-centred states.
- complexity:  1 - ||mean_t u_t||² with u_t = h_t / ||h_t|| (how spread the
               directions of the hidden states are; 0 when all align).
- diversity:   normalised entropy of the last layer's attention rows,
               H(p_t) / log(n_t), averaged over heads and the rows with n_t >= 2,
               where n_t is the number of keys query t may see: t + 1, or
               P + t + 1 when the queries follow P cached positions. p_t is
               renormalised over those keys, so H(p_t) <= log(n_t) holds for any
               input, also one that (wrongly) puts mass on future keys.

Φ = 10 · (0.3·coherence + 0.3·integration + 0.2·complexity + 0.2·diversity).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

WEIGHTS = {"coherence": 0.3, "integration": 0.3, "complexity": 0.2, "diversity": 0.2}
_EPS = 1e-6


def phi_components(h: torch.Tensor, attn: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Per-sequence components, each (B,) in [0, 1].

    h: (B, T, C) hidden states; attn: (B, H, T, S) causal attention probabilities (S >= T:
    the queries are the last T of S positions) or None.
    """
    B, T, C = h.shape
    h = h.float()
    hc = h - h.mean(dim=1, keepdim=True)
    if T > 1:
        cos_next = F.cosine_similarity(hc[:, 1:], hc[:, :-1], dim=-1, eps=_EPS)  # (B, T-1)
        coherence = ((1 + cos_next) / 2).mean(dim=1)
    else:
        coherence = h.new_full((B,), 0.5)

    q = max(T // 4, 1)
    quarters = [h[:, i * q:(i + 1) * q].mean(dim=1) for i in range(min(4, T))]  # each (B, C)
    pair_cos = [F.cosine_similarity(a, b, dim=-1, eps=_EPS).abs()
                for i, a in enumerate(quarters) for b in quarters[i + 1:]]
    integration = torch.stack(pair_cos).mean(dim=0) if pair_cos else h.new_ones(B)

    u = F.normalize(h, dim=-1, eps=_EPS)  # ||u_t|| <= 1, so ||mean_t u_t|| <= 1
    complexity = 1 - u.mean(dim=1).pow(2).sum(dim=-1)  # (B,)

    diversity = _diversity(attn) if attn is not None else None
    if diversity is None:
        diversity = h.new_full((B,), 0.5)
    return {"coherence": coherence, "integration": integration,
            "complexity": complexity, "diversity": diversity}


def _diversity(attn: torch.Tensor) -> torch.Tensor | None:
    """(B, H, T, S) attention -> (B,) mean normalised row entropy, or None when no row can spread."""
    T, S = attn.shape[-2:]
    n_visible = torch.arange(S - T + 1, S + 1, device=attn.device)  # (T,) keys query t may see
    rows = n_visible >= 2  # a row with a single key has entropy 0 by necessity, not by choice
    if not bool(rows.any()):
        return None
    n = n_visible[rows]                                              # (R,)
    visible = torch.arange(S, device=attn.device) < n[:, None]       # (R, S)
    a = attn.float()[:, :, rows] * visible                           # (B, H, R, S)
    # renormalising over the visible keys is what bounds the entropy by log(n)
    a = a / a.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    ent = -(a * torch.log(a.clamp_min(1e-12))).sum(dim=-1)          # (B, H, R); the clamp guards log(0)
    return (ent / torch.log(n.float())).mean(dim=(1, 2))


def phi_from_components(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sequence Φ in [0, 10], shape (B,)."""
    return 10.0 * sum(WEIGHTS[k] * parts[k] for k in WEIGHTS)


def phi_loss(phi: torch.Tensor, low: float, high: float, target: float | None = None) -> torch.Tensor:
    """Bounded penalty pulling each sequence's Φ into [low, high] and, inside it, toward `target`.

    L = |Φ − Φ*| + d(Φ, band), averaged over sequences, where Φ* (`target`, default the
    band's midpoint) lies in the band and d is the distance to the band (0 inside it).
    Linear, so its gradient has the same size everywhere: it never vanishes — inside the
    band it still points at Φ* — and outside the band the pull is twice as strong. Bounded
    by 20 because Φ is in [0, 10]. Scalar.
    """
    if target is None:
        target = (low + high) / 2
    if not low <= target <= high:
        raise ValueError(f"Φ target {target} is outside the band [{low}, {high}]")
    d = F.relu(low - phi) + F.relu(phi - high)
    return ((phi - target).abs() + d).mean()

"""Next-token sampling rules: repetition penalty, temperature, top-k, top-p (docs/generate.md).

Applied in this order to the logits of the next position, (B, V):

1. **Repetition penalty** r (CTRL / Hugging Face rule): for every *distinct*
   token already in the context, a positive logit is divided by r and a
   negative one multiplied by r — once per token, however often it occurred.
   r = 1 is off; r > 1 discourages repeats, r < 1 encourages them.
2. **Temperature** T: logits / T. T = 0 means greedy decoding: the most likely
   token after the penalty (top-k and top-p cannot change the argmax, so
   they are skipped); ties go to the lowest token id (`torch.argmax`).
3. **Top-k** k: keep the k most likely tokens *and every token tied with the
   k-th* (so the result never depends on how tied tokens happen to be
   ordered). k = 0 is off.
4. **Top-p** p (nucleus): keep the smallest set of most likely tokens whose
   probability reaches p, *including the token that crosses p*; again every
   token tied with the least likely kept one is kept too. "Reaches" allows
   1e-6 of rounding (a set whose probability is p up to float error counts).
   The most likely token is always kept. p = 1 is off. Top-p sees the
   distribution left by top-k (renormalised).

Removed tokens get logit -inf; sampling draws from the softmax of what is
left (inverse-CDF with one uniform from a caller-supplied `torch.Generator`),
so a seed fixes the result.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

TOP_P_TOLERANCE = 1e-6


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.8   # 0 = greedy
    top_k: int = 40            # 0 = off
    top_p: float = 0.9         # 1.0 = off; must be in (0, 1]
    rep_penalty: float = 1.0   # 1.0 = off; must be > 0

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            problems.append(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            problems.append(f"top-k must be an integer >= 0 (0 = off), got {self.top_k}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            problems.append(f"top-p must be in (0, 1] (1 = off), got {self.top_p}")
        if not (math.isfinite(self.rep_penalty) and self.rep_penalty > 0):
            problems.append(f"repetition penalty must be > 0 (1 = off), got {self.rep_penalty}")
        if problems:
            raise ValueError("invalid sampling config: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- repetition penalty

def seen_mask(context_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, T) token ids -> (B, V) bool: which tokens occur in each row."""
    seen = torch.zeros(context_ids.size(0), vocab_size, dtype=torch.bool, device=context_ids.device)
    return seen.scatter_(1, context_ids.long(), True)


def penalize_seen(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, V), seen (B, V) bool -> new logits: seen positive ones / penalty, seen negative ones * penalty.

    Working on a presence mask is what makes the penalty apply once per distinct token."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def apply_repetition_penalty(logits: torch.Tensor, context_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, V) or (V,), context_ids (B, T) or (T,): the CTRL rule over each row's distinct tokens."""
    squeeze = logits.dim() == 1
    logits2 = logits.unsqueeze(0) if squeeze else logits
    ctx = context_ids.unsqueeze(0) if context_ids.dim() == 1 else context_ids
    out = penalize_seen(logits2, seen_mask(ctx, logits2.size(-1)), penalty)
    return out.squeeze(0) if squeeze else out


# ----------------------------------------------------------------------------- truncation

def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row and every logit tied with the k-th; the rest -> -inf."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1) the k-th largest value
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest most-likely set whose probability reaches p (the crossing token included),
    plus every token tied with its least likely member; the rest -> -inf."""
    if p >= 1.0:
        return logits
    probs = torch.softmax(logits.double(), dim=-1)               # float64: the cumulative sum stays exact
    sorted_p, _ = probs.sort(dim=-1, descending=True)            # (B, V)
    before = torch.cumsum(sorted_p, dim=-1) - sorted_p           # mass strictly more likely than each entry
    keep_sorted = before < p - TOP_P_TOLERANCE                   # not yet reached p: this entry is needed
    keep_sorted[..., 0] = True                                   # the most likely token always survives
    # the least likely kept probability is the threshold; comparing values (not sort positions) keeps ties
    threshold = sorted_p.masked_fill(~keep_sorted, float("inf")).min(dim=-1, keepdim=True).values  # (B, 1)
    return logits.masked_fill(probs < threshold, float("-inf"))


# ----------------------------------------------------------------------------- the pipeline

def process_logits(logits: torch.Tensor, cfg: SamplingConfig, seen: torch.Tensor | None = None) -> torch.Tensor:
    """logits (B, V) -> float32 logits after penalty, temperature, top-k and top-p (removed = -inf).

    Greedy (temperature 0): only the penalty is applied; `sample_next` takes the argmax."""
    x = logits.float()
    if seen is not None:
        x = penalize_seen(x, seen, cfg.rep_penalty)
    if cfg.greedy:
        return x
    x = x / cfg.temperature
    x = top_k_filter(x, cfg.top_k)
    return top_p_filter(x, cfg.top_p)


def next_token_probs(logits: torch.Tensor, cfg: SamplingConfig, seen: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) -> the distribution the next token is drawn from (one-hot at the argmax when greedy)."""
    x = process_logits(logits, cfg, seen)
    if cfg.greedy:
        return torch.zeros_like(x).scatter_(-1, x.argmax(dim=-1, keepdim=True), 1.0)
    return torch.softmax(x, dim=-1)


def sample_next(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None,
                seen: torch.Tensor | None = None) -> torch.Tensor:
    """logits (B, V) -> next token ids (B,) on the logits' device.

    `seen` (B, V) bool marks the tokens the repetition penalty applies to. The draw
    happens on the generator's device, so a CPU generator also drives a CUDA model."""
    x = process_logits(logits, cfg, seen)
    if cfg.greedy:
        return x.argmax(dim=-1)  # first maximum: ties go to the lowest id
    probs = torch.softmax(x.double(), dim=-1)
    if generator is not None and probs.device != generator.device:
        probs = probs.to(generator.device)
    return draw(probs, generator).to(logits.device)


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of probs (B, V) by inverting the cumulative distribution with a uniform draw.

    Same distribution as torch.multinomial, a few times cheaper for one draw per step (which is
    what decoding does). A token of probability 0 is never drawn: the search returns the first
    index whose cumulative mass exceeds u, and a zero-probability token adds no mass."""
    cdf = probs.cumsum(dim=-1)                                                           # (B, V)
    u = torch.rand(probs.size(0), 1, generator=generator, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_max(probs.size(-1) - 1).squeeze(-1)  # (B,)

"""Autoregressive decoding with the key/value cache, and how a long text fits the context window.

INFINITO has learned absolute positions: a forward pass may cover at most
`context` positions, numbered from 0. Sliding the window by one token (what
nanoGPT does without a cache) would renumber every cached position, so a cache
could never be reused. Instead the window *jumps*:

    the model sees seq[start:]; start = max(0, len(prompt) - context) at first
    (a prompt longer than the context keeps its last `context` tokens);
    when the next token would not fit (len(seq) - start > context), the window
    restarts on the last `keep` tokens (default context // 2): start = len(seq) - keep.

With the cache, a jump means *re-priming*: the cache is dropped and rebuilt by
one forward pass over those `keep` tokens. keep = context // 2 balances the
two costs: a re-prime of context/2 tokens happens once every context/2 new
tokens (about one extra token's worth of work per token, amortised), and the
model always sees at least half a window of history.

`use_cache=False` follows the same window policy but recomputes the whole
window for every token, so it is the exact reference for the cached path:
greedy output is identical with and without the cache (tested, also across
window jumps), and comparing their speeds compares equal work.

The repetition penalty covers every token of the sequence so far — the whole
prompt (also any part cropped out of the window) and everything generated —
like the Hugging Face implementation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .sampling import SamplingConfig, sample_next, seen_mask


@dataclass
class Generation:
    tokens: torch.Tensor   # (B, max_new_tokens) the new token ids only
    prompt_cropped: int    # prompt tokens in front of the first window (the model never saw them)
    window_jumps: int      # times the window restarted on the last `keep` tokens (= cache re-primes)


def default_keep(context: int) -> int:
    """Tokens kept when the window restarts: half the context (at least 1, and less than the context)."""
    return max(1, min(context // 2, context - 1))


def _as_batch(prompt_ids, device) -> torch.Tensor:
    idx = torch.as_tensor(prompt_ids, dtype=torch.long, device=device)
    if idx.dim() == 1:
        idx = idx.unsqueeze(0)
    if idx.dim() != 2:
        raise ValueError(f"prompt_ids must be (T,) or (B, T) token ids, got shape {tuple(idx.shape)}")
    if idx.size(1) == 0:
        raise ValueError("the prompt is empty; give at least one token")
    return idx


@torch.no_grad()
def generate(model, prompt_ids: Sequence[int] | torch.Tensor, max_new_tokens: int,
             sampling: SamplingConfig | None = None, generator: torch.Generator | None = None,
             use_cache: bool = True, stream_callback: Callable[[torch.Tensor], None] | None = None,
             keep: int | None = None) -> Generation:
    """Continue `prompt_ids` ((T,) or (B, T)) by `max_new_tokens` tokens.

    The model runs in eval mode (its previous mode is restored afterwards).
    `generator` drives the sampling (None: torch's global generator).
    `stream_callback(ids)` is called with each new (B,) batch of token ids as it is chosen.
    `keep` is the number of tokens the window restarts on (default context // 2).
    """
    sampling = sampling or SamplingConfig()
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    device = next(model.parameters()).device
    prompt = _as_batch(prompt_ids, device)                          # (B, T0)
    B, T0 = prompt.shape
    context, vocab = model.cfg.context, model.cfg.vocab_size
    if int(prompt.min()) < 0 or int(prompt.max()) >= vocab:
        raise ValueError(f"prompt token ids must be in [0, {vocab})")
    keep = default_keep(context) if keep is None else keep
    if not 1 <= keep <= context:
        raise ValueError(f"keep must be in [1, {context}], got {keep}")

    seq = torch.empty(B, T0 + max_new_tokens, dtype=torch.long, device=device)  # the whole text, filled as we go
    seq[:, :T0] = prompt
    seen = seen_mask(prompt, vocab)                                 # (B, V) tokens the penalty applies to
    rows = torch.arange(B, device=device)
    start = max(0, T0 - context)                                    # the window is seq[start:L]
    cropped, jumps = start, 0
    cache = None

    was_training = model.training
    model.eval()
    try:
        for i in range(max_new_tokens):
            L = T0 + i                                              # tokens so far
            if L - start > context:                                 # the window cannot take them all: jump
                start, cache = L - keep, None
                jumps += 1
            if not use_cache:                                       # recompute the whole window
                logits = model(seq[:, start:L]).logits[:, -1]
            elif cache is None:                                     # (re-)prime the cache on the window
                out = model(seq[:, start:L], use_cache=True)
                cache, logits = out.cache, out.logits[:, -1]
            else:                                                   # feed only the newest token
                out = model(seq[:, L - 1:L], cache=cache, use_cache=True)
                cache, logits = out.cache, out.logits[:, -1]       # logits: (B, V)
            nxt = sample_next(logits, sampling, generator, seen)    # (B,)
            seq[:, L] = nxt
            seen[rows, nxt] = True
            if stream_callback is not None:
                stream_callback(nxt)
    finally:
        model.train(was_training)
    return Generation(seq[:, T0:], cropped, jumps)

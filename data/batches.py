"""Batches of (input, target) windows over a 1-D array of token ids."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .errors import DataError

Ids = np.ndarray | torch.Tensor


def _as_numpy(ids: Ids) -> np.ndarray:
    arr = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    if arr.ndim != 1:
        raise DataError(f"token ids must be a 1-D array, got shape {tuple(arr.shape)}")
    return arr


def _check(n: int, batch_size: int, context: int) -> None:
    if batch_size < 1 or context < 1:
        raise DataError(f"batch size and context must be at least 1, got {batch_size} and {context}")
    if n < context + 1:
        raise DataError(f"the text has {n} tokens, fewer than context + 1 = {context + 1}; "
                        f"use more text or a shorter context")


def _to_long(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def random_batch(ids: Ids, batch_size: int, context: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` windows at random starts; ``y`` is ``x`` shifted left by one.

    Returns int64 tensors of shape (batch_size, context), on the device of
    ``ids`` when it is a tensor (so a corpus kept on the GPU stays there), on
    the CPU for a numpy array. The starts come from ``generator`` (a CPU
    generator) alone, so the same generator state gives the same batch.
    """
    if isinstance(ids, torch.Tensor):
        if ids.ndim != 1:
            raise DataError(f"token ids must be a 1-D array, got shape {tuple(ids.shape)}")
        _check(len(ids), batch_size, context)
        starts = torch.randint(0, len(ids) - context, (batch_size,), generator=generator)
        idx = (starts[:, None] + torch.arange(context + 1)).to(ids.device)
        window = ids[idx].long()
        return window[:, :-1].contiguous(), window[:, 1:].contiguous()
    arr = _as_numpy(ids)
    _check(len(arr), batch_size, context)
    starts = torch.randint(0, len(arr) - context, (batch_size,), generator=generator).numpy()
    window = arr[starts[:, None] + np.arange(context + 1)]  # (B, T+1) gathered; the corpus is not copied
    return _to_long(window[:, :-1]), _to_long(window[:, 1:])


def eval_batches(ids: Ids, batch_size: int, context: int,
                 max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive, non-overlapping windows in order, so every token is predicted exactly once.

    Window k covers inputs ``ids[k*T : (k+1)*T]`` and targets shifted by one.
    Windows are grouped ``batch_size`` at a time; the last batch may have fewer
    rows. The tokens that do not fill a whole window at the end are yielded
    last as one extra batch of shape (1, r) with r < context, so the targets
    of all batches together are exactly ``ids[1:]``: total NLL over them is
    the NLL of the whole text, as word-level perplexity needs. ``max_batches``
    stops early (and then that tail batch is counted like any other).
    """
    arr = _as_numpy(ids)
    _check(len(arr), batch_size, context)
    n_windows, tail = divmod(len(arr) - 1, context)
    x_all = arr[: n_windows * context].reshape(n_windows, context)
    y_all = arr[1 : n_windows * context + 1].reshape(n_windows, context)
    emitted = 0
    for start in range(0, n_windows, batch_size):
        if max_batches is not None and emitted >= max_batches:
            return
        yield _to_long(x_all[start : start + batch_size]), _to_long(y_all[start : start + batch_size])
        emitted += 1
    if tail and (max_batches is None or emitted < max_batches):
        end = n_windows * context
        yield _to_long(arr[end : end + tail][None]), _to_long(arr[end + 1 : end + 1 + tail][None])

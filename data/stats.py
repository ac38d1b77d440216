"""Corpus statistics used as reference points for the model's numbers."""
from __future__ import annotations

import math

import numpy as np


def unigram_perplexity(train_ids: np.ndarray, eval_ids: np.ndarray, vocab_size: int) -> float:
    """Perplexity of `eval_ids` under the add-one-smoothed unigram distribution of `train_ids`.

    The bar a language model must clear: it knows token frequencies, nothing of context.
    """
    counts = np.bincount(np.asarray(train_ids, dtype=np.int64), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(math.exp(-logp[np.asarray(eval_ids, dtype=np.int64)].mean()))

"""Corpora, the SentencePiece tokenizer, the token-id cache and batching.

Knows nothing of the model or of RL; see docs/data.md.
"""

from .batches import eval_batches, random_batch
from .builtin_corpus import builtin_corpus_splits, builtin_corpus_text
from .corpus import Corpus, count_words, load_corpus
from .errors import DataError
from .token_cache import encode_cached
from .tokenizer import Tokenizer, train_tokenizer

__all__ = [
    "Corpus",
    "DataError",
    "Tokenizer",
    "builtin_corpus_splits",
    "builtin_corpus_text",
    "count_words",
    "encode_cached",
    "eval_batches",
    "load_corpus",
    "random_batch",
    "train_tokenizer",
]

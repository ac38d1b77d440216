"""Token-id cache: encode a corpus once, re-use the ``.npy`` while text and tokenizer are unchanged."""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from common.files import write_bytes

from .tokenizer import Tokenizer, encode_lines

# Bump when the encoding scheme changes, so old caches miss instead of lying.
_CACHE_FORMAT = 1
_LINES_PER_CHUNK = 2_000
# Below this many characters the progress bar would only flicker.
_PROGRESS_MIN_CHARS = 2_000_000


def cache_key(text: str, tokenizer: Tokenizer) -> str:
    """sha256 over the cache format, the tokenizer fingerprint and the text."""
    h = hashlib.sha256(f"v{_CACHE_FORMAT}:{tokenizer.fingerprint}:".encode())
    h.update(text.encode("utf-8"))
    return h.hexdigest()


def cache_path(text: str, tokenizer: Tokenizer, cache_dir: str | Path, name: str) -> Path:
    return Path(cache_dir) / f"{name}-{cache_key(text, tokenizer)[:16]}.npy"


def _dtype(tokenizer: Tokenizer) -> type[np.integer]:
    return np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.int32


def encode_cached(text: str, tokenizer: Tokenizer, cache_dir: str | Path, name: str,
                  progress: bool = True) -> np.ndarray:
    """1-D token ids of ``text`` (uint16 when the vocabulary fits, else int32).

    The ids are stored as ``{cache_dir}/{name}-{key16}.npy``, where the key
    hashes the text and the tokenizer fingerprint, and loaded from there on
    later calls. A cache file that cannot be read (truncated, corrupt, wrong
    dtype) is ignored and rewritten. `progress`: a bar while encoding a long text. If the
    cache cannot be written, e.g. on a
    read-only file system, a note goes to stderr and the ids are returned
    anyway: caching is an optimisation, never a reason to fail.
    """
    path = cache_path(text, tokenizer, cache_dir, name)
    dtype = _dtype(tokenizer)
    if path.is_file():
        try:
            ids = np.load(path, allow_pickle=False)
            if ids.ndim == 1 and ids.dtype == dtype:
                return ids
        except (OSError, ValueError, EOFError):
            pass  # corrupt: fall through and rewrite it
    ids = _encode(text, tokenizer, dtype, desc=f"tokenizing {name}" if progress else None)
    buf = io.BytesIO()
    np.save(buf, ids, allow_pickle=False)
    try:
        write_bytes(path, buf.getvalue())
    except OSError as e:
        print(f"note: could not write token cache {path} ({e.strerror or e}); continuing without it",
              file=sys.stderr)
    return ids


def _encode(text: str, tokenizer: Tokenizer, dtype: type[np.integer], desc: str | None) -> np.ndarray:
    """Encode in chunks of lines, joined by the newline id exactly as ``Tokenizer.encode`` does
    (with a progress bar labelled `desc`; None: no bar)."""
    lines = text.split("\n")
    chunks: list[np.ndarray] = []
    newline = np.array([tokenizer.newline_id], dtype=dtype)
    with tqdm(total=len(text), desc=desc, unit="char", unit_scale=True, leave=False,
              disable=desc is None or len(text) < _PROGRESS_MIN_CHARS) as bar:
        for start in range(0, len(lines), _LINES_PER_CHUNK):
            chunk = lines[start : start + _LINES_PER_CHUNK]
            if start:
                chunks.append(newline)  # the "\n" between this chunk and the previous one
            chunks.append(np.asarray(encode_lines(tokenizer, chunk), dtype=dtype))
            bar.update(sum(map(len, chunk)) + len(chunk))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)

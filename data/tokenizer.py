"""A SentencePiece BPE tokenizer that round-trips text exactly and trains reproducibly.

Design choices, each measured or checked in tests/test_data.py:

* BPE, not unigram: both are deterministic with one thread, but BPE trains
  about 8x faster and gives exactly the requested vocabulary size whenever the
  corpus allows it.
* Exact round trip: identity normalisation, no whitespace collapsing and no
  dummy-prefix space, so ``decode(encode(text)) == text`` for any text.
* Newlines: SentencePiece trains on lines, so "\\n" is never a learned piece;
  with byte fallback it is always the byte piece ``<0x0A>``. Text is encoded
  line by line and the lines are joined with that id, which is exactly what
  encoding the whole string would give, only faster and with bounded memory.
* The literal ``<unk>`` of tokenised WikiText is a user-defined symbol (one
  id); SentencePiece's own unknown piece is renamed ``<sp_unk>`` and is never
  produced, because byte fallback covers every character.
* Too large a vocabulary for a small corpus is not an error: training stops
  at the size the corpus supports and a warning says so
  (``hard_vocab_limit=False``); ``Tokenizer.vocab_size`` is the truth.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import sentencepiece as spm

from common.files import write_bytes

from .errors import DataError

NEWLINE_PIECE = "<0x0A>"
WIKITEXT_UNK = "<unk>"
# SentencePiece skips training sentences longer than max_sentence_length
# bytes; longer lines are cut at a space into chunks of at most this many
# characters (4 bytes each at worst in UTF-8), so nothing is silently dropped.
_MAX_TRAIN_CHARS = 16_384
_MAX_SENTENCE_BYTES = 4 * _MAX_TRAIN_CHARS


class Tokenizer:
    """Thin wrapper around ``sentencepiece.SentencePieceProcessor``."""

    def __init__(self, sp: spm.SentencePieceProcessor, blob: bytes) -> None:
        self._sp = sp
        self._blob = blob
        self.vocab_size: int = sp.get_piece_size()
        self.bos_id: int = sp.bos_id()
        self.eos_id: int = sp.eos_id()
        self.pad_id: int = sp.pad_id()
        self.newline_id: int = sp.piece_to_id(NEWLINE_PIECE)
        self.fingerprint: str = hashlib.sha256(blob).hexdigest()
        if sp.id_to_piece(self.newline_id) != NEWLINE_PIECE:
            raise DataError("tokenizer model has no newline byte piece (it was not trained with byte fallback); "
                            "delete it so that it is retrained")

    @classmethod
    def from_bytes(cls, blob: bytes) -> Tokenizer:
        """Rebuild from a serialized model proto, e.g. one embedded in a checkpoint."""
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(bytes(blob))
        except Exception:
            raise DataError("tokenizer model is corrupt (not a SentencePiece model); "
                            "delete it so that it is retrained") from None
        return cls(sp, bytes(blob))

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load a ``.model`` file."""
        try:
            blob = Path(path).read_bytes()
        except FileNotFoundError:
            raise DataError(f"tokenizer model {path} not found; train one or pass the right path") from None
        except OSError as e:
            raise DataError(f"cannot read tokenizer model {path}: {e.strerror or e}") from None
        try:
            return cls.from_bytes(blob)
        except DataError:
            raise DataError(f"tokenizer model {path} is corrupt; delete it so that it is retrained") from None

    def to_bytes(self) -> bytes:
        """The serialized model proto (what ``from_bytes`` takes)."""
        return self._blob

    def save(self, path: str | Path) -> None:
        """Write the ``.model`` file atomically."""
        write_bytes(path, self._blob)

    def encode(self, text: str) -> list[int]:
        return encode_lines(self, text.split("\n"))

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, fingerprint={self.fingerprint[:12]})"


def encode_lines(tok: Tokenizer, lines: Sequence[str]) -> list[int]:
    """Encode lines (without their "\\n") and join them with the newline id."""
    ids: list[int] = []
    for k, line_ids in enumerate(tok._sp.encode(list(lines), num_threads=1)):
        if k:
            ids.append(tok.newline_id)
        ids.extend(line_ids)
    return ids


def _training_sentences(text: str) -> Iterator[str]:
    for line in text.split("\n"):
        while len(line) > _MAX_TRAIN_CHARS:
            cut = line.rfind(" ", 0, _MAX_TRAIN_CHARS)
            cut = cut if cut > 0 else _MAX_TRAIN_CHARS
            yield line[:cut]
            line = line[cut:]
        if line:
            yield line


def train_tokenizer(text: str, model_path: str | Path, vocab_size: int) -> Tokenizer:
    """Train a BPE tokenizer on ``text``, write it atomically to ``model_path``.

    Same text and vocab size give a byte-identical model in any process: one
    thread, the whole corpus in order (no sampling, no shuffling).
    """
    if not text.strip():
        raise DataError("cannot train a tokenizer on empty text; give the corpus some training text")
    if vocab_size < 1:
        raise DataError(f"vocab size must be positive, got {vocab_size}")
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_training_sentences(text),
            model_writer=out,
            model_type="bpe",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=1.0,
            byte_fallback=True,
            split_digits=True,  # numbers as digit sequences: no vocabulary spent on them, arithmetic stays learnable
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            user_defined_symbols=[WIKITEXT_UNK],
            unk_piece="<sp_unk>",
            num_threads=1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            max_sentence_length=_MAX_SENTENCE_BYTES,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e)
        if "smaller than required_chars" in msg:
            need = msg.split(" vs ")[-1].split(".")[0] if " vs " in msg else "more"
            raise DataError(f"vocab size {vocab_size} is too small for this corpus: it needs at least {need} "
                            f"(256 byte pieces, special symbols and every distinct character); "
                            f"raise the vocab size") from None
        raise DataError(f"tokenizer training failed: {msg.splitlines()[-1] if msg else e!r}") from None
    tok = Tokenizer.from_bytes(out.getvalue())
    if tok.vocab_size < vocab_size:
        warnings.warn(f"vocab size {vocab_size} is more than this corpus supports; "
                      f"the tokenizer has {tok.vocab_size} pieces", stacklevel=2)
    tok.save(model_path)
    return tok

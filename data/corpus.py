"""Corpus loading: the built-in corpus, a WikiText-layout directory, or one text file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .builtin_corpus import builtin_corpus_splits
from .errors import DataError

SPLITS = ("train", "valid", "test")
# File-name conventions of a corpus directory, in order of preference. The
# first convention that has any file wins, so a directory holding both
# wiki.*.tokens and wiki.*.raw never mixes tokenised and raw text.
_CONVENTIONS = ("wiki.{split}.tokens", "wiki.{split}.raw", "{split}.txt")
# Tokenised WikiText marks in-word hyphens and heading levels this way.
_WIKITEXT_MARKERS = (" @-@ ", " = = ", "<unk>")
_SINGLE_FILE_TRAIN_FRACTION = 0.9


@dataclass
class Corpus:
    """Train/valid/test text of one corpus.

    ``wikitext`` is True for WikiText-layout data, for which word-level
    perplexity is reported; ``test`` is None when the source has no test split.
    """

    name: str
    train: str
    valid: str
    test: str | None
    wikitext: bool
    builtin: bool
    source: str


def load_corpus(path: str | Path | None, *, builtin_size: str = "demo", train_split: str = "train") -> Corpus:
    """Load a corpus.

    ``path`` is None for the built-in corpus, a directory in WikiText layout
    (``wiki.{split}.tokens``, ``wiki.{split}.raw`` or ``{split}.txt``) or a
    single text file (first 90% of its lines train, the rest valid).

    ``train_split="valid"`` trains on the valid split and validates on the test
    split (``test`` is then None, so no text is used twice); it is meant for
    directories that ship without a train split.
    """
    if train_split not in ("train", "valid"):
        raise DataError(f"train split must be 'train' or 'valid', got {train_split!r}")
    if path is None:
        splits: dict[str, str | None] = dict(zip(SPLITS, builtin_corpus_splits(builtin_size)))
        return _assemble(splits, train_split, name="builtin", source="<builtin>",
                         wikitext=False, builtin=True, where="the built-in corpus")
    p = Path(path)
    if not p.exists():
        raise DataError(f"corpus path {p} does not exist; pass an existing directory or text file")
    if p.is_dir():
        return _load_directory(p, train_split)
    if train_split != "train":
        raise DataError(f"{p} is a single file, so it has no '{train_split}' split; "
                        f"drop the train-split option to split it 90/10 into train/valid")
    return _load_file(p)


def _assemble(splits: dict[str, str | None], train_split: str, *, name: str, source: str,
              wikitext: bool, builtin: bool, where: str) -> Corpus:
    """Map the source's splits to train/valid/test according to ``train_split``."""
    if train_split == "train":
        roles: dict[str, str | None] = {"train": "train", "valid": "valid", "test": "test"}
    else:
        roles = {"train": "valid", "valid": "test", "test": None}
    found = [s for s in SPLITS if splits.get(s) is not None]
    for role in ("train", "valid"):
        split = roles[role]
        if splits.get(split) is None:
            hint = ("; re-run with the train split set to 'valid' (--train-split valid) to train on "
                    "valid and validate on test" if role == "train" and split == "train"
                    and {"valid", "test"} <= set(found) else "")
            raise DataError(f"{where} has no {split} split (found: {', '.join(found) or 'none'}){hint}")
    test_split = roles["test"]
    return Corpus(name=name, train=splits[roles["train"]] or "", valid=splits[roles["valid"]] or "",
                  test=splits.get(test_split) if test_split else None,
                  wikitext=wikitext, builtin=builtin, source=source)


def _load_directory(d: Path, train_split: str) -> Corpus:
    for pattern in _CONVENTIONS:
        files = {s: d / pattern.format(split=s) for s in SPLITS}
        files = {s: f for s, f in files.items() if f.is_file()}
        if files:
            break
    else:
        wanted = ", ".join(c.format(split="{train,valid,test}") for c in _CONVENTIONS)
        raise DataError(f"{d} holds no corpus files; expected {wanted}")
    splits: dict[str, str | None] = {s: _read_text(f) for s, f in files.items()}
    wikitext = pattern.startswith("wiki.") or any(
        m in text for text in splits.values() if text is not None for m in _WIKITEXT_MARKERS)
    name = d.resolve().name
    return _assemble(splits, train_split, name=name, source=str(d), wikitext=wikitext,
                     builtin=False, where=str(d))


def _load_file(f: Path) -> Corpus:
    text = _read_text(f)
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a new one
    cut = min(max(int(len(lines) * _SINGLE_FILE_TRAIN_FRACTION), 1), len(lines) - 1)
    train, valid = "\n".join(lines[:cut]) + "\n", "\n".join(lines[cut:]) + "\n"
    if cut < 1 or not train.strip() or not valid.strip():
        raise DataError(f"{f} is too short to split into train and valid by lines "
                        f"({len(lines)} lines); give it more lines of text")
    wikitext = any(m in text for m in _WIKITEXT_MARKERS)
    return Corpus(name=f.stem, train=train, valid=valid, test=None, wikitext=wikitext,
                  builtin=False, source=str(f))


def _read_text(f: Path) -> str:
    """Read a UTF-8 text file, turning every way it can fail into a one-line DataError."""
    try:
        raw = f.read_bytes()
    except PermissionError:
        raise DataError(f"cannot read {f}: permission denied; "
                        f"fix its permissions or copy it somewhere readable") from None
    except OSError as e:
        raise DataError(f"cannot read {f}: {e.strerror or e}; check the path") from None
    if b"\x00" in raw:
        raise DataError(f"{f} looks like a binary file (it contains NUL bytes, as binary and UTF-16 files do); "
                        f"pass a UTF-8 text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{f} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                        f"convert it to UTF-8 text") from None
    if not text.strip():
        raise DataError(f"{f} is empty or holds only whitespace; give it some text")
    # Universal newlines, as text-mode open() would give, so splits and
    # tokenisation never see a stray "\r".
    return text.replace("\r\n", "\n").replace("\r", "\n")


def count_words(text: str) -> int:
    """Word count for word-level perplexity, in the WikiText convention.

    Whitespace-separated words plus one end-of-line token for every line,
    blank lines included (a final newline ends the last line and does not open
    a new one). This matches the counts the WikiText results are quoted
    against, e.g. 245,569 for the WikiText-2 test split.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return sum(len(line.split()) for line in lines) + len(lines)

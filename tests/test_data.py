"""Tests for the data package: corpora, tokenizer, token cache, batching."""

from __future__ import annotations

import collections
import hashlib
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import data
import data.token_cache
from data import (Corpus, DataError, Tokenizer, builtin_corpus_text, count_words, encode_cached,
                  eval_batches, load_corpus, random_batch, train_tokenizer)
from data.builtin_corpus import builtin_corpus_splits

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
WIKI_FIXTURE = FIXTURES / "wikitext_tiny"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _wiki_split(split: str) -> str:
    return (WIKI_FIXTURE / f"wiki.{split}.tokens").read_text()


def _write_layout(d: Path, pattern: str, splits=("train", "valid", "test")) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for s in splits:
        (d / pattern.format(split=s)).write_text(_wiki_split(s))
    return d


@pytest.fixture(scope="module")
def tiny_train() -> str:
    return builtin_corpus_splits("tiny")[0]


@pytest.fixture(scope="module")
def tok(tmp_path_factory, tiny_train) -> Tokenizer:
    text = tiny_train + _wiki_split("train") + (FIXTURES / "plain.txt").read_text()
    return train_tokenizer(text, tmp_path_factory.mktemp("tok") / "t.model", 1024)


# ---------------------------------------------------------------- built-in corpus

def test_builtin_is_deterministic_and_sized():
    a, b = builtin_corpus_text("tiny"), builtin_corpus_text("tiny")
    assert a == b
    assert a.isascii() and a.endswith("\n")
    train, valid, test = builtin_corpus_splits("tiny")
    assert 180_000 <= len(train) <= 230_000
    assert 5_000 <= len(valid) <= 20_000 and 5_000 <= len(test) <= 20_000
    # The splits partition the paragraphs of the whole text.
    paras = lambda t: t.strip("\n").split("\n\n")  # noqa: E731
    assert sorted(paras(train) + paras(valid) + paras(test)) == sorted(paras(a))
    assert not set(paras(valid)) & set(paras(train))  # a repeated paragraph would leak valid into train
    demo_train = builtin_corpus_splits("demo")[0]
    assert 3_000_000 <= len(demo_train) <= 5_000_000
    with pytest.raises(DataError, match="unknown built-in corpus size"):
        builtin_corpus_text("huge")


def test_builtin_is_structured_not_random(tiny_train):
    """Knowing the previous word must remove most of the uncertainty about the next one."""
    words = tiny_train.split()
    uni = collections.Counter(words)
    bi = collections.Counter(zip(words, words[1:]))
    n = len(words)
    h_uni = -sum(c / n * math.log2(c / n) for c in uni.values())
    h_bi = -sum(c / (n - 1) * math.log2(c / uni[w1]) for (w1, _), c in bi.items())
    assert len(uni) > 500  # a real vocabulary, not a handful of tokens
    assert h_bi < 0.4 * h_uni


def test_builtin_agreement_and_consistency():
    """Pronouns follow the person's gender; a person's birth year never changes."""
    born: dict[str, set[str]] = collections.defaultdict(set)
    bios = 0
    for par in builtin_corpus_text("demo").split("\n\n"):
        for name, year in re.findall(r"([A-Z][a-z]+ [A-Z][a-z]+) was born in (\d{4})", par):
            born[name].add(year)
        bio = re.match(r"([A-Z][a-z]+ [A-Z][a-z]+) is an? [a-z]+ [a-z]+ from [A-Z][a-z]+\. ", par)
        if bio:
            bios += 1
            he, she = re.search(r"\b(He|he|His|his|him)\b", par), re.search(r"\b(She|she|Her|her)\b", par)
            assert not (he and she), par  # one person per biography, so one gender of pronoun
            year = re.search(r"(?:He|She) was born in (\d{4})", par)
            if year:
                born[bio.group(1)].add(year.group(1))
    assert bios > 500
    assert sum(len(years) == 1 for years in born.values()) > 500
    assert all(len(years) == 1 for years in born.values())


def test_load_builtin():
    c = load_corpus(None, builtin_size="tiny")
    assert isinstance(c, Corpus)
    assert (c.name, c.builtin, c.wikitext, c.source) == ("builtin", True, False, "<builtin>")
    assert (c.train, c.valid, c.test) == builtin_corpus_splits("tiny")


# ---------------------------------------------------------------- corpus loading

@pytest.mark.parametrize("pattern", ["wiki.{split}.tokens", "wiki.{split}.raw", "{split}.txt"])
def test_wikitext_layouts(tmp_path, pattern):
    d = _write_layout(tmp_path / "mywiki", pattern)
    c = load_corpus(str(d))
    assert c.name == "mywiki" and c.source == str(d) and not c.builtin
    assert (c.train, c.valid, c.test) == (_wiki_split("train"), _wiki_split("valid"), _wiki_split("test"))
    assert c.wikitext  # wiki.* names, or the " = = " / "<unk>" markers for {split}.txt


def test_txt_layout_without_markers_is_not_wikitext(tmp_path):
    for s in ("train", "valid"):
        (tmp_path / f"{s}.txt").write_text(f"plain {s} text\nanother line\n")
    c = load_corpus(tmp_path)
    assert not c.wikitext and c.test is None


def test_first_convention_wins(tmp_path):
    _write_layout(tmp_path, "wiki.{split}.tokens")
    (tmp_path / "train.txt").write_text("should be ignored\n")
    assert load_corpus(tmp_path).train == _wiki_split("train")


def test_train_split_valid(tmp_path):
    d = _write_layout(tmp_path, "{split}.txt", splits=("valid", "test"))
    with pytest.raises(DataError, match="no train split.*train split set to 'valid'"):
        load_corpus(d)
    c = load_corpus(d, train_split="valid")
    assert c.train == _wiki_split("valid") and c.valid == _wiki_split("test") and c.test is None
    assert c.wikitext
    with pytest.raises(DataError, match="train split must be"):
        load_corpus(d, train_split="test")
    b = load_corpus(None, builtin_size="tiny", train_split="valid")
    assert (b.train, b.valid, b.test) == builtin_corpus_splits("tiny")[1:] + (None,)


def test_single_file_split(tmp_path):
    f = tmp_path / "story.txt"
    f.write_text("".join(f"line {i}\n" for i in range(20)))
    c = load_corpus(str(f))
    assert c.name == "story" and c.test is None and not c.wikitext
    assert c.train == "".join(f"line {i}\n" for i in range(18))
    assert c.valid == "line 18\nline 19\n"
    assert load_corpus(str(f)) == c
    with pytest.raises(DataError, match="single file"):
        load_corpus(f, train_split="valid")


def test_crlf_is_normalised(tmp_path):
    f = tmp_path / "dos.txt"
    f.write_bytes(b"\xef\xbb\xbfone\r\ntwo\r\nthree\r\n")  # with a UTF-8 byte-order mark
    c = load_corpus(f)
    assert "\r" not in c.train + c.valid and c.train.startswith("one\n")


def _error_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) > 20
    return msg


@pytest.mark.parametrize("case, match", [
    ("missing", "does not exist"),
    ("empty_dir", "holds no corpus files"),
    ("empty_file", "empty or holds only whitespace"),
    ("blank_file", "empty or holds only whitespace"),
    ("empty_split", "empty or holds only whitespace"),
    ("not_utf8", "not valid UTF-8"),
    ("binary", "binary file"),
    ("one_line", "too short to split"),
    ("no_valid", "has no valid split"),
])
def test_corpus_errors(tmp_path, case, match):
    p = tmp_path / "c"
    if case == "empty_dir":
        p.mkdir()
        (p / "notes.md").write_text("not a corpus\n")
    elif case in ("empty_file", "blank_file", "not_utf8", "binary", "one_line"):
        p.write_bytes({"empty_file": b"", "blank_file": b" \n\t\n", "not_utf8": b"caf\xe9 au lait\n" * 5,
                       "binary": b"\x7fELF\x02\x01\x00\x00" + bytes(range(256)),
                       "one_line": b"only one line\n"}[case])
    elif case == "empty_split":
        _write_layout(p, "{split}.txt")
        (p / "valid.txt").write_text("\n \n")
    elif case == "no_valid":
        _write_layout(p, "{split}.txt", splits=("train",))
    with pytest.raises(DataError, match=match) as e:
        load_corpus(str(p))
    assert isinstance(e.value, ValueError)
    _error_line(e)


def test_unreadable_file(tmp_path, monkeypatch):
    f = tmp_path / "secret.txt"
    f.write_text("a\nb\n")

    def deny(self):  # chmod is not enforced for root, so simulate the failure
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(DataError, match="permission denied") as e:
        load_corpus(f)
    _error_line(e)


def test_count_words():
    text = "The cat sat .\n\n = = Title = = \nA <unk> dog @-@ like\n"
    # 4 + 0 + 5 + 5 words, plus one end-of-line token for each of the 4 lines (the blank one too)
    assert count_words(text) == 14 + 4
    assert count_words(text.rstrip("\n")) == 18  # a missing final newline changes nothing
    assert count_words("") == 0


# ---------------------------------------------------------------- tokenizer

_SUBPROCESS = textwrap.dedent("""
    import hashlib, sys, warnings
    sys.path.insert(0, {repo!r})
    warnings.simplefilter("ignore")
    from data import builtin_corpus_text, train_tokenizer
    fixture = open({fixture!r}).read()
    train_tokenizer(fixture, sys.argv[1] + "/fixture.model", 400)
    train_tokenizer(builtin_corpus_text("tiny"), sys.argv[1] + "/builtin.model", 1000)
    print(hashlib.sha256(builtin_corpus_text("tiny").encode()).hexdigest())
""")


def test_tokenizer_is_identical_across_processes(tmp_path):
    fixture = FIXTURES / "plain.txt"
    code = _SUBPROCESS.format(repo=str(REPO), fixture=str(fixture))
    dirs = [tmp_path / "p1", tmp_path / "p2"]
    procs = []
    for d in dirs:
        d.mkdir()
        env = {**os.environ, "PYTHONHASHSEED": "random"}  # str hashing must not leak into the model
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(d)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=env))
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert outs[0][0] == outs[1][0] == hashlib.sha256(builtin_corpus_text("tiny").encode()).hexdigest() + "\n"
    for name in ("fixture.model", "builtin.model"):
        assert (dirs[0] / name).read_bytes() == (dirs[1] / name).read_bytes()
    here = train_tokenizer(fixture.read_text(), tmp_path / "here.model", 400)
    assert here.to_bytes() == (dirs[0] / "fixture.model").read_bytes()


def test_unk_is_one_symbol(tok):
    ids = tok.encode("a <unk> b")
    unk = [i for i in ids if tok.id_to_piece(i) == "<unk>"]
    assert len(unk) == 1
    assert tok.encode("<unk>") == unk
    assert tok.decode(ids) == "a <unk> b"


@pytest.mark.parametrize("text", [
    "Alice Moreau is a baker from Ashford.\n",
    " leading space, trailing space \nand  double  spaces\n\n\nblank lines",
    "tabs\tand\r carriage returns, unicode: caf\u00e9 \u2603 \u6f22\u5b57 \U0001F600",
    "",
])
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_round_trip_corpus_and_whole_string_encoding(tok):
    text = builtin_corpus_splits("tiny")[1] + _wiki_split("valid")
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    # Line-by-line encoding joined by the newline id is what encoding the whole string gives.
    assert ids == tok._sp.encode(text)
    assert tok.encode("x\ny").count(tok.newline_id) == 1


def test_tokenizer_bytes_load_and_errors(tok, tmp_path):
    again = Tokenizer.from_bytes(tok.to_bytes())
    assert again.fingerprint == tok.fingerprint == hashlib.sha256(tok.to_bytes()).hexdigest()
    assert again.vocab_size == tok.vocab_size == 1024
    assert again.encode("the mayor of Ashford") == tok.encode("the mayor of Ashford")
    tok.save(tmp_path / "sub" / "t.model")
    assert Tokenizer.load(tmp_path / "sub" / "t.model").fingerprint == tok.fingerprint
    with pytest.raises(DataError, match="not found"):
        Tokenizer.load(tmp_path / "missing.model")
    (tmp_path / "bad.model").write_bytes(b"definitely not a model")
    with pytest.raises(DataError, match="corrupt"):
        Tokenizer.load(tmp_path / "bad.model")
    assert tok.bos_id >= 0 and tok.eos_id >= 0 and tok.id_to_piece(tok.newline_id) == "<0x0A>"


def test_vocab_size_limits(tmp_path):
    text = (FIXTURES / "plain.txt").read_text()
    with pytest.raises(DataError, match="too small") as e:
        train_tokenizer(text, tmp_path / "a.model", 100)
    _error_line(e)
    with pytest.warns(UserWarning, match="more than this corpus supports"):
        t = train_tokenizer(text, tmp_path / "b.model", 5000)
    assert 260 < t.vocab_size < 5000 and (tmp_path / "b.model").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic write left no temp file
    with pytest.raises(DataError, match="empty"):
        train_tokenizer(" \n", tmp_path / "c.model", 300)


# ---------------------------------------------------------------- token cache

def test_cache_hit_and_miss(tok, tmp_path, monkeypatch):
    text = builtin_corpus_splits("tiny")[2]
    ids = encode_cached(text, tok, tmp_path, "valid")
    assert ids.dtype == np.uint16 and ids.ndim == 1
    assert ids.tolist() == tok.encode(text)
    files = list(tmp_path.glob("valid-*.npy"))
    assert len(files) == 1 and len(files[0].stem.split("-")[-1]) == 16

    calls = []
    real = data.token_cache.encode_lines
    monkeypatch.setattr(data.token_cache, "encode_lines", lambda t, lines: calls.append(1) or real(t, lines))
    assert np.array_equal(encode_cached(text, tok, tmp_path, "valid"), ids)
    assert calls == []  # served from the cache

    encode_cached(text + "One more line.\n", tok, tmp_path, "valid")
    assert calls and len(list(tmp_path.glob("valid-*.npy"))) == 2  # changed corpus: miss

    calls.clear()
    other = train_tokenizer(text, tmp_path / "other.model", 600)
    assert encode_cached(text, other, tmp_path, "valid").tolist() == other.encode(text)
    assert calls  # changed tokenizer: miss


def test_corrupt_cache_is_rewritten(tok, tmp_path):
    text = "a small text\nwith two lines\n"
    ids = encode_cached(text, tok, tmp_path, "x")
    (f,) = tmp_path.glob("x-*.npy")
    f.write_bytes(f.read_bytes()[:20])
    assert np.array_equal(encode_cached(text, tok, tmp_path, "x"), ids)
    assert np.array_equal(np.load(f), ids)


def test_unwritable_cache_still_returns_ids(tok, tmp_path, monkeypatch, capsys):
    def fail(path, blob):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(data.token_cache, "write_bytes", fail)
    assert encode_cached("hello\n", tok, tmp_path, "ro").tolist() == tok.encode("hello\n")
    assert "could not write token cache" in capsys.readouterr().err


# ---------------------------------------------------------------- batches

def test_random_batch():
    ids = np.arange(1000, dtype=np.uint16)
    x, y = random_batch(ids, 8, 16, torch.Generator().manual_seed(1))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y, x + 1)  # ids are positions here
    x2, y2 = random_batch(ids, 8, 16, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = random_batch(ids, 8, 16, torch.Generator().manual_seed(2))
    assert not torch.equal(x, x3)
    xt, yt = random_batch(torch.from_numpy(ids.astype(np.int64)), 8, 16, torch.Generator().manual_seed(1))
    assert torch.equal(xt, x) and torch.equal(yt, y)
    # Every start is reachable, including the last one (x ends at ids[-2], y at ids[-1]).
    xs, ys = random_batch(np.arange(11), 500, 10, torch.Generator().manual_seed(0))
    assert set(xs[:, 0].tolist()) == {0} and ys.max() == 10
    with pytest.raises(DataError, match="fewer than context"):
        random_batch(np.arange(16), 2, 16, torch.Generator())


def test_eval_batches_cover_in_order():
    ids = np.arange(1, 104, dtype=np.uint16)  # 103 tokens -> 102 targets = 10 windows of 10 + tail of 2
    batches = list(eval_batches(ids, 4, 10))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 10), (4, 10), (2, 10), (1, 2)]
    xs = torch.cat([x.flatten() for x, _ in batches])
    ys = torch.cat([y.flatten() for _, y in batches])
    assert xs.tolist() == ids[:-1].tolist() and ys.tolist() == ids[1:].tolist()
    assert all(torch.equal(y[:, :-1], x[:, 1:]) for x, y in batches)
    assert len(list(eval_batches(ids, 4, 10, max_batches=2))) == 2
    exact = list(eval_batches(np.arange(21), 2, 10))  # 20 targets fill two windows: no tail batch
    assert [tuple(x.shape) for x, _ in exact] == [(2, 10)]
    with pytest.raises(DataError):
        next(eval_batches(np.arange(5), 2, 10))


# ---------------------------------------------------------------- shared data (optional)

@pytest.mark.skipif(not (SHARED_DATA / "wikitext-2").is_dir(), reason="shared WikiText-2 not present")
def test_shared_wikitext2():
    d = SHARED_DATA / "wikitext-2"
    c = load_corpus(str(d), train_split="valid")
    assert c.wikitext and c.name == "wikitext-2" and c.test is None
    assert c.train == (d / "valid.txt").read_text(encoding="utf-8")
    assert c.valid == (d / "test.txt").read_text(encoding="utf-8")
    assert count_words(c.valid) == 245_569  # the published WikiText-2 test count (words + one per line)
    with pytest.raises(DataError, match="no train split"):
        load_corpus(str(d))

"""Files that must never be half-written, and checkpoints that load with `weights_only=True`.

Every file the project writes for later (checkpoints, tokenizer models, token
caches, JSON histories, reports) goes to a temporary file in the destination
directory first and is moved into place with `os.replace` (atomic on POSIX and
Windows): a crash, a full disk or Ctrl-C leaves the earlier file intact and no
temporary file behind.

A checkpoint is a dict of plain Python types and tensors with a `kind` (what
wrote it: "infinito-base", "ppo-agent") and a `format_version`. One rule for
every kind: this code reads FORMAT_VERSION only. Version 2 (December 2026) renamed settings so
that no name means two things; a version-1 file gets one line saying to retrain, not a shim.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Callable

import torch

from .messages import first_line

FORMAT_VERSION = 2


class CheckpointError(Exception):
    """A checkpoint cannot be written or read; the message is one line saying what is wrong and what to do."""


# False in the processes of a distributed job other than rank 0 (common.distributed.use):
# there every file write below is skipped, so one process alone writes each file.
WRITES_ENABLED = True


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(f)` on a temporary file beside `path`, then move it into place.
    OSError (disk full, no permission) propagates; callers word it for their users."""
    if not WRITES_ENABLED:
        return
    path = Path(path)
    with naming(path):
        _write_and_replace(path, write)


def _write_and_replace(path: Path, write: Callable[[BinaryIO], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; these are ordinary files
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # also on KeyboardInterrupt: never leave the temporary file behind
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def naming(path: str | os.PathLike):
    """OSErrors raised inside that name no file (a write to a full disk) are re-raised naming
    `path`, so the one-line message says where."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def write_bytes(path: str | os.PathLike, blob: bytes) -> None:
    atomic_write(path, lambda f: f.write(blob))


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Atomically write `payload` (plain types and tensors, checked first so that it loads
    with weights_only=True). A failed write is a CheckpointError naming the file."""
    check_plain(payload)
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    except (OSError, RuntimeError) as e:  # torch's zip writer reports a full disk as RuntimeError
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "the disk is full"
        raise CheckpointError(f"could not write checkpoint {path} ({reason}); any earlier file of that name is "
                              "intact; free disk space or check write permission, then resume") from None


# Exact types: numpy scalars subclass float/int but weights_only loading refuses them.
_PLAIN = (type(None), bool, int, float, str)


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise TypeError naming the first value `weights_only` loading would refuse."""
    if type(obj) in (dict, OrderedDict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where} has a key of type {type(k).__name__}; use str or int keys")
            check_plain(v, f"{where}[{k!r}]")
    elif type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
    elif type(obj) not in _PLAIN and not isinstance(obj, torch.Tensor):
        raise TypeError(f"{where} is a {type(obj).__name__}; checkpoints hold only plain types and "
                        "tensors (convert numpy arrays with torch.from_numpy or .tolist())")


def load_checkpoint(path: str | os.PathLike, kind: str | None = None, map_location: Any = "cpu",
                    required: tuple = ()) -> dict:
    """Read and check a checkpoint (weights_only); every failure is one CheckpointError line.

    `kind`: the kind the caller needs (None: any of this project's). `required`: keys
    that must be present."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else would fail as a pickle
        raise CheckpointError(f"{path} is corrupt or not a readable checkpoint (not a torch.save archive: another "
                              "kind of file, or cut short); re-create it or pick another")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for bad files (zip, pickle, EOF, unpickler)
        raise CheckpointError(f"{path} is corrupt or not a readable checkpoint ({first_line(e, 100)}); "
                              "re-create it or pick another") from None
    if not isinstance(ckpt, dict) or "kind" not in ckpt or "format_version" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint of this project (no kind/format_version)")
    if kind is not None and ckpt["kind"] != kind:
        raise CheckpointError(f"{path} is a '{ckpt['kind']}' checkpoint, but a '{kind}' checkpoint is needed here")
    version = ckpt["format_version"]
    if type(version) is int and 1 <= version < FORMAT_VERSION:
        raise CheckpointError(f"{path} was made by an older version of this project (checkpoint format {version}); "
                              f"this version reads format {FORMAT_VERSION} only: retrain it, or read it with a "
                              "version of the project from before December 2026")
    if type(version) is not int or version != FORMAT_VERSION:  # bool is an int subclass: refused
        raise CheckpointError(f"{path} has format version {version!r}; this code reads version {FORMAT_VERSION}: "
                              "update the code or re-create the checkpoint")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; the file is incomplete, pick another checkpoint")
    return ckpt


# atomic_write's temporary files: ".<final name>.<random>.tmp" beside the final file.
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")
_OTHER_LOCK = re.compile(r"^\.lock-(\d+)$")  # a contender's PID file, left if it was killed mid-way


class FolderInUse(Exception):
    """Another live process holds the output folder's lock; the message is one line."""


class FolderLock:
    """`with FolderLock(out_dir):` — one run per output folder. The lock file `.lock` holds the
    owner's PID; a lock whose process is gone (a killed run) is stale and taken over. While
    holding it, temporary files of interrupted saves are removed: no live writer can own them."""

    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / ".lock"

    def __enter__(self) -> "FolderLock":
        self.held = WRITES_ENABLED  # in a distributed job, rank 0 holds it for all ranks
        if not self.held:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = self._write_own_pid()
        try:
            while True:
                try:  # a hard link appears whole: no other run ever reads a lock without its PID
                    os.link(mine, self.path)
                    break
                except FileExistsError:
                    owner = _lock_owner(self.path)
                    if owner is not None and owner != os.getpid() and _alive(owner):
                        raise FolderInUse(f"{self.path.parent} is in use by another run (process {owner}); "
                                          "wait for it, or use another --out") from None
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
        finally:
            mine.unlink(missing_ok=True)
        for tmp in self.path.parent.iterdir():
            other_pid = _OTHER_LOCK.match(tmp.name)
            if (_TEMP.match(tmp.name) or (other_pid and not _alive(int(other_pid[1])))) and tmp.is_file():
                tmp.unlink(missing_ok=True)
        return self

    def _write_own_pid(self) -> Path:
        mine = self.path.with_name(f".lock-{os.getpid()}")
        try:
            with naming(self.path):
                mine.write_text(f"{os.getpid()}\n")
        except OSError:  # a full disk: leave nothing behind
            mine.unlink(missing_ok=True)
            raise
        return mine

    def __exit__(self, *exc) -> None:
        if self.held and _lock_owner(self.path) == os.getpid():
            self.path.unlink(missing_ok=True)


def _lock_owner(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True

"""Atomic, ``weights_only``-loadable checkpoint files and RNG state capture.

A checkpoint is a dict of plain Python types and tensors. It is written to a
temporary file in the destination directory and moved into place with
``os.replace`` (atomic on POSIX and Windows), so a crash or a full disk never leaves
a half-written file under the final name.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
from collections import OrderedDict
from typing import Any, BinaryIO, Callable, Optional

import numpy as np
import torch

FORMAT_VERSION = 1
AGENT_KIND = "ppo-agent"


class CheckpointError(Exception):
    """A checkpoint could not be written or read; the message is one line saying what
    is wrong and what to do."""


def _atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], what: str) -> None:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise CheckpointError(f"could not write {what} {path} ({e.strerror or e}); "
                              "check free disk space and write permission") from e
    finally:  # also on KeyboardInterrupt: never leave the temp file behind
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Atomically write ``payload`` (plain types and tensors, checked first)."""
    check_plain(payload)
    _atomic_write(path, lambda f: torch.save(payload, f), "checkpoint")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically (re)write a JSON file, e.g. an evaluation history or a report."""
    _atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()), "file")


# Exact types: numpy scalars subclass float/int but weights_only loading refuses them.
_PLAIN = (type(None), bool, int, float, str)


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise TypeError naming the first value ``weights_only`` loading would refuse."""
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


def load_checkpoint(path: str | os.PathLike, kind: str = AGENT_KIND,
                    map_location: Any = "cpu", required: tuple = ()) -> dict:
    """Read and sanity-check a checkpoint; every failure is a CheckpointError."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (e.g. ckpt/<step>.pt)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for bad files (zip, pickle, EOF...)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or not a plain-tensor PyTorch file "
                              f"({type(e).__name__}: {reason[:200]}); re-create it or pick another") from e
    if not isinstance(ckpt, dict) or "kind" not in ckpt:
        raise CheckpointError(f"{path} is not a checkpoint of this project (no 'kind' field); "
                              f"pass a {kind!r} checkpoint")
    if ckpt["kind"] != kind:
        raise CheckpointError(f"{path} is a {ckpt['kind']!r} checkpoint, not a {kind!r} one; "
                              f"pass a {kind!r} checkpoint")
    version = ckpt.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {version!r}, this code reads up to "
                              f"{FORMAT_VERSION}; update the code or re-create the checkpoint")
    missing = [k for k in required if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(missing)}; the file is incomplete, "
                              "pick another checkpoint")
    return ckpt


# --- RNG states -------------------------------------------------------------------
# numpy's legacy state holds an ndarray and a Generator's state holds 128-bit ints;
# both are converted to tensors / plain ints so weights_only loading accepts them.

def capture_global_rng() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_global_rng(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    # A checkpoint written on a GPU machine restores on CPU (and vice versa): CUDA
    # states are applied only where there are matching devices.
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def generator_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state  # nested dict of str and (big) ints


def restore_generator(rng: np.random.Generator, state: Optional[dict]) -> None:
    rng.bit_generator.state = state

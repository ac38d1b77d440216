"""Checkpoints: atomic writes, `weights_only=True` loads, and rebuilding the model.

A checkpoint is a dict of plain types and tensors only (so it loads with
`torch.load(weights_only=True)`): format_version, kind, model_config,
train_config, model state, optimiser state, step, RNG states and the
tokenizer's serialized model as a uint8 tensor.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import torch

from .config import InfinitoConfig
from .model import Infinito

FORMAT_VERSION = 1
BASE_KIND = "infinito-base"


class CheckpointError(Exception):
    """A checkpoint is missing, corrupt, of the wrong kind or of an unsupported version."""


def atomic_save(obj: dict, path: str | Path) -> None:
    """Write to a temp file in the same directory, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, kind: str | None = None, map_location="cpu") -> dict:
    """Load and validate a checkpoint; raises CheckpointError with a one-line reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle, zip and unpickler errors all mean "not a checkpoint we can read"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable checkpoint ({first[:120]})") from None
    if not isinstance(ckpt, dict) or "kind" not in ckpt or "format_version" not in ckpt:
        raise CheckpointError(f"{path} is not an INFINITO/PPO checkpoint (no kind/format_version)")
    if kind is not None and ckpt["kind"] != kind:
        raise CheckpointError(f"{path} is a '{ckpt['kind']}' checkpoint, but a '{kind}' checkpoint is needed here")
    if ckpt["format_version"] != FORMAT_VERSION and ckpt["kind"] == BASE_KIND:
        raise CheckpointError(f"{path} has format version {ckpt['format_version']}; this code reads version {FORMAT_VERSION}")
    return ckpt


def build_model(ckpt: dict, device: torch.device | str = "cpu") -> Infinito:
    """Rebuild the model from the config stored in the checkpoint and load its weights strictly."""
    try:
        model = Infinito(InfinitoConfig.from_dict(ckpt["model_config"]))
        model.load_state_dict(ckpt["model"], strict=True)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint does not match its stored model config ({str(e).splitlines()[0][:120]})") from None
    return model.to(device)


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def bytes_to_tensor(blob: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8).clone()


def tensor_to_bytes(t: torch.Tensor) -> bytes:
    return bytes(t.cpu().numpy().tobytes())

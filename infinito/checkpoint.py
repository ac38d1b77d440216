"""Base checkpoints (kind "infinito-base"): rebuilding the model they hold.

A base checkpoint is written and read by `common.files` (atomic writes,
`weights_only=True` loads, one version rule): format_version, kind,
model_config, train_config, model state, optimiser state, step, random states
and the tokenizer's serialized model as a uint8 tensor.
"""
from __future__ import annotations

import hashlib
import json

import torch

from common.files import CheckpointError, load_checkpoint
from common.messages import first_line

from .config import InfinitoConfig
from .model import Infinito

BASE_KIND = "infinito-base"

__all__ = ["BASE_KIND", "CheckpointError", "load_checkpoint", "build_model", "check_weights", "content_digest",
           "bytes_to_tensor", "tensor_to_bytes"]


def _config(ckpt: dict) -> InfinitoConfig:
    try:
        return InfinitoConfig.from_dict(ckpt["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint holds no usable model config ({first_line(e, 120)})") from None


def build_model(ckpt: dict, device: torch.device | str = "cpu") -> Infinito:
    """Rebuild the model from the config stored in the checkpoint and load its weights strictly."""
    model = Infinito(_config(ckpt))
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint does not match its stored model config ({first_line(e, 120)})") from None
    return model.to(device)


def check_weights(ckpt: dict) -> InfinitoConfig:
    """The stored config, after checking that the stored weights fit it (names and shapes).
    The model is built on the meta device: no memory, no initialisation."""
    cfg = _config(ckpt)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in Infinito(cfg).state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in ckpt.get("model", {}).items()}
    if stored != expected:
        wrong = sorted(set(stored) ^ set(expected)) or sorted(k for k in stored if stored[k] != expected[k])
        raise CheckpointError(f"checkpoint does not match its stored model config ({', '.join(wrong[:3])})")
    return cfg


def bytes_to_tensor(blob: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8).clone()


def tensor_to_bytes(t: torch.Tensor) -> bytes:
    return bytes(t.cpu().numpy().tobytes())


def content_digest(ckpt: dict) -> str:
    """A base checkpoint's identity: SHA-256 (first 16 hex digits) of what training further from
    it depends on — model config, weights (memory buffers included), tokenizer and corpus — but
    not its optimiser moments, step, random states or file bytes. Two files holding the same
    model therefore have the same identity however they were written."""
    h = hashlib.sha256()
    corpus = {"data": ckpt.get("data"), "builtin_size": ckpt.get("train_config", {}).get("builtin_size")}
    h.update(json.dumps([ckpt["model_config"], corpus], sort_keys=True, default=str).encode())
    for name in sorted(ckpt["model"]):
        t = ckpt["model"][name].detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(tensor_to_bytes(ckpt["tokenizer"]))
    return h.hexdigest()[:16]

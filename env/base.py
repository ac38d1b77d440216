"""What every environment over one base checkpoint shares: read once, kept in memory.

`load_base` reads the checkpoint, its corpus and tokenizer a single time; N
environments (the vector env) then share the weight snapshot, the training
token ids and the held-out batch, and each only holds its own model copy.
`reset` restores from the snapshot, never from disk.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data import DataError, Tokenizer, encode_cached, load_corpus, random_batch
from infinito.checkpoint import BASE_KIND, check_weights, load_checkpoint, tensor_to_bytes

from .config import EnvConfig
from .errors import EnvError


@dataclass
class BaseAssets:
    path: str
    model_config: dict           # InfinitoConfig as a dict
    snapshot: dict               # the base model's state dict (memory buffers included), on `device`
    train_ids: np.ndarray        # training-split token ids (the data stream samples windows here)
    heldout: tuple               # (x, y) fixed held-out batch from the validation split, on `device`
    seq_len: int                 # tokens per training/held-out row (config.seq_len cropped to the context)
    device: torch.device
    built_with: dict             # the config fields these assets depend on, to catch a mismatched reuse


def _asset_fields(config: EnvConfig) -> dict:
    keys = ("seq_len", "inner_batch_size", "measurement_batch_size", "measurement_seed", "device")
    return {k: getattr(config, k) for k in keys}


def check_assets(assets: BaseAssets, config: EnvConfig) -> None:
    """Environments sharing assets must have been configured like the assets were built."""
    wanted = _asset_fields(config)
    diff = [f"{k} {assets.built_with[k]!r} vs {v!r}" for k, v in wanted.items() if assets.built_with[k] != v]
    if diff:
        raise EnvError(f"these BaseAssets were loaded with another config ({', '.join(diff)}); "
                       "call load_base with this environment's config")


def load_base(path: str | Path, config: EnvConfig) -> BaseAssets:
    """Load a base checkpoint (kind infinito-base) and its data; errors are one line."""
    path = Path(path)
    ckpt = load_checkpoint(path, kind=BASE_KIND)  # CheckpointError: missing, corrupt, wrong kind
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EnvError("env config asks for device cuda but CUDA is not available; use device 'cpu'")
    cfg = check_weights(ckpt)  # CheckpointError now if the weights do not fit the stored config
    seq_len = min(config.seq_len, cfg.context)
    info = ckpt.get("data") or {}
    try:
        tok = Tokenizer.from_bytes(tensor_to_bytes(ckpt["tokenizer"]))
        corpus = load_corpus(info.get("source"), builtin_size=ckpt["train_config"].get("builtin_size", "demo"),
                             train_split=info.get("train_split", "train"))
        cache_dir = Path(config.cache_dir) if config.cache_dir else path.parent / "cache"
        train_ids = encode_cached(corpus.train, tok, cache_dir, corpus.name + "-train")
        valid_ids = encode_cached(corpus.valid, tok, cache_dir, corpus.name + "-valid")
        # Fixed at construction: every step of every episode is measured on the same tokens,
        # so a change in perplexity is a change in the model, not in the batch.
        x, y = random_batch(valid_ids, config.measurement_batch_size, seq_len,
                            torch.Generator().manual_seed(config.measurement_seed))
        random_batch(train_ids, config.inner_batch_size, seq_len, torch.Generator())  # fails now if too short
    except DataError as e:
        raise EnvError(f"the corpus of base checkpoint {path} cannot be used: {e}") from None
    snapshot = {k: v.detach().to(device).clone() for k, v in ckpt["model"].items()}
    return BaseAssets(str(path), cfg.to_dict(), snapshot, train_ids, (x.to(device), y.to(device)), seq_len, device,
                      _asset_fields(config))

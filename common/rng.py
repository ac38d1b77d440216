"""Capture and restore random states as plain types and tensors (they go into weights_only checkpoints).

numpy's legacy state holds an ndarray and a Generator's state holds 128-bit ints;
both are converted so that `torch.load(weights_only=True)` accepts them.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_global_rng() -> dict:
    """Python's, numpy's legacy, torch's CPU and every CUDA device's random state."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_global_rng(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    # A checkpoint written on a GPU machine restores on CPU (and vice versa): CUDA
    # states are applied only where the devices match.
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def generator_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state  # nested dict of str and (big) ints


def restore_generator(rng: np.random.Generator, state: dict) -> None:
    rng.bit_generator.state = state


def episode_seed(seed: int, episode: int) -> int:
    """The seed of episode `episode` (0, 1, ...) of a stream started from `seed`, in [0, 2**63): the
    same pair always gives the same seed, and different pairs give unrelated ones (SeedSequence
    hashes them), so streams started from neighbouring seeds never share an episode's seed."""
    return int(np.random.SeedSequence((int(seed), int(episode))).generate_state(1, np.uint64)[0] >> np.uint64(1))

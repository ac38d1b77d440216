"""N scheduling environments over one base checkpoint, stepped together (common.vector.VectorEnv).

The base checkpoint and its data are loaded once; every environment gets its
own model copy. The models are small (a 4 x 128-token batch is a few 128-wide
matmuls), so one torch thread per environment on k threads uses k cores far
better than k torch threads inside one environment (docs/env.md has the
measurement): on 2 cores, `torch.set_num_threads(1)` and `workers=2`. Every
environment owns its model, optimiser and generators, so threads do not change
the results.
"""
from __future__ import annotations

from pathlib import Path

from common.vector import VectorEnv

from .base import BaseAssets, load_base
from .config import EnvConfig
from .errors import EnvError
from .scheduling import TextSchedulingEnv


def make_vec_env(base: str | Path | BaseAssets, num_envs: int, config: EnvConfig | None = None,
                 workers: int = 1, group_size: int = 1) -> VectorEnv:
    """`num_envs` TextSchedulingEnvs over one base checkpoint, loaded once, stepped on `workers`
    threads, in shared-seed groups of `group_size` (common/vector.py, "Groups"); usable as
    `PPO(vec_env, PPOConfig(group_size=group_size, ...))`."""
    if num_envs < 1 or workers < 1:
        raise EnvError(f"num_envs and workers must be >= 1, got {num_envs} and {workers}")
    config = config if config is not None else EnvConfig()
    assets = base if isinstance(base, BaseAssets) else load_base(base, config)
    return VectorEnv([TextSchedulingEnv(assets, config) for _ in range(num_envs)], workers, group_size)

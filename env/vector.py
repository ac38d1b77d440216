"""N independent environments stepped together in one process (the vector-env contract of docs/ppo.md).

`make_vec_env(base, n)` loads the base checkpoint and its data once and
gives every environment its own model copy. By default the environments are
stepped one after another; `workers=k` steps them on k threads instead. The
models are small (a 4 x 128-token batch is a few 128-wide matmuls), so one
torch thread per environment on k threads uses k cores far better than k
torch threads inside one environment (docs/env.md has the measurement): on 2
cores, `torch.set_num_threads(1)` and `workers=2`. Every environment owns its
model, optimiser and generators, so threads do not change the results;
environments whose model has dropout draw from torch's global RNG and are
always stepped sequentially.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import BaseAssets, load_base
from .config import EnvConfig
from .errors import EnvError
from .scheduling import TextSchedulingEnv


class VectorEnv:
    """Any list of Gymnasium-style envs with equal spaces, stepped together with auto-reset.

    - `reset(seed)` seeds env i with `seed + i`;
    - `step(actions)` returns stacked (obs, rewards, terminated, truncated, infos); an env
      whose episode ended is reset at once (unseeded: its data stream continues, so the
      run stays reproducible), its row of `obs` is the new episode's first observation,
      `infos["final_observation"][i]` the finished episode's last one and
      `infos["final_info"][i]` its last info (None for envs that did not finish);
    - `infos["env_infos"]`: the N info dicts of the returned observations;
    - `get_state()` / `set_state()`: every env's snapshot (plain types and tensors).
    """

    def __init__(self, envs: Sequence, workers: int = 1):
        if len(envs) == 0:
            raise EnvError("a vector env needs at least one environment")
        if workers < 1:
            raise EnvError(f"workers must be >= 1, got {workers}")
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        self._shape = tuple(self.observation_space.shape)
        for i, e in enumerate(self.envs):
            if tuple(e.observation_space.shape) != self._shape or e.action_space.n != self.action_space.n:
                raise EnvError(f"environment {i} has other spaces than environment 0; all must match")
        parallel = workers > 1 and self.num_envs > 1 and not any(getattr(e, "uses_global_rng", True) for e in self.envs)
        self._pool = ThreadPoolExecutor(min(workers, self.num_envs)) if parallel else None

    def reset(self, seed: int | None = None, options: dict | None = None):
        seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        reset = lambda env, s: env.reset(seed=s, options=options)  # noqa: E731
        results = list(map(reset, self.envs, seeds) if self._pool is None else self._pool.map(reset, self.envs, seeds))
        return np.stack([r[0] for r in results]).astype(np.float32), {"env_infos": [r[1] for r in results]}

    def step(self, actions):
        actions = np.asarray(actions).reshape(-1)
        if len(actions) != self.num_envs:
            raise EnvError(f"got {len(actions)} actions for {self.num_envs} environments; pass one per environment")
        N = self.num_envs
        if self._pool is None:
            results = [self._step_one(e, a) for e, a in zip(self.envs, actions)]
        else:
            results = list(self._pool.map(self._step_one, self.envs, actions))
        obs = np.stack([r[0] for r in results]).astype(np.float32, copy=False)
        rewards = np.array([r[1] for r in results], np.float64)
        terminated, truncated = np.array([r[2] for r in results], bool), np.array([r[3] for r in results], bool)
        infos = [r[4] for r in results]
        final_obs, final_info = None, None
        for i, r in enumerate(results):
            if r[5] is not None:
                if final_obs is None:
                    final_obs, final_info = np.zeros((N, *self._shape), np.float32), [None] * N
                final_obs[i], final_info[i] = r[5]
        packed = {"env_infos": infos}
        if final_obs is not None:
            packed["final_observation"], packed["final_info"] = final_obs, final_info
        return obs, rewards, terminated, truncated, packed

    @staticmethod
    def _step_one(env, action) -> tuple:
        """Step one env; reset it if its episode ended. -> (obs, r, term, trunc, info, (final_obs, final_info) | None)"""
        o, r, terminated, truncated, info = env.step(action)
        final = None
        if terminated or truncated:
            final = (o, info)
            o, info = env.reset()
        return o, r, bool(terminated), bool(truncated), info, final

    def get_state(self) -> dict | None:
        if not all(hasattr(e, "get_state") for e in self.envs):
            return None
        return {"envs": [e.get_state() for e in self.envs]}

    def set_state(self, state: dict) -> None:
        if len(state.get("envs", ())) != self.num_envs:
            raise EnvError(f"state holds {len(state.get('envs', ()))} environments, this vector env has "
                           f"{self.num_envs}; use the same number of environments")
        for e, s in zip(self.envs, state["envs"]):
            e.set_state(s)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for e in self.envs:
            e.close()


def make_vec_env(base: str | Path | BaseAssets, num_envs: int, config: EnvConfig | None = None,
                 workers: int = 1) -> VectorEnv:
    """`num_envs` TextSchedulingEnvs over one base checkpoint, loaded once, stepped on `workers`
    threads; usable as `PPO(vec_env, ...)`."""
    if num_envs < 1:
        raise EnvError(f"num_envs must be >= 1, got {num_envs}")
    config = config if config is not None else EnvConfig()
    assets = base if isinstance(base, BaseAssets) else load_base(base, config)
    return VectorEnv([TextSchedulingEnv(assets, config) for _ in range(num_envs)], workers)

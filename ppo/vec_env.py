"""Several Gymnasium-style environments stepped together in one process.

The vector-env contract (any object with these members can be given to ``PPO``):

- ``num_envs: int``; ``observation_space`` (``.shape``); ``action_space`` (``.n``).
- ``reset(seed=None) -> (obs [N, *S], infos: dict)``; environment i is seeded with
  ``seed + i`` when a seed is given.
- ``step(actions [N] int) -> (obs [N, *S], rewards [N], terminated [N] bool,
  truncated [N] bool, infos: dict)``. An environment whose episode ended is reset
  at once: its row of ``obs`` is the first observation of the next episode and
  ``infos["final_observation"][i]`` (present whenever any episode ended in this
  step) is the last observation of the finished one, used to bootstrap truncated
  episodes. ``infos["final_info"][i]`` is that step's info dict (None for envs that
  did not finish).
- Optional: ``infos["action_mask"]`` bool [N, A] of legal actions for the returned
  observations; ``get_state() -> dict`` / ``set_state(dict)`` holding only plain
  types and tensors, which lets a resumed run continue the environments exactly;
  ``close()``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np


class SyncVectorEnv:
    """Steps ``len(env_fns)`` environments one after another, with auto-reset.

    ``infos`` also carries ``"env_infos"``: the N per-environment info dicts of the
    returned observations (after an auto-reset, the reset's info).
    """

    def __init__(self, env_fns: Sequence[Callable[[], Any]], mask_key: Optional[str] = "action_mask"):
        if len(env_fns) == 0:
            raise ValueError("SyncVectorEnv needs at least one environment factory")
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        for i, env in enumerate(self.envs[1:], start=1):
            if tuple(env.observation_space.shape) != tuple(self.observation_space.shape) or \
                    env.action_space.n != self.action_space.n:
                raise ValueError(f"environment {i} has different spaces from environment 0; all must match")
        self.mask_key = mask_key
        self._obs_shape = tuple(self.observation_space.shape)

    def _pack(self, obs: list, infos: list) -> tuple:
        packed: dict = {"env_infos": infos}
        if self.mask_key is not None and all(self.mask_key in info for info in infos):
            packed[self.mask_key] = np.stack([np.asarray(info[self.mask_key], bool) for info in infos])
        return np.stack(obs).astype(np.float32, copy=False), packed

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        results = [env.reset(seed=None if seed is None else seed + i, options=options)
                   for i, env in enumerate(self.envs)]
        return self._pack([r[0] for r in results], [r[1] for r in results])

    def step(self, actions: np.ndarray):
        N = self.num_envs
        obs, infos = [None] * N, [None] * N
        rewards = np.zeros(N, np.float64)
        terminated = np.zeros(N, bool)
        truncated = np.zeros(N, bool)
        final_obs, final_info = None, None
        for i, env in enumerate(self.envs):
            o, r, te, tr, info = env.step(int(actions[i]))
            rewards[i], terminated[i], truncated[i] = r, te, tr
            if te or tr:
                if final_obs is None:
                    final_obs = np.zeros((N, *self._obs_shape), np.float32)
                    final_info = [None] * N
                final_obs[i], final_info[i] = o, info
                o, info = env.reset()
            obs[i], infos[i] = o, info
        obs_arr, packed = self._pack(obs, infos)
        if final_obs is not None:
            packed["final_observation"], packed["final_info"] = final_obs, final_info
        return obs_arr, rewards, terminated, truncated, packed

    def get_state(self) -> Optional[dict]:
        if not all(hasattr(env, "get_state") for env in self.envs):
            return None
        return {"envs": [env.get_state() for env in self.envs]}

    def set_state(self, state: dict) -> None:
        for env, s in zip(self.envs, state["envs"]):
            env.set_state(s)

    def close(self) -> None:
        for env in self.envs:
            if hasattr(env, "close"):
                env.close()


def is_env_factory(obj: Any) -> bool:
    """A class, or a callable that is not itself an environment (envs have step())."""
    return isinstance(obj, type) or (callable(obj) and not hasattr(obj, "step"))


def is_vec_env(env: Any) -> bool:
    return hasattr(env, "num_envs") and hasattr(env, "step") and hasattr(env, "reset")


def as_vec_env(env: Any, mask_key: Optional[str] = "action_mask"):
    """Accept a vector env, a list of env factories, one factory, or one env instance."""
    if is_vec_env(env):
        return env
    if isinstance(env, (list, tuple)):
        if not all(callable(fn) for fn in env):
            raise TypeError("a list of environments must hold factories (callables returning an env)")
        return SyncVectorEnv(env, mask_key=mask_key)
    if is_env_factory(env):
        return SyncVectorEnv([env], mask_key=mask_key)
    if hasattr(env, "reset") and hasattr(env, "step"):
        return SyncVectorEnv([lambda: env], mask_key=mask_key)
    raise TypeError(f"cannot use {type(env).__name__} as an environment: pass a vector env, "
                    "a list of env factories, a factory or an env with reset()/step()")

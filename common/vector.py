"""N Gymnasium-style environments stepped together with auto-reset: the vector-env contract.

Any object with these members can be given to `ppo.PPO`:

- `num_envs`; `observation_space` (`.shape`); `action_space` (`.n`).
- `reset(seed=None) -> (obs [N, *S], infos)`; environment i is seeded `seed + i`.
- Optional `group_size` (G, default 1): environments i with the same i // G form a group
  whose members start every episode from the same seed (PPO's group baseline,
  `PPOConfig.group_size`, needs it; see "Groups" below).
- `step(actions [N]) -> (obs [N, *S], rewards [N], terminated [N], truncated [N], infos)`.
  An environment whose episode ended is reset at once (unseeded: its own random
  stream continues, so the run stays reproducible): its row of `obs` is the next
  episode's first observation, `infos["final_observation"][i]` the finished
  episode's last one (to bootstrap a truncated episode) and `infos["final_info"][i]`
  its last info (None for environments that did not finish). Both keys are present
  only when some episode ended in this step.
- `infos["env_infos"]`: the N info dicts of the returned observations;
  `infos["action_mask"]`: bool [N, A] of legal actions, when every env gives one.
- Optional: `get_state() -> dict` / `set_state(dict)` of plain types and tensors (a
  resumed run then continues the environments exactly); `close()`.

`VectorEnv` is the one implementation. `workers=k` steps the environments on k
threads; that changes nothing in the results when every environment owns its
random generators (`uses_global_rng = False`); otherwise they are stepped on
one thread whatever `workers` says.

Groups (`VectorEnv(envs, group_size=G)`, G > 1 dividing N): every episode is
seeded, including the automatic resets. Member i of group g = i // G plays its
k-th episode since `reset(seed)` from `common.rng.episode_seed(seed + g, k)`, so
the members of a group meet the same seeds in the same order (the same data
stream, start state, ...) and different groups other ones; their returns then
differ only through their actions. Episodes of fixed length keep the members in
step; where lengths vary, a member that ends early starts its next episode at
once (the members keep the same order of seeds, no longer the same rows in
time; PPO's group baseline then compares only members at the same step of the
same episode). `reset(seed=None)` draws the base seed from fresh entropy.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from .policies import MASK_KEY
from .rng import episode_seed


class VectorEnv:
    def __init__(self, envs: Sequence, workers: int = 1, group_size: int = 1):
        if len(envs) == 0:
            raise ValueError("a vector env needs at least one environment")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if group_size < 1 or len(envs) % group_size:
            raise ValueError(f"group_size {group_size} does not divide the {len(envs)} environments; "
                             "use a divisor of their number")
        self.envs = list(envs)
        self.num_envs = len(self.envs)
        self.group_size = group_size
        # Grouped only: each environment's group seed (seed + i // G) and the number of episodes it
        # has begun since reset; its next episode's seed follows from the two (docstring, "Groups").
        self._group_seed = [0] * self.num_envs
        self._episodes = [0] * self.num_envs
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        self._shape = tuple(self.observation_space.shape)
        for i, e in enumerate(self.envs):
            if tuple(e.observation_space.shape) != self._shape or e.action_space.n != self.action_space.n:
                raise ValueError(f"environment {i} has other spaces than environment 0; all must match")
        threads = workers > 1 and self.num_envs > 1 and not any(getattr(e, "uses_global_rng", True) for e in self.envs)
        self._pool = ThreadPoolExecutor(min(workers, self.num_envs)) if threads else None

    def _map(self, fn, *iterables) -> list:
        return list(map(fn, *iterables) if self._pool is None else self._pool.map(fn, *iterables))

    def _pack(self, obs: list, infos: list) -> tuple[np.ndarray, dict]:
        packed: dict = {"env_infos": infos}
        if all(MASK_KEY in info for info in infos):
            packed[MASK_KEY] = np.stack([np.asarray(info[MASK_KEY], bool) for info in infos])
        return np.stack(obs).astype(np.float32, copy=False), packed

    def reset(self, seed: int | None = None, options: dict | None = None):
        if self.group_size > 1:
            base = int(np.random.SeedSequence().entropy % (1 << 62)) if seed is None else seed  # fresh, like Gymnasium
            self._group_seed = [base + i // self.group_size for i in range(self.num_envs)]
            self._episodes = [1] * self.num_envs
            seeds = [episode_seed(s, 0) for s in self._group_seed]
        else:
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        results = self._map(lambda env, s: env.reset(seed=s, options=options), self.envs, seeds)
        return self._pack([r[0] for r in results], [r[1] for r in results])

    def step(self, actions):
        actions = np.asarray(actions).reshape(-1)
        if len(actions) != self.num_envs:
            raise ValueError(f"got {len(actions)} actions for {self.num_envs} environments; pass one per environment")
        results = self._map(self._step_one, range(self.num_envs), actions)
        obs, packed = self._pack([r[0] for r in results], [r[4] for r in results])
        rewards = np.array([r[1] for r in results], np.float64)
        terminated, truncated = np.array([r[2] for r in results], bool), np.array([r[3] for r in results], bool)
        ended = [i for i, r in enumerate(results) if r[5] is not None]
        if ended:
            packed["final_observation"] = np.zeros((self.num_envs, *self._shape), np.float32)
            packed["final_info"] = [None] * self.num_envs
            for i in ended:
                packed["final_observation"][i], packed["final_info"][i] = results[i][5]
        return obs, rewards, terminated, truncated, packed

    def _step_one(self, i: int, action) -> tuple:
        """Step environment i -> (obs, reward, terminated, truncated, info, (final_obs, final_info) or None)."""
        env = self.envs[i]
        o, r, terminated, truncated, info = env.step(int(action))
        final = None
        if terminated or truncated:
            final = (o, info)
            o, info = env.reset(seed=self._next_seed(i))
        return o, r, bool(terminated), bool(truncated), info, final

    def _next_seed(self, i: int) -> int | None:
        """The seed of environment i's next episode: None (its own stream continues) unless grouped."""
        if self.group_size == 1:
            return None
        k, self._episodes[i] = self._episodes[i], self._episodes[i] + 1  # only i's own thread touches entry i
        return episode_seed(self._group_seed[i], k)

    def get_state(self) -> dict | None:
        if not all(hasattr(e, "get_state") for e in self.envs):
            return None
        state = {"envs": [e.get_state() for e in self.envs]}
        if self.group_size > 1:
            state["groups"] = {"size": self.group_size, "seed": list(self._group_seed),
                               "episodes": list(self._episodes)}
        return state

    def set_state(self, state: dict) -> None:
        if len(state.get("envs", ())) != self.num_envs:
            raise ValueError(f"the state holds {len(state.get('envs', ()))} environments, this vector env "
                             f"{self.num_envs}; use the same number of environments")
        groups = state.get("groups") or {"size": 1}
        if groups["size"] != self.group_size:
            raise ValueError(f"the state was saved with groups of {groups['size']} environments, this vector env "
                             f"has groups of {self.group_size}; use the same group size")
        for e, s in zip(self.envs, state["envs"]):
            e.set_state(s)
        if self.group_size > 1:
            self._group_seed, self._episodes = [int(v) for v in groups["seed"]], [int(v) for v in groups["episodes"]]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for e in self.envs:
            if hasattr(e, "close"):
                e.close()


def is_vec_env(env: Any) -> bool:
    return hasattr(env, "num_envs") and hasattr(env, "step") and hasattr(env, "reset")


def is_env_factory(obj: Any) -> bool:
    """A class, or a callable that is not itself an environment (environments have step())."""
    return isinstance(obj, type) or (callable(obj) and not hasattr(obj, "step"))


def as_vec_env(env: Any, group_size: int = 1) -> Any:
    """A vector env as given, or one built from a list of environments or factories, one factory or one env
    (with groups of `group_size`)."""
    if is_vec_env(env):
        return env
    items = list(env) if isinstance(env, (list, tuple)) else [env]
    if not all(is_env_factory(x) or (hasattr(x, "reset") and hasattr(x, "step")) for x in items):
        raise TypeError(f"cannot use {type(env).__name__} as an environment: pass a vector env, a list of "
                        "environments or factories, a factory or an env with reset()/step()")
    return VectorEnv([x() if is_env_factory(x) else x for x in items], group_size=group_size)

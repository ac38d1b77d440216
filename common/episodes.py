"""The one episode runner: any policy (common.policies' protocol) over seeded episodes.

Episode k starts from `env.reset(seed=seed + k)`, so every policy evaluated with
the same `seed` meets the same start states and data streams: differences
between policies are differences of decisions, not of luck. Given several
environments, the episodes are split over them in seed order and stepped on
threads; the result is the same as on one environment, only sooner.
"""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .distributed import share, spread_episodes


@dataclass
class Episode:
    """One finished episode: its seed, the reset's info, and per step the action, reward and info."""
    seed: int
    first_info: dict
    actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    infos: list = field(default_factory=list)

    @property
    def total_reward(self) -> float:
        return float(sum(self.rewards))

    @property
    def length(self) -> int:
        return len(self.actions)


def play(env, policy: Callable, seed: int, max_steps: int | None = None) -> Episode:
    """One episode of `policy` on `env` from `reset(seed=seed)`; with `max_steps`, only its
    first steps (the environment is left where they took it)."""
    if hasattr(policy, "reset"):
        policy.reset(seed)
    obs, info = env.reset(seed=seed)
    ep = Episode(seed, info)
    done = max_steps == 0
    while not done:
        action = policy(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        if hasattr(policy, "observe"):  # a bandit learns from the reward (common.policies.Exp3S)
            policy.observe(action, reward)
        done = bool(terminated or truncated)
        ep.actions.append(int(action))
        ep.rewards.append(float(reward))
        ep.infos.append(info)
        done = done or (max_steps is not None and ep.length >= max_steps)
    return ep


def run_episodes(envs, policy: Callable, n_episodes: int, seed: int = 0,
                 on_episode: Callable[[], None] | None = None) -> list[Episode]:
    """`n_episodes` episodes seeded seed, seed+1, ... on one environment or a list of them.

    With several environments each gets a contiguous block of seeds and a deep copy of
    `policy` (a policy may hold state, e.g. a generator), stepped on its own thread. An
    environment that draws from a global random generator (`uses_global_rng`, True when
    it does not say) would make threads change results, so those run on one thread.
    In a distributed job every rank must call it: each plays its share of the seeds
    and all get every episode (common.distributed.spread_episodes). `on_episode()` is called
    after each episode this process plays (a progress bar)."""
    if n_episodes < 1:
        raise ValueError("n_episodes must be >= 1")
    return spread_episodes(lambda count, start: _play_here(envs, policy, count, start, on_episode or _nothing),
                           n_episodes, seed)


def _nothing() -> None:
    pass


def _play_here(envs, policy: Callable, n_episodes: int, seed: int, on_episode: Callable[[], None]) -> list[Episode]:
    if n_episodes == 0:
        return []
    envs = list(envs)[:n_episodes] if isinstance(envs, Sequence) else [envs]

    def counted(env, mine, episode_seed: int) -> Episode:
        ep = play(env, mine, episode_seed)
        on_episode()
        return ep
    if len(envs) == 1 or any(getattr(e, "uses_global_rng", True) for e in envs):
        return [counted(envs[0], policy, seed + k) for k in range(n_episodes)]
    blocks = [share(n_episodes, len(envs), i) for i in range(len(envs))]
    starts, counts = [seed + b.start for b in blocks], [len(b) for b in blocks]

    def block(env, start: int, count: int) -> list[Episode]:
        mine = copy.deepcopy(policy)
        return [counted(env, mine, start + k) for k in range(count)]

    with ThreadPoolExecutor(len(envs)) as pool:
        return [ep for part in pool.map(block, envs, starts, counts) for ep in part]

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
    """One finished episode: its seed, the reset's info, and per step the action, reward and info.
    `cost`: the environment steps it paid for — its length when played alone, less when it shared
    steps with episodes of other policies (`play_together`)."""
    seed: int
    first_info: dict
    actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    infos: list = field(default_factory=list)
    cost: float = 0.0

    @property
    def total_reward(self) -> float:
        return float(sum(self.rewards))

    @property
    def length(self) -> int:
        return len(self.actions)


def play(env, policy: Callable, seed: int, max_steps: int | None = None) -> Episode:
    """One episode of `policy` on `env` from `reset(seed=seed)`; with `max_steps`, only its
    first steps (the environment is left where they took it)."""
    return play_together(env, [policy], seed, max_steps)[0]


def play_together(env, policies: Sequence[Callable], seed: int, max_steps: int | None = None) -> list[Episode]:
    """Each policy's episode from `reset(seed=seed)`, the same as `play` gives it alone, at the
    cost of one environment step per distinct action: policies that choose the same action from
    the same state share that step (and its cost, split between them). Where they part, the
    environment's state is saved (`env.get_state()`) and each group continues from it in turn
    (`env.set_state`), so this needs an environment whose saved state holds everything its next
    steps depend on, and policies that decide from what they were shown (observations, rewards,
    their own state) — not from a random stream shared with another policy."""
    for policy in policies:
        if hasattr(policy, "reset"):
            policy.reset(seed)
    obs, info = env.reset(seed=seed)
    episodes = [Episode(seed, info) for _ in policies]
    members, done = list(range(len(policies))), max_steps == 0
    waiting: list = []  # (saved state, members, the action they chose there): groups still to play
    while not done or waiting:
        if done:
            saved, members, action = waiting.pop()
            env.set_state(saved)
        else:
            groups: dict[int, list] = {}
            for i in members:
                groups.setdefault(int(policies[i](obs, info)), []).append(i)
            (action, members), *others = groups.items()
            if others:
                saved = env.get_state()
                waiting += [(saved, group, a) for a, group in others]
        obs, reward, terminated, truncated, info = env.step(action)
        for i in members:
            if hasattr(policies[i], "observe"):  # a bandit learns from the reward (common.policies.Exp3S)
                policies[i].observe(action, reward)
            ep = episodes[i]
            ep.actions.append(action)
            ep.rewards.append(float(reward))
            ep.infos.append(info)
            ep.cost += 1 / len(members)
        done = bool(terminated or truncated) or (max_steps is not None and episodes[members[0]].length >= max_steps)
    return episodes


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
    return run_together(envs, [policy], n_episodes, seed, on_episode)[0]


def run_together(envs, policies: Sequence[Callable], n_episodes: int, seed: int = 0,
                 on_episode: Callable[[], None] | None = None) -> list[list[Episode]]:
    """As `run_episodes`, for several policies on the same seeds, played side by side
    (`play_together`: the steps they agree on are paid once) -> each policy's episodes."""
    if n_episodes < 1:
        raise ValueError("n_episodes must be >= 1")
    bundles = spread_episodes(lambda count, start: _play_here(envs, list(policies), count, start,
                                                              on_episode or _nothing), n_episodes, seed)
    return [[bundle[i] for bundle in bundles] for i in range(len(policies))]


def _nothing() -> None:
    pass


def _play_here(envs, policies: list, n_episodes: int, seed: int, on_episode: Callable[[], None]) -> list[list]:
    """Seeds seed .. seed+n-1 on this process's environments -> per seed, every policy's episode."""
    if n_episodes == 0:
        return []
    envs = list(envs)[:n_episodes] if isinstance(envs, Sequence) else [envs]

    def counted(env, mine, episode_seed: int) -> list[Episode]:
        bundle = play_together(env, mine, episode_seed)
        for _ in bundle:
            on_episode()
        return bundle
    if len(envs) == 1 or any(getattr(e, "uses_global_rng", True) for e in envs):
        return [counted(envs[0], policies, seed + k) for k in range(n_episodes)]
    blocks = [share(n_episodes, len(envs), i) for i in range(len(envs))]
    starts, counts = [seed + b.start for b in blocks], [len(b) for b in blocks]

    def block(env, start: int, count: int) -> list[list]:
        mine = copy.deepcopy(policies)
        return [counted(env, mine, start + k) for k in range(count)]

    with ThreadPoolExecutor(len(envs)) as pool:
        return [bundle for part in pool.map(block, envs, starts, counts) for bundle in part]

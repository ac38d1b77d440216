"""Run any policy over seeded episodes and summarise returns and metric traces.

Episode k starts from `env.reset(seed=seed + k)`, so every policy evaluated
with the same `seed` meets the same data streams: differences between
policies are differences of schedule, not of luck.
"""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from .stats import summarize

MEASURED = ("consciousness", "phi", "loss_text", "loss_phi", "memory_util", "ppl")  # what any reward may read
TRACE_KEYS = ("reward", "action", "phi", "consciousness", "ppl", "loss_text", "loss_phi", "memory_util", "t_norm")


@dataclass
class PolicyRuns:
    """Per-episode returns and per-step traces (`traces[k][key]` is a list over the steps of
    episode k; `traces[k]["initial"]` is the reset's measurement; `traces[k]["terms"]` the
    episode's total of each reward term)."""
    name: str
    seeds: list
    returns: list = field(default_factory=list)
    lengths: list = field(default_factory=list)
    traces: list = field(default_factory=list)

    def summary(self, phi_band: tuple = (3.0, 6.0)) -> dict:
        """Return mean/std/95% CI, and over all steps: Φ mean, % of steps with Φ in the band,
        C mean, memory_util mean; final perplexity averaged over episodes; action mix."""
        def flat(key: str) -> list:
            return [v for tr in self.traces for v in tr[key]]

        steps = flat("phi")
        n_steps = max(len(steps), 1)
        low, high = phi_band
        actions = flat("action")
        n_actions = max(actions, default=-1) + 1
        return {
            "name": self.name,
            "return": summarize(self.returns),
            "phi_mean": sum(steps) / n_steps,
            "phi_in_band_pct": 100.0 * sum(low <= p <= high for p in steps) / n_steps,
            "c_mean": sum(flat("consciousness")) / n_steps,
            "final_ppl": summarize([tr["ppl"][-1] for tr in self.traces])["mean"],
            "memory_util_mean": sum(flat("memory_util")) / n_steps,
            "action_mix": [actions.count(a) / max(len(actions), 1) for a in range(n_actions)],
            "term_returns": {t: sum(tr["terms"].get(t, 0.0) for tr in self.traces) / max(len(self.traces), 1)
                             for t in (self.traces[0]["terms"] if self.traces else {})},
            "episodes": len(self.returns),
            "mean_length": sum(self.lengths) / max(len(self.lengths), 1),
        }


def run_policy(env, policy: Callable, n_episodes: int = 20, seed: int = 0, name: str | None = None,
               on_episode: Callable[[int, float], None] | None = None) -> PolicyRuns:
    """Evaluate `policy(obs, info) -> action` on `n_episodes` episodes seeded seed, seed+1, ..."""
    if n_episodes < 1:
        raise ValueError("n_episodes must be >= 1")
    runs = PolicyRuns(name or getattr(policy, "name", type(policy).__name__), [seed + k for k in range(n_episodes)])
    for k, s in enumerate(runs.seeds):
        if hasattr(policy, "reset"):
            policy.reset(s)
        obs, info = env.reset(seed=s)
        trace = {key: [] for key in TRACE_KEYS}
        trace["initial"] = {key: float(info[key]) for key in MEASURED}
        trace["terms"] = {}
        total, done = 0.0, False
        while not done:
            action = policy(obs, info)
            obs, r, terminated, truncated, info = env.step(action)
            total += float(r)
            done = bool(terminated or truncated)
            trace["reward"].append(float(r))
            trace["action"].append(int(action))
            for term, value in info["reward_terms"].items():
                trace["terms"][term] = trace["terms"].get(term, 0.0) + float(value)
            for key in TRACE_KEYS[2:]:
                trace[key].append(float(info[key]))
        runs.returns.append(total)
        runs.lengths.append(len(trace["reward"]))
        runs.traces.append(trace)
        if on_episode is not None:
            on_episode(k, total)
    return runs


def rescore(runs: PolicyRuns, reward, name: str | None = None) -> PolicyRuns:
    """The same episodes' returns under another reward config.

    Exact, because the reward never feeds back into the dynamics (a policy sees
    observations, not rewards) and is a pure function of consecutive measurements.
    """
    out = PolicyRuns(name or runs.name, list(runs.seeds), lengths=list(runs.lengths))
    for tr in runs.traces:
        prev = tr["initial"]
        rewards, totals = [], dict.fromkeys(reward.terms, 0.0)
        for t in range(len(tr["reward"])):
            cur = {key: tr[key][t] for key in MEASURED}
            r, terms = reward(None if (t == 0 and reward.zero_first_step) else prev, cur)
            rewards.append(r)
            totals = {k: totals[k] + v for k, v in terms.items()}
            prev = cur
        out.returns.append(sum(rewards))
        out.traces.append({**tr, "reward": rewards, "terms": totals})
    return out


def action_independent_share(term_returns: dict) -> dict:
    """How much of the controls' returns no decision can change, from each policy's mean episode
    total of every reward term (`{policy: {term: total}}`, e.g. PolicyRuns.summary()["term_returns"]).

    A term's action-independent part is what every policy pays (or earns) alike: the smallest
    magnitude among the policies when all have the same sign, else 0. The share is the sum of
    those parts over the sum of the terms' mean magnitudes: near 1, the return is a constant the
    schedule cannot move (reward v2 on a model below its perplexity band); near 0, every term
    depends on the decisions. Returns {"share": s, "terms": {term: (common part, mean magnitude)}}.
    """
    terms = {t for totals in term_returns.values() for t in totals}
    parts, common_sum, total_sum = {}, 0.0, 0.0
    for t in sorted(terms):
        values = [totals.get(t, 0.0) for totals in term_returns.values()]
        same_sign = all(v > 0 for v in values) or all(v < 0 for v in values)
        common = min(abs(v) for v in values) if same_sign else 0.0
        magnitude = sum(abs(v) for v in values) / len(values)
        parts[t] = (common, magnitude)
        common_sum, total_sum = common_sum + common, total_sum + magnitude
    return {"share": common_sum / total_sum if total_sum > 0 else 0.0, "terms": parts}


def run_policy_parallel(envs, policy: Callable, n_episodes: int = 20, seed: int = 0,
                        name: str | None = None) -> PolicyRuns:
    """`run_policy` with the episodes split over several environments stepped on threads.

    Episode k still starts from `reset(seed=seed + k)`, so the result equals
    `run_policy(env, policy, n_episodes, seed)` on one environment, only faster
    (each environment owns its model; one torch thread each, as in docs/env.md).
    Every thread gets its own deep copy of `policy` (a policy may hold state,
    e.g. a random generator).
    """
    if n_episodes < 1:
        raise ValueError("n_episodes must be >= 1")
    envs = list(envs)[:n_episodes]
    if len(envs) == 1 or any(getattr(e, "uses_global_rng", True) for e in envs):
        return run_policy(envs[0], policy, n_episodes, seed, name)
    per, rest = divmod(n_episodes, len(envs))
    chunks, start = [], seed
    for i in range(len(envs)):
        count = per + (i < rest)
        chunks.append((start, count))
        start += count
    with ThreadPoolExecutor(len(envs)) as pool:
        parts = list(pool.map(lambda e, c: run_policy(e, copy.deepcopy(policy), c[1], c[0], name), envs, chunks))
    out = PolicyRuns(parts[0].name, [s for p in parts for s in p.seeds])
    for p in parts:
        out.returns += p.returns
        out.lengths += p.lengths
        out.traces += p.traces
    return out

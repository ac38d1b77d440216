"""Policies over seeded episodes of the scheduling environment: returns and metric traces.

Episodes are played by the one runner (`common.episodes.run_episodes`): episode k
starts from `env.reset(seed=seed + k)`, so every policy evaluated with the same
`seed` meets the same data streams, and differences between policies are
differences of schedule, not of luck. This module turns the episodes into the
traces and summaries the environment's reports read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from common.episodes import Episode, run_together
from common.stats import summarize
from infinito.config import PHI_BAND

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
    costs: list = field(default_factory=list)  # environment steps each episode paid (Episode.cost)

    def summary(self, phi_band: tuple = PHI_BAND) -> dict:
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


def trace_of(ep: Episode) -> dict:
    """One episode as lists over its steps (`TRACE_KEYS`), the reset's measurement (`initial`)
    and the episode's total of each reward term (`terms`)."""
    trace = {"reward": list(ep.rewards), "action": list(ep.actions)}
    for key in TRACE_KEYS[2:]:
        trace[key] = [float(info[key]) for info in ep.infos]
    trace["initial"] = {key: float(ep.first_info[key]) for key in MEASURED}
    trace["terms"] = {}
    for info in ep.infos:
        for term, value in info["reward_terms"].items():
            trace["terms"][term] = trace["terms"].get(term, 0.0) + float(value)
    return trace


def run_policy(envs, policy: Callable, n_episodes: int = 20, seed: int = 0, name: str | None = None,
               on_episode: Callable[[], None] | None = None) -> PolicyRuns:
    """`policy(obs, info) -> action` on `n_episodes` episodes seeded seed, seed+1, ... of one
    environment or a list of them (stepped on threads: same result, sooner; each environment
    owns its model, one torch thread each as in docs/env.md); `on_episode()` after each one."""
    name = name or getattr(policy, "name", type(policy).__name__)
    return run_policies(envs, {name: policy}, n_episodes, seed, on_episode)[name]


def run_policies(envs, policies: dict, n_episodes: int = 20, seed: int = 0,
                 on_episode: Callable[[], None] | None = None) -> dict:
    """`run_policy` for {name: policy} on the same seeds, played side by side: where policies
    choose the same mode from the same state the environment trains once for all of them
    (common.episodes.play_together; the episodes are those each would play alone) -> {name: PolicyRuns}."""
    played = run_together(envs, list(policies.values()), n_episodes, seed, on_episode)
    return {name: PolicyRuns(name, [ep.seed for ep in episodes], [ep.total_reward for ep in episodes],
                             [ep.length for ep in episodes], [trace_of(ep) for ep in episodes],
                             [ep.cost for ep in episodes])
            for name, episodes in zip(policies, played)}


def rescore(runs: PolicyRuns, reward, name: str | None = None) -> PolicyRuns:
    """The same episodes' returns under another reward config.

    The episode's last step is scored as the last (the `final` reward prices it); episodes cut
    short before the environment's end are therefore scored as if they ended there. Exact for
    policies that see observations, not rewards (not for the bandit,
    common.policies.Exp3S): the reward then never feeds back into the dynamics,
    and it is a pure function of consecutive measurements.
    """
    out = PolicyRuns(name or runs.name, list(runs.seeds), lengths=list(runs.lengths))
    for tr in runs.traces:
        prev = tr["initial"]
        rewards, totals = [], dict.fromkeys(reward.terms, 0.0)
        n = len(tr["reward"])
        for t in range(n):
            cur = {key: tr[key][t] for key in MEASURED}
            r, terms = reward.score_decision(t, prev, cur, last=t == n - 1)
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

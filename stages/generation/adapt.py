"""`generate.py --agent`: the trained scheduler steers a short adaptation of a copy of the model.

The agent plays the first decisions of one episode of the environment it was
trained in (same config, same episode length, so its observation's time
features advance at the rate it learned), greedily, from `reset(seed)`. The
environment's model after those decisions is the adapted model; the base
checkpoint on disk is untouched.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from common.episodes import Episode, play
from env import TextSchedulingEnv
from infinito.model import Infinito
from ppo import TrainedPolicy

from ..cli import UserError
from ..identity import check_base
from ..rl.record import RunRecord


@dataclass
class Adaptation:
    """What the scheduler chose and what the environment measured, per decision."""
    agent: str
    global_step: int
    base: str
    modes: tuple
    band: tuple                  # the Φ band the agent's reward calls healthy
    episode: Episode             # the decisions played: actions, rewards, infos; first_info is the reset's

    def series(self, key: str) -> list[float]:
        return [float(info[key]) for info in self.episode.infos]

    def summary(self) -> dict:
        ep, phi = self.episode, self.series("phi")
        n, (lo, hi) = ep.length, self.band
        counts = {m: ep.actions.count(a) for a, m in enumerate(self.modes)}
        return {
            "agent": self.agent, "agent_step": self.global_step, "base": self.base, "seed": ep.seed, "steps": n,
            "actions": counts, "action_pct": {m: 100.0 * c / n for m, c in counts.items()},
            "phi": {"mean": statistics.fmean(phi), "std": statistics.pstdev(phi), "min": min(phi), "max": max(phi)},
            "phi_band": [lo, hi], "phi_in_band_pct": 100.0 * sum(lo <= p <= hi for p in phi) / n,
            "c_mean": statistics.fmean(self.series("consciousness")),
            "ppl_initial": float(ep.first_info["ppl"]), "ppl_final": self.series("ppl")[-1],
            "total_reward": ep.total_reward,
        }

    def describe(self) -> list[str]:
        s = self.summary()
        mix = ", ".join(f"{m} {c} ({s['action_pct'][m]:.0f}%)" for m, c in s["actions"].items())
        phi = s["phi"]
        band = f"in the reward's band [{self.band[0]:g}, {self.band[1]:g}] on {s['phi_in_band_pct']:.0f}% of steps"
        return [
            f"agent {self.agent} (PPO step {self.global_step:,}) adapted {self.base} for {s['steps']} steps "
            f"(seed {s['seed']}):",
            f"  actions     {mix}",
            f"  Φ           mean {phi['mean']:.3f}, std {phi['std']:.3f}, range [{phi['min']:.3f}, {phi['max']:.3f}]; "
            f"{band}",
            f"  C           mean {s['c_mean']:.3f}",
            f"  perplexity  {s['ppl_initial']:.2f} -> {s['ppl_final']:.2f} (held-out batch, after reset -> after "
            f"the last step)",
            f"  reward      total {s['total_reward']:+.3f}",
        ]


def load_agent(agent_path: str, ckpt_flag: str | None) -> tuple[TrainedPolicy, str]:
    """The trained policy and the base checkpoint it runs on (checked by its content digest)."""
    policy = TrainedPolicy.load(agent_path)  # missing / corrupt / wrong kind -> CheckpointError
    record = RunRecord.read(policy.extra, agent_path)
    base = str(check_base(ckpt_flag or record.base, record, agent_path, "--ckpt"))
    return policy, base


def episode_length(policy: TrainedPolicy) -> int:
    return RunRecord.read(policy.extra, "the agent").env_config.max_steps


def adapt_with_agent(policy: TrainedPolicy, agent_path: str, base: str | Path, steps: int | None, seed: int,
                     device: torch.device) -> tuple[Infinito, Adaptation]:
    """The agent's first `steps` decisions (default: a whole episode) -> (adapted model, trace)."""
    env_cfg = RunRecord.read(policy.extra, agent_path).env_config.replace(device=device.type)
    if policy.n_actions != len(env_cfg.modes):
        raise UserError(f"{agent_path} has {policy.n_actions} actions but its environment config "
                        f"{len(env_cfg.modes)} modes; the checkpoint is inconsistent")
    steps = env_cfg.max_steps if steps is None else steps
    if steps > env_cfg.max_steps:
        raise UserError(f"--agent-steps {steps} is more than the {env_cfg.max_steps} decisions of the episodes "
                        f"{agent_path} was trained on; pass at most {env_cfg.max_steps}")
    env = TextSchedulingEnv(base, env_cfg)
    episode = play(env, policy, seed, max_steps=steps)
    trace = Adaptation(agent_path, policy.global_step, str(base), env_cfg.mode_names, env_cfg.reward.band, episode)
    return env.model.eval(), trace

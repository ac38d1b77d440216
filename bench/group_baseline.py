"""Shared-seed groups: which advantage baseline lowers the policy gradient's variance and learns fastest?

    python bench/group_baseline.py            # ~2 minutes on 2 cores, one torch thread
    python bench/group_baseline.py --quick    # fewer rollouts and seeds (~40 s)

On ppo/shared_noise.py's environment, 8 environments, three versions of it (ENVS): every
reward carries the episode's offset (std 10, set by its seed) and step noise (std 1, also from
the seed), action 1 adds 0.5, in episodes of 4 or of 16 steps; and one tuned to the spread
measured on demo-lr (an episode's return has std ~8 over seeds, the paired difference of two
schedules on the same seeds std ~2.7): offset std 2, no step noise, action 1 adds 0.5 plus
luck of std 1.85 that the seed sets (return std 8.4, paired difference std 2.7 for random
actions), 4 steps. Four settings (PPOConfig):

  GAE                    group_size 1, the default PPO: every environment its own seeds
  GAE, shared seeds      group_size 4, group_baseline "none"
  LOO                    group_size 4, group_baseline "loo": return-to-go minus the others' mean
  LOO+GAE                group_size 4, group_baseline "loo+gae": GAE's advantage minus the others' mean

1. Variance of the policy-gradient estimate: the gradient of -mean(A log pi) over the policy's
   parameters from one rollout of 8 x 16 decisions (ppo.shared_noise.rollout_gradients),
   repeated on fresh rollouts at a fixed policy; its total variance (the trace of the covariance)
   and the factor by which it is below GAE's. At the initial policy, and after 2,048 steps of
   LOO+GAE training, where the shared-seed settings are compared on the very same rollouts.
2. Learning: P(action 1) (exact, from the policy, averaged over the episode's steps) after
   8,192 steps, over training seeds, and the first step where it reaches 0.9.

The published numbers: docs/ppo.md, "Shared-seed groups".
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.machine import cpu_model  # noqa: E402
from ppo import PPO, FunctionCallback, PPOConfig  # noqa: E402
from ppo.shared_noise import SharedNoiseEnv, rollout_gradients  # noqa: E402

SETTINGS = {"GAE": (1, "none"), "GAE, shared seeds": (4, "none"), "LOO": (4, "loo"), "LOO+GAE": (4, "loo+gae")}
NUM_ENVS = 8
ENVS = {"shared noise, episodes of 4 steps": dict(horizon=4),
        "shared noise, episodes of 16 steps": dict(horizon=16),
        "as spread as demo-lr, episodes of 4 steps": dict(horizon=4, offset_std=2.0, noise_std=0.0,
                                                          interaction_std=1.85)}


def config(group: tuple[int, str], seed: int, total: int = 8192) -> PPOConfig:
    return PPOConfig(total_timesteps=total, n_steps=16, minibatch_size=64, n_epochs=4, learning_rate=1e-3, ent_coef=0.0,
                     pi_hidden=(32,), vf_hidden=(32,), progress_bar=False, seed=seed, group_size=group[0],
                     group_baseline=group[1])


def make_agent(env: dict, group: tuple[int, str], seed: int, total: int = 8192) -> PPO:
    return PPO([lambda: SharedNoiseEnv(**env)] * NUM_ENVS, config(group, seed, total))


def p_good(agent: PPO, horizon: int) -> float:
    """P(action 1) of the policy, averaged over the episode's observations."""
    obs = np.array([[(horizon - t) / horizon] for t in range(horizon)], np.float32)
    with torch.no_grad():
        logits = agent.policy.logits(torch.from_numpy(agent.obs_normalizer(obs, update=False)))
    return torch.softmax(logits, -1)[:, 1].mean().item()


def total_variance(grads: np.ndarray) -> float:
    return float(grads.var(0, ddof=1).sum())


def variance_at_init(env: dict, n: int) -> dict:
    return {name: total_variance(rollout_gradients(make_agent(env, group, seed=0), n))
            for name, group in SETTINGS.items()}


def variance_after_training(env: dict, n: int, steps: int = 2048) -> dict:
    """Train with LOO+GAE, then every shared-seed setting from that checkpoint: the same RNG
    states, so the same rollouts, only the advantages differ."""
    agent = make_agent(env, SETTINGS["LOO+GAE"], seed=0, total=steps).learn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trained.pt")
        agent.save(path)
        envs = [lambda: SharedNoiseEnv(**env)] * NUM_ENVS
        resumed = lambda kind: PPO.load(path, envs, config=agent.config.replace(group_baseline=kind))  # noqa: E731
        return {name: total_variance(rollout_gradients(resumed(kind), n))
                for name, (size, kind) in SETTINGS.items() if size > 1}


def learning(env: dict, seeds: int) -> dict:
    out = {}
    for name, group in SETTINGS.items():
        finals, reached = [], []
        for seed in range(seeds):
            curve = []
            record = FunctionCallback(on_update_end=lambda tr: curve.append((tr.global_step, p_good(tr, env["horizon"]))))
            make_agent(env, group, seed).learn(callbacks=[record])
            finals.append(curve[-1][1])
            reached.append(next((step for step, p in curve if p >= 0.9), None))
        out[name] = (finals, reached)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="100 rollouts and 3 seeds instead of 300 and 5")
    args = p.parse_args()
    torch.set_num_threads(1)
    n, seeds = (100, 3) if args.quick else (300, 5)
    start = time.perf_counter()
    print(f"{cpu_model()}, 1 torch thread; {NUM_ENVS} environments, rollouts of 16 steps")
    for title, env in ENVS.items():
        print(f"\n## {title}\n")
        init, trained = variance_at_init(env, n), variance_after_training(env, n)
        print(f"total variance of the policy gradient over {n} rollouts (factor below GAE's at the initial policy; "
              "after 2,048 steps of LOO+GAE training, below GAE-on-shared-seeds' on the same rollouts)\n")
        print("| setting | initial policy | factor | after training | factor |")
        print("|---|---|---|---|---|")
        for name in SETTINGS:
            after = trained.get(name)
            cells = (f"{after:.3g} | {trained['GAE, shared seeds'] / after:.0f}x" if after is not None else "— | —")
            print(f"| {name} | {init[name]:.3g} | {init['GAE'] / init[name]:.0f}x | {cells} |")
        print(f"\nlearning: P(action 1) after 8,192 steps and first step at P >= 0.9, {seeds} seeds\n")
        print("| setting | P(action 1), mean [min, max] | first step at 0.9 (per seed) |")
        print("|---|---|---|")
        for name, (finals, reached) in learning(env, seeds).items():
            steps = ", ".join("—" if r is None else f"{r:,}" for r in reached)
            print(f"| {name} | {statistics.mean(finals):.3f} [{min(finals):.3f}, {max(finals):.3f}] | {steps} |")
    print(f"\n{time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

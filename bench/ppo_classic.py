"""PPO on cart-pole: does it learn, and how fast does it run?

    python bench/ppo_classic.py            # everything (~6 minutes on 2 cores)
    python bench/ppo_classic.py --quick    # one seed, shorter throughput runs (~2 minutes)
    python bench/ppo_classic.py --throughput-only --repeats 5   # part 2 alone (before/after a change)

1. Learning: the default config (n_steps 2048, minibatch 64, 10 epochs, lr 3e-4,
   1 environment) for 100k steps on 3 seeds, evaluated deterministically every
   rollout on 10 seeded episodes. Reports the first step at which the evaluation
   mean reached the maximum return 500.
2. Throughput (no callbacks, no progress bar): env steps per second with the
   defaults and 1 environment, and with 8 environments and lighter updates
   (n_steps 256 per env, 4 epochs of 4 minibatches of 512), one torch thread.
   Wall-clock rates depend on what else runs on the machine, so the process CPU
   time (one thread = one core) is reported beside them, with the load average.
3. Cost per action and per minibatch update with one and two torch threads (the
   measurement behind the default ``torch_threads=1``).

The published numbers: bench/README.md, "PPO on cart-pole", and docs/ppo.md, "Speed".
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from ppo import PPO, EvalCallback, PPOConfig  # noqa: E402
from ppo.cartpole import CartPoleEnv, CartPoleVecEnv  # noqa: E402

LIGHT = dict(n_steps=256, minibatch_size=512, n_epochs=4)  # 8 envs: 2048 samples, 4 minibatches


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def learning_run(seed: int, total: int) -> dict:
    cfg = PPOConfig(total_timesteps=total, seed=seed, progress_bar=False)
    agent = PPO([CartPoleEnv], cfg)
    # One environment: cart-pole steps are pure Python, so episodes on threads would only
    # contend for the GIL (common.episodes steps a list of environments on threads).
    evaluator = EvalCallback(CartPoleEnv(), every=cfg.n_steps, n_episodes=10, deterministic=True, seed=10_000)
    start = time.perf_counter()
    agent.learn(callbacks=[evaluator])
    wall = time.perf_counter() - start
    solved = [r.step for r in agent.eval_history if r.mean_reward >= 500.0]
    last = agent.eval_history[-1]
    return {"seed": seed, "first_500": solved[0] if solved else None, "evals_at_500": len(solved),
            "evals": len(agent.eval_history), "final_mean": last.mean_reward, "final_std": last.std_reward,
            "wall_s": wall}


def throughput_run(envs, cfg: PPOConfig) -> tuple[float, float]:
    """(wall-clock steps/s, steps per CPU-second) over cfg.total_timesteps, after a
    one-rollout warm-up that is not timed."""
    agent = PPO(envs, cfg)
    agent.learn(total_timesteps=cfg.n_steps * agent.num_envs)
    steps0 = agent.global_step
    wall0, cpu0 = time.perf_counter(), time.process_time()
    agent.learn(total_timesteps=steps0 + cfg.total_timesteps)
    steps = agent.global_step - steps0
    return steps / (time.perf_counter() - wall0), steps / (time.process_time() - cpu0)


def throughput(label: str, make_envs, cfg: PPOConfig, repeats: int) -> None:
    runs = [throughput_run(make_envs(), cfg) for _ in range(repeats)]
    wall = [r[0] for r in runs]
    cpu = [r[1] for r in runs]
    print(f"  {label:<44s} wall {statistics.median(wall):7.0f} steps/s (best {max(wall):6.0f})   "
          f"per CPU-second {statistics.median(cpu):7.0f} (best {max(cpu):6.0f})   [{load()}]", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed and shorter throughput runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--total", type=int, default=100_000)
    parser.add_argument("--skip-learning", action="store_true")
    parser.add_argument("--throughput-only", action="store_true", help="part 2 only")
    parser.add_argument("--repeats", type=int, default=None, help="throughput runs per setting (default 3, quick 1)")
    args = parser.parse_args()
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    repeats = args.repeats or (1 if args.quick else 3)
    print(f"cpu cores: {os.cpu_count()}   {load()}", flush=True)

    if not (args.skip_learning or args.throughput_only):
        print(f"\n1. learning: default config, 1 environment, {args.total} steps, deterministic eval of 10 "
              "episodes after every rollout", flush=True)
        results = [learning_run(seed, args.total) for seed in seeds]
        for r in results:
            print(f"  seed {r['seed']}: first eval at 500 after {r['first_500']} steps; "
                  f"{r['evals_at_500']}/{r['evals']} evals at 500; final {r['final_mean']:.1f} +- "
                  f"{r['final_std']:.1f}; {r['wall_s']:.1f} s with evaluation", flush=True)
        reached = sum(r["first_500"] is not None for r in results)
        print(f"  reached 500 within {args.total} steps on {reached} of {len(results)} seeds", flush=True)

    steps = 20_480 if args.quick else 40_960
    print(f"\n2. throughput over {steps} env steps, 1 torch thread (median of {repeats}; {load()})", flush=True)
    default = PPOConfig(total_timesteps=steps, progress_bar=False, torch_threads=1)
    light = PPOConfig(total_timesteps=steps * 4, progress_bar=False, torch_threads=1, **LIGHT)
    throughput("defaults, 1 env (list of factories)", lambda: [CartPoleEnv], default, repeats)
    throughput("defaults, 1 env (numpy vector env)", lambda: CartPoleVecEnv(1), default, repeats)
    throughput("8 envs, 4 epochs x 4 minibatches", lambda: [CartPoleEnv] * 8, light, repeats)
    throughput("8 envs (numpy vector env), same settings", lambda: CartPoleVecEnv(8), light, repeats)
    if args.throughput_only:
        return

    # Whole runs with two threads can take minutes on a busy machine, so this part
    # times the two hot paths directly: sampling actions for one observation, and
    # one epoch of minibatch updates on a collected rollout.
    print("\n3. one vs two torch threads (per call)", flush=True)
    agent = PPO([CartPoleEnv], PPOConfig(n_epochs=1, progress_bar=False, torch_threads=1))
    agent.learn(total_timesteps=2048)  # one rollout + update, to get realistic statistics
    batch = agent.collect_batch()  # 2048 decisions of 1 environment
    obs = batch["obs"][:1].numpy()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        start = time.perf_counter()
        for _ in range(500):
            agent.policy.act(obs, rng=agent.rng)
        act_us = (time.perf_counter() - start) / 500 * 1e6
        start = time.perf_counter()
        agent.update(batch, 0.2)  # 32 minibatches of 64
        mb_ms = (time.perf_counter() - start) / 32 * 1e3
        print(f"  {threads} thread(s): act {act_us:8.1f} us/step, update {mb_ms:7.2f} ms/minibatch   [{load()}]",
              flush=True)
    print(f"\ndone; {load()}", flush=True)


if __name__ == "__main__":
    main()

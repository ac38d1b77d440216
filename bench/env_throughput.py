"""Environment steps per second (1 and 8 environments) and the environment's own overhead.

    python bench/env_throughput.py [--base ckpt/base.pt] [--threads 1 2] [--reps 8]

Rates: a vector env of 1 and of 8 environments stepped sequentially, and of 8
stepped on 2 threads (`make_vec_env(..., workers=2)`), for each torch thread count.

One env step = `inner_steps` training steps + a held-out measurement + bookkeeping.
The overhead is measured in the same run, interleaved: (a) `env.step(mode)` and
(b) the same inner training steps alone (`random_batch` + `train_step`, the
calls the environment makes) on a twin model, per mode; overhead = (a - b) / b
from the medians. Times are CPU seconds of this process (`time.process_time`),
which other jobs on a shared machine disturb less than wall time; wall-clock
rates are reported beside them. Markdown to stdout (and, with `--doc bench/README.md`, into that
file's marked section, where the published numbers live); raw numbers to bench/out/env_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data import random_batch  # noqa: E402
from doc_sections import write_section  # noqa: E402  (bench/ is on sys.path when run as a script)
from env import EnvConfig, TextSchedulingEnv, load_base, make_vec_env  # noqa: E402
from infinito.training import train_step  # noqa: E402

START, END = "<!-- env_throughput:start -->", "<!-- env_throughput:end -->"


def overhead(assets, cfg: EnvConfig, reps: int) -> list[dict]:
    env, twin = TextSchedulingEnv(assets, cfg), TextSchedulingEnv(assets, cfg)
    env.reset(seed=0)
    twin.reset(seed=0)
    rows = []
    for a, (name, w_text, w_phi) in enumerate(cfg.modes):
        t_env, t_inner = [], []
        for rep in range(reps + 1):
            if env._needs_reset:
                env.reset(seed=rep)
            t0 = time.process_time()
            env.step(a)
            t1 = time.process_time()
            for _ in range(cfg.inner_steps):  # what the environment runs inside step(), alone
                x, y = random_batch(assets.train_ids, cfg.inner_batch_size, assets.seq_len, twin._data_rng)
                train_step(twin.model, twin.optimizer, x, y, w_text, w_phi, cfg.inner_grad_clip)
            t2 = time.process_time()
            if rep:  # the first rep warms up
                t_env.append(t1 - t0)
                t_inner.append(t2 - t1)
        step, inner = statistics.median(t_env), statistics.median(t_inner)
        rows.append({"mode": name, "step_ms": 1e3 * step, "inner_ms": 1e3 * inner,
                     "overhead_pct": 100 * (step - inner) / inner})
    return rows


def steps_per_second(assets, cfg: EnvConfig, n_envs: int, reps: int, workers: int = 1) -> dict:
    vec = make_vec_env(assets, n_envs, cfg, workers=workers)
    vec.reset(seed=0)
    rng = np.random.default_rng(0)
    vec.step(rng.integers(3, size=n_envs))  # warm-up
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(reps):
        vec.step(rng.integers(3, size=n_envs))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    vec.close()
    return {"envs": n_envs, "workers": workers, "env_steps": reps * n_envs, "steps_per_s_wall": reps * n_envs / wall,
            "steps_per_cpu_s": reps * n_envs / cpu}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="ckpt/base.pt")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--reps", type=int, default=8, help="timed steps per mode / vector steps per env count")
    p.add_argument("--doc", default="", metavar="FILE",
                   help="also write the table(s) into FILE's marked section (the project's: bench/README.md); "
                        "by default nothing but the JSON and stdout is written")
    p.add_argument("--json", default="bench/out/env_throughput.json")
    args = p.parse_args()

    cfg = EnvConfig()
    assets = load_base(args.base, cfg)
    results = {"base": args.base, "threads": {}}
    lines = [f"Base checkpoint `{args.base}`; {cfg.inner_steps} inner steps of {cfg.inner_batch_size} x {assets.seq_len} "
             f"tokens per env step, measurement batch {cfg.measurement_batch_size} x {assets.seq_len}. CPU time of this process, "
             "medians.", "",
             "| torch threads | mode | env step (ms CPU) | inner steps alone (ms CPU) | env overhead |",
             "|---|---|---|---|---|"]
    rates = ["", "| torch threads | envs | vector-env worker threads | env steps/s (wall) | env steps per CPU-second |",
             "|---|---|---|---|---|"]
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows = overhead(assets, cfg, args.reps)
        speed = [steps_per_second(assets, cfg, n, max(args.reps // n, 2), w) for n, w in ((1, 1), (8, 1), (8, 2))]
        results["threads"][threads] = {"overhead": rows, "speed": speed}
        for r in rows:
            lines.append(f"| {threads} | {r['mode']} | {r['step_ms']:.1f} | {r['inner_ms']:.1f} | "
                         f"{r['overhead_pct']:+.1f}% |")
            print(f"threads {threads} {r['mode']:>5}: step {r['step_ms']:.1f} ms, inner alone {r['inner_ms']:.1f} ms, "
                  f"overhead {r['overhead_pct']:+.1f}%", flush=True)
        for s in speed:
            rates.append(f"| {threads} | {s['envs']} | {s['workers']} | {s['steps_per_s_wall']:.2f} | "
                         f"{s['steps_per_cpu_s']:.2f} |")
            print(f"threads {threads}, {s['envs']} envs, {s['workers']} workers: {s['steps_per_s_wall']:.2f} env steps/s wall, "
                  f"{s['steps_per_cpu_s']:.2f} per CPU-second", flush=True)
    table = "\n".join(lines + rates)
    print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.doc:
        write_section(Path(args.doc), START, END, table)


if __name__ == "__main__":
    main()

"""Throughput with 1 and 2 processes (torchrun, gloo on CPU): RL decisions per second and
base-stage tokens per second, measured in one run on this machine.

    python bench/distributed_scaling.py [--base ckpt/base-step100.pt] [--nproc 2]

Every figure comes from the stage's own log (`time/fps` of rl_log.jsonl, the mean of
`lm/time/tokens_per_sec` in base_log.jsonl after the first logged step), so start-up
and the control policies' scoring are not counted. Each process runs one torch thread.
The single-process RL rows are measured with 1 and with 2 worker threads: on this
2-core machine that is the fair comparison for 2 processes.

The published tables: bench/README.md, "Distributed scaling".
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def launch(nproc: int, argv: list[str]) -> None:
    if nproc == 1:
        cmd = [sys.executable, str(ROOT / "train.py"), *argv]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(port), str(ROOT / "train.py"), *argv]
    res = subprocess.run(cmd, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    if res.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{res.stderr[-3000:]}")


def log_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rl_decisions_per_s(nproc: int, workers: int, base: str, out: Path, args) -> float:
    launch(nproc, ["--stage", "rl", "--preset", "demo", "--quiet", "--base", base, "--out", str(out),
                   "--num-envs", str(args.envs), "--workers", str(workers), "--n-steps", str(args.n_steps),
                   "--timesteps", str(args.rollouts * args.envs * args.n_steps), "--eval-freq", str(10**9),
                   "--eval-episodes", "2", "--threads", "1"])
    return [r["time/fps"] for r in log_rows(out / "rl_log.jsonl") if "time/fps" in r][-1]


def base_tokens_per_s(nproc: int, out: Path, args) -> float:
    launch(nproc, ["--stage", "base", "--preset", "demo", "--quiet", "--out", str(out), "--steps", str(args.steps),
                   "--log-every", "5", "--eval-every", str(10**6), "--threads", "1"])
    rates = [r["lm/time/tokens_per_sec"] for r in log_rows(out / "base_log.jsonl") if "lm/time/tokens_per_sec" in r]
    return sum(rates[1:]) / len(rates[1:])  # the first window includes the first step's warm-up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=str(ROOT / "ckpt" / "base-step100.pt"), help="a demo base checkpoint")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--envs", type=int, default=4, help="RL environments (a multiple of --nproc)")
    p.add_argument("--n-steps", type=int, default=4)
    p.add_argument("--rollouts", type=int, default=3)
    p.add_argument("--steps", type=int, default=60, help="base-stage steps")
    args = p.parse_args()
    if not Path(args.base).is_file():
        sys.exit(f"error: no base checkpoint {args.base}; train one (python train.py --stage base) or pass --base")
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; 1 torch thread per process")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rl = {(1, 1): rl_decisions_per_s(1, 1, args.base, tmp / "rl-1-1", args),
              (1, 2): rl_decisions_per_s(1, 2, args.base, tmp / "rl-1-2", args),
              (args.nproc, 1): rl_decisions_per_s(args.nproc, 1, args.base, tmp / "rl-n", args)}
        base = {1: base_tokens_per_s(1, tmp / "base-1", args), args.nproc: base_tokens_per_s(args.nproc, tmp / "base-n", args)}
    print(f"\nRL stage, demo preset, {args.envs} environments, {args.rollouts} rollouts of {args.n_steps} steps")
    print("| processes | threads stepping environments per process | decisions/s | vs 1 process, 1 thread |")
    print("|---|---|---|---|")
    for (n, w), v in rl.items():
        print(f"| {n} | {w} | {v:.2f} | {v / rl[(1, 1)]:.2f}x |")
    print(f"\nbase stage, demo preset, per-process batch as the preset (global batch x processes), {args.steps} steps")
    print("| processes | tokens/s (all processes) | vs 1 process |")
    print("|---|---|---|")
    for n, v in base.items():
        print(f"| {n} | {v:,.0f} | {v / base[1]:.2f}x |")


if __name__ == "__main__":
    main()

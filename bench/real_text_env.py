"""Choosing a corpus's environment before any agent: the snapshot step and the inner step size.

For a corpus of bench/rl_study.py (`--corpus wt2`, `shakespeare` or `builtin`), trains the demo base
preset to each candidate snapshot step (`--snapshot-at N --stop-at N`: the learning-rate schedule
does not depend on where the run stops), then from each snapshot and inner learning rate plays each
mode alone for a whole episode (the demo environment otherwise) on `--seeds` seeds, and prints:

- TEXT's held-out perplexity at the episode's end against the start state's (the snapshot with an
  empty memory): the rule the demo's snapshot was chosen by is that an episode of text training
  still lowers it markedly (about 20 % on the built-in corpus at step 100, docs/env.md);
- Φ at the end of each mode's episodes, and its perplexity change;
- how many episodes of each mode diverged (a non-finite training loss, which stops the RL stage).

    python bench/real_text_env.py --corpus wt2 --steps 50,100,200 --lrs 6e-4,3e-4
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import cpu_model  # noqa: E402
from bench.rl_study import CORPORA, require, stage  # noqa: E402
from env import TextSchedulingEnv, load_base  # noqa: E402
from infinito.presets import snapshot_name  # noqa: E402
from infinito.training import NonFiniteLoss  # noqa: E402
from stages.rl.presets import preset_env  # noqa: E402


def probe(task: tuple) -> dict:
    """One snapshot at one inner learning rate: each mode alone over the seeds."""
    snapshot, lr, seeds = task
    torch.set_num_threads(1)
    cfg = preset_env("demo", Path(snapshot), inner_lr=lr)
    env = TextSchedulingEnv(load_base(snapshot, cfg), cfg)
    start = env.measure_start()
    out = {"snapshot": snapshot, "lr": lr, "start_ppl": start["ppl"], "start_phi": start["phi"], "modes": {}}
    for a, mode in enumerate(cfg.mode_names):
        ends, diverged = [], 0
        for seed in seeds:
            env.reset(seed=seed)
            try:
                for _ in range(cfg.max_steps):
                    _, _, _, _, info = env.step(a)
            except NonFiniteLoss:
                diverged += 1
                continue
            ends.append((info["ppl"], info["phi"]))
        ppl, phi = (np.array([e[i] for e in ends]) for i in (0, 1))
        out["modes"][mode] = {"diverged": diverged, "n": len(seeds),
                              "ppl_change": float(np.mean(ppl / start["ppl"] - 1)) if ends else None,
                              "phi": float(np.mean(phi)) if ends else None}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="wt2", choices=sorted(CORPORA))
    ap.add_argument("--steps", default="50,100,200", help="candidate snapshot steps (comma-separated)")
    ap.add_argument("--lrs", default="6e-4,3e-4", help="candidate inner learning rates (comma-separated)")
    ap.add_argument("--seeds", type=int, default=10, help="episodes per mode (seeds 1000, 1001, ...)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    data = require(args.corpus).data
    steps, lrs = [int(s) for s in args.steps.split(",")], [float(x) for x in args.lrs.split(",")]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        snapshots = {}
        for step in steps:
            out = Path(tmp) / f"step{step}"
            stage("--stage", "base", "--preset", "demo", "--out", str(out), "--snapshot-at", str(step),
                  "--stop-at", str(step), *data)
            snapshots[step] = str(out / snapshot_name(step))
        tasks = [(snapshots[s], lr, range(1000, 1000 + args.seeds)) for s in steps for lr in lrs]
        with mp.get_context("spawn").Pool(args.workers) as pool:
            results = pool.map(probe, tasks)
    print(f"\n{args.corpus}: the demo environment from the demo base preset's snapshots, {args.seeds} episodes per "
          f"mode; {cpu_model()}; {(time.time() - t0) / 60:.1f} min\n")
    modes = list(results[0]["modes"])
    print("| snapshot step | start ppl, Φ | inner lr | " + " | ".join(f"{m}: ppl change, end Φ, diverged" for m in modes)
          + " |\n|" + "---|" * (3 + len(modes)))
    for (step, _), r in zip([(s, lr) for s in steps for lr in lrs], results):
        cells = [f"{v['ppl_change']:+.0%}, {v['phi']:.2f}, {v['diverged']}/{v['n']}" if v["ppl_change"] is not None
                 else f"—, —, {v['diverged']}/{v['n']}" for v in r["modes"].values()]
        print(f"| {step} | {r['start_ppl']:.1f}, {r['start_phi']:.2f} | {r['lr']:g} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

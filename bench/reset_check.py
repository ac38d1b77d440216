"""Does an episode start where training could reach? The reset's inner step against the snapshot.

For an RL preset, trains the base stage's snapshot exactly as the preset's base stage does
(`--stop-at` the snapshot step; the schedule does not depend on it) unless `--snapshot` gives
one, then resets the preset's environment on the held-out seeds and prints each reset's
held-out perplexity over the start state's (the snapshot with an empty memory). The test
suite checks the tiny and demo presets this way (tests/test_reset_start.py); the paper preset's
snapshot takes about 45 minutes of CPU to train, so it is checked here.

    python bench/reset_check.py --preset paper            # trains the paper snapshot, then checks it
    python bench/reset_check.py --preset demo-lr --snapshot ckpt/base-step100.pt
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from env import TextSchedulingEnv, reset_ratios  # noqa: E402
from infinito.presets import PRESETS, snapshot_name  # noqa: E402
from stages.base import BasePlan, run_base_plan  # noqa: E402
from stages.rl.presets import RL_PRESETS, base_preset, preset_env  # noqa: E402
from machine import cpu_model  # noqa: E402

LIMIT = 1.2  # the test suite's bound


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="paper", choices=sorted(RL_PRESETS))
    ap.add_argument("--snapshot", help="a base snapshot to check instead of training the preset's")
    ap.add_argument("--seed", type=int, default=20_000, help="first held-out seed (default 20000)")
    ap.add_argument("--episodes", type=int, default=60)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = args.snapshot
        if snapshot is None:
            preset = base_preset(args.preset)
            step = PRESETS[preset]["train"]["snapshot_at"]
            print(f"training the {preset} preset's base stage to its snapshot at step {step} ...", flush=True)
            if run_base_plan(BasePlan(Path(tmp), {"threads": 1}, preset=preset, stop_at=step, quiet=True)) != 0:
                return 1
            snapshot = Path(tmp) / snapshot_name(step)
        env = TextSchedulingEnv(snapshot, preset_env(args.preset, snapshot))
        start = env.measure_start()["ppl"]
        ratios = reset_ratios(env, range(args.seed, args.seed + args.episodes))
    worst = int(ratios.argmax())
    print(f"{cpu_model()}; {(time.time() - t0) / 60:.1f} min")
    print(f"preset {args.preset}: start perplexity {start:.2f}; reset / start over seeds {args.seed}.."
          f"{args.seed + args.episodes - 1}: min {ratios.min():.3f}, median {np.median(ratios):.3f}, "
          f"max {ratios.max():.3f} (seed {args.seed + worst}); above {LIMIT}: {int((ratios > LIMIT).sum())}")
    return 0 if ratios.max() <= LIMIT else 1


if __name__ == "__main__":  # a user's error (a missing corpus, a full disk) is one line, as in train.py
    from common.files import CheckpointError
    from data import DataError
    from stages.cli import run_cli
    sys.exit(run_cli(main, (DataError, CheckpointError)))

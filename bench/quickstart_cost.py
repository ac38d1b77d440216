"""What the Quickstart's main job costs: wall time per stage and the RL stage's environment steps by use.

Runs `python train.py --stage base` then `python train.py --stage rl` into a fresh folder (no
control cache), as the README's first command does, and counts the RL stage's environment steps
(one step = one decision's inner training and measurement, the unit every cost is paid in) from
what the run wrote:

- PPO training: the last checkpoint's step;
- checkpoint evaluations: evaluations.json, every evaluation's episode lengths;
- control policies: every evaluation the base's control cache holds (a fresh folder: all were
  played by this run), evaluation and held-out seeds, at the steps they paid (played side by
  side, a step several policies took together is paid once: stages.report.scoring.paid);
- the recommended checkpoint on the held-out seeds: report.json's held-out agent.

    python bench/quickstart_cost.py                  # the demo preset, about 25-45 minutes on 2 cores
    python bench/quickstart_cost.py --out /tmp/qs -- --preset tiny   # seconds: the same accounting
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import cpu_model  # noqa: E402
from stages.report.scoring import paid  # noqa: E402


def run_stage(*args: str) -> float:
    t0 = time.time()
    cmd = [sys.executable, str(ROOT / "train.py"), *args, "--quiet"]
    print("$ " + " ".join(cmd[1:]), flush=True)
    if subprocess.call(cmd):
        sys.exit("error: that stage failed; see its message above")
    return time.time() - t0


def steps_by_use(out: Path, controls: Path | None) -> dict:
    """The RL stage's environment steps by use, read from the files it wrote; `controls`: the control
    cache it played into (None: count none, e.g. another run of a study already paid them)."""
    evaluations = json.loads((out / "evaluations.json").read_text())
    report = json.loads((out / "report.json").read_text())
    controls = [json.loads(f.read_text()) for f in controls.glob("*.json")] if controls else []
    steps = max(int(p.stem) for p in out.glob("[0-9]*.pt"))
    return {"PPO training": steps,
            "checkpoint evaluations": sum(sum(e["episode_lengths"]) for e in evaluations),
            "control policies": round(sum(paid(c) for c in controls)),
            "held-out agent": sum(report["heldout"]["source"]["agent"]["episode_lengths"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="ckpt-quickstart", help="a fresh folder (replaced if it exists)")
    ap.add_argument("flags", nargs="*", metavar="-- FLAG", help="after --: flags both stages get, e.g. --preset tiny")
    args = ap.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    base_s = run_stage("--stage", "base", "--out", str(out), *args.flags)
    rl_s = run_stage("--stage", "rl", "--out", str(out), *args.flags)
    spent = steps_by_use(out, out / "cache" / "controls")
    total = sum(spent.values())
    played = sum(sum(c["episode_lengths"]) for c in (json.loads(f.read_text())
                                                     for f in (out / "cache" / "controls").glob("*.json")))
    print(f"\n{cpu_model()}; base stage {base_s / 60:.1f} min, RL stage {rl_s / 60:.1f} min, "
          f"both {(base_s + rl_s) / 60:.1f} min; the controls' {played:,} decisions took "
          f"{spent['control policies']:,} environment steps\n\n| what | environment steps | share |\n|---|---|---|")
    for what, n in spent.items():
        print(f"| {what} | {n:,} | {n / total:.0%} |")
    print(f"| **all** | {total:,} | 100% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

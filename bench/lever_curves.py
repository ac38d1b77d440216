"""Evaluation curves of RL runs side by side, for choosing a PPO lever on the evaluation seeds.

    python bench/lever_curves.py "lr 3e-4 (the preset)=ckpt-study/seed-1" "lr 1e-4=ckpt-lever/seed-1"

Reads each run's `evaluations.json` (the evaluation seeds only: held-out seeds play no part in a
choice) and prints a markdown table: the evaluation mean at every evaluated step, the best one,
and the mean over the second half of each run (its steps >= half its last), which says
whether the best was a peak or a level. A run still training shows the steps it reached.

The published table: docs/studies.md, "PPO levers on `demo-lr`" (the `lever_curves` block).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def curve(run_dir: Path) -> dict[int, float]:
    """{step: evaluation mean}; the later of two evaluations at one step (a resumed run) wins."""
    path = run_dir / "evaluations.json"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist; pass an RL output folder that has evaluated")
    return {int(e["step"]): float(e["mean_reward"]) for e in json.loads(path.read_text())}


def second_half_mean(points: dict[int, float]) -> str:
    late = [v for s, v in points.items() if s >= max(points) / 2]
    return f"{sum(late) / len(late):+.2f}"


def table(runs: dict[str, dict[int, float]]) -> str:
    steps = sorted(set().union(*runs.values()))
    head = ["run", *(f"{s:,}" for s in steps), "best", "second-half mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, points in runs.items():
        cells = [f"{points[s]:+.2f}" if s in points else "—" for s in steps]
        lines.append("| " + " | ".join([name, *cells, f"{max(points.values()):+.2f}",
                                        second_half_mean(points)]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="LABEL=DIR", help="a name for the table and the run's output folder")
    args = p.parse_args(argv)
    runs = {}
    for item in args.runs:
        label, sep, folder = item.rpartition("=")
        if not sep or not label:
            p.error(f"'{item}' is not LABEL=DIR")
        runs[label] = curve(Path(folder))
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Are two runs the same run? For refactors that must not change behaviour.

    python bench/compare_runs.py BEFORE_DIR AFTER_DIR

Compares two output folders of the same commands (e.g. `train.py --stage base --preset tiny
--threads 1` then `--stage rl --preset tiny --seed 3`) written by two versions of the code: every
value of `rl_log.jsonl` and `base_log.jsonl` but the timings, every tensor of the base model, of each `<step>.pt`'s
policy and optimiser and of its environments' models, and the evaluations. Keys present on one
side only (a renamed setting) are listed, not compared. Prints one line per item; exit 1 on a
difference.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stages.outputs import step_checkpoints  # noqa: E402


TIMING = ("time/", "tokens_per_sec")  # wall-clock measurements: never equal between two runs


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _logs(a: Path, b: Path, name: str) -> list[str]:
    ra, rb = _lines(a / name), _lines(b / name)
    if len(ra) != len(rb):
        return [f"{name}: {len(ra)} lines against {len(rb)}"]
    bad = [f"{name} line {i + 1} {k}: {x[k]} != {y[k]}" for i, (x, y) in enumerate(zip(ra, rb))
           for k in x.keys() & y.keys() if x[k] != y[k] and not any(t in k for t in TIMING)]
    only = sorted(set().union(*[x.keys() ^ y.keys() for x, y in zip(ra, rb)]) if ra else set())
    return bad[:5] + ([f"{name}: keys on one side only: {only}"] if only else [])


def _tensors(x: dict, y: dict, where: str) -> list[str]:
    return [f"{where}.{k} differs" for k in x.keys() & y.keys() if not torch.equal(x[k], y[k])]


def _without_paths(evaluations: list) -> list:
    """The evaluations less the checkpoint's path (the two runs write to different folders)."""
    return [{**e, "extra": {k: v for k, v in e.get("extra", {}).items() if k != "checkpoint"}} for e in evaluations]


def compare(a: Path, b: Path) -> list[str]:
    problems = _logs(a, b, "base_log.jsonl") + _logs(a, b, "rl_log.jsonl")
    load = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
    problems += _tensors(load(a / "base.pt")["model"], load(b / "base.pt")["model"], "base.pt model")
    for ckpt in step_checkpoints(a):
        x, y = load(ckpt), load(b / ckpt.name)
        problems += _tensors(x["policy"], y["policy"], f"{ckpt.name} policy")
        if _without_paths(x["evaluations"]) != _without_paths(y["evaluations"]):
            problems.append(f"{ckpt.name} evaluations differ")
        envs = [((x.get("rollout") or {}).get("env_state") or {}).get("envs"),
                ((y.get("rollout") or {}).get("env_state") or {}).get("envs")]
        for i, (ea, eb) in enumerate(zip(*envs) if all(envs) else ()):
            problems += _tensors(ea["model"], eb["model"], f"{ckpt.name} env {i} model")
    return problems


def main() -> int:
    a, b = map(Path, sys.argv[1:3])
    problems = compare(a, b)
    for p in problems:
        print(p)
    same = not [p for p in problems if "one side only" not in p]
    print("same run" if same else "DIFFERENT runs", f"({a} vs {b})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

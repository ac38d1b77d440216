"""What each stage writes into its output folder, and a fresh run's rule about an earlier one.

A fresh run (no --resume) into a folder that holds an earlier run of the same
stage stops with one line before anything is written — continue that run with
--resume, write elsewhere with --out, or replace it with --overwrite. The rule
is checked before the run's first write; --overwrite removes the earlier run's
files only once every other check has passed. The RL stage's files and the
base stage's are told apart, so the RL stage still trains in the folder that
holds its base checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from common import distributed

from .cli import UserError

# (glob patterns of the stage's files in <out>, the checkpoint --resume continues from)
STAGE_FILES = {
    "base": (("base.pt", "base-step*.pt", "base_config.json", "base_log.jsonl", "base_summary.json",
              "tokenizer.model", "runs/base"), "base.pt"),
    "rl": (("[0-9]*.pt", "best.pt", "evaluations.json", "report*.md", "report*.json", "report*.svg", "rl_log.jsonl",
            "runs/rl", "superseded-*"), None),
}


def earlier_run(out_dir: Path, stage: str) -> list[Path]:
    patterns, _ = STAGE_FILES[stage]
    return sorted({p for pattern in patterns for p in out_dir.glob(pattern)})


def _resume_target(out_dir: Path, stage: str) -> Path | None:
    if stage == "base":
        return out_dir / "base.pt"
    steps = [p for p in out_dir.glob("*.pt") if p.stem.isdigit()]
    return max(steps, key=lambda p: int(p.stem)) if steps else None


def check_fresh(out_dir: Path, stage: str, overwrite: bool) -> list[Path]:
    """The earlier run's files a fresh run will replace (with --overwrite); one line otherwise."""
    found = earlier_run(out_dir, stage)
    if not found or overwrite:
        return found
    names = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
    target = _resume_target(out_dir, stage)
    resume = f"continue it with --resume {target}, " if target is not None and target.exists() else ""
    label = {"base": "a base", "rl": "an RL"}[stage]
    raise UserError(f"{out_dir} already holds {label} run ({names}); {resume}write this one elsewhere with "
                    "--out NEW, or replace it with --overwrite")


def fresh_run_check(out_dir: Path, args, stage: str) -> list[Path]:
    """check_fresh for a new run, or a resumed one written into another folder than its checkpoint's."""
    if args.resume and Path(args.resume).parent.resolve() == out_dir.resolve():
        return []
    return check_fresh(out_dir, stage, args.overwrite)


@contextlib.contextmanager
def replacing(found: list[Path], stage: str):
    """--overwrite: the earlier run's files are moved aside while the new run trains; they are
    deleted once it ends (finished or interrupted with a checkpoint) and put back, with the
    failed run's files removed, when it fails. Rank 0 alone moves files."""
    if not found or not distributed.current().is_main:
        yield
        return
    out_dir = found[0].parent
    held = out_dir / f".earlier-run-{os.getpid()}"
    held.mkdir()
    for p in found:
        p.replace(held / p.relative_to(out_dir).as_posix().replace("/", "__"))
    try:
        yield
    except Exception:
        for p in earlier_run(out_dir, stage):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        for p in found:
            (held / p.relative_to(out_dir).as_posix().replace("/", "__")).replace(p)
        held.rmdir()
        raise
    shutil.rmtree(held)
    print(f"--overwrite: the earlier run's {len(found)} files in {out_dir} were replaced")



def next_steps(out_dir: Path, stage: str, tensorboard_dir: Path) -> str:
    """What to run after a finished stage, as the lines the scripts print last."""
    if stage == "base":
        snapshots = sorted(out_dir.glob("base-step*.pt"))
        base = snapshots[0] if snapshots else out_dir / "base.pt"
        lines = [f"python generate.py --ckpt {out_dir / 'base.pt'} --prompt 'The'   # sample text",
                 f"python train.py --stage rl --base {base} --out {out_dir}   # train the PPO scheduler on it"]
    elif stage == "report":
        lines = [f"python generate.py --agent {out_dir / 'best.pt'}   # the recommended agent adapts, then samples",
                 f"python train.py --stage rl --resume <the step you keep>.pt   # continue from a checkpoint in {out_dir}"]
    else:
        lines = [f"python generate.py --agent {out_dir / 'best.pt'}   # the recommended agent adapts, then samples",
                 f"python train.py --stage report --ckpt-dir {out_dir} --episodes 30   # re-score with more episodes",
                 f"cat {out_dir / 'report.md'}   # which checkpoint to keep, which are over-fitted"]
    lines.append(f"tensorboard --logdir {tensorboard_dir}   # the dashboards")
    return "next:\n" + "\n".join("  " + line for line in lines)

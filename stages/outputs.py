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
import fnmatch
import os
import shutil
from pathlib import Path

from common import distributed
from common.files import FolderLock
from .report.dashboards import BASE_VIEW, RL_VIEW
from .rl.presets import RL_PRESETS

from .cli import UserError

# (glob patterns of the stage's files in <out>, the checkpoint --resume continues from)
STAGE_FILES = {
    "base": (("base.pt", "base-step*.pt", "base_config.json", "base_log.jsonl", "base_summary.json",
              "tokenizer.model", "runs/base"), "base.pt"),
    "rl": (("[0-9]*.pt", "best.pt", "evaluations.json", "report*.md", "report*.json", "report*.svg", "rl_log.jsonl",
            "runs/rl", "superseded-*"), None),
}


DEFAULT_OUT = "ckpt"


def output_folder(out: str | None, resume: str | None) -> Path:
    """--out, else the folder of the checkpoint a run resumes, else ckpt."""
    return Path(out or (Path(resume).parent if resume else DEFAULT_OUT))


def log_folder(out_dir: Path, logdir: Path | None, stage: str) -> Path:
    """A stage's TensorBoard folder: --logdir itself, else <out>/runs/<stage>."""
    return Path(logdir) if logdir else Path(out_dir) / "runs" / stage


def tensorboard_root(out_dir: Path, logdir: Path | None) -> Path:
    """What to point `tensorboard --logdir` at: --logdir, else <out>/runs (both stages side by side)."""
    return Path(logdir) if logdir else Path(out_dir) / "runs"


STEP_NAME = "{step}.pt"  # an RL checkpoint's file name: the step it was written at


def step_checkpoint(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / STEP_NAME.format(step=step)


def step_checkpoints(out_dir: Path, after: int = -1) -> list[Path]:
    """The folder's RL checkpoints `<step>.pt` past step `after`, in step order."""
    found = (p for p in Path(out_dir).glob("*.pt") if p.stem.isdigit() and int(p.stem) > after)
    return sorted(found, key=lambda p: int(p.stem))


def earlier_run(out_dir: Path, stage: str) -> list[Path]:
    patterns, _ = STAGE_FILES[stage]
    return sorted({p for pattern in patterns for p in out_dir.glob(pattern)})


def _resume_target(out_dir: Path, stage: str) -> Path | None:
    if stage == "base":
        return out_dir / "base.pt"
    steps = step_checkpoints(out_dir)
    return steps[-1] if steps else None


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


def fresh_run_check(out_dir: Path, resume: str | None, overwrite: bool, stage: str) -> list[Path]:
    """check_fresh for a new run, or a resumed one written into another folder than its checkpoint's."""
    if resume and Path(resume).parent.resolve() == out_dir.resolve():
        return []
    return check_fresh(out_dir, stage, overwrite)


HELD = ".earlier-run-"  # + the PID of the --overwrite run that holds an earlier run aside there
MOVING = ".moving-run-"  # the same while files are moved in or out: never a complete set on its own


def _held_name(rel: Path) -> str:
    return rel.as_posix().replace("/", "__")  # runs/base -> runs__base: one flat folder


def _original(held_file: Path, out_dir: Path) -> Path:
    return out_dir / held_file.name.replace("__", "/")


def _remove(paths) -> None:
    for p in paths:
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


@contextlib.contextmanager
def replacing(found: list[Path], stage: str):
    """--overwrite: the earlier run's files are moved aside (into .earlier-run-<pid>) while the
    new run trains; they are deleted once it ends (finished or interrupted with a checkpoint)
    and put back, with the failed run's files removed, when it fails or is aborted. A run
    killed outright leaves them held: the next run in the folder puts them back
    (put_back_held_runs). Rank 0 alone moves files."""
    if not found or not distributed.current().is_main:
        yield
        return
    out_dir = found[0].parent
    held, moving = out_dir / f"{HELD}{os.getpid()}", out_dir / f"{MOVING}{os.getpid()}"
    moving.mkdir()
    for p in found:
        p.replace(moving / _held_name(p.relative_to(out_dir)))
    moving.rename(held)  # only now, whole: a kill -9 before this leaves a .moving-run- folder to put back
    try:
        yield
    except BaseException:  # a failure, or a second Ctrl-C: the earlier run comes back
        _remove(earlier_run(out_dir, stage))
        held.rename(moving)
        _move_back(moving, out_dir)
        raise
    shutil.rmtree(held)
    print(f"--overwrite: the earlier run's {len(found)} files in {out_dir} were replaced")


def _move_back(folder: Path, out_dir: Path) -> None:
    for f in folder.iterdir():
        f.replace(_original(f, out_dir))
    folder.rmdir()


def _is_stage_file(rel: Path, stage: str) -> bool:
    """One of the stage's files (or inside one of its folders), `rel` relative to the output folder."""
    return any(fnmatch.fnmatch(part, pattern) for pattern in STAGE_FILES[stage][0]
               for part in (rel.as_posix(), *(p.as_posix() for p in rel.parents)))


def _stage_of(originals: list[Path], out_dir: Path) -> str:
    for stage in STAGE_FILES:
        if any(_is_stage_file(p.relative_to(out_dir), stage) for p in originals):
            return stage
    return "base"


def put_back_held_runs(out_dir: Path) -> None:
    """With the folder's lock held, a .earlier-run-<pid> there belongs to an --overwrite run that was
    killed (kill -9, a lost machine) before it could delete it or put it back. If that run wrote no
    checkpoint, its files go and the earlier run comes back; if it did, both are kept: the earlier
    run goes to a visible earlier-run-<pid>/ and a line says so."""
    for moving in sorted(p for p in out_dir.glob(MOVING + "*") if p.is_dir()):  # killed while moving files
        _move_back(moving, out_dir)
        print(f"note: put back the files of an earlier run in {out_dir} that an --overwrite run (process "
              f"{moving.name[len(MOVING):]}) was moving when it was killed")
    for held in sorted(p for p in out_dir.glob(HELD + "*") if p.is_dir()):
        pid = held.name[len(HELD):]
        originals = {f: _original(f, out_dir) for f in held.iterdir()}
        stage = _stage_of(list(originals.values()), out_dir)
        killed_runs = earlier_run(out_dir, stage)
        if not any(p.suffix == ".pt" for p in killed_runs):
            _remove(killed_runs)
            dest, said = out_dir, (f"note: put back the earlier {stage} run in {out_dir}: the --overwrite run "
                                   f"(process {pid}) replacing it was killed before its first checkpoint")
        else:
            dest = out_dir / f"earlier-run-{pid}"
            said = (f"note: an --overwrite run (process {pid}) was killed after writing checkpoints in {out_dir}; "
                    f"the earlier {stage} run it was replacing is kept in {dest}: delete that folder if you do "
                    "not need it")
        for f, original in originals.items():
            target = dest / original.relative_to(out_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            f.replace(target)
        held.rmdir()
        print(said)


def _inventory(folder: Path) -> tuple[set[Path], dict[tuple[int, int], Path]]:
    """(directories, files by (device, inode)) under `folder`. A file written since has a new
    inode: every file the project keeps is written atomically (common.files), moved ones keep theirs."""
    dirs, files = set(), {}
    for root, _, names in os.walk(folder):
        dirs.add(Path(root))
        for name in names:
            with contextlib.suppress(OSError):
                st = os.stat(Path(root) / name, follow_symlinks=False)
                files[st.st_dev, st.st_ino] = Path(root) / name
    return dirs, files


def _undo(out_dir: Path, stage: str, created: Path | None, before: tuple[set, dict]) -> None:
    """Remove what a failed run created, unless it got as far as a checkpoint (then its files are
    that checkpoint's logs, caches and tokenizer, and the error names it). In a folder that was
    there before, only the stage's own files and the token cache: another program may be writing
    beside them (--out . is allowed)."""
    dirs, files = _inventory(out_dir)

    def ours(p: Path) -> bool:
        rel = p.relative_to(out_dir)
        return created is not None or rel.parts[0] == "cache" or _is_stage_file(rel, stage) or any(
            pattern.startswith(rel.as_posix() + "/") for pattern in STAGE_FILES[stage][0])  # runs/ of runs/base

    new_files = [p for inode, p in files.items() if inode not in before[1] and ours(p)]
    if any(p.suffix == ".pt" for p in new_files):
        return
    _remove(new_files)
    for d in sorted((d for d in dirs - before[0] if ours(d)), key=lambda d: len(d.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()  # only if empty: a folder holding moved, older files stays
    _remove_created(out_dir, created)


def _remove_created(out_dir: Path, created: Path | None) -> None:
    """rmdir --out and its parents up to `created`, the first of them this run made (if they are empty)."""
    while created is not None and out_dir != created.parent:
        with contextlib.suppress(OSError):
            out_dir.rmdir()
        out_dir = out_dir.parent


@contextlib.contextmanager
def claimed(out_dir: Path, stage: str):
    """A base or RL run's hold on its output folder: locked for this run alone (FolderLock), an
    earlier --overwrite run killed there put back (put_back_held_runs), and, if the run fails or
    is refused before its first checkpoint, every file and folder it created removed, --out
    itself included: a refused start leaves no trace."""
    if not distributed.current().is_main:  # rank 0 holds the folder and writes for every rank
        yield
        return
    created = next((p for p in reversed([out_dir, *out_dir.parents]) if not p.exists()), None)
    before = None
    try:
        with FolderLock(out_dir):
            before = _inventory(out_dir)  # taken under the lock: no other run is writing here
            put_back_held_runs(out_dir)
            yield
    except BaseException:
        if before is None:  # the lock itself failed (a full disk, another run): only folders this run made
            _remove_created(out_dir, created)
        else:
            _undo(out_dir, stage, created, before)
        raise


FRESH_SEED = 40_000  # suggested held-out seeds for a second look: far from the presets' 10,000 and 20,000


def _rl_preset_for(snapshot: str) -> str:
    """" --preset NAME" for the RL preset that starts from this base snapshot (the demo preset, the
    default, needs no flag): after a tiny base the printed command must not run the demo's RL stage."""
    names = [n for n, p in RL_PRESETS.items() if p["run"].base_file == snapshot]
    return "" if not names or "demo" in names else f" --preset {names[0]}"


def next_steps(out_dir: Path, stage: str, tensorboard_dir: Path) -> str:
    """What to run after a finished stage, as the lines the scripts print last."""
    if stage == "base":
        snapshots = sorted(out_dir.glob("base-step*.pt"))
        base = snapshots[0] if snapshots else out_dir / "base.pt"
        preset = _rl_preset_for(base.name)
        lines = [f"python generate.py --ckpt {out_dir / 'base.pt'} --prompt 'The'   # sample text",
                 f"python train.py --stage rl --base {base}{preset} --out {out_dir}   # train the PPO scheduler on it"]
    elif stage == "report":
        lines = [f"python generate.py --agent {out_dir / 'best.pt'}   # the recommended agent adapts, then samples",
                 f"python train.py --stage rl --resume <the step you keep>.pt   # continue from a checkpoint in {out_dir}"]
    else:
        lines = [f"python generate.py --agent {out_dir / 'best.pt'}   # the recommended agent adapts, then samples",
                 f"python train.py --stage report --ckpt-dir {out_dir} --heldout-seed {FRESH_SEED}   # the headline "
                 "again, on held-out seeds no run has seen",
                 f"cat {out_dir / 'report.md'}   # which checkpoint to keep, which are over-fitted"]
    view = BASE_VIEW if stage == "base" else RL_VIEW
    lines.append(f"tensorboard --logdir {tensorboard_dir}   # the dashboards: then open {view} and untick "
                 "'Ignore outliers in chart scaling'")
    return "next:\n" + "\n".join("  " + line for line in lines)

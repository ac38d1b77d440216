"""The report stage: re-score every RL checkpoint of a directory (`python train.py --stage report`).

Every checkpoint's greedy policy and every control policy are scored on the same
seeded episodes (as many as --episodes): a checkpoint's evaluation already played
on those seeds — in training, or by an earlier (or interrupted) run of this stage,
kept in report-cache.json — is reused, the rest is played; the controls come from
the base's control cache (stages/report/controls.py). The recommended checkpoint
is scored on the held-out seeds (the run's, or --heldout-seed: the headline on
seeds no run has seen). With the training's settings the report is report.md
(and best.pt follows it); with others it is written beside it, e.g.
report-30ep.md or report-heldout40000.md, and the training's report and best.pt
are left as they were. The baseline, the resume note and mark stay the training's.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from common.files import FolderLock, write_json
from env import EnvConfig, load_base
from ppo import TrainedPolicy

from ..cli import EXIT_INTERRUPTED, UserError, diverged, joined, resolve_threads
from ..identity import check_base
from ..outputs import next_steps, output_folder, step_checkpoints
from ..rl.plan import check_seed_ranges, make_thresholds
from ..rl.record import RunRecord
from ..rl.presets import RunSettings
from .controls import all_controls
from .overfit import Thresholds
from .scoring import (RESUMED, evaluation_envs, headline, keep_best, recommend_and_score_heldout, report_notes, score,
                      write_rl_report)


def load_run(ckpt_dir: Path) -> tuple[list[Path], list[TrainedPolicy], RunRecord]:
    """The directory's <step>.pt checkpoints, checked to be one run (same base and environment),
    and the newest one's record."""
    files = step_checkpoints(ckpt_dir)
    if not files:
        raise UserError(f"no RL checkpoints (<step>.pt) in {ckpt_dir}; train with --stage rl first or pass --ckpt-dir")
    agents = [TrainedPolicy.load(str(p)) for p in files]
    last = RunRecord.read(agents[-1].extra, str(files[-1]))
    for p, a in zip(files, agents):
        if not RunRecord.read(a.extra, str(p)).same_run(last):
            raise UserError(f"{p} was trained on another base checkpoint or environment than {files[-1]}; "
                            "keep one run per directory")
    return files, agents, last


@dataclass
class ReportPlan:
    """Everything one report-stage run needs, read from the flags and the checkpoints once."""
    ckpt_dir: Path
    files: list                   # the <step>.pt checkpoints, in step order
    agents: list                  # their policies (TrainedPolicy)
    record: RunRecord             # what the newest checkpoint records about the run
    run: RunSettings              # the training's run settings, with this report's episodes and seeds
    env_cfg: EnvConfig
    base_path: Path
    baseline: tuple               # (step or None for the highest mean, why it is the baseline)
    stem: str                     # report, or report-30ep, report-heldout40000, ...
    thresholds: Thresholds
    workers: int | None           # --workers; None: every core free now (evaluation_envs)
    quiet: bool
    device: str


def plan_report(args: argparse.Namespace) -> ReportPlan:
    ckpt_dir = Path(args.ckpt_dir) if args.ckpt_dir else output_folder(args.out, None)
    files, agents, record = load_run(ckpt_dir)
    trained = record.settings
    episodes = args.episodes if args.episodes is not None else trained.eval_episodes
    if episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {episodes}")
    given = {k: v for k, v in (("eval_seed", args.eval_seed), ("heldout_seed", args.heldout_seed)) if v is not None}
    run = trained.replace(eval_episodes=episodes, **given)
    check_seed_ranges(run)
    base_path = check_base(args.base or record.base, record, "these agents", "--base")
    return ReportPlan(ckpt_dir, files, agents, record, run, record.env_config, base_path,
                      _baseline(args.baseline, agents, record, ckpt_dir), _report_stem(args.baseline, run, trained),
                      make_thresholds(args), args.workers, args.quiet, args.device)


def _baseline(baseline: str | None, agents: list, record: RunRecord, ckpt_dir: Path) -> tuple[int | None, str]:
    """The report's baseline, as the training's report chose it unless --baseline says otherwise:
    the step the run was last resumed from, else the highest mean (None)."""
    steps = [a.global_step for a in agents]
    if not baseline:
        resumed = [s for s in record.resumes if s in steps]
        return (resumed[-1], RESUMED) if resumed else (None, "")
    step = TrainedPolicy.load(baseline).global_step
    if step not in steps:
        raise UserError(f"--baseline {baseline} (step {step}) is not among the checkpoints in {ckpt_dir}")
    return step, "chosen with --baseline"


def run_report(args: argparse.Namespace) -> int:
    torch.set_num_threads(resolve_threads(1 if args.threads is None else args.threads))
    p = plan_report(args)  # every flag is read here, once
    try:
        with joined(p.device), FolderLock(p.ckpt_dir), diverged(
                "inside the environment while scoring",
                "these agents' environment config is unstable; retrain with a lower --env inner_lr"):
            return _rescore(p)
    except KeyboardInterrupt:
        print(f"error: interrupted; the evaluations played so far are kept in {p.ckpt_dir / CACHE}: run the same "
              "command again to continue from there", file=sys.stderr)
        return EXIT_INTERRUPTED


CACHE = "report-cache.json"  # every evaluation this stage played, so a rerun (or an interrupted one) reuses it


def policy_digest(agent: TrainedPolicy) -> str:
    """Which policy an evaluation belongs to: the same step of another lineage (a resumed run
    that replaced it) is another policy."""
    h = hashlib.sha256()

    def feed(name: str, value) -> None:
        if isinstance(value, dict):
            for k in sorted(value):
                feed(f"{name}.{k}", value[k])
        else:
            h.update(name.encode() + torch.as_tensor(value).detach().cpu().contiguous().numpy().tobytes())
    feed("policy", agent.policy.state_dict())
    feed("obs_normalizer", agent.obs_normalizer.state_dict())  # it decides the actions too
    return h.hexdigest()[:16]


class ScoreCache:
    """Evaluations already played on given seeds: those each checkpoint stores from training, and
    those this stage played before (CACHE, written after every one, so Ctrl-C loses at most one)."""

    def __init__(self, ckpt_dir: Path, agents: list):
        self.path = ckpt_dir / CACHE
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {"evaluations": {}}
        self.stored = {a.global_step: [d for d in a.evaluations if d.get("step") == a.global_step] for a in agents}

    def evaluation(self, agent: TrainedPolicy, seed: int, n: int) -> dict | None:
        for d in self.stored.get(agent.global_step, []):  # the checkpoint's own evaluation, from training
            if d["seed"] == seed and d["n_episodes"] == n:
                return d
        return self.data["evaluations"].get(f"{policy_digest(agent)}@{seed}x{n}")

    def keep_evaluation(self, agent: TrainedPolicy, seed: int, n: int, d: dict) -> None:
        self.data["evaluations"][f"{policy_digest(agent)}@{seed}x{n}"] = d
        write_json(self.path, self.data)


def _report_stem(baseline: str | None, run: RunSettings, trained: RunSettings) -> str:
    """The training's report is report.*; a report with other settings is written beside it, named
    by what differs (report-30ep, report-heldout40000, ...)."""
    parts = [f"{run.eval_episodes}ep" * (run.eval_episodes != trained.eval_episodes),
             f"eval{run.eval_seed}" * (run.eval_seed != trained.eval_seed),
             f"heldout{run.heldout_seed}" * (run.heldout_seed != trained.heldout_seed),
             f"vs{Path(baseline).stem}" if baseline else ""]
    return "-".join(["report"] + [p for p in parts if p])


def _rescore(p: ReportPlan) -> int:
    run, env_cfg, episodes, seed = p.run, p.env_cfg, p.run.eval_episodes, p.run.eval_seed
    assets = load_base(p.base_path, env_cfg)
    envs = evaluation_envs(assets, env_cfg, p.workers, run.workers, episodes)
    cache, t0 = ScoreCache(p.ckpt_dir, p.agents), time.time()
    evaluations, played = _score_checkpoints(p, envs, cache)
    controls, heldout_controls = all_controls(envs, env_cfg, run, p.base_path, p.record.base_content, p.record,
                                              p.quiet)
    heldout = recommend_and_score_heldout(envs, env_cfg, run, evaluations, controls[0], p.baseline[0], p.thresholds,
                                          heldout_controls)
    resumes = p.record.resumes
    notes = report_notes(str(p.base_path), env_cfg, episodes, seed, resumes[-1] if resumes else None)
    built = write_rl_report(p.ckpt_dir, evaluations, controls, p.baseline, env_cfg, p.thresholds, notes, heldout,
                            stem=p.stem, resumes=resumes, teacher=p.record.teacher)
    if p.stem == "report":
        keep_best(p.ckpt_dir, heldout["step"])  # best.pt follows the training report's recommendation
    kept = "" if p.stem == "report" else "; the training's report.md and best.pt are unchanged"
    n = len(p.files)
    print(f"re-scored {n} checkpoint{'s' * (n != 1)} on {episodes} episodes ({played} played, {n - played} reused) "
          f"in {(time.time() - t0) / 60:.1f} min; recommended: step {heldout['step']:,}; "
          f"{headline(built)}; report {p.ckpt_dir / (p.stem + '.md')}{kept}")
    print(next_steps(p.ckpt_dir, "report", p.ckpt_dir / "runs"))
    return 0


def _score_checkpoints(p: ReportPlan, envs: list, cache: ScoreCache):
    """Every checkpoint's evaluation on the plan's episodes: reused when stored, else played
    (with a time estimate after the first) -> (evaluations, how many were played)."""
    from tqdm import tqdm
    env_cfg, files, agents, seed, episodes = p.env_cfg, p.files, p.agents, p.run.eval_seed, p.run.eval_episodes
    todo = [i for i, a in enumerate(agents) if cache.evaluation(a, seed, episodes) is None]
    print(f"{len(agents) - len(todo)} of {len(agents)} checkpoints have an evaluation on these {episodes} seeds "
          f"stored; playing {len(todo)} x {episodes} episodes (then the controls, where not stored)")
    evaluations, t0 = [], time.time()
    for i, (path, a) in enumerate(tqdm(list(zip(files, agents)), desc="checkpoints", disable=p.quiet,
                                       dynamic_ncols=True)):
        d = cache.evaluation(a, seed, episodes)
        if d is None:
            d = score(envs, a, env_cfg, episodes, seed, a.global_step, str(path)).to_dict()
            cache.keep_evaluation(a, seed, episodes, d)
            if i == todo[0] and len(todo) > 1:
                left = (time.time() - t0) * (len(todo) - 1)
                print(f"about {left / 60:.1f} min for the other {len(todo) - 1} checkpoints (interrupt at any "
                      f"time: what is played is kept in {cache.path.name} and reused)")
        evaluations.append({**d, "extra": {**d.get("extra", {}), "checkpoint": str(path)}})
    return evaluations, len(todo)

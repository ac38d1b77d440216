"""The report stage: re-score every RL checkpoint of a directory (`python train.py --stage report`).

Every checkpoint's greedy policy and every control policy play the same seeded
episodes again (as many as --episodes), the recommended checkpoint is scored on
the held-out seeds, and report.md / report.json are rewritten.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from common.files import FolderLock
from env import EnvConfig, TextSchedulingEnv, load_base
from env.presets import HELDOUT_SEED
from ppo import TrainedPolicy

from .cli import UserError, diverged, joined
from .identity import check_base, identity_of
from .rl_config import check_seed_ranges
from .scoring import (keep_best, make_thresholds, recommend_and_score_heldout, report_notes, score, score_controls,
                      write_rl_report)


def load_run(ckpt_dir: Path) -> tuple[list[Path], list[TrainedPolicy]]:
    """The directory's <step>.pt checkpoints, checked to be one run (same base and environment)."""
    files = sorted((p for p in ckpt_dir.glob("*.pt") if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not files:
        raise UserError(f"no RL checkpoints (<step>.pt) in {ckpt_dir}; train with --stage rl first or pass --ckpt-dir")
    agents = [TrainedPolicy.load(str(p)) for p in files]
    last = agents[-1].extra
    if "run" not in last or "env" not in last:
        raise UserError(f"{files[-1]} is a PPO checkpoint but not one of train.py --stage rl")
    for p, a in zip(files, agents):
        if identity_of(a.extra) != identity_of(last) or a.extra.get("env") != last["env"]:
            raise UserError(f"{p} was trained on another base checkpoint or environment than {files[-1]}; "
                            "keep one run per directory")
    return files, agents


def _baseline_step(args: argparse.Namespace, agents: list, ckpt_dir: Path) -> int | None:
    if not args.baseline:
        return None
    step = TrainedPolicy.load(args.baseline).global_step
    if step not in [a.global_step for a in agents]:
        raise UserError(f"--baseline {args.baseline} (step {step}) is not among the checkpoints in {ckpt_dir}")
    return step


def run_report(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(args.threads or 1, 1))
    thresholds = make_thresholds(args)
    ckpt_dir = Path(args.ckpt_dir or args.out or "ckpt")
    files, agents = load_run(ckpt_dir)
    with joined(args.device), FolderLock(ckpt_dir), diverged("inside the environment while scoring",
                                        "these agents' environment config is unstable; retrain with a lower --env lr"):
        return _rescore(args, ckpt_dir, files, agents, thresholds)


def _rescore(args: argparse.Namespace, ckpt_dir: Path, files: list, agents: list, thresholds) -> int:
    from tqdm import tqdm
    extra = agents[-1].extra
    baseline_step = _baseline_step(args, agents, ckpt_dir)
    episodes = args.episodes if args.episodes is not None else extra["run"]["eval_episodes"]
    if episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {episodes}")
    run = {**extra["run"], "eval_episodes": episodes, "heldout_seed": extra["run"].get("heldout_seed", HELDOUT_SEED)}
    check_seed_ranges(run)
    env_cfg, seed = EnvConfig.from_dict(extra["env"]), run["eval_seed"]
    base_path = check_base(args.base or extra["base"], extra, "these agents", "--base")
    assets = load_base(base_path, env_cfg)
    envs = [TextSchedulingEnv(assets, env_cfg) for _ in range(max(1, min(args.workers or run["workers"], episodes)))]
    t0 = time.time()
    evaluations = [score(envs, a, env_cfg, episodes, seed, a.global_step, str(p)).to_dict()
                   for p, a in tqdm(list(zip(files, agents)), desc="checkpoints", disable=args.quiet, dynamic_ncols=True)]
    controls = score_controls(envs, env_cfg, episodes, seed, args.quiet)
    heldout_controls = extra.get("heldout_controls")
    if not heldout_controls or extra["run"].get("eval_episodes") != episodes:
        heldout_controls = score_controls(envs, env_cfg, episodes, run["heldout_seed"], args.quiet)
    heldout = recommend_and_score_heldout(envs, env_cfg, run, evaluations, controls, baseline_step, thresholds,
                                          heldout_controls)
    built = write_rl_report(ckpt_dir, evaluations, controls, baseline_step, env_cfg, thresholds,
                            report_notes(str(base_path), env_cfg, episodes, seed), heldout)
    keep_best(ckpt_dir, heldout["step"])  # best.pt follows the re-scored recommendation
    print(f"re-evaluated {len(files)} checkpoints and {len(controls)} control policies on {episodes} episodes in "
          f"{(time.time() - t0) / 60:.1f} min; recommended: step {heldout['step']:,}; on held-out seeds it "
          f"{built['heldout']['verdict']['text']}; report {ckpt_dir / 'report.md'}")
    return 0

"""Train INFINITO (`--stage base`), then the PPO scheduler that trains it (`--stage rl`).

    python train.py --stage base                       # demo preset on the built-in corpus
    python train.py --stage base --preset tiny --out /tmp/ck
    python train.py --stage base --data ../shared/data/wikitext-2 --train-split valid
    python train.py --stage base --resume ckpt/base.pt --steps 3000
    python train.py --stage rl                         # PPO on ckpt/base.pt: ckpt/<step>.pt, best.pt, report.md
    python train.py --stage rl --resume ckpt/4096.pt --timesteps 5120 --ent-coef 0.02
    python train.py --stage rl --resume ckpt/10240.pt  # at the run's end: five more evaluation periods
    python train.py --stage report --ckpt-dir ckpt --episodes 30

Every failure a user can cause ends with one line on stderr and a non-zero exit.
The stages live in stages/ (base.py, rl.py, report.py); this file is the command line.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # Ctrl-C while torch loads, or torch not installed: one line, not a traceback
    from stages.startup import guard_startup, started
    guard_startup()

import argparse  # noqa: E402
from dataclasses import fields

from common.files import CheckpointError, FolderInUse
from data import DataError
from env.errors import EnvError
from infinito.presets import PRESETS
from stages.presets import RL_PRESETS
from stages.base import CONFIG_CLASSES, run_base
from stages.cli import OneLineParser, UserError, pick_device, run_cli
from stages.report import run_report
from stages.rl import run_rl
from stages.rl_config import BOOL_PPO_FLAGS, CHOICE_PPO_FLAGS, INT_PPO_FLAGS, PPO_FLAGS


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["base", "rl", "report"], default="base",
                   help="base: train INFINITO; rl: train the PPO scheduler; report: re-evaluate RL checkpoints")
    p.add_argument("--preset", default=None, help=f"size preset: {', '.join(PRESETS)} (default demo); --stage rl "
                   f"also takes {', '.join(n for n in RL_PRESETS if n not in PRESETS)} (docs/rl.md)")
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="TOML file of config keys (flat, or under [model] / [train]); command-line flags win")
    p.add_argument("--data", default=None, help="WikiText-layout directory or a text file (default: built-in corpus)")
    p.add_argument("--train-split", default="train",
                   help="split used for training in a WikiText directory (e.g. 'valid' when there is no train split)")
    p.add_argument("--out", default=None,
                   help="output directory: base.pt, tokenizer.model / <step>.pt, best.pt, report.md, logs "
                        "(default ckpt, or the --resume file's directory)")
    p.add_argument("--logdir", default=None, help="TensorBoard directory (default <out>/runs/base)")
    p.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue from a checkpoint: base.pt (--stage base) or <step>.pt (--stage rl)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="save and stop once this global step is done (the schedule still plans for --steps)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="a fresh run may replace an earlier run of the same stage in --out (default: it stops)")
    add_rl_arguments(p)
    cfg = p.add_argument_group("--stage base: config overrides (any key of the model or training config); "
                                "--seed and --threads also apply to --stage rl (its PPO has --learning-rate, --minibatch-size)")
    for dc in CONFIG_CLASSES:
        for f in fields(dc):
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            cfg.add_argument(_flag(f.name), dest=f.name, type=kind, default=None, metavar=kind.__name__.upper())
    return p


def add_rl_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--stage rl (defaults from --preset; on --resume, from the checkpoint)")
    g.add_argument("--base", default=None,
                   help="base checkpoint the agent schedules (default: the preset's snapshot, <out>/base-step<N>.pt)")
    g.add_argument("--timesteps", type=int, default=None,
                   help="environment decisions to train; on --resume, counted from the resumed step")
    g.add_argument("--save-freq", type=int, default=None, help="write <out>/<step>.pt every this many steps")
    g.add_argument("--full-checkpoints", default="latest", metavar="latest|all|STEP,...",
                   help="which <step>.pt keep the environments' state that exact resume needs: the latest "
                        "(default), all, or the latest and these steps (e.g. 4096,8192); the others are light, "
                        "a few hundred KB, and evaluate and generate the same")
    g.add_argument("--eval-freq", type=int, default=None, help="evaluate (and rewrite the report) every this many steps")
    g.add_argument("--eval-episodes", type=int, default=None, help="seeded episodes per evaluation")
    g.add_argument("--eval-seed", type=int, default=None,
                   help="evaluation episode k uses seed eval_seed + k (checkpoints are selected on these)")
    g.add_argument("--heldout-seed", type=int, default=None,
                   help="held-out episode k uses seed heldout_seed + k: the recommended checkpoint and the control "
                        "policies are scored there for the report's headline")
    g.add_argument("--num-envs", type=int, default=None, help="environments stepped together")
    g.add_argument("--workers", type=int, default=None,
                   help="threads stepping them (one torch thread each); evaluations and the controls play on "
                        "every core free when they start, at least this many (the report stage: exactly this "
                        "many when given)")
    g.add_argument("--env", nargs="+", default=[], metavar="KEY=VALUE",
                   help="environment config, e.g. max_steps=30 reward.phi_low=5.5 (see docs/env.md)")
    g.add_argument("--teacher", default=None, metavar="CONTROL",
                   help="start the policy as a clone of this control (its name in the report: 'tuned rule', "
                        "'tuned step-size decay', 'always TEXT', ...; a family's member tuned on the evaluation "
                        "seeds), then train it with PPO; a new run only (docs/rl.md, \"Teacher start\")")
    g.add_argument("--teacher-episodes", type=int, default=None,
                   help="the teacher's episodes the clone learns from (default 32)")
    g.add_argument("--teacher-seed", type=int, default=None,
                   help="first seed of the teacher's episodes: training seeds, apart from the evaluation and "
                        "held-out ones (default 30000)")
    g.add_argument("--until-level", type=int, default=None, metavar="K",
                   help="stop once the evaluation curve has levelled: the last K evaluations, averaged per episode, "
                        "no longer above the K before (paired 95%% CI reaches 0); --timesteps is then the budget")
    g.add_argument("--early-stop", action="store_true",
                   help="stop when an evaluation is flagged as over-fitting against the best (best.pt is kept)")
    g.add_argument("--patience", type=int, default=1, help="consecutive flagged evaluations before --early-stop stops")
    g.add_argument("--overfit-drop", type=float, default=0.2,
                   help="over-fitting: mean this many control spreads (best minus worst control mean) below the baseline")
    g.add_argument("--severe-drop", type=float, default=0.5, help="severe over-fitting: mean this many control spreads below")
    g.add_argument("--overfit-std-factor", type=float, default=5.0, help="over-fitting: std this many times the baseline's")
    g.add_argument("--high-variance-factor", type=float, default=2.0, help="high variance: std this many times the baseline's")
    for name in BOOL_PPO_FLAGS:  # the line falls to 0 at the run's planned end (docs/ppo.md, Checkpoints)
        g.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None,
                       help=f"PPOConfig.{name}: decay linearly to 0 at the last step (default: the preset's, off)")
    for name, choices in CHOICE_PPO_FLAGS.items():
        g.add_argument(_flag(name), dest=name, choices=choices, default=None, help=f"PPOConfig.{name}")
    for name in (n for n in PPO_FLAGS if n not in BOOL_PPO_FLAGS and n not in CHOICE_PPO_FLAGS):
        g.add_argument(_flag(name), dest=name, type=int if name in INT_PPO_FLAGS else float,
                       default=None, metavar="N" if name in INT_PPO_FLAGS else "X", help=f"PPOConfig.{name}")
    r = p.add_argument_group("--stage report")
    r.add_argument("--ckpt-dir", default=None, help="directory of RL checkpoints <step>.pt (default ckpt)")
    r.add_argument("--baseline", default=None, metavar="CKPT", help="checkpoint the others are compared with (default: the best)")
    r.add_argument("--episodes", type=int, default=None, help="seeded episodes per checkpoint (default: as in training)")


# Which stages read each flag that is not for all of them; a flag given to a stage that does not
# read it is refused rather than silently ignored.
BASE_AND_RL = {"preset", "resume", "logdir", "overwrite", "seed"}
RL_AND_REPORT = {"base", "eval_seed", "heldout_seed", "workers", "overfit_drop", "severe_drop", "overfit_std_factor",
                 "high_variance_factor"}
ALL_STAGES = {"stage", "out", "device", "quiet", "threads", "help"}


def stages_of(p: argparse.ArgumentParser) -> dict[str, set[str]]:
    """dest -> the stages that read it, from the parser's groups."""
    used = {}
    for group in p._action_groups:
        title = group.title or ""
        stage = "rl" if title.startswith("--stage rl") else "report" if title.startswith("--stage report") else "base"
        for a in group._group_actions:
            used[a.dest] = {stage}
    for dest in used:
        if dest in BASE_AND_RL:
            used[dest] = {"base", "rl"}
        elif dest in RL_AND_REPORT:
            used[dest] = {"rl", "report"}
        elif dest in ALL_STAGES:
            used[dest] = {"base", "rl", "report"}
    return used


INSTEAD = {("report", "eval_episodes"): "--episodes", ("rl", "episodes"): "--eval-episodes"}


def unused_flags(p: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The flags given (not at their default) that args.stage does not read, one line each."""
    out, used = [], stages_of(p)
    for a in p._actions:
        stages = used.get(a.dest, {args.stage})
        if args.stage not in stages and getattr(args, a.dest, None) != a.default:
            instead = INSTEAD.get((args.stage, a.dest))
            out.append(f"{a.option_strings[-1]} is not used by --stage {args.stage} (it is read by --stage "
                       f"{' and --stage '.join(sorted(stages))})" + (f"; use {instead}" if instead else ""))
    return out


def run_stage(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise UserError(f"--seed must be in [0, 2**63), got {args.seed}")
    unused = unused_flags(parser, args)
    if unused:
        more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
        raise UserError(f"{unused[0]}{more}; drop it or pick the stage it belongs to")
    if args.stage != "base":
        pick_device(args.device)  # fails now if CUDA is asked for but absent
    return {"base": run_base, "rl": run_rl, "report": run_report}[args.stage](args)


def main(argv: list[str] | None = None) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines show up promptly in logs too
    parser = build_parser()
    return run_cli(lambda: run_stage(parser.parse_args(argv), parser), (DataError, CheckpointError, EnvError, FolderInUse),
                   os_hint="; check the path and free disk space",
                   interrupted="interrupted; nothing more was saved (checkpoints already written are intact)")


if __name__ == "__main__":
    started()  # loaded: from here Ctrl-C is handled by run_cli / StopFlag
    sys.exit(main())

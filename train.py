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
from stages.rl.presets import RL_PRESETS
from stages.base import CONFIG_CLASSES, run_base
from stages.cli import OneLineParser, StageFlags, UserError, pick_device, run_cli
from stages.report.stage import run_report
from stages.rl.stage import run_rl
from stages.rl.presets import CHOICE_PPO_FLAGS, PPO_FLAGS
from ppo import PPOConfig


BASE, RL, REPORT = "base", "rl", "report"
STAGES = (BASE, RL, REPORT)
# the base stage's config keys that other stages read too (the stage reads the rest alone)
SHARED_CONFIG_KEYS = {"seed": (BASE, RL), "threads": STAGES}
SEED_HELP = ("the seed of everything random the stage does (default: base 1337, rl 0); a resumed run continues its "
             "checkpoint's random state, so it takes no --seed")
THREADS_HELP = ("torch CPU threads of the stage's process; 0: as many as cores are idle at its start (default: base 0, "
                "rl and report 1: PPO's small networks run fastest on one)")


def build_parser() -> tuple[argparse.ArgumentParser, StageFlags]:
    p = OneLineParser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    flags = StageFlags(STAGES)
    g = p.add_argument_group("every stage")
    flags.add(g, "--stage", choices=STAGES, default=BASE, stages=STAGES,
              help="base: train INFINITO; rl: train the PPO scheduler; report: re-evaluate RL checkpoints")
    flags.add(g, "--out", default=None, stages=STAGES,
              help="output directory: base.pt, tokenizer.model / <step>.pt, best.pt, report.md, logs "
                   "(default ckpt, or the --resume file's directory)")
    flags.add(g, "--device", default="auto", choices=["auto", "cpu", "cuda"], stages=STAGES)
    flags.add(g, "--quiet", action="store_true", stages=STAGES, help="no progress bar")
    g = p.add_argument_group("--stage base and --stage rl")
    flags.add(g, "--preset", default=None, stages=(BASE, RL),
              help=f"size preset: {', '.join(PRESETS)} (default demo); --stage rl also takes "
                   f"{', '.join(n for n in RL_PRESETS if n not in PRESETS)} (docs/rl.md)")
    flags.add(g, "--resume", default=None, metavar="CKPT", stages=(BASE, RL),
              help="continue from a checkpoint: base.pt (--stage base) or <step>.pt (--stage rl)")
    flags.add(g, "--logdir", default=None, stages=(BASE, RL), help="TensorBoard directory (default <out>/runs/...)")
    flags.add(g, "--overwrite", action="store_true", stages=(BASE, RL),
              help="a fresh run may replace an earlier run of the same stage in --out (default: it stops)")
    add_base_arguments(p, flags)
    add_rl_arguments(p, flags)
    add_report_arguments(p, flags)
    return p, flags


def add_base_arguments(p: argparse.ArgumentParser, flags: StageFlags) -> None:
    g = p.add_argument_group("--stage base")
    flags.add(g, "--config", default=None, metavar="FILE.toml", stages=(BASE,),
              help="TOML file of config keys (flat, or under [model] / [train]); command-line flags win")
    flags.add(g, "--data", default=None, stages=(BASE,),
              help="WikiText-layout directory or a text file (default: built-in corpus)")
    flags.add(g, "--train-split", default="train", stages=(BASE,),
              help="split used for training in a WikiText directory (e.g. 'valid' when there is no train split)")
    flags.add(g, "--stop-at", type=int, default=None, metavar="STEP", stages=(BASE,),
              help="save and stop once this global step is done (the schedule still plans for --steps)")
    g = p.add_argument_group("--stage base: config overrides", "any key of the model or training config; "
                             "--seed and --threads are read by other stages too")
    for cls in CONFIG_CLASSES:
        flags.add_fields(g, cls, [f.name for f in fields(cls)], lambda name: SHARED_CONFIG_KEYS.get(name, (BASE,)),
                         helps={"seed": SEED_HELP, "threads": THREADS_HELP})


def add_rl_arguments(p: argparse.ArgumentParser, flags: StageFlags) -> None:
    g = p.add_argument_group("--stage rl (defaults from --preset; on --resume, from the checkpoint)")

    def rl(*names, stages=(RL,), **kw):
        flags.add(g, *names, stages=stages, **kw)
    rl("--base", default=None, stages=(RL, REPORT),
       help="base checkpoint the agent schedules (default: the preset's snapshot, <out>/base-step<N>.pt)")
    rl("--timesteps", type=int, default=None, help="environment decisions to train; on --resume, counted from the "
                                                     "resumed step")
    rl("--save-freq", type=int, default=None, help="write <out>/<step>.pt every this many steps")
    rl("--full-checkpoints", default="latest", metavar="latest|all|STEP,...",
       help="which <step>.pt keep the environments' state that exact resume needs: the latest (default), all, or "
            "the latest and these steps (e.g. 4096,8192); the others are light, a few hundred KB, and evaluate "
            "and generate the same")
    rl("--eval-freq", type=int, default=None, help="evaluate (and rewrite the report) every this many steps")
    rl("--eval-episodes", type=int, default=None, help="seeded episodes per evaluation")
    rl("--eval-seed", type=int, default=None, stages=(RL, REPORT),
       help="evaluation episode k uses seed eval_seed + k (checkpoints are selected on these)")
    rl("--heldout-seed", type=int, default=None, stages=(RL, REPORT),
       help="held-out episode k uses seed heldout_seed + k: the recommended checkpoint and the control policies "
            "are scored there for the report's headline")
    rl("--num-envs", type=int, default=None, help="environments stepped together")
    rl("--workers", type=int, default=None, stages=(RL, REPORT),
       help="threads stepping them (one torch thread each); evaluations and the controls play on every core free "
            "when they start, at least this many (the report stage: exactly this many when given)")
    rl("--env", nargs="+", default=[], metavar="KEY=VALUE",
       help="environment config, e.g. max_steps=30 reward.phi_low=5.5 (see docs/env.md)")
    rl("--teacher", default=None, metavar="CONTROL",
       help="start the policy as a clone of this control (its name in the report: 'tuned rule', 'tuned step-size "
            "decay', 'always TEXT', ...; a family's member tuned on the evaluation seeds), then train it with PPO; "
            "a new run only (docs/rl.md, \"Teacher start\")")
    rl("--teacher-episodes", type=int, default=None, help="the teacher's episodes the clone learns from (default 32)")
    rl("--teacher-seed", type=int, default=None,
       help="first seed of the teacher's episodes: training seeds, apart from the evaluation and held-out ones "
            "(default 30000)")
    rl("--until-level", type=int, default=None, metavar="K",
       help="stop once the evaluation curve has levelled: the last K evaluations, averaged per episode, no longer "
            "above the K before (paired 95%% CI reaches 0); --timesteps is then the budget")
    rl("--early-stop", action="store_true",
       help="stop when an evaluation is flagged as over-fitting against the best (best.pt is kept)")
    rl("--patience", type=int, default=1, help="consecutive flagged evaluations before --early-stop stops")
    report = (RL, REPORT)
    rl("--overfit-drop", type=float, default=0.2, stages=report,
       help="over-fitting: mean this many control spreads (best minus worst control mean) below the baseline")
    rl("--severe-drop", type=float, default=0.5, stages=report,
       help="severe over-fitting: mean this many control spreads below")
    rl("--overfit-std-factor", type=float, default=5.0, stages=report,
       help="over-fitting: std this many times the baseline's")
    rl("--high-variance-factor", type=float, default=2.0, stages=report,
       help="high variance: std this many times the baseline's")
    # PPO's own knobs, named as PPOConfig's fields (--learning-rate, --minibatch-size: the base stage's --lr
    # and --batch-size are other settings); --anneal-lr's line falls to 0 at the run's planned end
    flags.add_fields(g, PPOConfig, PPO_FLAGS, lambda name: (RL,), CHOICE_PPO_FLAGS)


def add_report_arguments(p: argparse.ArgumentParser, flags: StageFlags) -> None:
    g = p.add_argument_group("--stage report")
    flags.add(g, "--ckpt-dir", default=None, stages=(REPORT,),
              help="directory of RL checkpoints <step>.pt (default ckpt)")
    flags.add(g, "--baseline", default=None, metavar="CKPT", stages=(REPORT,),
              help="checkpoint the others are compared with (default: the best)")
    flags.add(g, "--episodes", type=int, default=None, stages=(REPORT,),
              help="seeded episodes per checkpoint (default: as in training)")


INSTEAD = {("report", "eval_episodes"): "--episodes", ("rl", "episodes"): "--eval-episodes"}


def run_stage(args: argparse.Namespace, flags: StageFlags) -> int:
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise UserError(f"--seed must be in [0, 2**63), got {args.seed}")
    if args.threads is not None and args.threads < 0:
        raise UserError(f"--threads must be >= 0 (0: the cores idle at the start), got {args.threads}")
    unused = flags.unused(args, INSTEAD)
    if unused:
        more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
        raise UserError(f"{unused[0]}{more}; drop it or pick the stage it belongs to")
    if args.stage != "base":
        pick_device(args.device)  # fails now if CUDA is asked for but absent
    return {"base": run_base, "rl": run_rl, "report": run_report}[args.stage](args)


def main(argv: list[str] | None = None) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines show up promptly in logs too
    parser, flags = build_parser()
    return run_cli(lambda: run_stage(parser.parse_args(argv), flags), (DataError, CheckpointError, EnvError, FolderInUse),
                   os_hint="; check the path and free disk space",
                   interrupted="interrupted; nothing more was saved (checkpoints already written are intact)")


if __name__ == "__main__":
    started()  # loaded: from here Ctrl-C is handled by run_cli / StopFlag
    sys.exit(main())

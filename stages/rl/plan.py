"""What an RL run is: a preset, the command line's flags, or a resumed checkpoint, resolved into one plan.

A new run takes its environment, PPO and run settings from `stages/rl/presets.py`
(`--preset`, default demo) with flags on top. A resumed run takes them from
the checkpoint (its `extra` holds the run and environment settings), with flags
on top, and checks that the base checkpoint is the one the agent was trained on.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path

from env import EnvConfig
from env.reward import reward_from_dict
from .presets import RL_PRESETS, RunSettings, merge_reward, resolve
from ppo.checkpoint import RESUME_KEYS, is_light
from ppo import PPOConfig, load_agent_checkpoint

from ..cli import SEED_ON_RESUME, UserError, resolve_threads
from ..identity import check_base
from .record import RunRecord
from ..outputs import output_folder
from ..report.overfit import Thresholds
from .teacher import TEACHER_EPISODES, TEACHER_SEED, check_teacher

RESUME_PERIODS = 5  # a run resumed at its planned end continues for this many evaluation periods


@dataclass
class RLPlan:
    run: RunSettings             # the stage's own settings
    env_cfg: EnvConfig
    base_path: Path
    out_dir: Path
    ppo_cfg: PPOConfig | None = None                 # the run's PPO config (resumed: the checkpoint's, flags applied)
    start_step: int = 0
    record: RunRecord | None = None                  # what the resumed checkpoint recorded (controls, base model)
    resume: str | None = None                        # the checkpoint a resumed run continues
    checkpoint: dict | None = None                   # its content, read once (plan_resume); build_agent uses it
    superseded: str | None = None                    # where the earlier run's later files were moved
    resumes: list = field(default_factory=list)      # the steps this run's lineage was resumed from, oldest first
    # How the stage runs, from the command line (the functions below run_rl read the plan, never the flags):
    thresholds: Thresholds = field(default_factory=Thresholds)  # the over-fitting report's rules
    checkpoints: tuple = ("latest", ())             # --full-checkpoints: (CheckpointCallback env_state, keep_full)
    early_stop: bool = False
    until_level: int | None = None                   # --until-level K: stop when the evaluation curve levels
    patience: int = 1
    logdir: Path | None = None                       # TensorBoard root of this run (default <out>/runs)
    device: str = "auto"
    quiet: bool = False
    threads: int = 1
    teacher: dict | None = None                      # --teacher: the control to clone first (stages/rl/teacher.py)


def check_rollout(cfg: PPOConfig, num_envs: int, left: int) -> None:
    """A rollout longer than the steps left would never reach its first update (and a huge one
    would only fail allocating its buffer)."""
    if cfg.n_steps * num_envs > left:
        raise UserError(f"a rollout of --n-steps {cfg.n_steps} x {num_envs} environments is more than the "
                        f"{left:,} steps to train; lower --n-steps or raise --timesteps")


def check_groups(cfg: PPOConfig, num_envs: int) -> None:
    """Every environment belongs to one group of --group-size (common/vector.py, "Groups")."""
    if num_envs % cfg.group_size:
        raise UserError(f"--num-envs {num_envs} is not a multiple of --group-size {cfg.group_size}; every "
                        "environment must belong to a group of that size")


def check_seed_ranges(run: RunSettings) -> None:
    """Episode k of an evaluation starts from seed + k: the selection's seeds and the held-out
    seeds must be distinct sets (else "held-out" would be a claim, not a fact) and stay in 63 bits."""
    n, ev, ho = run.eval_episodes, run.eval_seed, run.heldout_seed
    for flag, seed in (("--eval-seed", ev), ("--heldout-seed", ho)):
        if not 0 <= seed <= 2**63 - 1 - n:
            raise UserError(f"{flag} must be in [0, 2**63 - {n}) for {n} episodes, got {seed}")
    if abs(ev - ho) < n:
        raise UserError(f"--eval-seed {ev} and --heldout-seed {ho} give overlapping episode seeds for {n} episodes "
                        f"(each uses seed .. seed + {n - 1}); keep them at least {n} apart")


def plan_new(args: argparse.Namespace, out_dir: Path, threads: int) -> RLPlan:
    preset = args.preset or "demo"
    if preset not in RL_PRESETS:
        raise UserError(f"unknown preset '{preset}' (choose from {', '.join(RL_PRESETS)})")
    base_file = RL_PRESETS[preset]["run"].base_file
    base_path = Path(args.base) if args.base else out_dir / base_file
    s = resolve(RL_PRESETS[preset], args, base_path, run={"preset": preset, "base_file": base_path.name},
                ppo={"seed": args.seed if args.seed is not None else 0, "torch_threads": threads})
    check_seed_ranges(s.run)
    if not base_path.is_file():
        hint = "" if args.base else f" (preset {preset} starts from the base stage's snapshot {base_file})"
        raise UserError(f"base checkpoint {base_path} does not exist{hint}; train one with "
                        f"`python train.py --stage base --out {base_path.parent}` or pass --base")
    check_rollout(s.ppo, s.run.num_envs, s.run.timesteps)
    check_groups(s.ppo, s.run.num_envs)
    return RLPlan(s.run, s.env, base_path, out_dir, ppo_cfg=s.ppo)


def resumed_total(start: int, planned: int, more: int | None, eval_freq: int) -> tuple[int, str | None]:
    """The step a resumed run trains to, and a note when it is not the one planned: `more` steps
    past the start when --timesteps is given; the planned total while it is ahead; else (the run
    is at its end: the checkpoint users resume from after looking at a report) RESUME_PERIODS
    more evaluation periods."""
    if more is not None:
        return start + more, None
    if planned > start:
        return planned, None
    total = start + RESUME_PERIODS * eval_freq
    return total, (f"step {start:,} is the run's planned end; continuing for {RESUME_PERIODS} more evaluation "
                   f"periods of {eval_freq:,} steps, to step {total:,} (pass --timesteps N to train N more)")


def plan_resume(args: argparse.Namespace, out_dir: Path) -> RLPlan:
    if args.preset:
        raise UserError("--preset cannot be combined with --resume (the checkpoint holds its config)")
    if args.seed is not None:
        raise UserError(SEED_ON_RESUME)
    head = load_agent_checkpoint(args.resume, required=(*RESUME_KEYS, "extra"))  # the agent is built from it
    if is_light(head):
        print(f"note: {args.resume} is a light checkpoint (no environment state; only a run's latest checkpoint "
              "keeps it, see --full-checkpoints): the environments restart from the base model, so this run "
              "continues but does not repeat the uninterrupted one")
    record = RunRecord.read(head["extra"], args.resume)
    start, trained = int(head["global_step"]), PPOConfig.from_dict(head["config"])
    total, note = resumed_total(start, trained.total_timesteps, args.timesteps,
                                args.eval_freq or record.settings.eval_freq)
    base_path = check_base(args.base or record.base, record, args.resume, "--base")
    s = resolve({"env": record.env, "ppo": trained, "run": record.settings}, args, base_path, run={"timesteps": total})
    run, env_cfg, ppo_cfg = s.run, s.env, s.ppo  # built once here, handed to PPO.from_checkpoint as they are
    check_seed_ranges(run)
    check_reward_kept(record, env_cfg, args, base_path)
    if len(env_cfg.modes) != head["n_actions"]:
        raise UserError(f"{args.resume} was trained with {head['n_actions']} actions, the environment now has "
                        f"{len(env_cfg.modes)}; resume with the original modes or start a new run")
    check_rollout(ppo_cfg, run.num_envs, run.timesteps - start)
    trained_with = trained.group_size
    if ppo_cfg.group_size != trained_with:
        raise UserError(f"--group-size cannot change when resuming (the run seeds its environments in groups of "
                        f"{trained_with}); start a new run with --out NEW for groups of {ppo_cfg.group_size}")
    check_groups(ppo_cfg, run.num_envs)
    if note:  # only now: a refused resume says nothing but its error
        print(note)
    resumes = [s for s in record.resumes if s < start] + [start]
    return RLPlan(run, env_cfg, base_path, out_dir, ppo_cfg=ppo_cfg, start_step=start,
                  record=record, resume=args.resume, checkpoint=head, resumes=resumes)


def check_reward_kept(record: RunRecord, env_cfg: EnvConfig, args: argparse.Namespace, base_path: Path) -> None:
    """A resumed run is scored under the reward it was trained with: its checkpoints' evaluations
    (the report's rows, the resumed-from baseline, best.pt's choice) and its stored controls are
    returns under that reward, and `--stage report` reads a folder as one run on one environment.
    Another reward (or other constants of it) would mix returns on two scales: refused, with the
    new run that trains under it."""
    new, stored = env_cfg.reward, merge_reward(record.env.get("reward", {}), {})
    defaults = {f.name: f.default for f in fields(new)}  # what a key the checkpoint lacks was read as
    if stored["name"] == new.name and {**defaults, **stored} == new.to_dict():
        return
    old = reward_from_dict(stored)  # built for the message only: the run's one reward is env_cfg's
    flags = " ".join(e for e in args.env if e.startswith("reward."))
    preset = f" --preset {record.run['preset']}" if record.run.get("preset") else ""
    raise UserError(f"a resumed run keeps its reward ({old.describe()}): its evaluations, baseline and controls "
                    f"were scored under it; to train under {new.describe()}, start a new run with{preset} "
                    f"--base {base_path} --out NEW --env {flags}")


def plan(args: argparse.Namespace) -> RLPlan:
    """The whole run from the command line (and, resumed, its checkpoint), checked before any work."""
    threads = resolve_threads(1 if args.threads is None else args.threads)
    thresholds = make_thresholds(args)
    checkpoints = full_checkpoints(args.full_checkpoints)
    if args.patience < 1:
        raise UserError(f"--patience must be >= 1, got {args.patience}")
    out_dir = output_folder(args.out, args.resume)
    p = plan_resume(args, out_dir) if args.resume else plan_new(args, out_dir, threads)
    p.thresholds, p.checkpoints, p.early_stop, p.patience = thresholds, checkpoints, args.early_stop, args.patience
    if args.until_level is not None and args.until_level < 1:
        raise UserError(f"--until-level must be >= 1, got {args.until_level}")
    p.until_level = args.until_level
    p.logdir = Path(args.logdir) if args.logdir else None
    p.device, p.quiet, p.threads = args.device, args.quiet, threads
    p.teacher = teacher_spec(args, p)
    return p


def teacher_spec(args: argparse.Namespace, p: RLPlan) -> dict | None:
    """--teacher and its flags, checked (None without --teacher)."""
    if args.teacher is None:
        if args.teacher_episodes is not None or args.teacher_seed is not None:
            raise UserError("--teacher-episodes and --teacher-seed need --teacher NAME")
        return None
    if args.resume:
        raise UserError("--teacher starts a new run's policy; a resumed run continues its checkpoint's, which "
                        "records the teacher it started from")
    return check_teacher(args.teacher, TEACHER_EPISODES if args.teacher_episodes is None else args.teacher_episodes,
                         TEACHER_SEED if args.teacher_seed is None else args.teacher_seed, p.env_cfg, p.run)


def make_thresholds(args) -> Thresholds:
    try:
        return Thresholds(args.overfit_drop, args.severe_drop, args.overfit_std_factor, args.high_variance_factor)
    except ValueError as e:
        raise UserError(f"{e} (--overfit-drop, --severe-drop, --overfit-std-factor, --high-variance-factor)") from None


def full_checkpoints(value: str) -> tuple[str, tuple]:
    """--full-checkpoints latest | all | STEP,STEP,... -> (CheckpointCallback env_state, keep_full)."""
    if value in ("latest", "all"):
        return value, ()
    try:
        steps = tuple(int(v) for v in value.split(","))
    except ValueError:
        steps = ()
    if not steps or min(steps) < 1:  # a step is a positive decision count: 0 or -5 would name no checkpoint
        raise UserError(f"--full-checkpoints must be latest, all or positive steps like 4096,8192; got {value!r}")
    return "latest", steps

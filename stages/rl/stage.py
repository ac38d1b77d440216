"""The RL stage: a PPO agent learns to schedule INFINITO's training (`python train.py --stage rl`).

Reads top to bottom: resolve the plan (stages/rl/plan.py), build the
environments, score the control policies on the evaluation and held-out seeds,
build or resume the agent, train it with callbacks (evaluate and checkpoint
every few thousand steps, rewrite the report, log what the environment did,
stop early on over-fitting or Ctrl-C), then score the recommended checkpoint on
the held-out seeds for the report's headline.

Writes into the output folder: <step>.pt at every save and evaluation, best.pt,
evaluations.json, report.md / report.json, rl_log.jsonl and TensorBoard scalars
(runs/rl; a resumed run continues its curves). best.pt is the checkpoint the report recommends.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from common import distributed
from common.distributed import DistributedVectorEnv
from common.logger import Logger
from env import EnvConfig, RolloutMonitor, TextSchedulingEnv, VectorEnv, load_base
from infinito.training import NonFiniteLoss
from ppo import PPO, Callback, CheckpointCallback, EvalCallback, JsonHistoryCallback, StopWhenLevel, TrainedPolicy

from ..cli import EXIT_INTERRUPTED, StopFlag, UserError, diverged, joined
from ..identity import identify
from ..report.overfit import StopOnOverfit
from .record import RunRecord, teacher_line
from ..outputs import (STEP_NAME, claimed, fresh_run_check, log_folder, next_steps, replacing, step_checkpoint,
                      step_checkpoints, tensorboard_root)
from ..report.dashboards import SideRuns, record_eval_scalars, record_rollout_scalars, rl_layout, side_run_plan
from .plan import RLPlan, plan
from .teacher import TEACHER_TAGS, start_from_teacher
from ..report.controls import all_controls
from ..report.scoring import (RESUMED, evaluation_envs, headline, keep_best, recommend_and_score_heldout, report_notes,
                      score, write_rl_report)


class RLStageCallback(Callback):
    """What the RL stage adds to PPO's loop: environment statistics per rollout, Ctrl-C, the
    dashboards' layout, the baseline evaluation of a resumed run, and the report after every
    evaluation."""

    def __init__(self, p: RLPlan, controls: tuple[dict, dict], stop: StopFlag, eval_cb: EvalCallback):
        self.p, self.controls, self.stop, self.eval_cb = p, controls, stop, eval_cb
        self.every_control = {**controls[0], **controls[1]}  # constant and adaptive, on the dashboards
        self.monitor = RolloutMonitor(p.env_cfg)
        self.side = SideRuns(None, None)  # opened with the run's log folder when training starts
        self.baseline_step = p.start_step if p.resume else None
        self.notes = report_notes(str(p.base_path), p.env_cfg, p.run.eval_episodes, p.run.eval_seed,
                                  self.baseline_step, p.superseded)

    def on_training_start(self, trainer) -> None:
        trainer.logger.add_custom_scalars(rl_layout(self.p.env_cfg.mode_names, resumed=bool(self.p.resumes),
                                                        step_sizes=self.p.env_cfg.has_step_sizes))
        self.side = SideRuns(trainer.logger.log_dir, self.baseline_step,
                             side_run_plan(self.p.env_cfg.mode_names, self.every_control))
        if self.p.resume:
            trainer.logger.record("run/resumed_from", trainer.global_step)
        if self.baseline_step is not None and not any(r.step == trainer.global_step for r in trainer.eval_history):
            self.eval_cb.fire(trainer)  # the baseline of a resumed run needs an evaluation on the same seeds
        teacher = trainer.extra.get("teacher")
        if teacher and trainer.global_step == 0 and not trainer.eval_history:
            for key in TEACHER_TAGS:
                trainer.logger.record(f"teacher/{key}", teacher[key])
            self.eval_cb.fire(trainer)  # step 0: the clone, before any PPO update
        trainer.logger.dump(trainer.global_step)

    def on_step(self, trainer, infos: dict) -> None:
        self.monitor.observe(infos)
        if distributed.current().any(self.stop.requested):  # every rank stops after the same step
            trainer.request_stop("interrupted")

    def on_update_end(self, trainer) -> None:
        record_rollout_scalars(trainer.logger, self.side, self.monitor.pop(), self.p.env_cfg.mode_names,
                               self.p.env_cfg.reward.band, trainer.global_step)

    def on_evaluation(self, trainer, result) -> None:
        for key in ("phi_mean", "phi_in_band_pct", "c_mean", "final_ppl"):
            trainer.logger.record(f"eval/{key}", result.extra[key])
        record_eval_scalars(trainer.logger, self.side, result, self.every_control, trainer.global_step)
        built = self.write_report(trainer)
        keep_best(self.p.out_dir, built["recommended"]["step"])
        status = next(r["status"] for r in built["rows"] if r["step"] == trainer.global_step)
        low, high = result.ci95  # the interval the report and the charts draw
        trainer.logger.print(f"step {trainer.global_step:,}: eval {result.mean_reward:+.3f}, 95% CI [{low:+.3f}, "
                             f"{high:+.3f}] (Φ in band {result.extra['phi_in_band_pct']:.0f}%; so far: {status}); "
                             f"report {self.p.out_dir / 'report.md'}")

    def write_report(self, trainer, heldout: dict | None = None) -> dict:
        return write_rl_report(self.p.out_dir, [r.to_dict() for r in trainer.eval_history], self.controls,
                               (self.baseline_step, RESUMED), self.p.env_cfg, self.p.thresholds, self.notes, heldout,
                               resumes=self.p.resumes, teacher=trainer.extra.get("teacher"))


def build_agent(p: RLPlan, train_env: VectorEnv, extra: dict) -> PPO:
    log_dir = log_folder(p.out_dir, p.logdir, "rl")  # a resumed run continues the same curves
    logger = Logger(log_dir, jsonl=p.out_dir / "rl_log.jsonl", quiet=p.quiet,
                    resume_step=p.start_step if p.resume else None)
    if not p.resume:
        return PPO(train_env, p.ppo_cfg, extra=extra, logger=logger)
    agent = PPO.from_checkpoint(p.checkpoint, train_env, p.ppo_cfg, logger=logger, source=p.resume)
    p.checkpoint = None  # a full one holds every environment's model and optimiser: not kept for the whole run
    agent.extra.update(extra)
    p.superseded = archive_later_run(p.out_dir, p.start_step)  # only now: every check has passed
    print(f"resumed from {p.resume} at step {agent.global_step:,}; training to {p.run.timesteps:,}")
    return agent


def make_callbacks(p: RLPlan, eval_envs: list, controls: tuple[dict, dict], stop: StopFlag):
    run, out = p.run, p.out_dir

    def evaluate(trainer):
        return score(eval_envs, TrainedPolicy.from_agent(trainer), p.env_cfg, run.eval_episodes, run.eval_seed,
                     checkpoint=str(step_checkpoint(out, trainer.global_step)))

    eval_cb = EvalCallback(eval_envs, run.eval_freq, evaluate=evaluate)
    mode, steps = p.checkpoints
    ckpt_cb = CheckpointCallback(run.save_freq, str(out / STEP_NAME), on_evaluation=True, env_state=mode,
                                 keep_full=steps)
    resumed_here = step_checkpoint(out, p.start_step)
    if p.resume and Path(p.resume).resolve() == resumed_here.resolve():
        ckpt_cb.continue_from(str(resumed_here))
    stage_cb = RLStageCallback(p, controls, stop, eval_cb)
    # the stage's callback last: the evaluated step's checkpoint exists when the report recommends it
    callbacks = [eval_cb, ckpt_cb, JsonHistoryCallback(str(out / "evaluations.json")), stage_cb]
    if p.early_stop:
        callbacks.append(StopOnOverfit(p.thresholds, p.patience, controls[0], stage_cb.baseline_step))
    if p.until_level:
        callbacks.append(StopWhenLevel(p.until_level))
    return callbacks, eval_cb, ckpt_cb, stage_cb


def run_rl(args: argparse.Namespace) -> int:
    p = plan(args)  # every flag is read here, once
    torch.set_num_threads(max(p.threads, 1))
    with joined(p.device) as d, claimed(p.out_dir, "rl"), diverged(
            f"inside the environment (its inner_lr is {p.env_cfg.inner_lr:g})", lower_inner_lr(p.env_cfg)):
        if p.run.num_envs % d.world:
            raise UserError(f"{p.run.num_envs} environments cannot be shared evenly by {d.world} processes; "
                            f"pass --num-envs as a multiple of --nproc_per_node")
        if d.active and p.ppo_cfg.group_size > 1:  # DistributedVectorEnv does not seed groups
            raise UserError("--group-size is not supported under torchrun yet; run on one process")
        if d.active and p.env_cfg.device.startswith("cuda"):
            p.env_cfg = p.env_cfg.replace(device=f"cuda:{d.local_rank}")  # one GPU per rank
        return _run_rl(p, fresh_run_check(p.out_dir, p.resume, args.overwrite, "rl"))


def _run_rl(p: RLPlan, earlier: list[Path]) -> int:
    assets = load_base(p.base_path, p.env_cfg)
    run = p.run
    train_env = training_envs(assets, p.env_cfg, run.num_envs, run.workers, p.ppo_cfg.group_size)
    eval_envs = evaluation_envs(assets, p.env_cfg, None, run.workers, run.eval_episodes)
    content = p.record.base_content if p.record else identify(p.base_path)  # a resumed run keeps its identity
    started = time.time()
    controls, heldout = all_controls(eval_envs, p.env_cfg, run, p.base_path, content, p.record, p.quiet)
    timing = (started, time.time() - started)
    record = RunRecord(run.to_dict(), p.env_cfg.to_dict(), str(p.base_path), content, *controls, *heldout, p.resumes,
                       teacher=p.record.teacher if p.record else {})  # a resumed run keeps what it started from
    with replacing(earlier, "rl"):  # --overwrite: only now, every check has passed
        return _train_rl(p, train_env, eval_envs, record, timing)


def _train_rl(p: RLPlan, train_env, eval_envs: list, record: RunRecord, timing: tuple[float, float]) -> int:
    """Train, then score the recommended checkpoint on the held-out seeds; `timing`: (when the stage
    started scoring the controls, how long that took), for the reported time."""
    run = p.run
    controls = record.controls, record.adaptive
    heldout_controls = record.heldout_controls, record.heldout_adaptive
    agent = build_agent(p, train_env, record.to_extra())
    if p.teacher:  # before the first update; the step-0 evaluation then scores the clone
        record.teacher = start_from_teacher(agent, eval_envs, p.env_cfg, controls[1], p.teacher)
        agent.extra["teacher"] = record.teacher
        print(teacher_line(record.teacher))
    cfg = agent.config
    print(f"PPO: {run.num_envs} environments x {cfg.n_steps} steps per rollout, minibatch {cfg.minibatch_size}, "
          f"{cfg.n_epochs} epochs, lr {cfg.learning_rate:g}{' annealed to 0' if cfg.anneal_lr else ''}, "
          f"entropy {cfg.ent_coef:g}, gamma {cfg.gamma:g}, GAE lambda {cfg.gae_lambda:g}"
          f"{groups_note(cfg)}; "
          f"{p.env_cfg.max_steps} decisions per episode, "
          f"{p.env_cfg.inner_steps} inner steps of {p.env_cfg.inner_batch_size}x{eval_envs[0].assets.seq_len} tokens; "
          f"logs {agent.logger.log_dir}")
    with StopFlag() as stop:
        callbacks, eval_cb, ckpt_cb, stage_cb = make_callbacks(p, eval_envs, controls, stop)
        try:
            final = train(agent, callbacks, eval_cb, ckpt_cb, p.out_dir, lower_inner_lr(p.env_cfg))
        finally:
            stage_cb.side.close()
    if agent.stop_reason == "interrupted":
        print(f"interrupted at step {agent.global_step:,}; checkpoint saved to {final}; continue with "
              f"--resume {final}", file=sys.stderr)
        return EXIT_INTERRUPTED
    evaluations = [r.to_dict() for r in agent.eval_history]
    heldout = recommend_and_score_heldout(eval_envs, p.env_cfg, run, evaluations, controls[0], stage_cb.baseline_step,
                                          p.thresholds, heldout_controls)
    built = stage_cb.write_report(agent, heldout)
    why = f" ({agent.stop_reason})" if agent.stop_reason else ""
    print(f"done: step {agent.global_step:,} in {(time.time() - timing[0]) / 60:.1f} min (controls "
          f"{timing[1] / 60:.1f} min){why}; recommended checkpoint "
          f"(best.pt): step {heldout['step']:,}; {headline(built)}; report {p.out_dir / 'report.md'}")
    print(next_steps(p.out_dir, "rl", tensorboard_root(p.out_dir, p.logdir)))
    return 0


def groups_note(cfg) -> str:
    """The PPO line's words for shared-seed groups (ppo/groups.py), empty without them."""
    if cfg.group_size == 1:
        return ""
    return f", groups of {cfg.group_size} on shared seeds (advantage baseline {cfg.group_baseline})"


def training_envs(assets, env_cfg: EnvConfig, num_envs: int, workers: int, group_size: int):
    """The vector env PPO trains on, in shared-seed groups of `group_size`; under torchrun each rank
    steps its share of the environments and every rank sees the whole batch
    (common.distributed.DistributedVectorEnv)."""
    d = distributed.current()
    local = VectorEnv([TextSchedulingEnv(assets, env_cfg) for _ in d.slice(num_envs)], workers, group_size)
    return DistributedVectorEnv(local, num_envs, d) if d.active else local


def lower_inner_lr(env_cfg: EnvConfig) -> str:
    """The advice for an environment whose inner training diverged, wherever that is caught."""
    return f"lower the environment's inner_lr, e.g. --env inner_lr={env_cfg.inner_lr / 10:g}"


def train(agent: PPO, callbacks: list, eval_cb: EvalCallback, ckpt_cb: CheckpointCallback, out_dir: Path,
          advice: str) -> Path:
    """agent.learn; the final policy is always evaluated (unless interrupted) and saved -> its checkpoint."""
    try:
        agent.learn(callbacks=callbacks)
    except NonFiniteLoss as e:
        raise UserError(f"{e} inside the environment at step {agent.global_step}; the last good checkpoints "
                        f"are in {out_dir}; {advice}") from None
    if agent.stop_reason != "interrupted" and (not agent.eval_history or agent.eval_history[-1].step != agent.global_step):
        eval_cb.fire(agent)
        agent.logger.dump(agent.global_step)
    final = Path(ckpt_cb.save(agent))
    agent.close()
    return final


def archive_later_run(out_dir: Path, step: int) -> str | None:
    """Resuming from step S in a directory where the earlier run went past S: move that run's
    later checkpoints, evaluations and report aside instead of overwriting them."""
    later = step_checkpoints(out_dir, after=step)
    if not later or not distributed.current().is_main:
        return None
    dest, n = out_dir / f"superseded-{step}", 1
    while dest.exists():
        n += 1
        dest = out_dir / f"superseded-{step}-{n}"
    dest.mkdir()
    best = out_dir / "best.pt"
    moved = list(later)
    if best.exists() and TrainedPolicy.load(str(best)).global_step > step:  # the earlier run's best, not this lineage's
        moved.append(best)
    moved += [p for p in (out_dir / name for name in ("evaluations.json", "report.md", "report.json", "report.svg")) if p.exists()]
    for p in moved:
        p.replace(dest / p.name)
    also = ", best.pt" if best in moved else ""
    print(f"the earlier run in {out_dir} went past step {step:,}: moved its {len(later)} later checkpoints "
          f"({later[0].name} ... {later[-1].name}){also}, evaluations and report to {dest}")
    return str(dest)

"""Scoring policies on seeded episodes of the scheduling environment, and the over-fitting report.

Shared by the RL stage (every evaluation rewrites the report) and the report
stage (re-scores a directory of checkpoints). Every policy — a checkpoint's
greedy agent or a control — plays the same seeded episodes, so their returns
are compared episode by episode.
"""
from __future__ import annotations

from pathlib import Path

from env import EnvConfig, TextSchedulingEnv, run_policies
from common import distributed
from common.cores import idle_cores
from common.stats import t975
from ppo.checkpoint import write_light
from ppo import EvalResult, TrainedPolicy

from ..outputs import step_checkpoint
from ..rl.record import teacher_line
from ..rl.presets import RunSettings
from .overfit import FIXED, Column, Report, Thresholds, write_report


SUMMARY_KEYS = ("phi_mean", "phi_in_band_pct", "c_mean", "final_ppl", "memory_util_mean")  # an evaluation's `extra`


def score(envs, policy, env_cfg: EnvConfig, n_episodes: int, seed: int, step: int | None = None,
          checkpoint: str | None = None, name: str | None = None, on_episode=None) -> EvalResult:
    """`policy` on episodes seed .. seed+n-1 -> an EvalResult with the environment's statistics in
    `extra` (its `to_dict()` is the form reports, evaluations.json and checkpoints hold)."""
    name = name or getattr(policy, "name", type(policy).__name__)
    return score_together(envs, {name: policy}, env_cfg, n_episodes, seed, step, checkpoint, on_episode)[name]


def score_together(envs, policies: dict, env_cfg: EnvConfig, n_episodes: int, seed: int, step: int | None = None,
                   checkpoint: str | None = None, on_episode=None) -> dict:
    """`score` for {name: policy} on the same episodes, played side by side (env.run_policies: a
    step the policies agree on is paid once) -> {name: EvalResult}; `extra["env_steps"]` is what
    each one's episodes paid (their lengths, less what they shared)."""
    out = {}
    for name, runs in run_policies(envs, policies, n_episodes, seed, on_episode).items():
        summary = runs.summary(env_cfg.reward.band)
        actions = [a for tr in runs.traces for a in tr["action"]]
        extra = {**{k: summary[k] for k in SUMMARY_KEYS}, "env_steps": sum(runs.costs)}
        if checkpoint:
            extra["checkpoint"] = checkpoint
        counts = [actions.count(a) for a in range(len(env_cfg.modes))]
        out[name] = EvalResult(list(runs.returns), list(runs.lengths), counts, True, seed, step, extra=extra)
    return out


PER_DECISION = ("phi_mean", "phi_in_band_pct", "c_mean", "memory_util_mean")  # the others' average: per episode


def join_evaluations(parts: list) -> dict:
    """Evaluations (`score(...).to_dict()`) of consecutive seed ranges as the one evaluation `score`
    gives on their union: returns and lengths in seed order, action counts summed, each statistic
    averaged as `score` averages it (per decision, final perplexity per episode)."""
    if len(parts) == 1:
        return parts[0]
    for a, b in zip(parts, parts[1:]):
        if b["seed"] != a["seed"] + a["n_episodes"]:
            raise ValueError(f"evaluations from seeds {a['seed']} and {b['seed']} are not consecutive")
    decisions = [sum(p["episode_lengths"]) for p in parts]
    episodes = [p["n_episodes"] for p in parts]
    extra = {k: sum(p["extra"][k] * w for p, w in zip(parts, decisions if k in PER_DECISION else episodes))
             / sum(decisions if k in PER_DECISION else episodes) for k in SUMMARY_KEYS}
    extra["env_steps"] = sum(paid(p) for p in parts)
    counts = [sum(c) for c in zip(*(p["action_counts"] for p in parts))]
    return EvalResult([r for p in parts for r in p["episode_returns"]], [n for p in parts for n in p["episode_lengths"]],
                      counts, True, parts[0]["seed"], parts[0]["step"], extra=extra).to_dict()


def paid(evaluation: dict) -> float:
    """The environment steps an evaluation (`score(...).to_dict()`) paid: its decisions, less what
    it shared with policies played beside it; its decisions when it does not say (older ones)."""
    return evaluation["extra"].get("env_steps", sum(evaluation["episode_lengths"]))


def evaluation_envs(assets, env_cfg: EnvConfig, workers: int | None, floor: int, episodes: int) -> list:
    """The environments evaluations play on, one per thread: `workers` when given, else every core
    free now (the base stage's rule, common/cores.py) and at least `floor`; never more than the
    episodes. Seeded episodes give the same returns on any number of them."""
    n = workers if workers is not None else max(floor, idle_cores())
    return [TextSchedulingEnv(assets, env_cfg) for _ in range(max(1, min(n, episodes)))]


def score_heldout(envs, env_cfg: EnvConfig, run: RunSettings, checkpoint: Path, heldout: tuple[dict, dict]) -> dict:
    """The checkpoint's greedy policy on the held-out seeds, beside the controls' results there
    (`heldout`: constant and adaptive controls)."""
    policy = TrainedPolicy.load(str(checkpoint))
    agent = score(envs, policy, env_cfg, run.eval_episodes, run.heldout_seed, policy.global_step,
                  str(checkpoint)).to_dict()
    return {"step": policy.global_step, "agent": agent, "controls": heldout[0], "adaptive": heldout[1]}


FEW_EPISODES = 10  # below this many episodes per evaluation, CI-based ranking is mostly noise


def report_notes(base: str, env_cfg: EnvConfig, n_episodes: int, seed: int, resumed_from: int | None = None,
                 superseded: str | None = None) -> list[str]:
    changed = {k: v for k, v in env_cfg.to_dict().items() if k not in ("reward", "modes", "device", "cache_dir")}
    notes = [f"Base checkpoint `{base}`; environment {', '.join(f'{k}={v}' for k, v in changed.items())}; "
             f"reward `{env_cfg.reward.describe()}` (env/reward.py).",
             f"Every row: the greedy policy over the same {n_episodes} seeded episodes (seeds {seed}.."
             f"{seed + n_episodes - 1}); mean, sample std and Student-t 95% CI of the episode return. Control "
             "policies below on the same seeds."]
    if resumed_from is not None:
        notes.append(f"Rows up to step {resumed_from:,} come from the run this one resumed (their evaluations "
                     "are kept in its checkpoints); later rows are this run's.")
    if superseded:
        notes.append(f"The earlier run's checkpoints after step {resumed_from:,}, its evaluations and report "
                     f"were moved to `{superseded}`.")
    return notes


def tuning_note(adaptive: dict) -> list[str]:
    """What racing the adaptive families' members cost on the evaluation seeds, beside the full grid."""
    raced = [c["extra"]["race"] for c in adaptive.values() if "race" in c.get("extra", {})]
    if not raced:
        return []
    spent, grid = sum(r["episodes"] for r in raced), sum(r["full_grid"] for r in raced)
    dropped = sum(len(r["dropped"]) for r in raced)
    return [f"Tuning the adaptive families on the evaluation seeds raced their members (one clearly behind the "
            f"leader on the episodes played so far stops playing; docs/rl.md, \"Controls\"): {spent:,} episodes "
            f"where the full grid plays {grid:,}; {dropped} member(s) dropped early."]


def teacher_start(teacher: dict | None) -> dict | None:
    """The report's words for a teacher start: the first screen's line and step 0's label."""
    if not teacher:
        return None
    line = teacher_line(teacher)
    return {"step": 0, "label": "teacher clone", "line": "**Teacher start:** " + line[0].upper() + line[1:] + "."}


def few_episodes_warning(n_episodes: int) -> list[str]:
    """The warning a report opens with when its evaluations are too short to rank checkpoints."""
    if n_episodes >= FEW_EPISODES:
        return []
    t = t975(n_episodes - 1) if n_episodes > 1 else float("inf")
    return [f"**Warning: only {n_episodes} episode(s) per evaluation.** A 95% CI is then ±{t:.1f} "
            "standard errors wide, so ranking checkpoints by its lower bound (the recommendation, "
            f"best.pt) is mostly noise; evaluate with --eval-episodes {FEW_EPISODES} or more (the demo "
            "preset uses 30), or re-score with `--stage report --episodes 30`."]


def write_rl_report(out_dir: Path, evaluations: list, controls: tuple[dict, dict], baseline: tuple[int | None, str],
                    env_cfg: EnvConfig, thresholds: Thresholds, notes: list[str], heldout: dict | None = None,
                    stem: str = "report", resumes: tuple = (), teacher: dict | None = None) -> dict:
    """<stem>.md, .json and .svg in `out_dir` (`controls`: constant and adaptive; `baseline`: its step,
    None for the highest mean, and why it is the baseline; `resumes`: the steps the run was resumed
    from; `teacher`: what the policy was cloned from, RunRecord.teacher); returns the built report."""
    band = "[{:g}, {:g}]".format(*env_cfg.reward.band)
    report = Report(evaluations, controls[0], baseline[0], thresholds, env_cfg.mode_names,
                    [Column(f"Φ in {band}", "phi_in_band_pct", "{:.0f}%"), Column("Φ mean", "phi_mean", "{:.2f}"),
                     Column("C mean", "c_mean", "{:.3f}"), Column("final ppl", "final_ppl", "{:.2f}")],
                    title=f"RL report: {out_dir}", notes=notes + tuning_note(controls[1]), heldout=heldout, adaptive=controls[1],
                    warnings=few_episodes_warning(min((e["n_episodes"] for e in evaluations), default=FEW_EPISODES)),
                    baseline_kind=baseline[1], resumes=resumes, start=teacher_start(teacher))
    built = report.build()
    write_report(out_dir, built, report.markdown(built), stem)
    return built


RESUMED = "resumed-from checkpoint"  # the baseline of a resumed run, in the report's words


def recommend_and_score_heldout(envs, env_cfg: EnvConfig, run: RunSettings, evaluations: list, controls: dict,
                                baseline_step: int | None, thresholds: Thresholds, heldout: tuple[dict, dict]) -> dict:
    """The report's recommended checkpoint (`controls`: the constant ones, which set the
    over-fitting rule's unit), re-scored on the held-out seeds beside `heldout`'s controls."""
    rec = Report(evaluations, controls, baseline_step, thresholds).build()["recommended"]
    print(f"scoring the recommended checkpoint (step {rec['step']:,}) on the held-out seeds")
    distributed.current().barrier()  # rank 0 has written that checkpoint
    return score_heldout(envs, env_cfg, run, Path(rec["checkpoint"]), heldout)


def keep_best(out_dir: Path, step: int) -> None:
    """best.pt is the checkpoint the report recommends (one meaning of "best": the highest lower
    bound of the 95 % CI among the checkpoints not flagged as over-fitting), copied atomically
    without the environments' state (kilobytes, not the full checkpoint's megabytes)."""
    if not distributed.current().is_main:  # rank 0 writes the files (and only it is sure they exist)
        return
    best, source = out_dir / "best.pt", step_checkpoint(out_dir, step)
    if not (best.exists() and TrainedPolicy.load(str(best)).global_step == step):
        write_light(str(source), str(best))  # a light copy: what evaluation and generation read


def headline(built: dict) -> str:
    """The report's held-out verdicts in one sentence: against the best adaptive control first."""
    held = built["heldout"]
    adaptive = f"it {held['vs_adaptive']['text']}; " if held.get("vs_adaptive") else ""
    return f"on held-out seeds {adaptive}against {FIXED} it {held['verdict']['text']}"

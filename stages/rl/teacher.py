"""Teacher start: the RL stage's policy begins as a clone of a named control policy.

`--teacher "tuned step-size decay"` (any control of the report, by its name there; an adaptive
family's member is the one tuned on the evaluation seeds) plays that control on `--teacher-episodes`
training episodes seeded from `--teacher-seed` — never the evaluation or held-out seeds, which
stay the selection's and the headline's — and clones it into the new agent (ppo/cloning.py)
before the first PPO update. The run then evaluates the clone at step 0, so the report shows
where the agent started and what PPO added. What it started from is recorded in every
checkpoint (RunRecord.teacher), the report, the chart and the dashboards (`teacher/*` tags).
"""
from __future__ import annotations

from ppo.cloning import clone

from ..cli import UserError
from ..report.controls import control_names, control_policy
from .presets import RunSettings

TEACHER_SEED = 30_000  # the teacher's episodes: apart from the presets' evaluation (10,000) and held-out (20,000) seeds
TEACHER_EPISODES = 32
TEACHER_TAGS = ("teacher_mean_return", "agreement", "other_prob")  # logged as teacher/<key> at step 0


def check_teacher(name: str, episodes: int, seed: int, env_cfg, run: RunSettings) -> dict:
    """The --teacher flags, checked before any work -> the plan's teacher spec."""
    known = control_names(env_cfg)
    if name not in known:
        raise UserError(f"unknown --teacher {name!r}: choose a control of this environment: "
                        + ", ".join(repr(n) for n in known))
    if episodes < 1:
        raise UserError(f"--teacher-episodes must be >= 1, got {episodes}")
    n = run.eval_episodes
    for flag, other in (("--eval-seed", run.eval_seed), ("--heldout-seed", run.heldout_seed)):
        if seed < other + n and other < seed + episodes:
            raise UserError(f"--teacher-seed {seed} ({episodes} episodes) overlaps the {flag} episodes "
                            f"{other}..{other + n - 1}: the teacher learns on training seeds only")
    if not 0 <= seed <= 2**63 - 1 - episodes:
        raise UserError(f"--teacher-seed must be in [0, 2**63 - {episodes}), got {seed}")
    return {"name": name, "episodes": episodes, "seed": seed}


def start_from_teacher(agent, envs, env_cfg, adaptive: dict, spec: dict) -> dict:
    """Clone the teacher `spec` names into `agent` -> what to record (RunRecord.teacher)."""
    policy, detail = control_policy(env_cfg, adaptive, spec["name"])
    result = clone(agent, envs, policy, spec["episodes"], spec["seed"])
    return {**spec, "detail": detail, **result.to_dict()}

"""Does the agent beat the threshold rules the control families leave out?

    python bench/wider_rule.py ckpt-study-wt2

The tuned rule's family keeps Φ's thresholds at or inside the reward's band (margins
env.schedules.RULE_MARGINS), and the time switch trains TEXT first, then the rule. The WikiText-2
agents found schedules outside both (docs/studies.md, "The scheduler on real text: WikiText-2"):
a threshold past the band's top, and the rule followed by TEXT to the end. This script tunes those
schedules on a finished study's evaluation seeds, raced as the RL stage races its families
(common/racing.py; every evaluation kept in the study's control cache), in two steps:

1. the **wider rule**: the rule family's margins and OUTSIDE_MARGINS (thresholds past the band)
   x every other mode's loss weights x every step size, held constant;
2. the **rule, then TEXT**: the wider rule's winner, alone or followed by TEXT only for the last
   k decisions (k = LATE_FRACTIONS of the episode).

Both winners then play the held-out seeds, beside one of the study's agents replayed (its returns
must equal its report's, or the environment is not the one the study scored), and every training
seed's agent is compared with them episode by episode, beside the report's tuned rule. Writes
`<study>/wider_rule.json` and `.md`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402
from bench.transfer import Study  # noqa: E402
from common.stats import summarize  # noqa: E402
from env import RULE_MARGINS, EnvError, SchedulePolicy, load_base, rule_family  # noqa: E402
from infinito.checkpoint import CheckpointError  # noqa: E402
from ppo import TrainedPolicy  # noqa: E402
from stages.cli import UserError  # noqa: E402
from stages.report.controls import TUNED, ControlCache, race_and_play  # noqa: E402
from stages.report.scoring import evaluation_envs, score_together  # noqa: E402

# Thresholds past the band: a negative margin widens it. The WikiText-2 agents held Φ about 0.3
# above the band's top, or let it climb 0.4-0.5 past it; these cover that and twice as far.
OUTSIDE_MARGINS = (-0.25, -0.5, -0.75, -1.0)
LATE_FRACTIONS = (0.12, 0.24, 0.4, 0.6, 0.8)  # k / episode length: TEXT only for the last k decisions
WIDER, LATE = "wider rule", "rule, then TEXT"


def wider_members(cfg) -> dict:
    return rule_family(cfg, RULE_MARGINS + OUTSIDE_MARGINS)


def late_members(cfg, rule: SchedulePolicy) -> dict:
    ks = sorted({max(1, round(f * cfg.max_steps)) for f in LATE_FRACTIONS})
    late = [SchedulePolicy(cfg, rule.margin, rule.outside, rule.lr, text_from_left=k) for k in ks]
    return {rule.name: rule, **{p.name: p for p in late}}


def tune(study: Study, envs, quiet: bool) -> dict:
    """Both steps' races on the study's evaluation seeds -> {WIDER: evaluation, LATE: evaluation}."""
    cfg, run = study.env_cfg, study.run
    cache = ControlCache(study.base, study.record.base_content, cfg)
    race = lambda family, members: race_and_play(envs, cfg, {family: members}, {}, run.eval_episodes,  # noqa: E731
                                                 run.eval_seed, cache, quiet, family)[1][family]
    members = wider_members(cfg)
    wider = race(WIDER, members)
    return {WIDER: wider, LATE: race(LATE, late_members(cfg, members[wider["extra"]["rule"]]))}


def heldout(study: Study, envs, chosen: dict) -> dict:
    """The chosen members on the held-out seeds, beside a replayed agent (checked against its report)."""
    cfg, run = study.env_cfg, study.run
    seed, path = next(iter(study.agents.items()))
    members = {**wider_members(cfg)}
    members.update(late_members(cfg, members[chosen[WIDER]]))
    policies = {"check": TrainedPolicy.load(str(path)), **{f: members[name] for f, name in chosen.items()}}
    played = {k: v.to_dict() for k, v in score_together(envs, policies, cfg, run.eval_episodes,
                                                        run.heldout_seed).items()}
    if played.pop("check")["episode_returns"] != study.reports[seed]["heldout"]["source"]["agent"]["episode_returns"]:
        sys.exit(f"error: {seed}'s agent, replayed, does not reproduce its report's held-out returns: this is not "
                 "the environment the study scored (another code version?)")
    return played


def compare(study: Study, tuned: dict, played: dict) -> dict:
    """Per training seed: the agent minus the report's tuned rule and minus each new winner (paired)."""
    rule_detail, rule_returns = study.controls[TUNED]
    controls = {TUNED: (rule_detail, rule_returns),
                **{f: (tuned[f]["extra"]["detail"], played[f]["episode_returns"]) for f in (WIDER, LATE)}}
    rows = []
    for seed, agent in zip(study.reports, study.agent_returns()):
        row = {"seed": seed, "agent_mean": float(agent.mean())}
        for f, (_, r) in controls.items():
            d = summarize(agent - np.array(r))
            row[f] = [d["mean"], d["ci95_low"], d["ci95_high"]]
        rows.append(row)
    raced = tuned[WIDER]["extra"]["members"]  # every member's evaluation mean, the report's tuned rule's among them
    evaluation = {TUNED: raced.get(f"rule: {rule_detail}"), **{f: tuned[f]["mean_reward"] for f in (WIDER, LATE)}}
    return {"controls": {f: {"detail": d, "eval_mean": evaluation[f], "heldout_mean": float(np.mean(r))}
                         for f, (d, r) in controls.items()},
            "members": {f: tuned[f]["extra"]["members"] for f in (WIDER, LATE)},
            "rows": rows}


def markdown(result: dict, header: str) -> str:
    lines = [f"# Wider rules: {header}", "", "| control | member chosen on the evaluation seeds | evaluation mean | "
             "held-out mean |", "|---|---|---|---|"]
    for f, c in result["controls"].items():
        ev = "" if c["eval_mean"] is None else f"{c['eval_mean']:+.2f}"
        lines.append(f"| {f} | {c['detail']} | {ev} | {c['heldout_mean']:+.2f} |")
    fams = list(result["controls"])
    lines += ["", "| training seed | agent mean | " + " | ".join(f"agent − {f} (paired, 95% CI)" for f in fams) + " |",
              "|---|---|" + "---|" * len(fams)]
    for r in result["rows"]:
        lines.append(f"| {r['seed']} | {r['agent_mean']:+.2f} | "
                     + " | ".join(f"{r[f][0]:+.2f} [{r[f][1]:+.2f}, {r[f][2]:+.2f}]" for f in fams) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="a finished bench/rl_study.py folder")
    p.add_argument("--workers", type=int, default=2, help="environments played in parallel (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as the RL stage scores: the same thread count gives the same numbers
    t0 = time.time()
    try:
        study = Study(Path(args.study).name, Path(args.study))
        envs = evaluation_envs(load_base(study.base, study.env_cfg), study.env_cfg, args.workers, 1,
                               study.run.eval_episodes)
        tuned = tune(study, envs, args.quiet)
        played = heldout(study, envs, {f: tuned[f]["extra"]["rule"] for f in (WIDER, LATE)})
    except (UserError, CheckpointError, EnvError) as e:
        sys.exit(f"error: {e}")
    result = {**compare(study, tuned, played), "cpu": cpu_model(), "wall_s": time.time() - t0}
    header = f"{args.study}; {cpu_model()}; {result['wall_s'] / 60:.1f} min"
    out = Path(args.study)
    (out / "wider_rule.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "wider_rule.md").write_text(markdown(result, header))
    print(markdown(result, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())

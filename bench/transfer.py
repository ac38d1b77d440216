"""Does a schedule learned, or tuned, on one corpus help on another?

    python bench/transfer.py builtin=ckpt-study wt2=ckpt-study-wt2 shakespeare=ckpt-study-sh

Each argument names a finished study of bench/rl_study.py (NAME=FOLDER; the same RL preset on
another corpus). For every target study T and every other study S, S's agents (each training
seed's recommended checkpoint, `best.pt`, unchanged) and S's tuned controls (the member each
family chose on S's evaluation seeds, and S's best constant) play T's environment on T's held-out
seeds, side by side; they are compared, episode by episode, with T's own agents and the controls
tuned on T (read from T's reports). One of T's agents is replayed first: its returns must equal
its report's, or the environment is not the one T's study scored and the script stops.

Per target: each policy's IQM over runs x episodes (stratified bootstrap 95 % interval), its
paired difference with T's best tuned control (per episode, the agents' mean over training
seeds), a transferred control's paired difference with T's own member of the same family, and
each policy's mode mix. Writes `<out>/transfer.json` and `<out>/transfer.md` (default: beside the
first study).
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
from bench.rl_study import tuned_controls  # noqa: E402
from common.policies import control_policies  # noqa: E402
from common.stats import bootstrap_interval, summarize  # noqa: E402
from env import EnvError, load_base  # noqa: E402
from infinito.checkpoint import CheckpointError  # noqa: E402
from ppo import TrainedPolicy  # noqa: E402
from stages.cli import UserError  # noqa: E402
from stages.report.controls import BANDIT, control_policy  # noqa: E402
from stages.identity import check_base  # noqa: E402
from stages.rl.record import RunRecord  # noqa: E402
from stages.report.scoring import evaluation_envs, score_together  # noqa: E402

BEST_CONSTANT = "best constant"


class Study:
    """A finished rl_study folder: its agents, its controls on the held-out seeds, its environment."""

    def __init__(self, name: str, folder: Path):
        self.name, self.folder = name, folder
        seeds = sorted(folder.glob("seed-*/report.json"), key=lambda p: int(p.parent.name.split("-")[1]))
        self.reports = {p.parent.name: json.loads(p.read_text()) for p in seeds}
        if not self.reports or not all(r.get("heldout") for r in self.reports.values()):
            sys.exit(f"error: {folder} is not a finished study (no seed-*/report.json with held-out scores); "
                     "run bench/rl_study.py to the end first")
        self.agents = {seed: folder / seed / "best.pt" for seed in self.reports}
        first = TrainedPolicy.load(str(next(iter(self.agents.values()))))
        self.record = RunRecord.read(first.extra, str(self.agents[next(iter(self.agents))]))
        self.base = check_base(folder / "base" / Path(self.record.base).name, self.record, f"the {name} study",
                               f"its folder ({folder}/base)")
        self.env_cfg = self.record.env_config.replace(cache_dir=str(self.base.parent / "cache"))
        self.run = self.record.settings
        held = next(iter(self.reports.values()))["heldout"]["source"]
        self.controls = tuned_controls(next(iter(self.reports.values())))  # {family: (detail, returns)}
        self.members = held["adaptive"]  # each family's member, as control_policy reads it
        self.best_constant = self.controls[BEST_CONSTANT][0]
        self.counts = {f: (held["controls"][self.best_constant] if f == BEST_CONSTANT else held["adaptive"][f])
                       ["action_counts"] for f in self.controls}

    def tuned(self) -> list:
        """The families whose member was chosen on this study's evaluation seeds (the bandit has no choice)."""
        return [f for f in self.controls if f != BANDIT]

    def agent_returns(self) -> np.ndarray:
        return np.array([r["heldout"]["source"]["agent"]["episode_returns"] for r in self.reports.values()])

    def agent_counts(self) -> list:
        return [sum(c) for c in zip(*(r["heldout"]["source"]["agent"]["action_counts"] for r in self.reports.values()))]

    def control(self, family: str, env_cfg):
        """This study's tuned member of `family`, as a policy on an environment with `env_cfg`'s modes."""
        if family == BEST_CONSTANT:
            return control_policies(len(env_cfg.modes), env_cfg.mode_names)[self.best_constant]
        return control_policy(env_cfg, self.members, family)[0]


def play_on(target: Study, sources: list, workers: int) -> dict:
    """Every source's agents and tuned controls on the target's held-out seeds -> {label: evaluation}."""
    cfg, run = target.env_cfg, target.run
    check_seed, check_path = next(iter(target.agents.items()))
    policies = {f"check: {target.name} {check_seed}": TrainedPolicy.load(str(check_path))}
    for s in sources:
        if s.env_cfg.modes != cfg.modes:
            sys.exit(f"error: the {s.name} study's modes differ from the {target.name} study's; transfer needs one preset")
        policies.update({f"{s.name} agent {seed}": TrainedPolicy.load(str(p)) for seed, p in s.agents.items()})
        policies.update({f"{s.name} {family}": s.control(family, cfg) for family in s.tuned()})
    envs = evaluation_envs(load_base(target.base, cfg), cfg, workers, 1, run.eval_episodes)
    played = {k: v.to_dict() for k, v in score_together(envs, policies, cfg, run.eval_episodes,
                                                        run.heldout_seed).items()}
    replay = played.pop(f"check: {target.name} {check_seed}")["episode_returns"]
    if replay != target.reports[check_seed]["heldout"]["source"]["agent"]["episode_returns"]:
        sys.exit(f"error: {target.name}'s {check_seed} agent, replayed, does not reproduce its report's held-out "
                 "returns: this is not the environment its study scored (another code version?)")
    return played


def target_rows(target: Study, sources: list, played: dict) -> dict:
    """The target's table: its own agents and controls, then each source's, all on its held-out episodes."""
    native = {f: np.array(r) for f, (_, r) in target.controls.items()}
    best = max(native, key=lambda f: bootstrap_interval(native[f][None])["value"])
    rows = [_row(f"{target.name} agent (trained here)", target.agent_returns(), target.agent_counts(), native[best])]
    rows += [_row(f"{target.name} {f} ({'played' if f == BANDIT else 'tuned'} here): {d}", native[f][None], target.counts[f], native[best])
             for f, (d, _) in target.controls.items()]
    for s in sources:
        agents = [played[f"{s.name} agent {seed}"] for seed in s.agents]
        rows.append(_row(f"{s.name} agent (transferred)", np.array([a["episode_returns"] for a in agents]),
                         [sum(c) for c in zip(*(a["action_counts"] for a in agents))], native[best]))
        for family in s.tuned():
            detail, e = s.controls[family][0], played[f"{s.name} {family}"]
            rows.append(_row(f"{s.name} {family} (transferred): {detail}", np.array([e["episode_returns"]]),
                             e["action_counts"], native[best], native.get(family)))
    return {"target": target.name, "best_control": best, "best_detail": target.controls[best][0],
            "modes": list(target.env_cfg.mode_names), "rows": rows}


def _row(label: str, returns: np.ndarray, counts, best: np.ndarray, same_family: np.ndarray | None = None) -> dict:
    per_episode = returns.mean(axis=0)
    d = summarize(per_episode - best)
    row = {"policy": label, "runs": len(returns), "iqm": bootstrap_interval(returns),
           "vs_best": [d["mean"], d["ci95_low"], d["ci95_high"]], "mix": counts}
    if same_family is not None:
        f = summarize(per_episode - same_family)
        row["vs_same_family"] = [f["mean"], f["ci95_low"], f["ci95_high"]]
    return row


def transfer(studies: list, workers: int) -> tuple[list, float]:
    """Each study as the target of all the others -> (its tables, the environment steps paid)."""
    tables, steps = [], 0.0
    for target in studies:
        sources = [s for s in studies if s is not target]
        played = play_on(target, sources, workers)
        steps += sum(e["extra"]["env_steps"] for e in played.values())
        tables.append(target_rows(target, sources, played))
    return tables, steps


def markdown(tables: list, header: str) -> str:
    lines = [f"# Transfer: {header}"]
    for t in tables:
        lines += ["", f"## On {t['target']}'s held-out seeds (its best tuned control: {t['best_control']}, "
                      f"{t['best_detail']})", "",
                  f"| policy | runs | IQM [95% CI] | − {t['best_control']} here (paired, 95% CI) | "
                  "− the same family tuned here | mode mix (" + ", ".join(t["modes"]) + ") |",
                  "|---|---|---|---|---|---|"]
        for r in t["rows"]:
            same = _ci(r["vs_same_family"]) if "vs_same_family" in r else ""
            mix = " / ".join(f"{c / sum(r['mix']):.0%}" for c in r["mix"]) if r["mix"] else ""
            lines.append(f"| {r['policy']} | {r['runs']} | {r['iqm']['value']:+.2f} [{r['iqm']['low']:+.2f}, "
                         f"{r['iqm']['high']:+.2f}] | {_ci(r['vs_best'])} | {same} | {mix} |")
    return "\n".join(lines) + "\n"


def _ci(v: list) -> str:
    return f"{v[0]:+.2f} [{v[1]:+.2f}, {v[2]:+.2f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("studies", nargs="+", metavar="NAME=FOLDER", help="finished rl_study folders, two or more")
    p.add_argument("--out", default=None, help="where transfer.json/.md go (default: the first study's parent)")
    p.add_argument("--workers", type=int, default=2, help="environments played in parallel (default 2)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as the RL stage scores: the same thread count gives the same numbers
    pairs = [s.split("=", 1) for s in args.studies]
    if len(pairs) < 2 or any(len(x) != 2 or not x[0] for x in pairs):
        p.error("give two or more studies as NAME=FOLDER")
    if len({n for n, _ in pairs}) < len(pairs):
        p.error("each study needs its own name")
    t0 = time.time()
    try:
        tables, steps = transfer([Study(n, Path(f)) for n, f in pairs], args.workers)
    except (UserError, CheckpointError, EnvError) as e:
        sys.exit(f"error: {e}")
    wall = time.time() - t0
    header = (f"{', '.join(n for n, _ in pairs)}; {cpu_model()}; {wall / 60:.1f} min, "
              f"{steps:,.0f} environment steps ({steps / wall:.1f} per s)")
    out = Path(args.out) if args.out else Path(pairs[0][1]).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.json").write_text(json.dumps({"tables": tables, "cpu": cpu_model(), "wall_s": wall,
                                                   "env_steps": steps}, indent=2) + "\n")
    (out / "transfer.md").write_text(markdown(tables, header))
    print(markdown(tables, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())

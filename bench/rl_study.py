"""Is the learned schedule better than a rule, over training seeds?

    python bench/rl_study.py --seeds 3                 # demo preset: base, then 3 agents, then the table
    python bench/rl_study.py --seeds 3 --preset tiny --out /tmp/study   # seconds: the same steps, tiny
    python bench/rl_study.py --preset demo-lr --out /tmp/lever -- --learning-rate 1e-4   # a PPO lever
    python bench/rl_study.py --preset demo-lr --out /tmp/groups -- --group-size 4   # shared-seed groups (docs/ppo.md)
    python bench/rl_study.py --corpus wt2 --out ckpt-study-wt2   # the same on WikiText-2 (../shared/data)

`--corpus` picks what the base model trains on (`CORPORA`): the built-in generated corpus, or real
text from ../shared/data — WikiText-2, trained on its valid split, its test split the held-out text
(the base's validation and the environment's fixed measurement batch); Tiny Shakespeare, its first
90 % of lines trained on, the last 10 % held out. The RL preset is the same on every corpus; at
demo scale the environment starts from the base's step-50 snapshot on real text (step 100 on the
built-in corpus), chosen by bench/real_text_env.py before any agent (`Corpus.demo_snapshot`).

Trains one base model (`<out>/base`, its snapshot the agents start from), then one PPO agent per
training seed 1..N on that snapshot (`<out>/seed-<s>`, `python train.py --stage rl --seed s`),
and aggregates their held-out evaluations against each family's tuned control (the best
constant policy, the tuned rule, time switch, step-size decay and plateau decay where the modes
have step sizes, and the bandit; docs/rl.md, "Controls"; each selected on the evaluation seeds).
The controls are played once: every agent's run reads them from the base's control cache. Ctrl-C stops the
current stage with its checkpoint; the same command continues each piece where it stopped and
replays nothing finished.

Aggregates on the held-out seeds (Agarwal et al. 2021): per training seed, the paired difference
with every family's control; the interquartile mean over all runs x episodes with a two-way
bootstrap 95 % interval (common.stats.bootstrap_interval), the same for every control, and the
probability that the agent beats the best of them on a random held-out episode, with its
interval. The agent "beats every tuned control" when it does so (paired CI above 0) on at least
two thirds of the seeds and its IQM is above the best control's. Writes `<out>/study.json` and `<out>/study.md`.

The published `study.md` tables: docs/studies.md (the `study`, `variant_study`,
`variant_study_final`, `teacher_study` and `wt2_study` blocks).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402
from bench.quickstart_cost import steps_by_use  # noqa: E402
from common.files import write_json  # noqa: E402
from common.stats import bootstrap_interval, improvement_indicator, summarize  # noqa: E402
from stages.outputs import step_checkpoint, step_checkpoints  # noqa: E402
from infinito.presets import PRESETS as BASE_PRESETS  # noqa: E402
from infinito.presets import SNAPSHOT_DEMO, snapshot_name  # noqa: E402
from stages.rl.presets import RL_PRESETS, base_preset  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Corpus:
    """What the base model trains on, and where the demo-scale environment starts on it."""
    data: tuple[str, ...] = ()     # the base stage's data flags (none: the built-in corpus)
    # the demo base's snapshot step: where an episode of text training still lowers held-out
    # perplexity markedly (~20 % or more), measured by bench/real_text_env.py before any agent
    # (docs/studies.md, "The scheduler on real text: choosing the environment"); at step 100, the
    # built-in corpus's, it lowers it by only 7-10 % on real text
    demo_snapshot: int = SNAPSHOT_DEMO
    # --env settings of the demo-scale environment on this corpus, beside the RL preset's: Tiny
    # Shakespeare's inner step size is the next-lower probed one, 3e-4, since its study's first
    # run diverged at the demo's 6e-4 while scoring the controls (docs/studies.md)
    demo_env: tuple[str, ...] = ()

    def snapshot_at(self, base_preset: str) -> int:
        """The snapshot step of a base trained at `base_preset` on this corpus (other presets keep their own)."""
        return self.demo_snapshot if base_preset == "demo" else BASE_PRESETS[base_preset]["train"]["snapshot_at"]

    def rl_flags(self, base_preset: str, given: list[str]) -> list[str]:
        """`given` (flags after --) with this corpus's --env settings at demo scale: joined into a
        --env the user gave (argparse keeps only the last --env), else a --env of their own."""
        if not self.demo_env or base_preset != "demo":
            return list(given)
        if "--env" in given:
            i = given.index("--env") + 1
            return [*given[:i], *self.demo_env, *given[i:]]
        return ["--env", *self.demo_env, *given]


CORPORA = {
    "builtin": Corpus(),
    "wt2": Corpus(("--data", str(SHARED / "wikitext-2"), "--train-split", "valid"), demo_snapshot=50),
    "shakespeare": Corpus(("--data", str(SHARED / "tinyshakespeare" / "input.txt")), demo_snapshot=50,
                          demo_env=("inner_lr=3e-4",)),
}


TIMING = "timing.json"  # {piece: wall seconds}, summed over the calls that worked on it


def read_timing(out: Path) -> dict:
    try:
        return json.loads((out / TIMING).read_text())
    except (OSError, ValueError):
        return {}


def require(corpus: str) -> Corpus:
    """The corpus's settings, or one line saying its text is missing."""
    c = CORPORA[corpus]
    if c.data and not Path(c.data[1]).exists():
        sys.exit(f"error: the {corpus} corpus is not at {c.data[1]}; put ../shared/data beside the repository "
                 "or use the built-in corpus (--corpus builtin)")
    return c


def stage(*args: str, clock: tuple[Path, str] | None = None) -> None:
    """One train.py stage in its own process; Ctrl-C reaches it, it saves, and the study stops.
    `clock` (study folder, piece): the stage's wall time is added to the piece's in timing.json."""
    cmd = [sys.executable, str(ROOT / "train.py"), *args, "--quiet"]
    print("$ " + " ".join(cmd[1:]), flush=True)
    t0, proc = time.time(), subprocess.Popen(cmd)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:  # the stage got the same Ctrl-C: let it save its checkpoint and exit
            continue
    if clock:
        timing = read_timing(clock[0])
        timing[clock[1]] = timing.get(clock[1], 0.0) + time.time() - t0
        write_json(clock[0] / TIMING, timing)
    if code == 130:
        sys.exit("interrupted; run the same command again to continue where it stopped")
    if code:
        sys.exit(f"error: that stage failed (exit {code}); see its message above")


def ensure_base(out: Path, preset: str, corpus: str = "builtin") -> Path:
    """The base trained on the corpus (resumed where it stopped); returns the snapshot the agents start from."""
    base, name = out / "base", base_preset(preset)
    step = CORPORA[corpus].snapshot_at(name)
    if not (base / "base_summary.json").exists():
        c = require(corpus)
        if (base / "base.pt").exists():
            stage("--stage", "base", "--resume", str(base / "base.pt"), clock=(out, "base"))
        else:
            stage("--stage", "base", "--preset", name, "--out", str(base), "--snapshot-at", str(step), *c.data,
                  clock=(out, "base"))
    return base / snapshot_name(step)


def ensure_agent(out: Path, preset: str, seed: int, snapshot: Path, train_args: list[str]) -> dict:
    """The seed's finished report: trained, resumed, or only re-scored, as far as it got."""
    run_dir = out / f"seed-{seed}"
    report = run_dir / "report.json"
    if report.exists() and json.loads(report.read_text()).get("heldout"):
        return json.loads(report.read_text())
    done = step_checkpoints(run_dir)
    latest = int(done[-1].stem) if done else None
    planned = RL_PRESETS[preset]["run"].timesteps
    clock = (out, run_dir.name)
    if latest is None:
        stage("--stage", "rl", "--preset", preset, "--base", str(snapshot), "--out", str(run_dir), "--seed", str(seed),
              *train_args, clock=clock)
    elif latest < planned:
        stage("--stage", "rl", "--resume", str(step_checkpoint(run_dir, latest)), clock=clock)
    else:  # trained to the end, stopped while scoring the held-out seeds
        stage("--stage", "report", "--ckpt-dir", str(run_dir), clock=clock)
    return json.loads(report.read_text())


def tuned_controls(report: dict) -> dict:
    """Every family's tuned control on the held-out seeds, {family: (detail, episode returns)}: the
    constant policy with the best mean on the evaluation seeds (selected there, like the others'
    members), then each adaptive family's."""
    src = report["heldout"]["source"]
    constants = [c for c in report["controls"] if c["name"].startswith("always ")]
    best = max(constants, key=lambda c: c["mean_reward"])["name"]
    if best not in src["controls"]:  # a report from before the held-out seeds played it where random led
        folder = report["title"].removeprefix("RL report: ")
        sys.exit(f"error: {folder}'s report did not play {best} on the held-out seeds; score it again with "
                 f"`python train.py --stage report --ckpt-dir {folder}`, then run this again")
    out = {"best constant": (best, src["controls"][best]["episode_returns"])}
    for family, c in src["adaptive"].items():
        out[family] = (c["extra"].get("detail"), c["episode_returns"])
    return out


def aggregate(reports: dict) -> dict:
    """Per seed: the agent against each family's tuned control (paired on the held-out episodes);
    over runs x episodes: IQMs with their intervals, and P(agent > the best control)."""
    rows, agent, controls = [], [], {}
    for seed, report in reports.items():
        a = report["heldout"]["source"]["agent"]["episode_returns"]
        row = {"seed": seed, "step": report["heldout"]["step"], "agent_mean": float(np.mean(a)), "vs": {}}
        for family, (detail, returns) in tuned_controls(report).items():
            d = summarize([x - y for x, y in zip(a, returns)])
            row["vs"][family] = {"detail": detail, "mean": float(np.mean(returns)),
                                 "diff": d["mean"], "diff_low": d["ci95_low"], "diff_high": d["ci95_high"],
                                 "wins": int(sum(x > y for x, y in zip(a, returns)))}
            controls.setdefault(family, []).append(returns)
        row["beats_every_control"] = all(v["diff_low"] > 0 for v in row["vs"].values())
        rows.append(row)
        agent.append(a)
    agent = np.array(agent)
    iqms = {family: bootstrap_interval(np.array(r)) for family, r in controls.items()}
    best = max(iqms, key=lambda f: iqms[f]["value"])
    return {"rows": rows, "agent_iqm": bootstrap_interval(agent), "control_iqm": iqms, "best_control": best,
            "p_improvement": bootstrap_interval(improvement_indicator(agent, np.array(controls[best])), "mean"),
            "seeds_beating_every_control": sum(r["beats_every_control"] for r in rows),
            "runs": len(rows), "episodes": int(agent.shape[1]),
            "curves": {seed: [(r["step"], r["mean_reward"]) for r in report["rows"]] for seed, report in reports.items()}}


def speed(out: Path, seeds: int) -> dict:
    """The study's wall time by piece (timing.json) and its environment steps by use: every seed's
    PPO, checkpoint evaluations and held-out agent, the controls once (the base's cache)."""
    spent: dict = {}
    for s in range(1, seeds + 1):
        controls = out / "base" / "cache" / "controls" if s == 1 else None
        for use, n in steps_by_use(out / f"seed-{s}", controls).items():
            spent[use] = spent.get(use, 0) + n
    timing = read_timing(out)
    wall = sum(timing.values())
    return {"wall_s": timing, "env_steps": spent,
            "steps_per_s": sum(spent.values()) / wall if wall else None}


def speed_line(sp: dict, cpu: str) -> str:
    if not sp["steps_per_s"]:
        return "Wall time: not recorded (a study begun before timing.json)."
    t, steps = sp["wall_s"], sum(sp["env_steps"].values())
    pieces = ", ".join(f"{k} {v / 60:.1f} min" for k, v in t.items())
    uses = ", ".join(f"{k} {v:,.0f}" for k, v in sp["env_steps"].items())
    return (f"Wall time {sum(t.values()) / 60:.0f} min ({pieces}) on {cpu}; {steps:,.0f} environment steps "
            f"({uses}): {sp['steps_per_s']:.1f} per second, the base stage's time included.")


def verdict_line(agg: dict) -> str:
    p, best, a = agg["p_improvement"], agg["best_control"], agg["agent_iqm"]
    b = agg["control_iqm"][best]
    won = a["value"] > b["value"] and agg["seeds_beating_every_control"] * 3 >= 2 * agg["runs"]
    words = ("the agent beats every tuned control" if won else "the agent does not beat every tuned control")
    return (f"Over {agg['runs']} training seeds x {agg['episodes']} held-out episodes, {words}: it beats all of them "
            f"(paired 95% CI above 0) on {agg['seeds_beating_every_control']} of {agg['runs']} seeds; IQM agent "
            f"{a['value']:+.2f} [{a['low']:+.2f}, {a['high']:+.2f}], best control ({best}) {b['value']:+.2f} "
            f"[{b['low']:+.2f}, {b['high']:+.2f}]; P(agent > {best}) = {p['value']:.2f} [{p['low']:.2f}, {p['high']:.2f}].")


def markdown(agg: dict, header: str) -> str:
    families = list(agg["rows"][0]["vs"])
    lines = [f"# RL study: {header}", "", f"**{verdict_line(agg)}**", "",
             "| training seed | recommended step | agent mean | " + " | ".join(
                 f"agent − {f} (paired, 95% CI)" for f in families) + " | beats all |",
             "|---|---|---|" + "---|" * len(families) + "---|"]
    for r in agg["rows"]:
        cells = [f"{v['diff']:+.2f} [{v['diff_low']:+.2f}, {v['diff_high']:+.2f}]" for v in r["vs"].values()]
        lines.append(f"| {r['seed']} | {r['step']:,} | {r['agent_mean']:+.2f} | " + " | ".join(cells)
                     + f" | {'yes' if r['beats_every_control'] else 'no'} |")
    lines += ["", "| policy | tuned member (seed 1) | IQM over seeds x episodes [95% CI] |", "|---|---|---|",
              f"| agent | — | {_iqm(agg['agent_iqm'])} |"]
    for f in families:
        lines.append(f"| {f} | {agg['rows'][0]['vs'][f]['detail']} | {_iqm(agg['control_iqm'][f])} |")
    return "\n".join(lines + _curve_lines(agg["curves"])) + "\n"


def _curve_lines(curves: dict) -> list[str]:
    """Each seed's evaluation curve: the mean return on the evaluation seeds at every evaluated step."""
    steps = sorted({step for curve in curves.values() for step, _ in curve})
    seeds = list(curves)
    means = {seed: dict(curve) for seed, curve in curves.items()}
    lines = ["", "Evaluation curves (mean return on the evaluation seeds, by training step):", "",
             "| step | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for step in steps:
        cells = [f"{means[s][step]:+.2f}" if step in means[s] else "" for s in seeds]
        lines.append(f"| {step:,} | " + " | ".join(cells) + " |")
    return lines


def _iqm(b: dict) -> str:
    return f"{b['value']:+.2f} [{b['low']:+.2f}, {b['high']:+.2f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="training seeds 1..N (default 3)")
    p.add_argument("--preset", default="demo", choices=sorted(RL_PRESETS))
    p.add_argument("--corpus", default="builtin", choices=sorted(CORPORA),
                   help="what the base model trains on (default: the built-in corpus; wt2, shakespeare: ../shared/data)")
    p.add_argument("--out", default="ckpt-study", help="study folder (default ckpt-study)")
    p.add_argument("train_args", nargs="*", metavar="-- TRAIN_FLAG",
                   help="after --: flags every agent's `train.py --stage rl` gets, e.g. -- --learning-rate 1e-4 "
                        "(a resumed agent keeps the ones it started with)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    out, t0 = Path(args.out), time.time()
    snapshot = ensure_base(out, args.preset, args.corpus)
    train_args = CORPORA[args.corpus].rl_flags(base_preset(args.preset), args.train_args)
    reports = {s: ensure_agent(out, args.preset, s, snapshot, train_args) for s in range(1, args.seeds + 1)}
    agg = aggregate(reports)
    flags = f" ({' '.join(train_args)})" if train_args else ""
    corpus = "" if args.corpus == "builtin" else f" on {args.corpus}"
    header = f"{args.preset} preset{corpus}{flags}, {args.seeds} training seeds, {cpu_model()}"
    agg.update(preset=args.preset, corpus=args.corpus, train_args=train_args, cpu=cpu_model(),
               wall_s_this_call=time.time() - t0, speed=speed(out, args.seeds))
    text = markdown(agg, header) + "\n" + speed_line(agg["speed"], cpu_model()) + "\n"
    (out / "study.json").write_text(json.dumps(agg, indent=2) + "\n")
    (out / "study.md").write_text(text)
    print(text)
    print(f"this call: {(time.time() - t0) / 60:.1f} min (finished pieces are not replayed); {out / 'study.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

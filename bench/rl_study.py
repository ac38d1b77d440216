"""Is the learned schedule better than a rule, over training seeds? The study behind README "The study".

    python bench/rl_study.py --seeds 3                 # demo preset: base, then 3 agents, then the table
    python bench/rl_study.py --seeds 3 --preset tiny --out /tmp/study   # seconds: the same steps, tiny

Trains one base model (`<out>/base`, its snapshot the agents start from), then one PPO agent per
training seed 1..N on that snapshot (`<out>/seed-<s>`, `python train.py --stage rl --seed s`),
and aggregates their held-out evaluations against the tuned rule, the best adaptive control
(docs/rl.md, "Controls"). The controls are played once: every agent's run reads them from the
base's control cache. Ctrl-C stops the current stage with its checkpoint; the same command
continues each piece where it stopped and replays nothing finished.

Aggregates on the held-out seeds (Agarwal et al. 2021): the interquartile mean over all runs x
episodes with a two-way bootstrap 95 % interval (common.stats.bootstrap_interval), the same for
the tuned rule, and the probability that the agent beats the tuned rule on a random held-out
episode, with its interval. Writes `<out>/study.json` and `<out>/study.md`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402
from common.stats import bootstrap_interval, improvement_indicator  # noqa: E402
from stages.outputs import step_checkpoint, step_checkpoints  # noqa: E402
from stages.presets import RL_PRESETS  # noqa: E402

TUNED = "tuned rule"


def stage(*args: str) -> None:
    """One train.py stage in its own process; Ctrl-C reaches it, it saves, and the study stops."""
    cmd = [sys.executable, str(ROOT / "train.py"), *args, "--quiet"]
    print("$ " + " ".join(cmd[1:]), flush=True)
    proc = subprocess.Popen(cmd)
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:  # the stage got the same Ctrl-C: let it save its checkpoint and exit
            continue
    if code == 130:
        sys.exit("interrupted; run the same command again to continue where it stopped")
    if code:
        sys.exit(f"error: that stage failed (exit {code}); see its message above")


def ensure_base(out: Path, preset: str) -> Path:
    base = out / "base"
    snapshot = base / Path(RL_PRESETS[preset]["run"]["base_file"]).name
    if not (base / "base_summary.json").exists():
        stage("--stage", "base", "--preset", preset, "--out", str(base),
              *(["--resume", str(base / "base.pt")] if (base / "base.pt").exists() else []))
    return snapshot


def ensure_agent(out: Path, preset: str, seed: int, snapshot: Path) -> dict:
    """The seed's finished report: trained, resumed, or only re-scored, as far as it got."""
    run_dir = out / f"seed-{seed}"
    report = run_dir / "report.json"
    if report.exists() and json.loads(report.read_text()).get("heldout"):
        return json.loads(report.read_text())
    done = step_checkpoints(run_dir)
    latest = int(done[-1].stem) if done else None
    planned = RL_PRESETS[preset]["run"]["timesteps"]
    if latest is None:
        stage("--stage", "rl", "--preset", preset, "--base", str(snapshot), "--out", str(run_dir), "--seed", str(seed))
    elif latest < planned:
        stage("--stage", "rl", "--resume", str(step_checkpoint(run_dir, latest)))
    else:  # trained to the end, stopped while scoring the held-out seeds
        stage("--stage", "report", "--ckpt-dir", str(run_dir))
    return json.loads(report.read_text())


def aggregate(reports: dict) -> dict:
    """Per-seed rows and the aggregates over runs x held-out episodes."""
    rows, agent, rule = [], [], []
    for seed, report in reports.items():
        src = report["heldout"]["source"]
        a, r = src["agent"]["episode_returns"], src["adaptive"][TUNED]["episode_returns"]
        paired = report["heldout"]["vs_adaptive"]
        rows.append({"seed": seed, "step": report["heldout"]["step"], "agent_mean": float(np.mean(a)),
                     "rule": src["adaptive"][TUNED]["extra"].get("detail"), "rule_mean": float(np.mean(r)),
                     "best_adaptive": paired["best_adaptive"], "diff": paired["mean_diff"],
                     "diff_low": paired["ci95_low"], "diff_high": paired["ci95_high"], "verdict": paired["verdict"],
                     "wins": paired["wins"], "n": paired["n"]})
        agent.append(a)
        rule.append(r)
    agent, rule = np.array(agent), np.array(rule)
    return {"rows": rows, "agent_iqm": bootstrap_interval(agent), "rule_iqm": bootstrap_interval(rule),
            "p_improvement": bootstrap_interval(improvement_indicator(agent, rule), "mean"),
            "runs": len(rows), "episodes": int(agent.shape[1])}


def verdict_line(agg: dict) -> str:
    p = agg["p_improvement"]
    if p["low"] > 0.5:
        words = "the agent beats the tuned rule"
    elif p["high"] < 0.5:
        words = "the tuned rule beats the agent"
    else:
        words = "the agent is no better than the tuned rule"
    return (f"Over {agg['runs']} training seeds x {agg['episodes']} held-out episodes, {words}: P(agent > rule) = "
            f"{p['value']:.2f} [{p['low']:.2f}, {p['high']:.2f}]; IQM agent {agg['agent_iqm']['value']:+.2f} "
            f"[{agg['agent_iqm']['low']:+.2f}, {agg['agent_iqm']['high']:+.2f}], tuned rule "
            f"{agg['rule_iqm']['value']:+.2f} [{agg['rule_iqm']['low']:+.2f}, {agg['rule_iqm']['high']:+.2f}].")


def markdown(agg: dict, header: str) -> str:
    lines = [f"# RL study: {header}", "", f"**{verdict_line(agg)}**", "",
             "| training seed | recommended step | agent mean | tuned rule | rule mean | agent − best adaptive "
             "(paired, 95% CI) | verdict | higher in |", "|---|---|---|---|---|---|---|---|"]
    for r in agg["rows"]:
        lines.append(f"| {r['seed']} | {r['step']:,} | {r['agent_mean']:+.2f} | {r['rule']} | {r['rule_mean']:+.2f} | "
                     f"{r['diff']:+.2f} [{r['diff_low']:+.2f}, {r['diff_high']:+.2f}] vs {r['best_adaptive']} | "
                     f"{r['verdict']} | {r['wins']} of {r['n']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3, help="training seeds 1..N (default 3)")
    p.add_argument("--preset", default="demo", choices=sorted(RL_PRESETS))
    p.add_argument("--out", default="ckpt-study", help="study folder (default ckpt-study)")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    out, t0 = Path(args.out), time.time()
    snapshot = ensure_base(out, args.preset)
    reports = {s: ensure_agent(out, args.preset, s, snapshot) for s in range(1, args.seeds + 1)}
    agg = aggregate(reports)
    header = f"{args.preset} preset, {args.seeds} training seeds, {cpu_model()}"
    agg.update(preset=args.preset, cpu=cpu_model(), wall_s_this_call=time.time() - t0)
    (out / "study.json").write_text(json.dumps(agg, indent=2) + "\n")
    (out / "study.md").write_text(markdown(agg, header))
    print(markdown(agg, header))
    print(f"this call: {(time.time() - t0) / 60:.1f} min (finished pieces are not replayed); {out / 'study.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

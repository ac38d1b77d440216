"""How often, and on how many episodes, should the RL stage evaluate its checkpoints? Replayed on recorded runs.

Each run folder's evaluations.json holds every checkpoint's returns on the same seeded episodes;
its report.json the control policies' means (the over-fitting rule's unit). For each rule below
the script replays which episodes the rule would have played, rebuilds the report from them
(stages/report/overfit.py: the same statuses and recommendation), and prints the episodes spent beside
today's and whether the recommended checkpoint is today's, or one whose mean lies inside the
95 % CI of today's recommendation:

- `all`: every evaluation on all its episodes (today);
- `every 2nd`: every second evaluation (and the last), all episodes: half the frequency;
- `screen S`: every evaluation plays its first S episodes; one clearly behind the best checkpoint
  so far on those (common.racing.behind: the paired 95 % CI below 0) stops there and is never
  recommended, the others play the rest.

    python bench/eval_rule.py ckpt-study/seed-1 ckpt-study/seed-2 ckpt-study/seed-3
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import cpu_model  # noqa: E402
from common.racing import behind  # noqa: E402
from ppo import EvalResult  # noqa: E402
from stages.report.overfit import Report  # noqa: E402

SCREEN = 10


def truncated(e: dict, k: int) -> dict:
    """The evaluation `e` as if it had stopped after its first k episodes."""
    r = EvalResult.from_dict(e)
    return EvalResult(r.episode_returns[:k], r.episode_lengths[:k], r.action_counts, r.deterministic, r.seed, r.step,
                      extra=r.extra).to_dict()


def replay(evals: list, rule: str, screen: int = SCREEN) -> tuple[list, int]:
    """(the evaluations the recommendation may pick from, episodes the rule plays)."""
    if rule == "all":
        return evals, sum(e["n_episodes"] for e in evals)
    if rule == "every 2nd":
        kept = [e for i, e in enumerate(evals) if i % 2 == 1 or i == len(evals) - 1]
        return kept, sum(e["n_episodes"] for e in kept)
    full, spent = [], 0
    for e in evals:
        first = e["episode_returns"][:screen]
        best = max(full, key=lambda f: f["mean_reward"], default=None)
        if screen < e["n_episodes"] and best is not None and behind(first, best["episode_returns"][:screen]):
            spent += screen
        else:
            full.append(e)
            spent += e["n_episodes"]
    return full, spent


def recommended(evals: list, controls: dict) -> dict:
    step = Report(evals, controls).build()["recommended"]["step"]
    return next(e for e in evals if e["step"] == step)


def check_run(run: Path, screen: int) -> list[dict]:
    evals = json.loads((run / "evaluations.json").read_text())
    controls = {c["name"]: c for c in json.loads((run / "report.json").read_text())["controls"] if not c.get("adaptive")}
    today = recommended(evals, controls)
    out = []
    for rule in ("all", "every 2nd", f"screen {screen}"):
        kept, spent = replay(evals, rule.split()[0] if rule.startswith("screen") else rule, screen)
        chosen = recommended(kept, controls)
        out.append({"run": str(run), "rule": rule, "episodes": spent, "today": sum(e["n_episodes"] for e in evals),
                    "step": chosen["step"], "today_step": today["step"], "mean": chosen["mean_reward"],
                    "within": today["ci95_low"] <= chosen["mean_reward"] <= today["ci95_high"]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="RL run folders (evaluations.json, report.json)")
    ap.add_argument("--screen", type=int, default=SCREEN, help=f"episodes a screened evaluation plays (default {SCREEN})")
    args = ap.parse_args(argv)
    missing = [r for r in args.runs if not (r / "evaluations.json").is_file() or not (r / "report.json").is_file()]
    if missing:
        sys.exit(f"error: {missing[0]} has no evaluations.json and report.json; give RL run folders")
    print(f"{cpu_model()}\n\n| run | rule | episodes (share of today's) | recommended step (today's) | its mean | "
          "same, or inside today's CI |\n|---|---|---|---|---|---|")
    for run in args.runs:
        for r in check_run(run, args.screen):
            same = "same" if r["step"] == r["today_step"] else ("inside" if r["within"] else "OUTSIDE")
            print(f"| {run.name} | {r['rule']} | {r['episodes']:,} ({r['episodes'] / r['today']:.0%}) | "
                  f"{r['step']:,} ({r['today_step']:,}) | {r['mean']:+.2f} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

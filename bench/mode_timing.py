"""When does an agent choose each mode? Its decisions by position in the episode, beside a control's.

    python bench/mode_timing.py ckpt-study-wt2/seed-1/best.pt              # against its run's tuned rule
    python bench/mode_timing.py AGENT --control "tuned time switch" --episodes 30

Plays the agent (greedy) and one of its run's tuned controls (the member its run chose on the
evaluation seeds; `--control`: its name in the report) side by side on the run's held-out seeds,
in the environment the run trained in, and prints per decision t = 1 .. max_steps each mode's share
of the choices and the mean Φ and perplexity after the decision: what a mode mix alone cannot show
(a schedule that spends its MIXED decisions at the start is another schedule than one that spends
them at the end). The returns printed are the report's held-out numbers, played again.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model  # noqa: E402
from env import load_base, run_policies  # noqa: E402
from ppo import TrainedPolicy  # noqa: E402
from stages.identity import check_base  # noqa: E402
from stages.report.controls import control_policy  # noqa: E402
from stages.report.scoring import evaluation_envs  # noqa: E402
from stages.rl.record import RunRecord  # noqa: E402


def by_decision(traces: list, n_modes: int) -> dict:
    """Per decision index: each mode's share, mean Φ and mean perplexity after it."""
    steps = max(len(tr["action"]) for tr in traces)
    out = {"share": np.zeros((steps, n_modes)), "phi": np.zeros(steps), "ppl": np.zeros(steps)}
    for t in range(steps):
        at = [tr for tr in traces if len(tr["action"]) > t]
        for tr in at:
            out["share"][t, tr["action"][t]] += 1 / len(at)
        out["phi"][t] = np.mean([tr["phi"][t] for tr in at])
        out["ppl"][t] = np.mean([tr["ppl"][t] for tr in at])
    return out


def table(runs: dict, modes: list) -> list[str]:
    names = list(runs)
    head = " | ".join(f"{n}: {' / '.join(modes)} %, Φ, ppl" for n in names)
    lines = [f"| t | {head} |", "|---|" + "---|" * len(names)]
    timing = {n: by_decision(r.traces, len(modes)) for n, r in runs.items()}
    for t in range(len(timing[names[0]]["phi"])):
        cells = [" / ".join(f"{100 * s:.0f}" for s in timing[n]["share"][t]) + f", {timing[n]['phi'][t]:.2f}, "
                 f"{timing[n]['ppl'][t]:.1f}" for n in names]
        lines.append(f"| {t + 1} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("agent", help="an RL checkpoint (<step>.pt or best.pt)")
    p.add_argument("--control", default="tuned rule", help="the run's control to play beside it (default: tuned rule)")
    p.add_argument("--base", default=None, help="the base checkpoint, when not where the run recorded it")
    p.add_argument("--episodes", type=int, default=None, help="held-out episodes (default: the run's)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # as the RL stage scores: the same thread count gives the same numbers
    policy = TrainedPolicy.load(args.agent)
    record = RunRecord.read(policy.extra, args.agent)
    base = check_base(args.base or record.base, record, args.agent, "--base")
    env_cfg, run = record.env_config, record.settings
    control, detail = control_policy(env_cfg, record.heldout_adaptive, args.control)
    n = args.episodes or run.eval_episodes
    envs = evaluation_envs(load_base(base, env_cfg), env_cfg, args.workers, 1, n)
    runs = run_policies(envs, {"agent": policy, args.control: control}, n, run.heldout_seed)
    print(f"{args.agent} (step {policy.global_step:,}) and {args.control} ({detail}) on held-out seeds "
          f"{run.heldout_seed}..{run.heldout_seed + n - 1}; {cpu_model()}\n")
    for name, r in runs.items():
        print(f"{name}: mean return {np.mean(r.returns):+.2f} over {n} episodes")
    print("\nPer decision t: each mode's share of the choices; mean Φ and perplexity after it\n")
    print("\n".join(table(runs, list(env_cfg.mode_names))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

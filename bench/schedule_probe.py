"""Which schedules win before any agent is trained: step sizes, time switches and the final reward.

    python bench/schedule_probe.py --base ckpt/base-step100.pt [--episodes 12] [--workers 2]

In the `demo` RL preset's environment with TEXT and MIXED at every scale of `--scales` (modes
"TEXT@0.5", ...: the inner learning rate x the scale; env.step_size_modes), plays hand-written
schedules (env.SchedulePolicy) on the same seeded episodes (seeds `--seed` + k, away from the
presets' evaluation and held-out seeds):

- the threshold rule "TEXT in the band, else MIXED" at each constant step size;
- time switches: TEXT only until k decisions are left, then that rule (at step size 1);
- decays of the step size over the episode (step and cosine), with the rule's loss weights.

The policies never see a reward, so each episode is scored exactly under both rewards
(env.rescore): `progress` (Φ outside its band costs at every decision) and `final` (only where Φ
ends counts). Per reward: mean and Student-t 95 % CI of the return, and the paired difference
with the rule at the best constant step size. This is the measurement the `demo-lr` and
`demo-final` presets' modes and reward were chosen from (docs/studies.md, "Schedules that
need foresight"). Markdown to stdout, raw numbers to `--json`; prints the CPU model.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch  # noqa: E402

from machine import cpu_model  # noqa: E402  (bench/ is on sys.path when run as a script)
from common.messages import first_line  # noqa: E402
from common.stats import summarize  # noqa: E402
from env import (EnvConfig, FinalReward, PolicyRuns, ProgressReward, SchedulePolicy, StepSizeSchedule,  # noqa: E402
                 TextSchedulingEnv, rescore, run_policy, step_size_modes)
from stages.rl.presets import preset_env  # noqa: E402

WEIGHTS = {"TEXT": (1.0, 0.0), "MIXED": (0.5, 0.5)}
_ENV = None  # one environment per worker process


def probe_config(scales, preset: str = "demo") -> EnvConfig:
    return preset_env(preset, None, modes=step_size_modes(WEIGHTS, scales), reward={"name": "progress"})


def policies(cfg: EnvConfig) -> dict:
    scales = sorted({m[3] for m in cfg.modes})
    t = cfg.max_steps
    out = [SchedulePolicy(cfg, lr=StepSizeSchedule("constant", s)) for s in scales]
    out += [SchedulePolicy(cfg, text_until_left=k) for k in (3, 6, 10)]
    pairs = [(hi, lo) for hi in scales for lo in scales if lo < hi and hi / lo >= 2.5]
    out += [SchedulePolicy(cfg, lr=StepSizeSchedule("cosine", hi, lo)) for hi, lo in pairs]
    out += [SchedulePolicy(cfg, lr=StepSizeSchedule("step", hi, lo, k)) for hi, lo in pairs for k in (t // 4, t // 2)]
    return {p.name: p for p in out}


def _init() -> None:
    torch.set_num_threads(1)


def _run(task: tuple) -> tuple:
    name, seed, n = task
    runs = run_policy(_ENV, policies(_ENV.config)[name], n_episodes=n, seed=seed, name=name)
    return name, seed, runs


def table(scored: dict, reference: str) -> list[str]:
    lines = ["| schedule | return, mean [95% CI] | paired with the reference | final ppl | Φ at the end |",
             "|---|---|---|---|---|"]
    ref = scored[reference].returns
    for name, runs in sorted(scored.items(), key=lambda kv: -summarize(kv[1].returns)["mean"]):
        s = summarize(runs.returns)
        d = summarize([a - b for a, b in zip(runs.returns, ref)])
        paired = "reference" if name == reference else f"{d['mean']:+.2f} [{d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}]"
        phi_end = sum(tr["phi"][-1] for tr in runs.traces) / len(runs.traces)
        ppl_end = sum(tr["ppl"][-1] for tr in runs.traces) / len(runs.traces)
        lines.append(f"| {name.removeprefix('rule: ')} | {s['mean']:+.2f} [{s['ci95_low']:+.2f}, {s['ci95_high']:+.2f}] | "
                     f"{paired} | {ppl_end:.2f} | {phi_end:.2f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="ckpt/base-step100.pt", help="the demo RL preset's start snapshot")
    p.add_argument("--scales", default="0.1,0.2,0.35,0.5,1,2", help="lr scales of the TEXT and MIXED modes")
    p.add_argument("--episodes", type=int, default=12)
    p.add_argument("--seed", type=int, default=1000, help="episode k of every schedule uses seed + k")
    p.add_argument("--w-end", default="5,10,20", help="final reward: the w_end values to score under")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default="bench/out/schedule_probe.json")
    args = p.parse_args()

    cfg = probe_config([float(s) for s in args.scales.split(",")])
    names = list(policies(cfg))
    tasks = [(n, args.seed + k, min(3, args.episodes - k)) for n in names for k in range(0, args.episodes, 3)]
    t0 = time.time()
    parts: dict = {n: [] for n in names}
    global _ENV
    try:  # built here, so a bad checkpoint is one message; the forked workers inherit a copy each
        _ENV = TextSchedulingEnv(args.base, cfg)
    except Exception as e:  # noqa: BLE001 — any load failure ends the probe with its reason
        sys.exit(f"error: {first_line(e)}")
    with mp.get_context("fork").Pool(args.workers, _init) as pool:
        for i, (name, seed, runs) in enumerate(pool.imap_unordered(_run, tasks), 1):
            parts[name].append((seed, runs))
            print(f"[{time.time() - t0:6.0f}s] {i}/{len(tasks)} {name} seeds {seed}+", file=sys.stderr, flush=True)
    played = {}
    for n in names:
        chunks = [r for _, r in sorted(parts[n], key=lambda sr: sr[0])]
        played[n] = PolicyRuns(n, [s for c in chunks for s in c.seeds], [x for c in chunks for x in c.returns],
                               [x for c in chunks for x in c.lengths], [x for c in chunks for x in c.traces])
    rewards = {"progress": ProgressReward(), **{f"final (w_end {w})": FinalReward(w_end=float(w))
                                                for w in args.w_end.split(",")}}
    out, raw = [f"Base `{args.base}`, the demo environment with modes {', '.join(cfg.mode_names)}; "
                f"{args.episodes} episodes per schedule (seeds {args.seed}..{args.seed + args.episodes - 1}); "
                f"{(time.time() - t0) / 60:.1f} min with {args.workers} worker processes on {cpu_model()}.", ""], {}
    for label, reward in rewards.items():
        scored = {n: rescore(runs, reward) for n, runs in played.items()}
        constants = [n for n in names if "until" not in n and "cosine" not in n and "last" not in n]
        reference = max(constants, key=lambda n: summarize(scored[n].returns)["mean"])
        out += [f"**{label}**; reference: the best constant step size, {reference.removeprefix('rule: ')}", "",
                *table(scored, reference), ""]
        raw[label] = {n: r.returns for n, r in scored.items()}
    print("\n".join(out))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"config": cfg.to_dict(), "returns": raw, "cpu": cpu_model(),
                                           "elapsed_s": time.time() - t0}, indent=2) + "\n")


if __name__ == "__main__":
    main()

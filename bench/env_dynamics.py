"""What the environment rewards, and what each mode does: controls and a hand-written adaptive
policy on the same seeds, and one decision per mode from the same state at three Φ levels.

    python bench/env_dynamics.py [--base ckpt/base-step100.pt] [--preset demo] [--episodes 20] [--workers 2]

Part 1 — policies. Each plays `--episodes` episodes (seeds seed, seed+1, ...: every policy meets
the same data streams) in the RL preset's environment. Per policy: the return, mean ± 95% CI
(Student t) and std, under the preset's reward and, re-scored on the very same episodes, under
the seed study's reward v2; Φ in the reward's band (% of decisions), held-out perplexity at the end of
the episode, mean C, the action mix. Over the four control policies: the share of the return
that no decision changes (`env.action_independent_share`), for both rewards.

Part 2 — what each mode does. From states with Φ below, inside and above the band (reached by
training on the Φ loss toward a level; `bench/dynamics.py`), one decision of each mode over
`--mode-seeds` data seeds: the change in held-out Φ and in held-out perplexity (%), mean ± s.e.

Episodes run in `--workers` processes with one torch thread each. Markdown to stdout (and, with
`--doc docs/studies.md`, into that file's marked section, where the published numbers live); raw
numbers to bench/out/env_dynamics.json.
Prints the CPU model.
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
from doc_sections import write_section  # noqa: E402  (bench/ is on sys.path when run as a script)
from common.policies import control_policies  # noqa: E402
from common.stats import summarize  # noqa: E402
from env import (BandPolicy, EnvConfig, PolicyRuns, RewardConfig, TextSchedulingEnv,  # noqa: E402
                 action_independent_share, rescore, run_policy)
from bench.dynamics import mode_effects, state_at_phi  # noqa: E402
from infinito.training import NonFiniteLoss  # noqa: E402
from stages.rl.presets import preset_env  # noqa: E402

START, END = "<!-- env_dynamics:start -->", "<!-- env_dynamics:end -->"
ADAPTIVE = "adaptive (PHI while Φ is outside the band, else TEXT)"
_ENV = None  # one environment per worker process


def policies(cfg: EnvConfig) -> dict:
    low, high = cfg.reward.band
    return {**control_policies(len(cfg.modes), cfg.mode_names), ADAPTIVE: BandPolicy(low, high)}


def _init(base: str, cfg_dict: dict) -> None:
    global _ENV
    torch.set_num_threads(1)
    _ENV = TextSchedulingEnv(base, EnvConfig.from_dict(cfg_dict))


def _run(task: tuple) -> tuple:
    """Episodes seed .. seed+n-1 of one policy; one whose training diverged (a non-finite loss, as
    the RL stage would stop on) is counted and left out of the statistics."""
    name, seed, n = task
    played, diverged = PolicyRuns(name, []), []
    for s in range(seed, seed + n):
        try:
            runs = run_policy(_ENV, policies(_ENV.config)[name], n_episodes=1, seed=s, name=name)
        except NonFiniteLoss:
            diverged.append(s)
            continue
        played.seeds.append(s)
        played.returns += runs.returns
        played.lengths += runs.lengths
        played.traces += runs.traces
    return name, played, diverged


def _effects(task: tuple) -> tuple:
    level, seeds = task
    low = _ENV.config.reward.band[0]
    below = level is not None and level < low
    try:  # below the band: the Φ loss alone, aiming well under the band; inside: text and Φ (MIXED's
        #  weights), so the model keeps what it knows — the way an agent brings Φ into the band
        state = state_at_phi(_ENV, seed=99, level=level, tolerance=0.2, max_inner_steps=600,
                             stop_below=low - 0.3 if below else None, weights=(0.0, 1.0) if below else (0.5, 0.5))
        return level, mode_effects(_ENV, state, seeds)
    except RuntimeError as e:  # not reached, or diverged on the way (NonFiniteLoss is one)
        return level, {"error": str(e)}


def fmt_ci(ret: dict) -> str:
    return f"{ret['mean']:+.2f} ± {ret['ci95_high'] - ret['mean']:.2f} (std {ret['std']:.2f})"


def policy_table(rows: list, cfg: EnvConfig) -> list[str]:
    names = cfg.mode_names
    band = "[{:g}, {:g}]".format(*cfg.reward.band)
    out = [f"| policy | return, `{cfg.reward.describe()}` (mean ± 95% CI) | return, reward v2 | "
           f"Φ in {band} | final ppl | C mean | {' / '.join(names)} % |", "|" + "---|" * 7]
    for s, v2 in rows:
        mix = " / ".join(f"{100 * x:.0f}" for x in (s["action_mix"] + [0.0] * len(names))[:len(names)])
        out.append(f"| {s['name']} | {fmt_ci(s['return'])} | {fmt_ci(v2['return'])} | {s['phi_in_band_pct']:.0f}% | "
                   f"{s['final_ppl']:.2f} | {s['c_mean']:.3f} | {mix} |")
    return out


def effects_table(effects: dict, cfg: EnvConfig) -> list[str]:
    out = ["| Φ level (start Φ, ppl) | " + " | ".join(f"{m}: ΔΦ / Δppl %" for m in cfg.mode_names) + " |",
           "|" + "---|" * (1 + len(cfg.mode_names))]
    for label, e in effects.items():
        if "error" in e:
            out.append(f"| {label} | not reached: {e['error']} |" + " |" * (len(cfg.mode_names) - 1))
            continue
        cells = []
        for m in cfg.mode_names:
            dphi, dppl = summarize(e[m]["dphi"]), summarize(e[m]["dppl_pct"])
            n = dphi["n"] ** 0.5
            cells.append(f"{dphi['mean']:+.3f} ± {dphi['std'] / n:.3f} / {dppl['mean']:+.1f} ± {dppl['std'] / n:.1f}")
        out.append(f"| {label} ({e['start']['phi']:.2f}, {e['start']['ppl']:.1f}) | " + " | ".join(cells) + " |")
    return out


def diverged_lines(diverged: dict) -> list[str]:
    """The episodes left out of the table because their training diverged, when there are any."""
    lost = {n: seeds for n, seeds in diverged.items() if seeds}
    if not lost:
        return []
    return ["Left out above, their inner training diverged (a non-finite loss, which stops the RL stage): "
            + "; ".join(f"{n}: seeds {', '.join(map(str, seeds))}" for n, seeds in lost.items()) + ".", ""]


def gather(parts: list, name: str) -> PolicyRuns:
    runs = PolicyRuns(name, [])
    for part in sorted(parts, key=lambda p: p.seeds[0] if p.seeds else 0):
        runs.seeds += part.seeds
        runs.returns += part.returns
        runs.lengths += part.lengths
        runs.traces += part.traces
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="ckpt/base-step100.pt", help="the RL stage's start snapshot")
    p.add_argument("--preset", default="demo", help="RL preset whose environment is measured")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=1000, help="episode k of every policy uses seed + k")
    p.add_argument("--mode-seeds", type=int, default=6, help="data seeds per mode in part 2")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=5, help="episodes per task")
    p.add_argument("--doc", default="", metavar="FILE",
                   help="also write the table(s) into FILE's marked section (the project's: docs/studies.md); "
                        "by default nothing but the JSON and stdout is written")
    p.add_argument("--json", default="bench/out/env_dynamics.json")
    args = p.parse_args()

    cfg = preset_env(args.preset, Path(args.base))
    names = list(policies(cfg))
    tasks = [(n, args.seed + k, min(args.chunk, args.episodes - k)) for n in names
             for k in range(0, args.episodes, args.chunk)]
    levels = {"below the band": cfg.reward.band[0] - 1.5, "inside the band": cfg.reward.band[1] - 1.0,
              "above the band (the snapshot)": None}
    t0 = time.time()
    parts: dict = {n: [] for n in names}
    diverged: dict = {n: [] for n in names}
    with mp.get_context("fork").Pool(args.workers, _init, (args.base, cfg.to_dict())) as pool:
        effects_async = [pool.apply_async(_effects, ((lv, list(range(args.mode_seeds))),)) for lv in levels.values()]
        for i, (name, played, lost) in enumerate(pool.imap_unordered(_run, tasks), 1):
            parts[name].append(played)
            diverged[name] += lost
            print(f"[{time.time() - t0:6.0f}s] {i}/{len(tasks)} {name} seeds {', '.join(map(str, played.seeds))}: "
                  f"returns {', '.join(f'{r:+.1f}' for r in played.returns)}"
                  + (f"; diverged: seeds {', '.join(map(str, lost))}" if lost else ""), flush=True)
        effects = {label: r.get()[1] for label, r in zip(levels, effects_async)}
    v2 = RewardConfig()
    rows, shares = [], {}
    for n in names:
        runs = gather(parts[n], n)
        rows.append((runs.summary(cfg.reward.band), rescore(runs, v2).summary(cfg.reward.band)))
    controls = [i for i, n in enumerate(names) if n != ADAPTIVE]
    for key, idx in (("preset", 0), ("v2", 1)):
        shares[key] = action_independent_share({names[i]: rows[i][idx]["term_returns"] for i in controls})
    elapsed = time.time() - t0
    body = "\n".join([
        f"Base `{args.base}`, environment of the `{args.preset}` RL preset ({cfg.max_steps} decisions of "
        f"{cfg.inner_steps} inner AdamW steps on {cfg.inner_batch_size} × {cfg.seq_len} tokens, inner lr {cfg.inner_lr:g}); "
        f"{args.episodes} episodes per policy (seeds {args.seed}..{args.seed + args.episodes - 1}); "
        f"{elapsed / 60:.1f} min with {args.workers} worker processes on {cpu_model()}.", "",
        *policy_table(rows, cfg), "", *diverged_lines(diverged),
        f"Action-independent share of the control policies' returns (the part every control pays or earns "
        f"alike): **{100 * shares['preset']['share']:.0f} %** under `{cfg.reward.name}`, "
        f"**{100 * shares['v2']['share']:.0f} %** under reward v2 on the same episodes.", "",
        f"What one decision of each mode does, from the same state ({args.mode_seeds} data seeds; mean ± s.e.; "
        "Δppl in % of the held-out perplexity):", "",
        *effects_table(effects, cfg)])
    print(body)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": cfg.to_dict(), "summaries": [s for s, _ in rows],
                                               "v2": [v for _, v in rows], "shares": shares, "effects": effects,
                                               "elapsed_s": elapsed, "cpu": cpu_model()}, indent=2) + "\n")
    if args.doc:
        write_section(Path(args.doc), START, END, body)


if __name__ == "__main__":
    main()

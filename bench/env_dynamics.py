"""What the environment rewards: control policies and a hand-written adaptive one, same seeds.

    python bench/env_dynamics.py [--base ckpt/base.pt] [--episodes 20] [--workers 2]

Each policy plays `--episodes` full episodes (seeds seed, seed+1, ...: every
policy meets the same data streams). Reported per policy: the episode return,
mean ± 95% CI (Student t) and std, under the SPEC reward (the defaults) and,
re-scored on the very same episodes, under a second reward config
(`--rescore`, default `phi_low=5.5`: the Φ window [5.5, 6], see docs/env.md);
over all steps: mean Φ, % of steps with Φ in each band, mean C, mean
memory_util; the held-out perplexity at the end of the episode; the action
mix. Episodes run in `--workers` processes with one torch thread each. The
Markdown table goes to stdout and into docs/env.md, the raw numbers to
bench/out/env_dynamics.json.
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

from doc_sections import write_section  # noqa: E402  (bench/ is on sys.path when run as a script)
from env import (BandPolicy, EnvConfig, PolicyRuns, RewardConfig, TextSchedulingEnv,  # noqa: E402
                 control_policies, rescore, run_policy, summarize)

START, END = "<!-- env_dynamics:start -->", "<!-- env_dynamics:end -->"
_ENV = None  # one environment per worker process


def policies(cfg: EnvConfig) -> dict:
    # the Φ loss acts outside the model's band [3, 6]: PHI while Φ is out there, TEXT otherwise
    return {**control_policies(len(cfg.modes), cfg.mode_names), "adaptive": BandPolicy(3.0, 6.0)}


def _init(base: str, cfg_dict: dict) -> None:
    global _ENV
    torch.set_num_threads(1)
    _ENV = TextSchedulingEnv(base, EnvConfig.from_dict(cfg_dict))


def _run(task: tuple) -> tuple:
    name, seed, n = task
    runs = run_policy(_ENV, policies(_ENV.config)[name], n_episodes=n, seed=seed, name=name)
    return name, seed, runs.returns, runs.lengths, runs.traces


def fmt_return(ret: dict) -> str:
    return f"{ret['mean']:+.2f} ± {ret['ci95_high'] - ret['mean']:.2f} (std {ret['std']:.2f})"


def table(rows: list[tuple], cfg: EnvConfig, alt: RewardConfig) -> str:
    """rows: (summary under cfg.reward, summary of the same episodes under `alt`)."""
    r, names = cfg.reward, cfg.mode_names
    band, alt_band = f"[{r.phi_low:g}, {r.phi_high:g}]", f"[{alt.phi_low:g}, {alt.phi_high:g}]"
    out = [f"| policy | return, SPEC reward (mean ± 95% CI) | return, Φ window {alt_band} | Φ mean | "
           f"Φ in {band} | Φ in {alt_band} | C mean | final ppl | memory_util | {' / '.join(names)} % |",
           "|" + "---|" * 10]
    for s, a in rows:
        mix = " / ".join(f"{100 * x:.0f}" for x in (s["action_mix"] + [0.0] * len(names))[:len(names)])
        out.append(f"| {s['name']} | {fmt_return(s['return'])} | {fmt_return(a['return'])} | {s['phi_mean']:.2f} | "
                   f"{s['phi_in_band_pct']:.0f}% | {a['phi_in_band_pct']:.0f}% | {s['c_mean']:.3f} | "
                   f"{s['final_ppl']:.3f} | {s['memory_util_mean']:.2f} | {mix} |")
    return "\n".join(out)


def phi_curve(runs: PolicyRuns, at=(1, 5, 10, 25, 50)) -> list:
    return [summarize([tr["phi"][t - 1] for tr in runs.traces])["mean"] for t in at if t <= min(runs.lengths)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="ckpt/base.pt")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=1000, help="episode k of every policy uses seed + k")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=4, help="episodes per task")
    p.add_argument("--policies", nargs="+", default=None, help="subset of: random, 'always TEXT', ..., adaptive")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="env config overrides, e.g. max_steps=10 or reward.w_phi_above=1.0")
    p.add_argument("--rescore", nargs="*", default=["phi_low=5.5"], metavar="KEY=VALUE",
                   help="reward config for the second returns column (same episodes, re-scored)")
    p.add_argument("--doc", default="docs/env.md", help="write the table into this file ('' to skip)")
    p.add_argument("--json", default="bench/out/env_dynamics.json")
    args = p.parse_args()

    d = EnvConfig().to_dict()
    for kv in args.set:
        key, value = kv.split("=", 1)
        target, key = (d["reward"], key[7:]) if key.startswith("reward.") else (d, key)
        target[key] = type(target[key])(json.loads(value) if not isinstance(target[key], str) else value)
    cfg = EnvConfig.from_dict(d)
    alt = cfg.reward.to_dict()
    for kv in args.rescore:
        key, value = kv.split("=", 1)
        alt[key] = type(alt[key])(json.loads(value))
    alt = RewardConfig.from_dict(alt)
    names = args.policies or list(policies(cfg))
    tasks = [(n, args.seed + k, min(args.chunk, args.episodes - k)) for n in names
             for k in range(0, args.episodes, args.chunk)]
    t0 = time.time()
    parts: dict = {n: [] for n in names}
    with mp.get_context("fork").Pool(args.workers, _init, (args.base, cfg.to_dict())) as pool:
        for i, (name, seed, returns, lengths, traces) in enumerate(pool.imap_unordered(_run, tasks), 1):
            parts[name].append((seed, returns, lengths, traces))
            print(f"[{time.time() - t0:6.0f}s] {i}/{len(tasks)} {name} seeds {seed}..{seed + len(returns) - 1}: "
                  f"returns {', '.join(f'{r:+.2f}' for r in returns)}", flush=True)
    rows, curves = [], {}
    for n in names:
        runs = PolicyRuns(n, [])
        for seed, returns, lengths, traces in sorted(parts[n], key=lambda x: x[0]):
            runs.seeds += list(range(seed, seed + len(returns)))
            runs.returns += returns
            runs.lengths += lengths
            runs.traces += traces
        rows.append((runs.summary((cfg.reward.phi_low, cfg.reward.phi_high)),
                     rescore(runs, alt).summary((alt.phi_low, alt.phi_high))))
        curves[n] = phi_curve(runs)
    elapsed = time.time() - t0
    changed = {k: v for k, v in cfg.to_dict().items() if v != EnvConfig().to_dict()[k] and k != "reward"}
    changed.update({f"reward.{k}": v for k, v in cfg.reward.to_dict().items() if v != EnvConfig().reward.to_dict()[k]})
    body = "\n".join([
        f"Base `{args.base}`, {args.episodes} episodes per policy (seeds {args.seed}..{args.seed + args.episodes - 1}), "
        f"{cfg.max_steps} steps x {cfg.inner_steps} inner steps; config changes from the defaults: "
        f"{', '.join(f'`{k}={v}`' for k, v in changed.items()) or 'none'}. {elapsed / 60:.1f} min with "
        f"{args.workers} worker processes. Second returns column: the same episodes re-scored with "
        f"{', '.join(f'`{kv}`' for kv in args.rescore)}.", "",
        table(rows, cfg, alt), "",
        "Mean Φ after step 1 / 5 / 10 / 25 / 50:", "",
        *[f"- {n}: {' / '.join(f'{v:.2f}' for v in c)}" for n, c in curves.items()]])
    print(body)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": cfg.to_dict(), "rescore": alt.to_dict(),
                                               "summaries": [s for s, _ in rows], "rescored": [a for _, a in rows],
                                               "phi_curves": curves,
                                               "elapsed_s": elapsed}, indent=2) + "\n")
    if args.doc:
        write_section(Path(args.doc), START, END, body)


if __name__ == "__main__":
    main()

"""Does racing the control families pick the full grid's members, and for how many decisions?

Reads a full grid of control evaluations from a base's control cache — every member of every
family on all the evaluation seeds, as a run before racing played them or as the race's slices
completed (`--play` plays what is missing, in the race's slices) — races each family on those
recorded episodes (common/racing.py) and prints, per family, the full grid's member, the race's
member and the episodes each spent; then the decisions the controls cost with and without racing
(evaluation and held-out seeds together).

    python bench/racing_check.py --preset demo-lr --base ckpt/base-step100.pt
    python bench/racing_check.py --preset demo --base ckpt/base-step100.pt --play   # plays the grid first

`--base` must name the snapshot as the run named it (the cache is keyed by the environment's
config, which holds the cache folder's path as given).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.machine import cpu_model  # noqa: E402
from common.cores import idle_cores  # noqa: E402
from common.policies import control_policies  # noqa: E402
from common.racing import race, race_rounds  # noqa: E402
from env import TextSchedulingEnv, load_base, rule_family  # noqa: E402
from stages.report.controls import TUNED, ControlCache, Player, later_families  # noqa: E402
from stages.identity import identify  # noqa: E402
from stages.rl.presets import RL_PRESETS, preset_env  # noqa: E402


def grid(cache: ControlCache, members: dict, n: int, seed: int, envs, env_cfg) -> dict:
    """Every member's returns on the n evaluation episodes: a full evaluation from the cache, else a
    race's slices of it (the stage's rounds, or the 3 of racing's first version), those missing
    played side by side in the stage's slices when `envs` is given."""
    out = {name: recorded(cache, name, n, seed) for name in members}
    missing = [name for name, returns in out.items() if returns is None]
    if missing and envs is None:
        sys.exit(f"error: {missing[0]!r} has no whole evaluation of the {n} episodes in {cache.folder}; run with "
                 "--play to play what the race skipped, or check that --preset and --base match the run's")
    if missing:
        player = Player(envs, env_cfg, {name: members[name] for name in missing}, n, seed, cache)
        rounds = race_rounds(n)
        for a, b in zip((0, *rounds[:-1]), rounds):
            for name, returns in player.play(missing, a, b - a).items():
                out[name] = (out[name] or []) + returns
    return out


def recorded(cache: ControlCache, name: str, n: int, seed: int) -> list | None:
    full = cache.get(name, seed, n)
    if full is not None:
        return full["episode_returns"]
    for rounds in (race_rounds(n), race_rounds(n, 3)):
        parts = [cache.get(name, seed + a, b - a) for a, b in zip((0, *rounds[:-1]), rounds)]
        if all(parts):
            return [r for part in parts for r in part["episode_returns"]]
    return None


def check_family(name: str, returns: dict, n: int, rounds: int) -> dict:
    best = max(returns, key=lambda m: np.mean(returns[m]))
    won = race(list(returns), lambda ms, start, count: {m: returns[m][start:start + count] for m in ms}, n,
               race_rounds(n, rounds))
    print(f"{name}: {len(returns)} members; full grid {best!r} ({np.mean(returns[best]):+.2f}); race {won.chosen!r} "
          f"({'same' if won.chosen == best else 'DIFFERENT'}); {won.episodes} of {won.full_grid()} episodes, "
          f"{len(won.dropped)} dropped")
    return {"same": won.chosen == best, "race": won.episodes, "grid": won.full_grid(), "chosen": best}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="demo-lr", choices=sorted(RL_PRESETS))
    ap.add_argument("--base", required=True, help="the base snapshot the run scheduled, as the run named it")
    ap.add_argument("--play", action="store_true", help="play the members the cache lacks (the full grid)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of the replayed race (default 6, the stage's; "
                                                          "each at least common.racing.MIN_ROUND episodes)")
    args = ap.parse_args(argv)
    preset, base = RL_PRESETS[args.preset], Path(args.base)
    if not base.exists():
        sys.exit(f"error: no base snapshot at {base}")
    env_cfg = preset_env(args.preset, base)
    n, seed = preset["run"].eval_episodes, preset["run"].eval_seed
    cache = ControlCache(base, identify(base), env_cfg)
    envs = None
    if args.play:
        assets = load_base(base, env_cfg)
        envs = [TextSchedulingEnv(assets, env_cfg) for _ in range(max(preset["run"].workers, idle_cores()))]
    print(f"{args.preset}, {n} evaluation episodes from seed {seed}, races of {len(race_rounds(n, args.rounds))} "
          f"rounds; {cpu_model()}")
    rules = rule_family(env_cfg)
    results = {TUNED: check_family(TUNED, grid(cache, rules, n, seed, envs, env_cfg), n, args.rounds)}
    for family, members in later_families(env_cfg, rules[results[TUNED]["chosen"]]).items():
        results[family] = check_family(family, grid(cache, members, n, seed, envs, env_cfg), n, args.rounds)
    fixed = len(control_policies(len(env_cfg.modes), env_cfg.mode_names)) + 1  # constants and the bandit
    heldout = 2 + 1 + len(results)  # the worst and the best constant (3 where random is the best), the bandit, each member
    full = (fixed + sum(r["grid"] for r in results.values()) // n + heldout) * n
    raced = fixed * n + sum(r["race"] for r in results.values()) + heldout * n
    decisions = env_cfg.max_steps
    print(f"controls' decisions: full grid {full * decisions:,}, racing {raced * decisions:,} "
          f"({raced / full:.0%}); every family's member the same: {all(r['same'] for r in results.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

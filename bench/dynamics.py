"""What each mode does to the model: one decision per mode from the same state, over several data seeds.

Used by `bench/env_dynamics.py` (docs/studies.md: what one decision of each mode does) and by the
tests that show the modes differ at every Φ level. A state is `env.get_state()`;
`state_at_phi` makes one with Φ near a chosen level (below, inside or above the
band) by training the model on the Φ loss alone toward that level.
"""
from __future__ import annotations

import math

from common.stats import summarize


def state_at_phi(env, seed: int, level: float | None, tolerance: float = 0.3, max_inner_steps: int = 300,
                 stop_below: float | None = None, weights: tuple = (0.0, 1.0)) -> dict:
    """Reset with `seed`, then (unless `level` is None) take inner steps with loss weights
    `weights` (w_text, w_phi; default the Φ loss alone), with the model's Φ target moved to
    `level`, until the held-out Φ is within `tolerance` of it (or, with `stop_below`, as soon as
    it is under that). Returns the environment state there; raises RuntimeError when Φ does not
    get there."""
    env.reset(seed=seed)
    if level is not None:
        def arrived(phi: float) -> bool:
            return abs(phi - level) <= tolerance or (stop_below is not None and phi < stop_below)

        cfg = env.model.cfg
        saved = (cfg.phi_low, cfg.phi_high, cfg.phi_target)
        cfg.phi_low = cfg.phi_high = cfg.phi_target = float(level)  # a band of one point: L = 2|Φ − level|
        try:
            for _ in range(max_inner_steps):
                if arrived(env._measure()["phi"]):
                    break
                env._train(*weights, n=1)
        finally:
            cfg.phi_low, cfg.phi_high, cfg.phi_target = saved
        phi = env._measure()["phi"]
        if not arrived(phi):
            raise RuntimeError(f"Φ reached {phi:.2f}, not {level:g} ± {tolerance:g}, in {max_inner_steps} inner steps")
    env._prev = env._measure()
    return env.get_state()


def mode_effects(env, state: dict, seeds, actions=None) -> dict:
    """From `state`, one decision of each action with the data stream seeded by each seed.

    Returns {mode name: {"dphi": [...], "dppl_pct": [...]}} (one value per seed: the change in
    held-out Φ and the per-cent change in held-out perplexity that decision made), and
    "start": the state's measurement."""
    actions = range(env.action_space.n) if actions is None else actions
    start = dict(state["prev"])
    out: dict = {"start": start}
    for a in actions:
        name = env.config.modes[a][0]
        out[name] = {"dphi": [], "dppl_pct": []}
        for s in seeds:
            env.set_state(state)
            env._seed(int(s))
            info = env.step(a)[4]
            out[name]["dphi"].append(info["phi"] - start["phi"])
            out[name]["dppl_pct"].append(100.0 * (info["ppl"] / start["ppl"] - 1.0))
    return out


def difference(effects: dict, a: str, b: str, key: str = "dphi") -> dict:
    """Mean of a − b over the seeds, and the standard error of that difference (unpaired)."""
    sa, sb = summarize(effects[a][key]), summarize(effects[b][key])
    se = math.sqrt(sa["std"] ** 2 / sa["n"] + sb["std"] ** 2 / sb["n"])
    return {"diff": sa["mean"] - sb["mean"], "se": se}

"""Reward v2 (SPEC §5): a pure function of two consecutive measurements.

A measurement is a dict with `consciousness` (C), `phi` (Φ), `ppl` (held-out
perplexity P) and `memory_util`. Every constant comes from `RewardConfig`.
The terms are returned one by one so they can be logged and unit-tested:

    delta_c    w_dc·(C − C_prev)
    delta_phi  w_dphi·(Φ − Φ_prev)
    ppl_gain   w_ppl·(P_prev − P)/max(P_prev, 1)
    memory     −w_mem·memory_util
    jump       −w_jump·(|ΔΦ| − jump_limit)  if |ΔΦ| > jump_limit, else 0
    phi_band   −w_phi_below·(phi_low − Φ) below the band, −w_phi_above·(Φ − phi_high) above, +phi_bonus inside
    ppl_band   −w_ppl_below·(ppl_low − P)/ppl_below_scale below, −w_ppl_above·(P − ppl_high)/ppl_above_scale above, 0 inside
    c_band     −w_c_below·(c_low − C) below, −w_c_above·(C − c_high) above, +c_bonus inside

Band edges count as inside.
"""
from __future__ import annotations

from .config import RewardConfig

TERMS = ("delta_c", "delta_phi", "ppl_gain", "memory", "jump", "phi_band", "ppl_band", "c_band")


def band(x: float, low: float, high: float, w_below: float, w_above: float, inside: float,
         below_scale: float = 1.0, above_scale: float = 1.0) -> float:
    """Linear penalty for the distance outside [low, high] (scaled), a constant bonus inside."""
    if x < low:
        return -w_below * (low - x) / below_scale
    if x > high:
        return -w_above * (x - high) / above_scale
    return inside


def reward_terms(prev: dict | None, cur: dict, cfg: RewardConfig) -> dict:
    """Each term of the reward for moving from `prev` to `cur`; all zero when there is no `prev`."""
    if prev is None:
        return dict.fromkeys(TERMS, 0.0)
    c, phi, ppl = cur["consciousness"], cur["phi"], cur["ppl"]
    d_phi = phi - prev["phi"]
    return {
        "delta_c": cfg.w_dc * (c - prev["consciousness"]),
        "delta_phi": cfg.w_dphi * d_phi,
        "ppl_gain": cfg.w_ppl * (prev["ppl"] - ppl) / max(prev["ppl"], 1.0),
        "memory": -cfg.w_mem * cur["memory_util"],
        "jump": -cfg.w_jump * (abs(d_phi) - cfg.jump_limit) if abs(d_phi) > cfg.jump_limit else 0.0,
        "phi_band": band(phi, cfg.phi_low, cfg.phi_high, cfg.w_phi_below, cfg.w_phi_above, cfg.phi_bonus),
        "ppl_band": band(ppl, cfg.ppl_low, cfg.ppl_high, cfg.w_ppl_below, cfg.w_ppl_above, 0.0,
                         cfg.ppl_below_scale, cfg.ppl_above_scale),
        "c_band": band(c, cfg.c_low, cfg.c_high, cfg.w_c_below, cfg.w_c_above, cfg.c_bonus),
    }


def compute_reward(prev: dict | None, cur: dict, cfg: RewardConfig) -> tuple[float, dict]:
    """(r, terms): r is the sum of the terms (0 when `prev` is None)."""
    terms = reward_terms(prev, cur, cfg)
    return float(sum(terms.values())), terms

"""Rewards: pure functions of two consecutive measurements, each a named, first-class object.

A measurement is the dict `TextSchedulingEnv` takes on its fixed held-out batch:
`consciousness` (C), `phi` (Φ), `loss_text`, `loss_phi`, `memory_util` and `ppl`
(held-out perplexity P). A reward object says what it is and needs:

- `name`           the key it is stored under (`reward_from_dict` rebuilds it)
- `terms`          the names of its terms, returned one by one (logged, unit-tested)
- `measurements`   the measurement keys it reads
- `band`           the Φ band it calls healthy, which the monitor, the report and
                   `generate.py --agent` report as "Φ in band"
- `__call__(prev, cur, last) -> (r, terms)`; `prev` is None on a step the reward does not score,
  `last` is True on the episode's final decision

Three rewards exist. Adding one is a dataclass here and a line in `REWARDS`.

**`v2`** (`RewardConfig`) — the seed study's reward v2, exact (docs/env.md); `EnvConfig()`'s default.

    delta_c    w_dc·(C − C_prev)
    delta_phi  w_dphi·(Φ − Φ_prev)
    ppl_gain   w_ppl·(P_prev − P)/max(P_prev, 1)
    memory     −w_mem·memory_util
    jump       −w_jump·(|ΔΦ| − jump_limit)  if |ΔΦ| > jump_limit, else 0
    phi_band   −w_phi_below·(phi_low − Φ) below the band, −w_phi_above·(Φ − phi_high) above, +phi_bonus inside
    ppl_band   −w_ppl_below·(ppl_low − P)/ppl_below_scale below, −w_ppl_above·(P − ppl_high)/ppl_above_scale above, 0 inside
    c_band     −w_c_below·(c_low − C) below, −w_c_above·(C − c_high) above, +c_bonus inside

On a model whose perplexity sits below 10, `ppl_band` and the bonuses are paid
equally by every policy and dominate the return (docs/env.md, "What the environment rewards").

**`progress`** (`ProgressReward`) — the presets' default: text progress against Φ's health.

    text_gain  w_gain·100·ln(P_prev / P)          per cent of held-out perplexity gained this decision
    phi_out    −w_out·d(Φ, [phi_low, phi_high])   distance of Φ outside its band, 0 inside

The per-decision gains telescope, so an episode's text_gain total is
100·w_gain·ln(P_start / P_end) — only where the model ends counts, not the
path. With w_gain = w_out = 1, one Φ unit outside the band for one decision
costs what a 1 % perplexity improvement earns. Neither term is paid equally
by every policy: text training earns the gain and lets Φ drift above the
band, Φ training brings Φ into the band at a perplexity cost, so the best
schedule trains text while Φ is healthy and spends Φ steps only to keep it so.

**`final`** (`FinalReward`) — only the model the episode ends with counts.

    text_gain  w_gain·100·ln(P_prev / P)          as in `progress`: the episode's total is 100·w_gain·ln(P_start / P_end)
    phi_end    −w_end·d(Φ, [phi_low, phi_high])   on the episode's last decision only; 0 before, and 0 inside the band

Φ may leave its band on the way at no cost, so long as it ends inside. With
w_end = 10, ending one Φ unit above the band costs what a 10 % perplexity
improvement earns; docs/studies.md, "Schedules that need foresight", has the
measurement the default was kept from (5, 10 and 20 rank the schedules alike).

Both are a `PhiBandReward`: the same text gain and Φ band, told apart by the Φ term's name,
the field that weighs it, and whether it is priced every decision or only on the last.

Band edges count as inside.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

from common.fields import checked_fields
from infinito.config import PHI_BAND

from .errors import EnvError


def known_fields(cls, d: dict, what: str) -> dict:
    """`d` without a leading "name", after checking every key is a field of dataclass `cls` and
    every value fits the field's type."""
    return checked_fields(cls, {k: v for k, v in d.items() if k != "name"}, what, EnvError)


def band(x: float, low: float, high: float, w_below: float, w_above: float, inside: float,
         below_scale: float = 1.0, above_scale: float = 1.0) -> float:
    """Linear penalty for the distance outside [low, high] (scaled), a constant bonus inside."""
    if x < low:
        return -w_below * (low - x) / below_scale
    if x > high:
        return -w_above * (x - high) / above_scale
    return inside


class Reward:
    """What every reward shares: scoring, the dict form, and the one-line description."""
    name: ClassVar[str]
    terms: ClassVar[tuple]
    measurements: ClassVar[tuple]
    prices_end: ClassVar[bool] = False  # True: term_values(prev, cur, last) is told the episode's last decision

    @property
    def band(self) -> tuple:
        return (self.phi_low, self.phi_high)

    def __call__(self, prev: dict | None, cur: dict, last: bool = False) -> tuple[float, dict]:
        """(r, terms): r is the sum of the terms; all zero when `prev` is None. `last`: `cur` is
        the episode's final measurement (only the `final` reward reads it)."""
        if prev is None:
            terms = dict.fromkeys(self.terms, 0.0)
        else:
            terms = self.term_values(prev, cur, last) if self.prices_end else self.term_values(prev, cur)
        return float(sum(terms.values())), terms

    def score_decision(self, step: int, prev: dict, cur: dict, last: bool) -> tuple[float, dict]:
        """(r, terms) of an episode's decision `step` (0: its first), which moved the measurement from
        `prev` to `cur`: how the environment pays each step and `rescore` re-prices it, alike. Under
        `zero_first_step` the first decision is not scored."""
        return self(None if step == 0 and self.zero_first_step else prev, cur, last)

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**known_fields(cls, d, f"reward '{cls.name}'"))

    def describe(self) -> str:
        """'name (changed=value, ...)': the reward and its constants that differ from the defaults."""
        default = type(self)().to_dict()
        changed = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in self.to_dict().items() if v != default[k]]
        return self.name + (f" ({', '.join(changed)})" if changed else "")


@dataclass
class RewardConfig(Reward):
    """Reward v2 of the seed study (docs/env.md); every constant a field, the defaults the study's."""
    name: ClassVar[str] = "v2"
    terms: ClassVar[tuple] = ("delta_c", "delta_phi", "ppl_gain", "memory", "jump", "phi_band", "ppl_band", "c_band")
    measurements: ClassVar[tuple] = ("consciousness", "phi", "ppl", "memory_util")

    w_dc: float = 1.0
    w_dphi: float = 0.5
    w_ppl: float = 0.1
    w_mem: float = 0.2
    jump_limit: float = 1.0
    w_jump: float = 0.8
    phi_low: float = PHI_BAND[0]
    phi_high: float = PHI_BAND[1]
    w_phi_below: float = 0.3
    w_phi_above: float = 0.6
    phi_bonus: float = 0.1
    ppl_low: float = 10.0
    ppl_high: float = 200.0
    w_ppl_below: float = 2.0
    ppl_below_scale: float = 10.0
    w_ppl_above: float = 0.3
    ppl_above_scale: float = 100.0
    c_low: float = 0.3
    c_high: float = 0.7
    w_c_below: float = 0.2
    w_c_above: float = 0.2
    c_bonus: float = 0.05
    zero_first_step: bool = True  # the study's rule: r = 0 on an episode's first step

    def __post_init__(self) -> None:
        problems = []
        if not self.phi_low < self.phi_high:
            problems.append("phi_low must be < phi_high")
        if not self.ppl_low < self.ppl_high:
            problems.append("ppl_low must be < ppl_high")
        if not self.c_low < self.c_high:
            problems.append("c_low must be < c_high")
        if not (self.ppl_below_scale > 0 and self.ppl_above_scale > 0):
            problems.append("ppl_below_scale and ppl_above_scale must be > 0")
        if self.jump_limit < 0:
            problems.append("jump_limit must be >= 0")
        if problems:
            raise EnvError("invalid reward config: " + "; ".join(problems))

    def term_values(self, prev: dict, cur: dict) -> dict:
        c, phi, ppl = cur["consciousness"], cur["phi"], cur["ppl"]
        d_phi = phi - prev["phi"]
        return {
            "delta_c": self.w_dc * (c - prev["consciousness"]),
            "delta_phi": self.w_dphi * d_phi,
            "ppl_gain": self.w_ppl * (prev["ppl"] - ppl) / max(prev["ppl"], 1.0),
            "memory": -self.w_mem * cur["memory_util"],
            "jump": -self.w_jump * (abs(d_phi) - self.jump_limit) if abs(d_phi) > self.jump_limit else 0.0,
            "phi_band": band(phi, self.phi_low, self.phi_high, self.w_phi_below, self.w_phi_above, self.phi_bonus),
            "ppl_band": band(ppl, self.ppl_low, self.ppl_high, self.w_ppl_below, self.w_ppl_above, 0.0,
                             self.ppl_below_scale, self.ppl_above_scale),
            "c_band": band(c, self.c_low, self.c_high, self.w_c_below, self.w_c_above, self.c_bonus),
        }


@dataclass
class PhiBandReward(Reward):
    """Text progress against Φ's distance outside its band (module docstring). A subclass names its
    Φ term, the field that weighs it, and whether the distance is priced on every decision or only
    on the episode's last (`prices_end`)."""
    measurements: ClassVar[tuple] = ("phi", "ppl")
    weight: ClassVar[str]  # the field pricing one Φ unit outside the band

    w_gain: float = 1.0
    phi_low: float = PHI_BAND[0]
    phi_high: float = PHI_BAND[1]
    zero_first_step: bool = False  # the reset's measurement is a real "before": score the first decision too

    def __post_init__(self) -> None:
        if not self.phi_low < self.phi_high:
            raise EnvError("invalid reward config: phi_low must be < phi_high")
        if self.w_gain < 0 or getattr(self, self.weight) < 0:
            raise EnvError(f"invalid reward config: w_gain and {self.weight} must be >= 0")

    def term_values(self, prev: dict, cur: dict, last: bool = False) -> dict:
        w = getattr(self, self.weight)
        priced = last or not self.prices_end
        phi = band(cur["phi"], self.phi_low, self.phi_high, w, w, 0.0) if priced else 0.0
        return dict(zip(self.terms, (text_gain(prev, cur, self.w_gain), phi)))

    def to_dict(self) -> dict:
        # the weight beside w_gain, where stored configs and descriptions have always had it
        d = super().to_dict()
        return {"name": d.pop("name"), "w_gain": d.pop("w_gain"), self.weight: d.pop(self.weight), **d}


@dataclass
class ProgressReward(PhiBandReward):
    """Φ priced on every decision; the RL presets' default."""
    name: ClassVar[str] = "progress"
    terms: ClassVar[tuple] = ("text_gain", "phi_out")
    weight: ClassVar[str] = "w_out"

    w_out: float = 1.0


@dataclass
class FinalReward(PhiBandReward):
    """What the user keeps: the final model's perplexity gain and where its Φ ends."""
    name: ClassVar[str] = "final"
    terms: ClassVar[tuple] = ("text_gain", "phi_end")
    weight: ClassVar[str] = "w_end"
    prices_end: ClassVar[bool] = True

    w_end: float = 10.0


def text_gain(prev: dict, cur: dict, w_gain: float) -> float:
    """w_gain x the per cent of held-out perplexity gained between two measurements (log ratio x 100)."""
    return w_gain * 100.0 * math.log(max(prev["ppl"], 1e-12) / max(cur["ppl"], 1e-12))


REWARDS = {cls.name: cls for cls in (RewardConfig, ProgressReward, FinalReward)}


def reward_from_dict(d: dict):
    """The reward a `to_dict()` describes (its "name" says which)."""
    name = d.get("name")
    if name not in REWARDS:
        raise EnvError(f"unknown reward '{name}' (choose from {', '.join(REWARDS)})")
    return REWARDS[name].from_dict(d)

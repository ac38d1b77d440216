"""Hand-written schedules: `BandPolicy`, and the adaptive controls a trained agent has to beat,
in three families.

Every member is one `SchedulePolicy`: the loss weights come from the Φ threshold rule ("TEXT
while Φ is inside the reward's band shrunk by a margin, another mode otherwise"), optionally
TEXT only until k decisions are left, and the step size from a `StepSizeSchedule` over the
episode — the schedules people already use (constant, step decay, cosine decay). A policy reads
Φ and the time left from raw observations, so it needs no state.

- `rule_family`: margin x outside mode x constant step size (the threshold rule of old; with
  modes of one step size, the 6 members it always had, under the same names).
- `switch_family`: "TEXT until k decisions are left, then <the tuned rule>", over k.
- `decay_family`: the tuned rule's loss weights, or TEXT only, x step decay and cosine decay
  between the modes' step sizes (only when the modes carry more than one).

The time-switch and decay families are built around the rule tuned first (on the evaluation seeds):
tuning their product in one grid would cost every combination's episodes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from infinito.config import PHI_BAND

from .config import PHI, TEXT
from .scheduling import OBS_NAMES

PHI_OBS, TIME_LEFT_OBS = OBS_NAMES.index("phi"), OBS_NAMES.index("time_left")
RULE_MARGINS = (0.0, 0.25, 0.5)      # how far inside the reward's Φ band the rule keeps training text
SWITCH_FRACTIONS = (0.12, 0.24, 0.4, 0.6)  # k / episode length of the time-switch family (3, 6, 10, 15 of 25)
DECAY_FRACTIONS = (0.25, 0.5)        # step decay: the low step size for this share of the episode's end


class BandPolicy:
    """Hand-written adaptive schedule: train Φ while it is outside [low, high]
    (shrunk by `margin` on both sides), train text otherwise. Reads Φ from the
    raw observation."""

    name = "adaptive (PHI outside the Φ band, else TEXT)"

    def __init__(self, low: float = PHI_BAND[0], high: float = PHI_BAND[1], margin: float = 0.0,
                 inside: int = TEXT, outside: int = PHI, name: str | None = None):
        self.low, self.high, self.margin = low, high, margin
        self.inside, self.outside = int(inside), int(outside)
        self.name = name or self.name

    def contains(self, phi: float) -> bool:
        """Φ inside [low + margin, high - margin] (edges inside): the one threshold test of every rule."""
        return self.low + self.margin <= phi <= self.high - self.margin

    def __call__(self, obs, info=None) -> int:
        return self.inside if self.contains(float(obs[PHI_OBS])) else self.outside


def base_name(mode_name: str) -> str:
    """"TEXT@0.5" -> "TEXT": the loss weights' name of a mode (env.config.step_size_modes)."""
    return mode_name.split("@")[0]


@dataclass(frozen=True)
class StepSizeSchedule:
    """The lr scale per decision: constant `high`; "step": `high` until `switch_left` decisions are
    left, then `low`; "cosine": from `high` at the first decision to `low` at the last."""
    kind: str = "constant"
    high: float = 1.0
    low: float = 1.0
    switch_left: int = 0

    def scale(self, done: int, total: int) -> float:
        if self.kind == "step":
            return self.high if total - done > self.switch_left else self.low
        if self.kind == "cosine":
            f = done / max(total - 1, 1)
            return self.low + (self.high - self.low) * (1 + math.cos(math.pi * f)) / 2
        return self.high

    @property
    def label(self) -> str:
        if self.kind == "step":
            return f"lr ×{self.high:g}, ×{self.low:g} for the last {self.switch_left}"
        if self.kind == "cosine":
            return f"lr cosine ×{self.high:g} → ×{self.low:g}"
        return f"lr ×{self.high:g}"


class SchedulePolicy:
    """Threshold rule for the loss weights (TEXT only while more than `text_until_left` decisions are
    left, when given; always, when `outside` is None) x a step-size schedule; each decision takes the mode with those weights whose
    step size is nearest (in ratio) to the schedule's."""

    def __init__(self, env_cfg, margin: float = 0.0, outside: str | None = "MIXED",
                 lr: StepSizeSchedule = StepSizeSchedule(), text_until_left: int | None = None,
                 name: str | None = None):
        self.low, self.high = env_cfg.reward.band
        self.band = BandPolicy(self.low, self.high, margin)
        self.margin, self.outside, self.lr, self.text_until_left = margin, outside, lr, text_until_left
        self.total = env_cfg.max_steps
        self.text = base_name(env_cfg.mode_names[text_mode(env_cfg)])
        self.choices: dict[str, list] = {}  # loss weights' name -> [(lr scale, action)]
        for a, (mode, _, _, scale) in enumerate(env_cfg.modes):
            self.choices.setdefault(base_name(mode), []).append((scale, a))
        if outside is not None and outside not in self.choices:
            raise ValueError(f"no mode named {outside} (modes: {', '.join(env_cfg.mode_names)})")
        self.name = name or describe(self)

    def __call__(self, obs, info=None) -> int:
        timed = self.text_until_left is not None or self.lr.kind != "constant"
        left = round(float(obs[TIME_LEFT_OBS]) * self.total) if timed else self.total
        inside = self.band.contains(float(obs[PHI_OBS]))
        text_only = self.text_until_left is not None and left > self.text_until_left
        weights = self.text if inside or text_only or self.outside is None else self.outside
        want = self.lr.scale(self.total - left, self.total)
        return min(self.choices[weights], key=lambda sa: abs(math.log(sa[0] / want)))[1]


def describe(p: SchedulePolicy) -> str:
    rule = "TEXT only" if p.outside is None else f"TEXT in [{p.low + p.margin:g}, {p.high - p.margin:g}], else {p.outside}"
    if p.text_until_left is not None:
        rule = f"TEXT until {p.text_until_left} left, then {rule}"
    one_scale = all(len(c) == 1 and c[0][0] == 1.0 for c in p.choices.values())
    return f"rule: {rule}" + ("" if one_scale and p.lr == StepSizeSchedule() else f", {p.lr.label}")


def text_mode(env_cfg) -> int:
    """The mode that trains text only: the one named TEXT (at the largest step size up to 1), else
    the one weighting text most over Φ."""
    named = [a for a, m in enumerate(env_cfg.modes) if base_name(m[0]) == "TEXT"]
    if named:
        return max(named, key=lambda a: (env_cfg.modes[a][3] <= 1.0, -abs(math.log(env_cfg.modes[a][3]))))
    return max(range(len(env_cfg.modes)), key=lambda a: env_cfg.modes[a][1] - env_cfg.modes[a][2])


def step_sizes(env_cfg) -> list[float]:
    return sorted({m[3] for m in env_cfg.modes})


def _family(members) -> dict:
    return {p.name: p for p in members}


def rule_family(env_cfg) -> dict:
    """margin (RULE_MARGINS) x every other mode's loss weights x every step size, held constant."""
    text = base_name(env_cfg.mode_names[text_mode(env_cfg)])
    others = list(dict.fromkeys(base_name(n) for n in env_cfg.mode_names if base_name(n) != text))
    return _family(SchedulePolicy(env_cfg, margin, outside, StepSizeSchedule("constant", s))
                   for outside in others for margin in RULE_MARGINS for s in step_sizes(env_cfg))


def switch_family(env_cfg, rule: SchedulePolicy) -> dict:
    """TEXT until k decisions are left, then `rule`, for k = SWITCH_FRACTIONS of the episode."""
    ks = sorted({max(1, round(f * env_cfg.max_steps)) for f in SWITCH_FRACTIONS})
    return _family(SchedulePolicy(env_cfg, rule.margin, rule.outside, rule.lr, k) for k in ks)


def decay_family(env_cfg, rule: SchedulePolicy) -> dict:
    """(`rule`'s loss weights, or TEXT only: the plain decay people use on a text loss) x (step decay
    at DECAY_FRACTIONS, cosine decay) between every pair of the modes' step sizes; empty when the
    modes carry one step size."""
    scales = step_sizes(env_cfg)
    ks = sorted({max(1, round(f * env_cfg.max_steps)) for f in DECAY_FRACTIONS})
    schedules = [StepSizeSchedule("step", hi, lo, k) for i, lo in enumerate(scales) for hi in scales[i + 1:] for k in ks]
    schedules += [StepSizeSchedule("cosine", hi, lo) for i, lo in enumerate(scales) for hi in scales[i + 1:]]
    return _family(SchedulePolicy(env_cfg, rule.margin, outside, s) for outside in (rule.outside, None)
                   for s in schedules)


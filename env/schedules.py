"""Hand-written schedules: `BandPolicy`, and the adaptive controls a trained agent has to beat,
in four families.

Every member is one `SchedulePolicy`: the loss weights come from the Φ threshold rule ("TEXT
while Φ is inside the reward's band shrunk by a margin, another mode otherwise"), optionally
TEXT only until k decisions are left, and the step size from a `StepSizeSchedule` over the
episode — the schedules people already use (constant, step decay, cosine decay). A policy reads
Φ and the time left from raw observations, so it needs no state; the one exception,
`PlateauPolicy`, reacts to the held-out text loss as PyTorch's ReduceLROnPlateau does, and the
episode runner resets it at every episode's start (its `reset`, as for the bandit).

- `rule_family`: margin x outside mode x constant step size (the threshold rule of old; with
  modes of one step size, the 6 members it always had, under the same names).
- `switch_family`: "TEXT until k decisions are left, then <the tuned rule>", over k.
- `decay_family`: the tuned rule's loss weights, or TEXT only, x step decay and cosine decay
  between the modes' step sizes (only when the modes carry more than one).
- `plateau_family`: the same two loss weights x patience k: one step size lower after k decisions
  without a new best held-out text loss (only when the modes carry more than one step size).

The time-switch, decay and plateau families are built around the rule tuned first (on the
evaluation seeds): tuning their product in one grid would cost every combination's episodes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from infinito.config import PHI_BAND

from .config import PHI, TEXT
from .scheduling import OBS_NAMES

PHI_OBS, TIME_LEFT_OBS, LOSS_TEXT_OBS = (OBS_NAMES.index(n) for n in ("phi", "time_left", "loss_text"))
RULE_MARGINS = (0.0, 0.25, 0.5)      # how far inside the reward's Φ band the rule keeps training text
SWITCH_FRACTIONS = (0.12, 0.24, 0.4, 0.6)  # k / episode length of the time-switch family (3, 6, 10, 15 of 25)
DECAY_FRACTIONS = (0.25, 0.5)        # step decay: the low step size for this share of the episode's end
# The plateau family's patience, in decisions: how long the loss may stall before it counts is a
# matter of the loss's own noise, not of the episode's length, so these are counts, not fractions.
# Four values x the two loss weights keep its cost at 8 members' episodes on the evaluation seeds; at
# k = 5 a loss stalled from the start reaches the lowest of three step sizes by the 11th of the
# demo's 25 decisions, and a larger k would leave little of the episode to the lowered step size.
PLATEAU_PATIENCES = (1, 2, 3, 5)
# A new best must be this far (relative) below the old one. A tenth of what one TEXT decision
# gains from the demo snapshot (perplexity −3 %, loss −1 %: docs/studies.md, the modes' table),
# so a stall is a stall and not a crawl; ReduceLROnPlateau's default 1e-4 would count almost any
# drop. Fixed, not tuned: every tuned value is a member more on every evaluation seed.
PLATEAU_THRESHOLD = 1e-3


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
    left, or once `text_from_left` or fewer are, when given; always, when `outside` is None) x a
    step-size schedule; each decision takes the mode with those weights whose step size is nearest
    (in ratio) to the schedule's. A negative margin puts the thresholds outside the reward's band."""

    def __init__(self, env_cfg, margin: float = 0.0, outside: str | None = "MIXED",
                 lr: StepSizeSchedule = StepSizeSchedule(), text_until_left: int | None = None,
                 name: str | None = None, text_from_left: int | None = None):
        self.low, self.high = env_cfg.reward.band
        self.band = BandPolicy(self.low, self.high, margin)
        self.margin, self.outside, self.lr, self.text_until_left = margin, outside, lr, text_until_left
        self.text_from_left = text_from_left
        self.total = env_cfg.max_steps
        self.text = base_name(env_cfg.mode_names[text_mode(env_cfg)])
        self.choices: dict[str, list] = {}  # loss weights' name -> [(lr scale, action)]
        for a, (mode, _, _, scale) in enumerate(env_cfg.modes):
            self.choices.setdefault(base_name(mode), []).append((scale, a))
        if outside is not None and outside not in self.choices:
            raise ValueError(f"no mode named {outside} (modes: {', '.join(env_cfg.mode_names)})")
        self.name = name or describe(self)

    def __call__(self, obs, info=None) -> int:
        timed = self.text_until_left is not None or self.text_from_left is not None or self.lr.kind != "constant"
        left = round(float(obs[TIME_LEFT_OBS]) * self.total) if timed else self.total
        return self.pick(self.weights(obs, left), self.lr.scale(self.total - left, self.total))

    def weights(self, obs, left: int) -> str:
        """This decision's loss weights: TEXT inside the band, before the switch, after the late switch
        or always (`outside` None), else `outside`."""
        inside = self.band.contains(float(obs[PHI_OBS]))
        text_only = ((self.text_until_left is not None and left > self.text_until_left)
                     or (self.text_from_left is not None and left <= self.text_from_left))
        return self.text if inside or text_only or self.outside is None else self.outside

    def pick(self, weights: str, want: float) -> int:
        """The mode with these loss weights whose step size is nearest (in ratio) to `want`."""
        return min(self.choices[weights], key=lambda sa: abs(math.log(sa[0] / want)))[1]


def describe(p: SchedulePolicy) -> str:
    rule = "TEXT only" if p.outside is None else f"TEXT in [{p.low + p.margin:g}, {p.high - p.margin:g}], else {p.outside}"
    if p.text_until_left is not None:
        rule = f"TEXT until {p.text_until_left} left, then {rule}"
    if p.text_from_left is not None:
        rule = f"{rule}; TEXT only for the last {p.text_from_left}"
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
    """The modes' step sizes (lr scales), ascending, each once."""
    return sorted({m[3] for m in env_cfg.modes})


def _family(members) -> dict:
    return {p.name: p for p in members}


def rule_family(env_cfg, margins: tuple = RULE_MARGINS) -> dict:
    """margin (RULE_MARGINS) x every other mode's loss weights x every step size, held constant."""
    text = base_name(env_cfg.mode_names[text_mode(env_cfg)])
    others = list(dict.fromkeys(base_name(n) for n in env_cfg.mode_names if base_name(n) != text))
    return _family(SchedulePolicy(env_cfg, margin, outside, StepSizeSchedule("constant", s))
                   for outside in others for margin in margins for s in step_sizes(env_cfg))


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


@dataclass(frozen=True)
class Plateau:
    """A `PlateauPolicy`'s settings: `ladder` the step sizes it may take (ascending; it starts at
    the top), `patience` and `threshold` as in `PlateauPolicy`. Its label names them all, so a
    member's name (the control cache's key) changes whenever its behaviour does."""
    patience: int
    ladder: tuple
    threshold: float = PLATEAU_THRESHOLD

    @property
    def label(self) -> str:
        steps = " → ".join(f"×{s:g}" for s in reversed(self.ladder))
        k = self.patience
        return (f"lr {steps}, one step size lower after {k} decision{'s' if k > 1 else ''} without a "
                f"held-out loss {self.threshold * 100:g}% below its best")


class PlateauPolicy(SchedulePolicy):
    """The threshold rule's loss weights (TEXT only when `outside` is None) at a step size lowered on
    a plateau of the held-out text loss: PyTorch's ReduceLROnPlateau (mode "min", relative
    threshold, no cooldown) with the modes' step sizes for its factor.

    It starts at the largest step size its loss weights carry. Each observation's `loss_text` (the
    fixed held-out batch's loss after the previous decision; at the first, the reset's) is a new
    best when it is below best x (1 - threshold); the first always is. After `patience`
    consecutive observations without a new best it takes the next lower step size (never below
    the lowest) and counts again from 0. ReduceLROnPlateau lowers when the count *exceeds* its
    patience; here patience k lowers on the k-th, so k = 1 lowers at the first stall.

    The state (level, best, count) is the episode's: `reset`, which the episode runner calls at
    every episode's start (common.episodes.play), returns it to the top. Deterministic: it reads
    only the observations."""

    def __init__(self, env_cfg, margin: float = 0.0, outside: str | None = "MIXED", patience: int = 2,
                 threshold: float = PLATEAU_THRESHOLD, name: str | None = None):
        super().__init__(env_cfg, margin, outside)
        if patience < 1:
            raise ValueError(f"patience must be >= 1, not {patience}")
        used = [self.text] if outside is None else [self.text, outside]
        ladder = tuple(sorted({scale for w in used for scale, _ in self.choices[w]}))
        self.lr = Plateau(int(patience), ladder, float(threshold))
        self.name = name or describe(self)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        self.level, self.best, self.stalled = len(self.lr.ladder) - 1, math.inf, 0

    @property
    def scale(self) -> float:
        """The step size it takes now."""
        return self.lr.ladder[self.level]

    def __call__(self, obs, info=None) -> int:
        loss = float(obs[LOSS_TEXT_OBS])
        if loss < self.best * (1 - self.lr.threshold):
            self.best, self.stalled = loss, 0
        else:
            self.stalled += 1
            if self.stalled == self.lr.patience:
                self.level, self.stalled = max(self.level - 1, 0), 0
        return self.pick(self.weights(obs, self.total), self.scale)  # `left` unread: no time switch


def plateau_family(env_cfg, rule: SchedulePolicy) -> dict:
    """(`rule`'s loss weights, or TEXT only) x patience (PLATEAU_PATIENCES): the step size lowered
    on a plateau of the held-out text loss; empty when the modes carry one step size."""
    if len(step_sizes(env_cfg)) < 2:
        return {}
    return _family(PlateauPolicy(env_cfg, rule.margin, outside, k) for outside in (rule.outside, None)
                   for k in PLATEAU_PATIENCES)

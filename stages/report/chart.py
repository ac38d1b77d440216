"""The over-fitting report as a chart: evaluation return per checkpoint, beside the control policies.

Input is only ``Report.build()``'s dict (or the ``report.json`` it was saved as), so a chart can be
redrawn from files alone; output is a self-contained SVG string (no plotting library: the project
adds no dependency for one figure, and SVG diffs and renders anywhere a Markdown file does).

What a reader should see at once: the verdict, in its colour (green only for a win); each
checkpoint's mean return with its 95 % CI as an error bar, coloured by its over-fitting status; each
control policy in its own colour, its mean a dashed line across the plot and its 95 % CI a bar in a
strip at the right edge (a checkpoint is better than a control only where its bar clears the
control's); controls far from the checkpoints as edge marks with their values, so the checkpoints
keep the axis; the baseline and the recommended checkpoint ringed and labelled; a dashed line where
the run was resumed; under it, the headline: the recommended checkpoint and every control on the
held-out seeds, best first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence
from xml.sax.saxutils import escape, quoteattr

WIDTH, HEIGHT = 800, 450
# The plot area; the right margin holds the control policies' labels, the bottom the legend; above
# it, the title, the verdict and the seeds.
LEFT, RIGHT, TOP, BOTTOM = 74, 606, 92, 360
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"

STATUS_COLOURS = {
    "optimal": "#2e7d32",              # green: the one to ship, and no control does as well
    "best of run": "#546e7a",          # slate: the one to ship from this run, but a control does as well
    "stable": "#1f77b4",               # blue: fine, not chosen
    "high variance": "#ff7f0e",        # orange: a warning
    "under-trained": "#8fa8c8",        # grey-blue: before the baseline, not learnt yet
    "over-fitting": "#d62728",         # red
    "severe over-fitting": "#7f0000",  # dark red
}
# The verdict's colour: the agent is drawn in it wherever it is compared with the controls (the
# verdict line, the held-out panel), so that green means a win and nothing else.
VERDICT_COLOURS = {"beats": STATUS_COLOURS["optimal"], "no better than": STATUS_COLOURS["best of run"],
                   "worse than": "#bf360c"}
# One colour per control policy (a run has up to a dozen: random, a constant per mode, the adaptive
# families), none of them a status or verdict hue, so a control is never read as a status. Past
# the list, hues spaced by the golden angle keep every control's colour its own.
CONTROL_COLOURS = ("#7b61a8", "#8c6d31", "#17becf", "#e377c2", "#bcbd22", "#7f7f7f", "#393b79", "#d4a017",
                   "#a55194", "#000000", "#c49c94", "#00838f")
# Controls far from the checkpoints would flatten them: a control's mean joins the y axis only while
# the checkpoints keep at least this share of it; the others are edge marks with their values.
MIN_EVAL_SHARE = 0.5
CONTROL_GAP = 8  # px between the controls' CI bars in the strip at the plot's right edge


def control_colour(i: int) -> str:
    if i < len(CONTROL_COLOURS):
        return CONTROL_COLOURS[i]
    hue = (i * 137.508) % 360  # golden angle: far from every hue before it
    return _hsl_hex(hue, 0.55, 0.42)


def _hsl_hex(h: float, s: float, light: float) -> str:
    c = (1 - abs(2 * light - 1)) * s
    x = c * (1 - abs((h / 60) % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h // 60) % 6]
    m = light - c / 2
    return "#" + "".join(f"{round((v + m) * 255):02x}" for v in (r, g, b))


def control_colours(built: dict) -> dict:
    """name -> colour for every control of the report, in its order (fixed controls, then adaptive)."""
    return {c.get("name") or f"control {i + 1}": control_colour(i) for i, c in enumerate(built.get("controls") or [])}


def chart_verdict(built: dict) -> Optional[tuple[str, list, str]]:
    """(outcome, lines, colour) of the recommended checkpoint against the controls: on the held-out
    seeds when scored there, else on the evaluation seeds (and the first line says which)."""
    held, rec = built.get("heldout"), built.get("recommended") or {}
    fixed, adaptive = (held.get("verdict"), held.get("vs_adaptive")) if held else (rec.get("vs_controls"),
                                                                                  rec.get("vs_adaptive"))
    if not (fixed or adaptive):
        return None
    if (adaptive and adaptive["verdict"] == "is worse than") or (fixed and fixed.get("below_best_control")):
        outcome = "worse than"
    elif (not adaptive or adaptive["verdict"] == "beats") and (not fixed or fixed["beats_best_control"]):
        outcome = "beats"
    else:
        outcome = "no better than"
    parts = []
    if adaptive:
        parts.append(f"{adaptive['verdict']} the {adaptive['best_adaptive']} (paired {adaptive['mean_diff']:+.2f} "
                     f"[{adaptive['ci95_low']:+.2f}, {adaptive['ci95_high']:+.2f}])")
    if fixed:
        parts.append(f"{'beats' if fixed['beats_best_control'] else 'does not beat'} the best fixed control "
                     f"({fixed['best_control']})")
    where = "held-out seeds" if held else "evaluation seeds, so far"
    step = held["step"] if held else rec.get("step")
    lines = [f"Verdict ({where}): step {step:,} {parts[0]}"] + [f"and {p}" for p in parts[1:]]
    return outcome, lines, VERDICT_COLOURS[outcome]


@dataclass
class _Scale:
    """Linear map from data [lo, hi] to pixels [p0, p1]."""
    lo: float
    hi: float
    p0: float
    p1: float

    def __call__(self, v: float) -> float:
        return self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)


def _text(x: float, y: float, s: str, size: int = 12, anchor: str = "start", fill: str = "#222",
          extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"'
            f'{extra}>{escape(s)}</text>')


def _text_width(s: str, size: int) -> float:
    # An estimate (no font metrics in plain Python): DejaVu Sans averages ~0.6 em per character.
    return 0.6 * size * len(s)


def _fmt(v: float, step: float = 0.0) -> str:
    """A tick or label number: as many decimals as the tick spacing needs, a real minus sign."""
    decimals = 0  # the fewest that write the spacing exactly: 0.25 needs 2, 0.5 needs 1
    while step and decimals < 6 and abs(step * 10 ** decimals - round(step * 10 ** decimals)) > 1e-6:
        decimals += 1
    text = f"{v:,.{decimals}f}" if step else f"{v:.3g}"
    return text.replace("-", "\u2212") if v < 0 else text


def _nice_ticks(lo: float, hi: float, target: int = 8) -> tuple[list[float], float]:
    """Round-numbered ticks inside [lo, hi] (spacing 1, 2, 2.5 or 5 x 10^k) and their spacing."""
    raw = (hi - lo) / max(target - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks], step


def _padded(lo: float, hi: float, frac: float) -> tuple[float, float]:
    """[lo, hi] widened by `frac` of its span; a zero span (one value) gets a span of its own,
    so one evaluation or identical returns still give a drawable axis."""
    span = hi - lo
    if span <= 0:
        span = max(abs(lo) * 0.2, 1.0)
        return lo - span / 2, hi + span / 2
    return lo - frac * span, hi + frac * span


def _y_range(rows: Sequence[dict], controls: Sequence[dict]) -> tuple[float, float, list[dict]]:
    """The y domain and the controls drawn on it. The checkpoints' CIs set it; control means join,
    nearest first, while the checkpoints keep MIN_EVAL_SHARE of the axis (a control's CI bar is cut
    at the frame); a control whose mean would break the share stays off scale — and only such a
    control is ever drawn as off scale."""
    lo = min(r["ci95_low"] for r in rows)
    hi = max(r["ci95_high"] for r in rows)
    eval_span = hi - lo
    centre = (lo + hi) / 2
    for c in sorted(controls, key=lambda c: abs(c["mean_reward"] - centre)):
        m = c["mean_reward"]
        if eval_span == 0 or eval_span / (max(hi, m) - min(lo, m)) >= MIN_EVAL_SHARE:
            lo, hi = min(lo, m), max(hi, m)
    lo, hi = _padded(lo, hi, 0.06)
    # room above for the recommended checkpoint's label and below for the baseline's
    lo, hi = lo - 0.06 * (hi - lo), hi + 0.08 * (hi - lo)
    return lo, hi, [c for c in controls if lo <= c["mean_reward"] <= hi]


def _x_range(steps: Sequence[int]) -> tuple[float, float]:
    # Half a checkpoint interval of padding, so the first and last bars do not sit on the axes.
    if len(steps) == 1:
        return _padded(steps[0], steps[0], 0.0)
    gap = (steps[-1] - steps[0]) / (len(steps) - 1)
    return steps[0] - gap / 2, steps[-1] + gap / 2


def _axes(xs: _Scale, ys: _Scale, steps: Sequence[int]) -> list[str]:
    """Grid, zero line, ticks and axis titles."""
    out = []
    yticks, ystep = _nice_ticks(ys.lo, ys.hi)
    for t in yticks:
        y = ys(t)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{RIGHT}" y2="{y:.1f}" stroke="#e6e6e6"/>')
        out.append(_text(LEFT - 7, y + 4, _fmt(t, ystep), anchor="end"))
    if ys.lo < 0 < ys.hi:  # where returns change sign: the line a reader looks for first
        out.append(f'<line x1="{LEFT}" y1="{ys(0):.1f}" x2="{RIGHT}" y2="{ys(0):.1f}" stroke="#999"/>')
    # x ticks at the checkpoints when they fit (they are what a reader looks up), else round numbers
    xticks = list(steps) if len(steps) <= 8 else [t for t in _nice_ticks(xs.lo, xs.hi)[0] if t == int(t)]
    for t in xticks:
        x = xs(t)
        out.append(f'<line x1="{x:.1f}" y1="{BOTTOM}" x2="{x:.1f}" y2="{BOTTOM + 5}" stroke="#444"/>')
        out.append(_text(x, BOTTOM + 19, _fmt(t, 1), anchor="middle"))
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{RIGHT - LEFT}" height="{BOTTOM - TOP}" fill="none" '
               'stroke="#444"/>')
    out.append(_text((LEFT + RIGHT) / 2, BOTTOM + 40, "training step (checkpoint)", size=13, anchor="middle"))
    cy = (TOP + BOTTOM) / 2
    out.append(_text(20, cy, "return on the evaluation seeds", size=13, anchor="middle",
                     extra=f' transform="rotate(-90 20 {cy:.1f})"'))
    return out


def _spread(wanted: list[float], gap: float, lo: float, hi: float) -> list[float]:
    """Label positions as near `wanted` (sorted) as possible, at least `gap` apart, within [lo, hi]."""
    out: list[float] = []
    for w in wanted:
        out.append(max(w, lo, out[-1] + gap) if out else max(w, lo))
    for i in range(len(out) - 1, -1, -1):  # pushed past the bottom: pull back up
        limit = hi if i == len(out) - 1 else out[i + 1] - gap
        out[i] = min(out[i], limit)
    return out


def _strip_left(n_controls: int) -> float:
    """Where the checkpoints end and the strip of the controls' CI bars begins."""
    return RIGHT - (CONTROL_GAP * n_controls + 8 if n_controls else 0)


def _controls(controls: Sequence[dict], shown: Sequence[dict], ys: _Scale, colours: dict) -> list[str]:
    """Per control: its mean as a dashed line across the plot and its 95% CI as a bar in the strip at
    the right edge (one column each, so bars never hide one another), in its own colour; labels in the
    right margin (spread apart, with a leader line when moved); off-scale controls point past the edge."""
    out, labels = [], []
    strip = _strip_left(len(controls))
    if controls:
        out.append(f'<line x1="{strip:.1f}" y1="{TOP}" x2="{strip:.1f}" y2="{BOTTOM}" stroke="#bbb" '
                   'stroke-dasharray="2 2"/>')
    for i, c in enumerate(controls):
        name = c.get("name") or f"control {i + 1}"
        colour, x = colours[name], strip + 8 + CONTROL_GAP * i
        label = f"{name if len(name) <= 18 else name[:17] + chr(0x2026)} {_fmt(c['mean_reward'])}"
        if c in shown:  # the CI bar cut at the frame when it reaches past the axis
            top, bot, mid = max(ys(c["ci95_high"]), TOP), min(ys(c["ci95_low"]), BOTTOM), ys(c["mean_reward"])
            out += [f'<g class="control" data-name={quoteattr(name)} stroke="{colour}">',
                    f'<line class="control-mean" x1="{LEFT}" y1="{mid:.1f}" x2="{x:.1f}" y2="{mid:.1f}" '
                    'stroke-width="1.2" stroke-dasharray="6 4" stroke-opacity="0.8"/>',
                    f'<line class="control-ci" x1="{x:.1f}" y1="{top:.1f}" x2="{x:.1f}" y2="{bot:.1f}" '
                    'stroke-width="2.2"/>',
                    f'<circle cx="{x:.1f}" cy="{mid:.1f}" r="2.8" fill="{colour}"/></g>']
            labels.append((mid, label, colour))
        else:
            below = c["mean_reward"] < ys.lo
            edge = BOTTOM - 1 if below else TOP + 1
            tip, base = (edge, edge - 8) if below else (edge, edge + 8)
            out.append(f'<path class="control-offscale" data-name={quoteattr(name)} d="M{x - 4:.1f},{base} '
                       f'L{x + 4:.1f},{base} L{x:.1f},{tip} Z" fill="{colour}"/>')
            labels.append((edge, ("\u25bc " if below else "\u25b2 ") + label, colour))  # the arrow: off scale
    labels.sort(key=lambda t: t[0])
    where = _spread([t[0] for t in labels], 14, TOP + 4, BOTTOM - 2)
    for (mid, label, colour), y in zip(labels, where):
        if abs(y - mid) > 2:
            out.append(f'<line x1="{RIGHT}" y1="{mid:.1f}" x2="{RIGHT + 10}" y2="{y:.1f}" stroke="{colour}"/>')
        out.append(_text(RIGHT + 12, y + 4, label, size=11, fill=colour))
    return out


# A white outline under label text keeps it legible where it crosses a bar or a band.
HALO = ' stroke="white" stroke-width="3" paint-order="stroke"'


def _points(rows: Sequence[dict], xs: _Scale, ys: _Scale) -> list[str]:
    """One group per checkpoint: the 95% CI bar with caps and the mean, coloured by status."""
    spacing = (RIGHT - LEFT) / max(len(rows), 1)
    cap, radius = min(5.0, spacing * 0.3), min(4.5, spacing * 0.3)  # many checkpoints: thinner marks
    out = []
    for r in rows:
        x, lo, hi, mid = xs(r["step"]), ys(r["ci95_low"]), ys(r["ci95_high"]), ys(r["mean_reward"])
        colour = STATUS_COLOURS.get(r.get("status"), "#555")
        tip = (f"step {r['step']:,}: {r['mean_reward']:.4g} [{r['ci95_low']:.4g}, {r['ci95_high']:.4g}], "
               f"{r.get('status')}")
        out += [f'<g class="ci" data-step="{r["step"]}" data-status={quoteattr(str(r.get("status")))} '
                f'stroke="{colour}" stroke-width="1.6"><title>{escape(tip)}</title>',
                f'<line x1="{x:.1f}" y1="{lo:.1f}" x2="{x:.1f}" y2="{hi:.1f}"/>',
                f'<line x1="{x - cap:.1f}" y1="{lo:.1f}" x2="{x + cap:.1f}" y2="{lo:.1f}"/>',
                f'<line x1="{x - cap:.1f}" y1="{hi:.1f}" x2="{x + cap:.1f}" y2="{hi:.1f}"/>',
                f'<circle class="point" cx="{x:.1f}" cy="{mid:.1f}" r="{radius:.1f}" fill="{colour}" '
                'stroke="white" stroke-width="1"/>', "</g>"]
    return out


def _marker_label(x: float, y: float, s: str, colour: str) -> str:
    """A label centred on x, kept inside the plot area horizontally."""
    half = _text_width(s, 11) / 2
    anchor, x = ("start", LEFT + 3) if x - half < LEFT else ("end", RIGHT - 3) if x + half > RIGHT else ("middle", x)
    return _text(x, y, s, size=11, anchor=anchor, fill=colour, extra=HALO)


def _markers(rows: Sequence[dict], rec_step: Optional[int], xs: _Scale, ys: _Scale,
             start: Optional[dict] = None) -> list[str]:
    """Ring and label the recommended checkpoint (label above its bar) and the baseline (dashed ring,
    label below), so the two never collide even on neighbouring checkpoints; name where the policy
    started (a teacher's clone) at the foot of its bar."""
    out = []
    for r in rows:
        started = start is not None and r["step"] == start["step"]
        if started and not r.get("is_baseline"):  # on the baseline, its label says both
            out.append(_marker_label(xs(r["step"]), min(ys(r["ci95_low"]) + 15, BOTTOM - 5), start["label"], "#555"))
        x, mid = xs(r["step"]), ys(r["mean_reward"])
        is_rec = r["step"] == rec_step
        if r.get("is_baseline"):
            out.append(f'<circle class="baseline" data-step="{r["step"]}" cx="{x:.1f}" cy="{mid:.1f}" r="12" '
                       'fill="none" stroke="#333" stroke-width="1.3" stroke-dasharray="3 2"/>')
            y = min(ys(r["ci95_low"]) + 15, BOTTOM - 5)
            out.append(_marker_label(x, y, f"baseline {r['step']:,}" + (f", {start['label']}" if started else ""),
                                     "#333"))
        if is_rec:  # in its status's colour: green only where no control does as well
            colour = STATUS_COLOURS.get(r.get("status"), STATUS_COLOURS["best of run"])
            out.append(f'<circle class="recommended" data-step="{r["step"]}" cx="{x:.1f}" cy="{mid:.1f}" r="8" '
                       f'fill="none" stroke="{colour}" stroke-width="2.2"/>')
            y = max(ys(r["ci95_high"]) - 8, TOP + 13)
            out.append(_marker_label(x, y, f"recommended {r['step']:,} ({r.get('status')})", colour))
    return out


def _legend(y: float, controls: bool) -> list[str]:
    """Rows under the x axis: the status colours (all of them, so a reader learns what red means
    before it appears; wrapped to the width), then the marks (the control's only when there are
    controls). Returns the SVG, ending at most 3 rows below `y`."""
    out, x = [_text(LEFT - 54, y + 4, "status:", size=11, fill="#555")], float(LEFT)
    for status, colour in STATUS_COLOURS.items():
        width = 11 + _text_width(status, 10) + 10
        if x + width > WIDTH - 6:
            x, y = float(LEFT), y + 16
        out.append(f'<circle cx="{x + 4:.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>')
        out.append(_text(x + 11, y + 4, status, size=10))
        x += width
    y2, x = y + 19, float(LEFT)
    out.append(_text(LEFT - 54, y2 + 4, "marks:", size=11, fill="#555"))
    out.append(f'<circle cx="{x + 6:.1f}" cy="{y2:.1f}" r="6" fill="none" stroke="#555" stroke-width="2.2"/>')
    out.append(_text(x + 16, y2 + 4, "recommended", size=10))
    x += 16 + _text_width("recommended", 10) + 14
    out.append(f'<circle cx="{x + 7:.1f}" cy="{y2:.1f}" r="7" fill="none" stroke="#333" stroke-dasharray="3 2"/>')
    out.append(_text(x + 18, y2 + 4, "baseline", size=10))
    x += 18 + _text_width("baseline", 10) + 14
    if not controls:
        return out
    out.append(f'<line x1="{x:.1f}" y1="{y2:.1f}" x2="{x + 20:.1f}" y2="{y2:.1f}" stroke="#7f7f7f" '
               'stroke-dasharray="6 4"/>')
    out.append(f'<line x1="{x + 24:.1f}" y1="{y2 - 6:.1f}" x2="{x + 24:.1f}" y2="{y2 + 6:.1f}" stroke="#7f7f7f" '
               'stroke-width="2.2"/>')
    out.append(_text(x + 31, y2 + 4, "control: mean, 95% CI at the right (\u25bc off scale)", size=10))
    return out


def _resumes(resumes: Sequence[int], xs: _Scale) -> list[str]:
    """A dashed vertical line at each step the run was resumed from, labelled above the frame."""
    out = []
    for step in resumes:
        x = xs(step)
        if LEFT <= x <= RIGHT:
            out.append(f'<line class="resume" data-step="{step}" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" '
                       f'y2="{BOTTOM}" stroke="#555" stroke-width="1.2" stroke-dasharray="2 3"/>')
            out.append(_text(x, TOP - 3, f"resumed from {step:,}", size=10, anchor="middle", fill="#555"))
    return out


HELDOUT_ROW = 20  # px per policy in the held-out panel


def _heldout_height(held: Optional[dict]) -> int:
    return 0 if not held else 60 + HELDOUT_ROW * len(held["rows"]) + 40


def _not_far_out(rows: Sequence[dict]) -> list[dict]:
    """The rows whose mean is not far out (Tukey's fences at 3 interquartile ranges): one policy 10x
    worse than the rest would otherwise squeeze every other row into a few pixels. The first row
    (the agent) always stays."""
    means = sorted(r["mean_reward"] for r in rows)
    if len(means) < 4:
        return list(rows)
    q1, q3 = means[len(means) // 4], means[(3 * len(means)) // 4]
    lo, hi = q1 - 3 * (q3 - q1), q3 + 3 * (q3 - q1)
    return [r for i, r in enumerate(rows) if i == 0 or lo <= r["mean_reward"] <= hi]


def _heldout_panel(held: dict, y0: float, colours: dict, verdict: Optional[tuple]) -> list[str]:
    """The headline as a forest plot under the legend: the recommended checkpoint and every control
    on the held-out seeds, one row each (mean and 95% CI), ranked by mean on one return axis; the
    agent in the verdict's colour, each control in its colour from the plot above."""
    n, seed = held["n_episodes"], held["seed"]
    agent = held["rows"][0]
    rows = sorted(held["rows"], key=lambda r: -r["mean_reward"])
    agent_colour = verdict[2] if verdict else "#333"
    out = [f'<g class="heldout" data-seed="{seed}">',
           _text(LEFT - 54, y0, f"Held-out seeds {seed:,}..{seed + n - 1:,} (the headline): "
                 f"step {held['step']:,} and the controls, {n} episodes", size=13, extra=' font-weight="bold"')]
    inside = _not_far_out(held["rows"])
    lo, hi = _padded(min(r["ci95_low"] for r in inside), max(r["ci95_high"] for r in inside), 0.04)
    xs = _Scale(lo, hi, LEFT, RIGHT)
    top, bottom = y0 + 12, y0 + 12 + HELDOUT_ROW * len(rows)
    ticks, step = _nice_ticks(lo, hi)
    for t in ticks:
        out.append(f'<line x1="{xs(t):.1f}" y1="{top}" x2="{xs(t):.1f}" y2="{bottom}" stroke="#e6e6e6"/>')
        out.append(_text(xs(t), bottom + 15, _fmt(t, step), anchor="middle"))
    agent_x = xs(agent["mean_reward"])
    out.append(f'<line x1="{agent_x:.1f}" y1="{top}" x2="{agent_x:.1f}" y2="{bottom}" '
               f'stroke="{agent_colour}" stroke-dasharray="4 3"/>')
    for i, r in enumerate(rows):
        is_agent = r is agent
        colour = agent_colour if is_agent else colours.get(r["name"], "#555")
        y = top + HELDOUT_ROW * (i + 0.5)
        if r in inside:
            a, b, m = (min(max(xs(r[k]), LEFT), RIGHT) for k in ("ci95_low", "ci95_high", "mean_reward"))
            out += [f'<g class="heldout-row" data-name={quoteattr(r["name"])} stroke="{colour}" stroke-width="2">',
                    f'<line x1="{a:.1f}" y1="{y:.1f}" x2="{b:.1f}" y2="{y:.1f}"/>',
                    f'<circle cx="{m:.1f}" cy="{y:.1f}" r="4" fill="{colour}" stroke="white" stroke-width="1"/></g>']
        else:  # far out: an arrow at the edge it lies beyond; its value is in the label
            x, d = (LEFT + 1, 8) if r["mean_reward"] < lo else (RIGHT - 1, -8)
            out.append(f'<path class="heldout-offscale" data-name={quoteattr(r["name"])} d="M{x},{y:.1f} '
                       f'L{x + d},{y - 4:.1f} L{x + d},{y + 4:.1f} Z" fill="{colour}"/>')
        name = f"{r['name']} (agent)" if is_agent else r["name"]
        out.append(_text(RIGHT + 12, y + 4, f"{name[:20]} {_fmt(r['mean_reward'])}", size=11, fill=colour,
                         extra=' font-weight="bold"' if is_agent else ""))
    out.append(f'<rect x="{LEFT}" y="{top}" width="{RIGHT - LEFT}" height="{bottom - top}" fill="none" stroke="#444"/>')
    out.append(_text((LEFT + RIGHT) / 2, bottom + 33, "return on the held-out seeds (mean, 95% CI), best first",
                     size=13, anchor="middle"))
    return out + ["</g>"]


def report_svg(built: dict, title: Optional[str] = None) -> str:
    """An SVG of ``Report.build()``'s dict: the verdict, evaluation return per checkpoint with 95% CI
    bars coloured by status, the control policies' means and CIs each in its colour, baseline and
    recommendation ringed, and the held-out headline."""
    title = title if title is not None else built.get("title", "RL report")
    rows = sorted(built.get("rows") or [], key=lambda r: r["step"])
    held = built.get("heldout") if rows else None
    height = HEIGHT + _heldout_height(held)
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
            f'viewBox="0 0 {WIDTH} {height}" font-family={quoteattr(FONT)}>',
            f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
            _text(LEFT - 54, 24, title[:80], size=16, extra=' font-weight="bold"')]
    if not rows:
        return "\n".join(head + [_text(WIDTH / 2, HEIGHT / 2, "No evaluations yet.", size=14, anchor="middle"),
                                 "</svg>"]) + "\n"
    controls = list(built.get("controls") or [])
    colours = control_colours(built)
    lo, hi, shown = _y_range(rows, controls)
    steps = [r["step"] for r in rows]
    xs, ys = _Scale(*_x_range(steps), LEFT, _strip_left(len(controls))), _Scale(lo, hi, BOTTOM, TOP)
    verdict = chart_verdict(built)
    if verdict:
        head += [_text(LEFT - 54, 44 + 16 * i, line[:110], size=12.5, fill=verdict[2],
                       extra=f' class="verdict" data-outcome={quoteattr(verdict[0])} font-weight="bold"')
                 for i, line in enumerate(verdict[1][:2])]
    n, seed = rows[0].get("n_episodes"), rows[0].get("seed")
    seeds = f"Evaluation seeds {seed:,}..{seed + n - 1:,}" if n and seed is not None else "Evaluation seeds"
    sub = f"{seeds} (checkpoints are chosen on these): mean and 95% CI" + (f", {n} episodes" if n else "")
    head.append(_text(LEFT - 54, 80, sub, size=12, fill="#555"))
    body = _axes(xs, ys, steps) + _resumes(built.get("resumes") or (), xs) + _controls(controls, shown, ys, colours)
    body += _points(rows, xs, ys) + _markers(rows, (built.get("recommended") or {}).get("step"), xs, ys,
                                             built.get("start"))
    body += _legend(BOTTOM + 54, bool(controls))
    if held:
        body += _heldout_panel(held, HEIGHT + 20, colours, verdict)
    return "\n".join(head + body + ["</svg>"]) + "\n"

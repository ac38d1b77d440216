"""The over-fitting report: every evaluated checkpoint against a baseline, beside control policies.

Input is plain data — evaluations as ``EvalResult.to_dict()`` dicts (the form
``evaluations.json`` and checkpoints hold) and control policies' results of the
same form — so a report can be rebuilt from files alone. Statuses follow the
project's over-fitting rule (docs/rl.md, "The report"): variance growing far above the baseline's,
or the mean dropping, is the signal. Environment-specific columns (e.g. "% of
steps with Φ in band") come in through ``columns`` as keys of each result's
``extra``; this module knows nothing of any particular environment.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from common.files import write_json, write_text
from common.stats import clearly_below, summarize, t975
from ppo import Callback, EvalResult

from .chart import report_svg

STATUSES = ("optimal", "best of run", "stable", "high variance", "under-trained", "over-fitting",
            "severe over-fitting")


@dataclass
class Thresholds:
    """When a checkpoint is flagged against the baseline evaluation.

    Drops are measured in units of `scale` (`drop_scale`): the baseline's lead over the best
    control policy when it has one — a drop of 1 gives back everything the schedule gained
    over the best constant or random policy — else the spread between the best and the worst
    control, else |baseline mean| (a drop of 0.2 is then 20 %). Units that keep their meaning
    when every return carries a large constant offset, where a percentage of the mean would
    be tiny. A drop counts only when it is significant (two-sided 5 %): a paired t-test over
    the episodes when both evaluations played the same seeds, else Welch's t-test."""
    overfit_drop: float = 0.2           # mean this many scale units below the baseline (significant) -> over-fitting
    severe_drop: float = 0.5            # ... this many -> severe over-fitting
    overfit_std_factor: float = 5.0     # std above this x the baseline std -> over-fitting
    high_variance_factor: float = 2.0   # std above this x the baseline std (and not over-fitting) -> high variance
    min_std: float = 0.0                # floor for the baseline std, so a near-constant baseline does not flag noise

    def __post_init__(self) -> None:
        if not 0 <= self.overfit_drop <= self.severe_drop:
            raise ValueError("invalid thresholds: need 0 <= overfit_drop <= severe_drop")
        if not 1 <= self.high_variance_factor <= self.overfit_std_factor:
            raise ValueError("invalid thresholds: need 1 <= high_variance_factor <= overfit_std_factor")
        if self.min_std < 0:
            raise ValueError("invalid thresholds: min_std must be >= 0")

    def describe(self, unit: str) -> list[str]:
        return [
            f"**severe over-fitting**: mean more than {self.severe_drop:g} {unit} below the baseline's "
            "(significant: paired t-test over the same seeded episodes, else Welch's; two-sided 5%)",
            f"**over-fitting**: mean more than {self.overfit_drop:g} {unit} below the baseline's (significant), "
            f"or std more than {self.overfit_std_factor:g}x the baseline's",
            f"**high variance**: std more than {self.high_variance_factor:g}x the baseline's",
            "**under-trained**: a checkpoint *before* the baseline that the over-fitting rules would flag: "
            "it has not learnt yet (over-fitting is judged only after the baseline)",
            "**optimal**: the recommended checkpoint (below), where it beats every control policy on these seeds; "
            "**best of run**: the recommended checkpoint where some control does as well or better; "
            "**stable**: every other checkpoint",
            f"the baseline std is floored at {self.min_std:g}",
        ]


def significantly_lower(result: dict, baseline: dict) -> bool:
    """Is `result`'s mean significantly below `baseline`'s (two-sided 5 %)? Paired t-test on the
    per-episode differences when both played the same seeded episodes (the noise the seeds share
    cancels), else Welch's t-test (degrees of freedom by Welch–Satterthwaite, rounded down)."""
    a, b = baseline.get("episode_returns"), result.get("episode_returns")
    paired = (a is not None and b is not None and len(a) == len(b) > 1
              and baseline.get("seed") is not None and baseline.get("seed") == result.get("seed"))
    if paired:
        return clearly_below(b, a)
    va = baseline["std_reward"] ** 2 / baseline["n_episodes"]
    vb = result["std_reward"] ** 2 / result["n_episodes"]
    diff = baseline["mean_reward"] - result["mean_reward"]
    if va + vb == 0:
        return diff > 0
    df = (va + vb) ** 2 / ((va ** 2 / max(baseline["n_episodes"] - 1, 1)) + (vb ** 2 / max(result["n_episodes"] - 1, 1)))
    return diff / math.sqrt(va + vb) > t975(max(int(df), 1))


def drop_scale(controls: dict, baseline: dict) -> tuple[float, str]:
    """(scale, its unit's name) drops are measured in: the baseline's lead over the best control
    policy, else the best-minus-worst control spread, else |baseline mean|."""
    means = [c["mean_reward"] for c in controls.values()]
    if means and baseline["mean_reward"] > max(means):
        return baseline["mean_reward"] - max(means), "x the baseline's lead over the best control"
    if len(means) >= 2 and max(means) > min(means):
        return max(means) - min(means), "control spreads"
    return max(abs(baseline["mean_reward"]), 1e-12), "x |baseline mean|"


def normalised_score(mean: float, controls: dict) -> Optional[float]:
    """0 = the worst control policy's mean, 1 = the best one's (None without two distinct controls)."""
    means = [c["mean_reward"] for c in controls.values()]
    if len(means) < 2 or max(means) == min(means):
        return None
    return (mean - min(means)) / (max(means) - min(means))


def flag(result: dict, baseline: dict, th: Thresholds, scale: Optional[float] = None) -> str:
    """The status of one evaluation against the baseline, before "optimal" is assigned.
    `scale`: the unit drops are measured in (default |baseline mean|)."""
    scale = scale if scale is not None else max(abs(baseline["mean_reward"]), 1e-12)
    drop = (baseline["mean_reward"] - result["mean_reward"]) / scale
    significant = significantly_lower(result, baseline)
    ref_std = max(baseline["std_reward"], th.min_std)
    ratio = result["std_reward"] / ref_std if ref_std > 0 else (math.inf if result["std_reward"] > 0 else 1.0)
    if significant and drop > th.severe_drop:
        return "severe over-fitting"
    if (significant and drop > th.overfit_drop) or ratio > th.overfit_std_factor:
        return "over-fitting"
    if ratio > th.high_variance_factor:
        return "high variance"
    return "stable"


def candidates(statuses: Sequence[str]) -> list[int]:
    """The checkpoints the recommendation picks from: the unflagged ones (stable or high variance),
    all of them if every one is flagged."""
    return [i for i, s in enumerate(statuses) if s in ("stable", "high variance")] or list(range(len(statuses)))


def recommend(evaluations: Sequence[dict], statuses: Sequence[str]) -> Optional[int]:
    """Index of the production checkpoint: among the candidates, the highest lower bound of the
    95% CI of the mean — a high reward that is also consistent; ties go to the earlier checkpoint."""
    if not evaluations:
        return None
    return max(candidates(statuses), key=lambda i: (evaluations[i]["ci95_low"], -i))


def tied_with(evaluations: Sequence[dict], statuses: Sequence[str], chosen: int) -> list[int]:
    """The candidates whose CI lower bound equals the chosen one's (the tie `recommend` broke)."""
    low = evaluations[chosen]["ci95_low"]
    return [i for i in candidates(statuses) if math.isclose(evaluations[i]["ci95_low"], low, rel_tol=1e-9, abs_tol=1e-12)]


@dataclass
class Column:
    """An extra column: ``header`` shows ``extra[key]`` formatted with ``fmt``."""
    header: str
    key: str
    fmt: str = "{:.3g}"


@dataclass
class Report:
    evaluations: list                     # EvalResult dicts, one per evaluated checkpoint, by step
    controls: dict = field(default_factory=dict)   # name -> EvalResult dict on the same seeds: the scale
    baseline_step: Optional[int] = None   # None: the evaluation with the highest mean
    thresholds: Thresholds = field(default_factory=Thresholds)
    action_names: Sequence[str] = ()
    columns: Sequence[Column] = ()
    title: str = "RL report"
    notes: Sequence[str] = ()             # lines about the run (environment, seeds): the report's last section
    warnings: Sequence[str] = ()          # lines shown with the verdict, on the first screen
    heldout: Optional[dict] = None        # {"step": S, "agent": EvalResult dict, "controls": {name: dict},
    #                                       "adaptive": {name: dict}} on seeds the selection never saw: the headline
    adaptive: dict = field(default_factory=dict)   # name -> EvalResult dict: adaptive controls, shown beside the
    #                                               constant ones and compared episode by episode (paired)
    baseline_kind: str = "chosen with --baseline"  # why baseline_step is the baseline, in the report's words
    resumes: Sequence[int] = ()           # steps the run was resumed from: marked on the chart
    start: Optional[dict] = None          # where the policy started, when not from scratch: {"step", "label",
    #                                       "line"} (a teacher start): its row labelled, its line on the first screen

    def build(self) -> dict:
        evals = sorted(self.evaluations, key=lambda e: e["step"])
        if not evals:
            return {"title": self.title, "notes": list(self.notes), "warnings": list(self.warnings), "rows": [],
                    "start": self.start,
                    "controls": [],
                    "baseline": None, "recommended": None, "thresholds": asdict(self.thresholds), "heldout": None}
        steps = [e["step"] for e in evals]
        if self.baseline_step is None:
            b = max(range(len(evals)), key=lambda i: (evals[i]["mean_reward"], -i))
            baseline_kind = "the highest evaluation mean"
        elif self.baseline_step in steps:
            b, baseline_kind = steps.index(self.baseline_step), self.baseline_kind
        else:
            raise ValueError(f"no evaluation at the baseline step {self.baseline_step} (evaluated: "
                             f"{', '.join(map(str, steps))})")
        baseline = evals[b]
        scale, unit = drop_scale(self.controls, baseline)
        statuses = [flag(e, baseline, self.thresholds, scale) for e in evals]
        # Before the baseline a checkpoint has not learnt yet: a drop there is not over-fitting.
        statuses = [("under-trained" if i < b and "over-fitting" in s else s) for i, s in enumerate(statuses)]
        rec = recommend(evals, statuses)
        ties = tied_with(evals, statuses, rec)
        vs_controls, vs_adaptive = verdict(evals[rec], self.controls), paired_verdict(evals[rec], self.adaptive)
        statuses[rec] = recommended_status(vs_controls, vs_adaptive)
        rows = [self._row(e, baseline, s, i == b) for i, (e, s) in enumerate(zip(evals, statuses))]
        controls = self._control_rows(self.controls, self.adaptive, baseline)
        chosen = rows[rec]
        reason = (f"highest lower bound of the 95% CI among the checkpoints not flagged "
                  f"(mean {chosen['mean_reward']:.4g}, std {chosen['std_reward']:.3g}, "
                  f"CI [{chosen['ci95_low']:.4g}, {chosen['ci95_high']:.4g}])")
        if len(ties) > 1:
            tie = _and([format(evals[i]["step"], ",") for i in ties])
            reason += (f"; steps {tie} tie on that lower bound: "
                       "the earliest is chosen")
        return {"title": self.title, "notes": list(self.notes), "warnings": list(self.warnings),
                "start": self.start, "thresholds": asdict(self.thresholds),
                "scale": scale, "unit": unit, "resumes": sorted(self.resumes),
                "baseline": {"step": baseline["step"], "kind": baseline_kind}, "rows": rows, "controls": controls,
                "recommended": {"step": chosen["step"], "checkpoint": chosen.get("checkpoint"), "reason": reason,
                                "vs_controls": vs_controls, "vs_adaptive": vs_adaptive},
                "heldout": self._heldout()}

    def markdown(self, built: Optional[dict] = None, chart: Optional[str] = None) -> str:
        return render_markdown(built if built is not None else self.build(), self.action_names, self.columns, chart)

    def _row(self, e: dict, baseline: dict, status: Optional[str], is_baseline: bool, name: str = "") -> dict:
        counts = list(e.get("action_counts", []))
        total = sum(counts) or 1
        row = {"name": name, "step": e["step"], "checkpoint": e.get("extra", {}).get("checkpoint"),
               "mean_reward": e["mean_reward"], "std_reward": e["std_reward"], "ci95_low": e["ci95_low"],
               "ci95_high": e["ci95_high"], "n_episodes": e["n_episodes"], "seed": e.get("seed"),
               "change": None if is_baseline else e["mean_reward"] - baseline["mean_reward"],
               "score": normalised_score(e["mean_reward"], self.controls),
               "status": status, "is_baseline": is_baseline,
               "action_mix": [c / total for c in counts]}
        for col in self.columns:
            row[col.key] = e.get("extra", {}).get(col.key)
        return row

    def _control_rows(self, controls: dict, adaptive: dict, reference: dict) -> list[dict]:
        """Constant controls, then adaptive ones (marked), scored on the constant controls' scale."""
        rows = [self._row({**c, "step": None}, reference, None, False, name=n) for n, c in controls.items()]
        for n, c in adaptive.items():
            row = self._row({**c, "step": None}, reference, None, False, name=n)
            row["score"] = normalised_score(c["mean_reward"], controls)
            rows.append({**row, "adaptive": True, "detail": c.get("extra", {}).get("detail")})
        return rows

    def _heldout(self) -> Optional[dict]:
        if not self.heldout:
            return None
        agent, controls = self.heldout["agent"], self.heldout["controls"]
        adaptive = self.heldout.get("adaptive") or {}
        rows = [self._row({**agent, "step": self.heldout["step"]}, agent, None, True, name=f"step {self.heldout['step']:,}")]
        rows[0]["score"] = normalised_score(agent["mean_reward"], controls)
        rows += self._control_rows(controls, adaptive, agent)
        for r in rows[1:len(controls) + 1]:
            r["score"] = normalised_score(r["mean_reward"], controls)
        return {"step": self.heldout["step"], "seed": agent.get("seed"), "n_episodes": agent["n_episodes"],
                "rows": rows, "verdict": verdict(agent, controls), "vs_adaptive": paired_verdict(agent, adaptive),
                "source": dict(self.heldout)}  # the EvalResult dicts: Report(heldout=source) rebuilds this


def recommended_status(vs_controls: Optional[dict], vs_adaptive: Optional[dict]) -> str:
    """The recommended checkpoint's status: "optimal" only where no control policy does as well on
    the same seeds (its CI clears the best fixed control's, and its paired difference with the
    best adaptive control is above 0), so that the word can never contradict the verdict."""
    if vs_controls and not vs_controls["beats_best_control"]:
        return "best of run"
    if vs_adaptive and vs_adaptive["verdict"] != "beats":
        return "best of run"
    return "optimal"


FIXED = "the fixed controls (random and the constant policies)"  # `controls`, as the report names them


def paired_difference(a: dict, b: dict) -> Optional[dict]:
    """The mean and Student-t 95 % CI of a's return minus b's, episode by episode, when both played the
    same seeded episodes (more than one); else None. Shared data removes what the episodes have in
    common, which is most of a return's noise."""
    ra, rb = a.get("episode_returns") or (), b.get("episode_returns") or ()
    if a.get("seed") is None or a.get("seed") != b.get("seed") or len(ra) != len(rb) or len(ra) < 2:
        return None
    diffs = [x - y for x, y in zip(ra, rb)]
    return {**summarize(diffs), "wins": sum(d > 0 for d in diffs), "n": len(diffs)}


def verdict(chosen: dict, controls: dict) -> Optional[dict]:
    """How `chosen` (a row or EvalResult dict) compares with the best fixed control policy on the same
    seeds: by the paired difference when both played the same episodes (it beats the control when
    the difference's 95 % CI is above 0), else by the two 95 % CIs (it beats it when they do not
    overlap). The normalised score puts 1 at that control's mean, so a score above 1 without a win
    is said to be within the noise."""
    if not controls:
        return None
    name, best = max(controls.items(), key=lambda kv: kv[1]["mean_reward"])
    pair = paired_difference(chosen, best)
    if pair:
        beats, below = pair["ci95_low"] > 0, pair["ci95_high"] < 0
        how = (f"paired difference {pair['mean']:+.3g} [{pair['ci95_low']:+.3g}, {pair['ci95_high']:+.3g}] "
               f"(mean, 95% CI over {pair['n']} episodes)")
    else:
        beats, below = chosen["ci95_low"] > best["ci95_high"], chosen["ci95_high"] < best["ci95_low"]
        how = ("its 95% CI lies above that control's" if beats
               else "a higher mean, but the 95% CIs overlap" if chosen["mean_reward"] > best["mean_reward"]
               else "a lower mean, 95% CIs apart" if below else "a lower mean")
    score = normalised_score(chosen["mean_reward"], controls)
    return {"best_control": name, "beats_best_control": beats, "below_best_control": below, "score": score,
            "text": (f"{'beats' if beats else 'does not beat'} the best of them ({name}, "
                     f"{best['mean_reward']:.4g} [{best['ci95_low']:.4g}, {best['ci95_high']:.4g}]): {how}"
                     + (f"; normalised score {score:.2f} (0 = the worst one's mean, 1 = the best one's)"
                        if score is not None else ""))}


def paired_verdict(agent: dict, adaptive: dict) -> Optional[dict]:
    """The agent against the best adaptive control on the same seeded episodes: the mean and
    Student-t 95 % CI of the per-episode differences, and the verdict in words."""
    same = {n: c for n, c in adaptive.items() if paired_difference(agent, c)}
    if not same:
        return None
    name, best = max(same.items(), key=lambda kv: kv[1]["mean_reward"])
    s = paired_difference(agent, best)
    word = ("beats" if s["ci95_low"] > 0 else "is worse than" if s["ci95_high"] < 0 else "is no better than")
    wins, n = s["wins"], s["n"]
    detail = best.get("extra", {}).get("detail")
    label = f"the {name}" + (f" ({detail})" if detail else "")
    return {"best_adaptive": name, "verdict": word, "mean_diff": s["mean"], "ci95_low": s["ci95_low"],
            "ci95_high": s["ci95_high"], "wins": wins, "n": n,
            "text": (f"{word} {label}: paired difference {s['mean']:+.2f} [{s['ci95_low']:+.2f}, "
                     f"{s['ci95_high']:+.2f}] (mean, 95% CI over {n} episodes), higher in {wins} of {n}")}


class _Table:
    """The Markdown tables' columns: reward cells, the caller's extra columns, the action mix."""

    def __init__(self, action_names: Sequence[str], columns: Sequence[Column]):
        self.columns = columns
        self.head = ["Reward", "Std", "95% CI", "Score"]
        self.extra_headers = [c.header for c in columns] + [
            " / ".join(action_names) + " %" if action_names else "action mix %"]

    def header(self, first: str, middle: list[str]) -> list[str]:
        names = [first, *self.head, *middle, *self.extra_headers]
        return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]

    def row(self, first: str, r: dict, middle: list[str]) -> str:
        score = "—" if r.get("score") is None else f"{r['score']:.2f}"
        cells = [f"{r['mean_reward']:+.3f}", f"±{r['std_reward']:.3f}",
                 f"[{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}]", score]
        extras = ["—" if r.get(c.key) is None else c.fmt.format(r[c.key]) for c in self.columns]
        extras.append(" / ".join(f"{100 * x:.0f}" for x in r["action_mix"]) or "—")
        return "| " + " | ".join([first, *cells, *middle, *extras]) + " |"

    def policies(self, rows: list[dict], vs: str) -> list[str]:
        return self.header("Policy", [vs]) + [
            self.row(c["name"] + (f" ({c['detail']})" if c.get("detail") else ""), c, [_change(c)]) for c in rows]


def _change(r: dict) -> str:
    # An absolute difference: a percentage of a mean near zero (-274 %) says nothing.
    return "—" if r["change"] is None else f"{r['change']:+.3f}"


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _heldout_lines(held: dict, table: _Table) -> list[str]:
    s0 = held["seed"]
    lines = ["", f"## Headline: held-out seeds {s0}..{s0 + held['n_episodes'] - 1}", "",
             f"The recommended checkpoint (step {held['step']:,}, chosen on the evaluation seeds below) and the "
             f"control policies, scored on {held['n_episodes']} seeded episodes that no selection saw:", ""]
    lines += table.policies(held["rows"], f"Δ vs step {held['step']:,}")
    if held["verdict"]:
        lines += ["", f"Against {FIXED}: step {held['step']:,} {held['verdict']['text']}."]
    return lines


def _evaluation_lines(report: dict, table: _Table) -> list[str]:
    base, start = report["baseline"], report.get("start") or {}
    lines = ["", "## Evaluations (the seeds checkpoints are selected on)", "",
             f"Baseline: step {base['step']:,} ({base['kind']}): what statuses are judged against. The "
             "recommendation (best.pt, below) ranks by the 95% CI's lower bound instead. Δ: mean minus the "
             "baseline's. Score: 0 = the worst control policy's mean, 1 = the best one's.", ""]
    lines += table.header("Checkpoint", [f"Δ vs {base['step']:,}", "Status"])
    for r in report["rows"]:
        label = f"{r['step']:,}" + (" (baseline)" if r["is_baseline"] else "") + (
            f" ({start['label']})" if r["step"] == start.get("step") else "")
        lines.append(table.row(label, r, [_change(r), r["status"]]))
    unit = report.get("unit", "x |baseline mean|")
    lines += ["", f"Statuses (against the baseline; one unit = {report.get('scale', 0):.4g}, {unit}):", ""]
    lines += [f"- {t}" for t in Thresholds(**report["thresholds"]).describe(unit)]
    return lines


CHART_ALT = "evaluation return per checkpoint with 95% CIs, beside the control policies, and the verdict"


def embed_chart(markdown: str, chart: str) -> str:
    """`markdown` with an image line for `chart` (a path relative to the Markdown file) after its
    first screen — the verdict and its warnings, before the first section of tables — unless it
    already shows that chart."""
    if f"]({chart})" in markdown:
        return markdown
    lines = markdown.rstrip("\n").split("\n")
    at = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    while at > 0 and not lines[at - 1].strip():
        at -= 1
    return "\n".join(lines[:at] + ["", f"![{CHART_ALT}]({chart})"] + lines[at:]) + "\n"


def verdict_lines(report: dict) -> list[str]:
    """The report's first screen: what the recommended checkpoint is worth against the controls —
    on the held-out seeds when it has been scored there (the headline), else on the evaluation
    seeds it was chosen on (said so: a selection's own seeds flatter it)."""
    held, rec = report.get("heldout"), report["recommended"]
    if held:
        s0, n = held["seed"], held["n_episodes"]
        where, vs_adaptive, vs_controls = (f"on the held-out seeds {s0}..{s0 + n - 1} (no selection saw them)",
                                           held.get("vs_adaptive"), held.get("verdict"))
    else:
        where, vs_adaptive, vs_controls = ("so far, on the evaluation seeds it was chosen on (the held-out "
                                           "headline comes at the end of training)",
                                           rec.get("vs_adaptive"), rec.get("vs_controls"))
    said = [f"against the best adaptive control it {vs_adaptive['text']}"] if vs_adaptive else []
    said += [f"against {FIXED} it {vs_controls['text']}"] if vs_controls else []
    if not said:
        return [f"**Recommended: step {rec['step']:,}** (no control policies to compare with)."]
    return [f"**Verdict {where}: step {rec['step']:,}** (best.pt) — " + "; ".join(said) + "."]


def render_markdown(report: dict, action_names: Sequence[str] = (), columns: Sequence[Column] = (),
                    chart: Optional[str] = None) -> str:
    """The Markdown form of ``Report.build()``'s dict; `chart`: the path of its SVG chart
    (``write_report`` writes one as ``<stem>.svg``). The first screen is the verdict, its warnings
    and the chart; the tables follow, and the run's configuration comes last."""
    table = _Table(action_names, columns)
    lines = [f"# {report['title']}", ""]
    if not report["rows"]:
        return "\n".join(lines + [f"{n}  " for n in report["notes"]] + ["", "No evaluations yet.", ""])
    start = report.get("start") or {}
    lines += verdict_lines(report) + [""] + [f"{w}  " for w in [start.get("line"), *report.get("warnings", ())] if w]
    if report.get("heldout"):
        lines += _heldout_lines(report["heldout"], table)
    lines += _evaluation_lines(report, table)
    first = report["rows"][0]
    n, seed = first["n_episodes"], first["seed"]
    if report["controls"]:
        seeds = f", seeds {seed}..{seed + n - 1}" if seed is not None else ""
        lines += ["", f"## Control policies (same {n} episodes{seeds})", ""]
        lines += table.policies(report["controls"], f"Δ vs {report['baseline']['step']:,}")
    rec = report["recommended"]
    where = f" (`{rec['checkpoint']}`)" if rec.get("checkpoint") else ""
    lines += ["", "## Recommendation", "", f"Production checkpoint: step {rec['step']:,}{where}: {rec['reason']}."]
    if rec.get("vs_controls"):
        lines.append(f"On the evaluation seeds, against {FIXED}, it {rec['vs_controls']['text']}.")
    if rec.get("vs_adaptive"):
        lines.append(f"On the evaluation seeds it {rec['vs_adaptive']['text']} (the rule was tuned on these seeds too).")
    if report["notes"]:
        lines += ["", "## The run", ""] + [f"{n}  " for n in report["notes"]]
    text = "\n".join(lines) + "\n"
    return embed_chart(text, chart) if chart else text


def write_report(directory: str | Path, report: dict, markdown: str, stem: str = "report") -> tuple[Path, Path]:
    """``<directory>/<stem>.md``, ``<stem>.json`` and the chart ``<stem>.svg`` (stages/report/chart.py), each
    written atomically; the Markdown gets the chart's image line under its title if it lacks one (only
    this function knows the chart's file name). Returns the .md and .json paths; the .svg is beside them."""
    directory = Path(directory)
    md, js, svg = directory / f"{stem}.md", directory / f"{stem}.json", directory / f"{stem}.svg"
    write_text(svg, report_svg(report))  # first: the Markdown never points at a missing chart
    write_text(md, embed_chart(markdown, svg.name) if report.get("rows") else markdown)
    write_json(str(js), report)
    return md, js


class StopOnOverfit(Callback):
    """A PPO callback: stop when the over-fitting report (this module) flags ``patience`` consecutive
    evaluations, the latest included, as over-fitting or severe over-fitting against the
    baseline (default: the best evaluation so far), beside ``controls`` (name -> EvalResult
    dict on the same seeds; they set the unit of a drop, see ``Thresholds``)."""

    def __init__(self, thresholds: Optional[Thresholds] = None, patience: int = 1, controls: Optional[dict] = None,
                 baseline_step: Optional[int] = None):
        if patience < 1:
            raise ValueError("patience must be >= 1")
        self.thresholds, self.patience = thresholds or Thresholds(), int(patience)
        self.controls, self.baseline_step = dict(controls or {}), baseline_step
        self.streak = 0

    def on_evaluation(self, trainer, result: EvalResult) -> None:
        if self.baseline_step is not None and all(r.step != self.baseline_step for r in trainer.eval_history):
            return  # nothing to compare with until the baseline step has been evaluated
        built = Report([r.to_dict() for r in trainer.eval_history], self.controls, self.baseline_step,
                       self.thresholds).build()
        flagged = [("over-fitting" in r["status"]) for r in built["rows"]]
        self.streak = next((i for i, f in enumerate(reversed(flagged)) if not f), len(flagged))
        if self.streak >= self.patience:
            trainer.request_stop(f"over-fitting: {self.streak} flagged evaluation(s) in a row "
                                 f"(baseline: step {built['baseline']['step']})")

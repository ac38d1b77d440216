"""The over-fitting report: every evaluated checkpoint against a baseline, beside control policies.

Input is plain data — evaluations as ``EvalResult.to_dict()`` dicts (the form
``evaluations.json`` and checkpoints hold) and control policies' results of the
same form — so a report can be rebuilt from files alone. Statuses follow the
project's over-fitting rule (SPEC §1): variance growing far above the baseline's,
or the mean dropping, is the signal. Environment-specific columns (e.g. "% of
steps with Φ in band") come in through ``columns`` as keys of each result's
``extra``; this module knows nothing of any particular environment.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from .checkpoint import _atomic_write, write_json

STATUSES = ("optimal", "stable", "high variance", "over-fitting", "severe over-fitting")


@dataclass
class Thresholds:
    """When a checkpoint is flagged, measured against the baseline evaluation."""
    overfit_drop_pct: float = 20.0      # mean more than this % below the baseline mean -> over-fitting
    severe_drop_pct: float = 50.0       # ... more than this % below -> severe over-fitting
    overfit_std_factor: float = 5.0     # std above this x the baseline std -> over-fitting
    high_variance_factor: float = 2.0   # std above this x the baseline std (and not over-fitting) -> high variance
    min_std: float = 0.0                # floor for the baseline std, so a near-constant baseline does not flag noise

    def __post_init__(self) -> None:
        if not 0 <= self.overfit_drop_pct <= self.severe_drop_pct:
            raise ValueError("invalid thresholds: need 0 <= overfit_drop_pct <= severe_drop_pct")
        if not 1 <= self.high_variance_factor <= self.overfit_std_factor:
            raise ValueError("invalid thresholds: need 1 <= high_variance_factor <= overfit_std_factor")
        if self.min_std < 0:
            raise ValueError("invalid thresholds: min_std must be >= 0")

    def describe(self) -> list[str]:
        return [
            f"**severe over-fitting**: mean more than {self.severe_drop_pct:g}% below the baseline's",
            f"**over-fitting**: mean more than {self.overfit_drop_pct:g}% below the baseline's, or std more than "
            f"{self.overfit_std_factor:g}x the baseline's",
            f"**high variance**: std more than {self.high_variance_factor:g}x the baseline's (mean within "
            f"{self.overfit_drop_pct:g}%)",
            "**optimal**: the recommended checkpoint (below); **stable**: every other checkpoint",
            f"percentages are of |baseline mean|; the baseline std is floored at {self.min_std:g}",
        ]


def change_pct(mean: float, baseline_mean: float) -> float:
    return 100.0 * (mean - baseline_mean) / max(abs(baseline_mean), 1e-12)


def flag(result: dict, baseline: dict, th: Thresholds) -> str:
    """The status of one evaluation against the baseline, before "optimal" is assigned."""
    change = change_pct(result["mean_reward"], baseline["mean_reward"])
    ref_std = max(baseline["std_reward"], th.min_std)
    ratio = result["std_reward"] / ref_std if ref_std > 0 else (math.inf if result["std_reward"] > 0 else 1.0)
    if change < -th.severe_drop_pct:
        return "severe over-fitting"
    if change < -th.overfit_drop_pct or ratio > th.overfit_std_factor:
        return "over-fitting"
    if ratio > th.high_variance_factor:
        return "high variance"
    return "stable"


def recommend(evaluations: Sequence[dict], statuses: Sequence[str]) -> Optional[int]:
    """Index of the production checkpoint: among the unflagged ones (stable or high variance; all
    if every one is flagged), the highest lower bound of the 95% CI of the mean — a high reward
    that is also consistent; ties go to the earlier checkpoint."""
    if not evaluations:
        return None
    ok = [i for i, s in enumerate(statuses) if s in ("stable", "high variance")] or list(range(len(evaluations)))
    return max(ok, key=lambda i: (evaluations[i]["ci95_low"], -i))


def ci_overlap(a: dict, b: dict) -> bool:
    return a["ci95_low"] <= b["ci95_high"] and b["ci95_low"] <= a["ci95_high"]


@dataclass
class Column:
    """An extra column: ``header`` shows ``extra[key]`` formatted with ``fmt``."""
    header: str
    key: str
    fmt: str = "{:.3g}"


@dataclass
class Report:
    evaluations: list                     # EvalResult dicts, one per evaluated checkpoint, by step
    controls: dict = field(default_factory=dict)   # name -> EvalResult dict on the same seeds
    baseline_step: Optional[int] = None   # None: the best evaluation (highest mean)
    thresholds: Thresholds = field(default_factory=Thresholds)
    action_names: Sequence[str] = ()
    columns: Sequence[Column] = ()
    title: str = "RL report"
    notes: Sequence[str] = ()             # lines shown under the title (run, environment, seeds)

    def build(self) -> dict:
        evals = sorted(self.evaluations, key=lambda e: e["step"])
        if not evals:
            return {"title": self.title, "notes": list(self.notes), "rows": [], "controls": [],
                    "baseline": None, "recommended": None, "thresholds": asdict(self.thresholds)}
        steps = [e["step"] for e in evals]
        if self.baseline_step is None:
            b = max(range(len(evals)), key=lambda i: (evals[i]["mean_reward"], -i))
            baseline_kind = "best evaluation"
        elif self.baseline_step in steps:
            b, baseline_kind = steps.index(self.baseline_step), "resumed-from checkpoint"
        else:
            raise ValueError(f"no evaluation at the baseline step {self.baseline_step} (evaluated: "
                             f"{', '.join(map(str, steps))})")
        baseline = evals[b]
        statuses = [flag(e, baseline, self.thresholds) for e in evals]
        rec = recommend(evals, statuses)
        statuses[rec] = "optimal"
        rows = [self._row(e, baseline, s, i == b) for i, (e, s) in enumerate(zip(evals, statuses))]
        controls = [self._row({**c, "step": None}, baseline, None, False, name=n) for n, c in self.controls.items()]
        best_control = max(controls, key=lambda c: c["mean_reward"], default=None)
        chosen = rows[rec]
        reason = (f"highest lower bound of the 95% CI among the checkpoints not flagged as over-fitting "
                  f"(mean {chosen['mean_reward']:.4g}, std {chosen['std_reward']:.3g}, "
                  f"CI [{chosen['ci95_low']:.4g}, {chosen['ci95_high']:.4g}])")
        verdict = None
        if best_control is not None:
            beats = chosen["ci95_low"] > best_control["ci95_high"]
            verdict = {
                "best_control": best_control["name"], "beats_best_control": beats,
                "text": (f"{'beats' if beats else 'does not beat'} the best control policy "
                         f"({best_control['name']}, {best_control['mean_reward']:.4g} "
                         f"[{best_control['ci95_low']:.4g}, {best_control['ci95_high']:.4g}]) with "
                         f"{'non-overlapping' if beats else 'overlapping or lower'} 95% CIs"),
            }
        return {"title": self.title, "notes": list(self.notes), "thresholds": asdict(self.thresholds),
                "baseline": {"step": baseline["step"], "kind": baseline_kind}, "rows": rows, "controls": controls,
                "recommended": {"step": chosen["step"], "checkpoint": chosen.get("checkpoint"), "reason": reason,
                                "vs_controls": verdict}}

    def markdown(self, built: Optional[dict] = None) -> str:
        return render_markdown(built if built is not None else self.build(), self.action_names, self.columns)

    def _row(self, e: dict, baseline: dict, status: Optional[str], is_baseline: bool, name: str = "") -> dict:
        counts = list(e.get("action_counts", []))
        total = sum(counts) or 1
        row = {"name": name, "step": e["step"], "checkpoint": e.get("extra", {}).get("checkpoint"),
               "mean_reward": e["mean_reward"], "std_reward": e["std_reward"], "ci95_low": e["ci95_low"],
               "ci95_high": e["ci95_high"], "n_episodes": e["n_episodes"], "seed": e.get("seed"),
               "change_pct": None if is_baseline else change_pct(e["mean_reward"], baseline["mean_reward"]),
               "status": status, "is_baseline": is_baseline,
               "action_mix": [c / total for c in counts]}
        for col in self.columns:
            row[col.key] = e.get("extra", {}).get(col.key)
        return row


def render_markdown(report: dict, action_names: Sequence[str] = (), columns: Sequence[Column] = ()) -> str:
    """The Markdown form of ``Report.build()``'s dict."""
    th = Thresholds(**report["thresholds"])
    mix_header = " / ".join(action_names) + " %" if action_names else "action mix %"
    head = ["Reward", "Std", "95% CI"]
    extra_headers = [c.header for c in columns] + [mix_header]

    def cells(r: dict) -> list[str]:
        out = [f"{r['mean_reward']:+.3f}", f"±{r['std_reward']:.3f}", f"[{r['ci95_low']:+.3f}, {r['ci95_high']:+.3f}]"]
        return out

    def extras(r: dict) -> list[str]:
        vals = ["—" if r.get(c.key) is None else c.fmt.format(r[c.key]) for c in columns]
        return vals + [" / ".join(f"{100 * x:.0f}" for x in r["action_mix"]) or "—"]

    lines = [f"# {report['title']}", ""] + [f"{n}  " for n in report["notes"]]
    if not report["rows"]:
        return "\n".join(lines + ["", "No evaluations yet.", ""])
    base = report["baseline"]
    base_label = f"vs {base['step']:,}"
    lines += ["", f"Baseline: step {base['step']:,} ({base['kind']}).", "",
              "| Checkpoint | " + " | ".join(head) + f" | {base_label} | Status | " + " | ".join(extra_headers) + " |",
              "|" + "---|" * (len(head) + 3 + len(extra_headers))]
    for r in report["rows"]:
        label = f"{r['step']:,}" + (" (baseline)" if r["is_baseline"] else "")
        change = "—" if r["change_pct"] is None else f"{r['change_pct']:+.1f}%"
        lines.append(f"| {label} | " + " | ".join(cells(r)) + f" | {change} | {r['status']} | "
                     + " | ".join(extras(r)) + " |")
    n = report["rows"][0]["n_episodes"]
    seed = report["rows"][0]["seed"]
    lines += ["", "Statuses (against the baseline):", ""] + [f"- {t}" for t in th.describe()]
    if report["controls"]:
        seeds = f", seeds {seed}..{seed + n - 1}" if seed is not None else ""
        lines += ["", f"## Control policies (same {n} episodes{seeds})", "",
                  "| Policy | " + " | ".join(head) + f" | {base_label} | " + " | ".join(extra_headers) + " |",
                  "|" + "---|" * (len(head) + 2 + len(extra_headers))]
        for c in report["controls"]:
            lines.append(f"| {c['name']} | " + " | ".join(cells(c)) + f" | {c['change_pct']:+.1f}% | "
                         + " | ".join(extras(c)) + " |")
    rec = report["recommended"]
    where = f" (`{rec['checkpoint']}`)" if rec.get("checkpoint") else ""
    lines += ["", "## Recommendation", "", f"Production checkpoint: step {rec['step']:,}{where}: {rec['reason']}."]
    if rec.get("vs_controls"):
        lines.append(f"It {rec['vs_controls']['text']}.")
    return "\n".join(lines) + "\n"


def write_report(directory: str | Path, report: dict, markdown: str, stem: str = "report") -> tuple[Path, Path]:
    """``<directory>/report.md`` and ``report.json``, each written atomically."""
    directory = Path(directory)
    md, js = directory / f"{stem}.md", directory / f"{stem}.json"
    _atomic_write(md, lambda f: f.write(markdown.encode()), "file")
    write_json(str(js), report)
    return md, js


def load_report(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())

"""The report's chart (stages/report/chart.py) from made-up evaluation histories, and write_report's report.svg."""
import math
import xml.etree.ElementTree as ET

import pytest

from common.stats import t975
from stages.report.chart import BOTTOM, CONTROL_COLOURS, STATUS_COLOURS, TOP, VERDICT_COLOURS, report_svg
from stages.report.overfit import CHART_ALT, Report, write_report

NS = "{http://www.w3.org/2000/svg}"


def ev(step, mean, std, n=20, counts=(10, 5, 5)):
    half = t975(n - 1) * std / math.sqrt(n)
    return {"step": step, "mean_reward": mean, "std_reward": std, "ci95_low": mean - half, "ci95_high": mean + half,
            "n_episodes": n, "seed": 1000, "action_counts": list(counts), "extra": {}}


def parse(svg: str, height: int = 450) -> ET.Element:
    root = ET.fromstring(svg)  # raises on malformed XML (an unescaped name, an unclosed tag)
    assert root.tag == NS + "svg" and root.get("width") == "800" and root.get("height") == str(height)
    return root


def by_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in root.iter() if e.get("class") == cls]


def texts(root: ET.Element) -> list[str]:
    return [t.text for t in root.iter(NS + "text")]


def circle_y(root: ET.Element, step: int) -> float:
    return float(next(c for c in by_class(root, "ci") if c.get("data-step") == str(step)).find(NS + "circle").get("cy"))


@pytest.fixture
def built():
    """A baseline at 2,000, a noisy 3,000 (over-fitting), a collapsed 4,000 (severe), controls on both sides,
    one of them far off scale."""
    history = [ev(1000, 9.0, 1.0), ev(2000, 10.0, 1.0), ev(3000, 9.8, 6.0), ev(4000, 2.0, 1.0)]
    controls = {"random": ev(None, -4.0, 2.0), "always <A&B>": ev(None, 1.0, 0.5), "always Z": ev(None, -400.0, 3.0)}
    return Report(history, controls, baseline_step=2000, title="Chart test").build()


def test_one_bar_per_evaluation_coloured_by_status(built):
    root = parse(report_svg(built))
    bars = by_class(root, "ci")
    assert [b.get("data-step") for b in bars] == ["1000", "2000", "3000", "4000"]
    status = {b.get("data-step"): b.get("data-status") for b in bars}
    assert status == {"1000": "stable", "2000": "optimal", "3000": "over-fitting", "4000": "severe over-fitting"}
    for b in bars:  # the bar's stroke and the point's fill carry the status colour
        colour = STATUS_COLOURS[b.get("data-status")]
        assert b.get("stroke") == colour and b.find(NS + "circle").get("fill") == colour
    assert STATUS_COLOURS["over-fitting"] != STATUS_COLOURS["severe over-fitting"] != STATUS_COLOURS["stable"]
    # higher return is higher on the page (smaller y)
    assert circle_y(root, 2000) < circle_y(root, 1000) < circle_y(root, 4000)
    assert all(s in texts(root) for s in STATUS_COLOURS)  # the legend names every status


def test_controls_in_their_own_colours_and_off_scale_controls(built):
    root = parse(report_svg(built))
    drawn = {g.get("data-name"): g for g in by_class(root, "control")}
    assert set(drawn) == {"random", "always <A&B>"}  # escaped, and still the name once parsed
    # -400 would squeeze the checkpoints into a sliver: drawn as an arrow at the edge, with its value
    assert [m.get("data-name") for m in by_class(root, "control-offscale")] == ["always Z"]
    assert any(t.startswith("\u25bc always Z") for t in texts(root))
    assert len(by_class(root, "control-mean")) == 2
    # a control's CI bar spans its CI: random's (-4 +- 0.94) is below always <A&B>'s (1 +- 0.23), and longer
    bars = {n: g.find(NS + "line[@class='control-ci']") for n, g in drawn.items()}
    low = {n: float(b.get("y2")) for n, b in bars.items()}
    length = {n: float(b.get("y2")) - float(b.get("y1")) for n, b in bars.items()}
    assert low["random"] > low["always <A&B>"] and 2 < length["random"] / length["always <A&B>"] < 8
    # each in its own column of the strip, never on top of another
    assert len({b.get("x1") for b in bars.values()}) == 2


def test_one_colour_per_control_and_none_shared_with_a_status_or_verdict():
    """Thirteen controls (more than the palette): every one its own colour, used for its lines and its label."""
    controls = {f"c{i}": ev(None, 5.0 + 0.3 * i, 0.5) for i in range(13)}
    root = parse(report_svg(Report([ev(1000, 7.0, 1.0), ev(2000, 8.0, 1.0)], controls).build()))
    colour = {g.get("data-name"): g.get("stroke") for g in by_class(root, "control")}
    assert len(colour) == 13 and len(set(colour.values())) == 13
    assert not set(colour.values()) & (set(STATUS_COLOURS.values()) | set(VERDICT_COLOURS.values()))
    assert list(colour.values())[:len(CONTROL_COLOURS)] == list(CONTROL_COLOURS)
    labels = {t.text.split(" ")[0]: t.get("fill") for t in root.iter(NS + "text") if t.text and t.text[:1] == "c"}
    assert all(labels[n] == colour[n] for n in colour)


def test_recommended_and_baseline_marked(built):
    built["baseline"]["step"] = 2000
    root = parse(report_svg(built))
    assert [c.get("data-step") for c in by_class(root, "recommended")] == [str(built["recommended"]["step"])]
    assert [c.get("data-step") for c in by_class(root, "baseline")] == ["2000"]
    assert "recommended 2,000 (optimal)" in texts(root) and "baseline 2,000" in texts(root)
    built["recommended"]["step"] = 1000  # the ring follows the recommendation, not the best mean
    root = parse(report_svg(built))
    assert [c.get("data-step") for c in by_class(root, "recommended")] == ["1000"]
    assert float(by_class(root, "recommended")[0].get("cy")) == circle_y(root, 1000)


@pytest.mark.parametrize("history", [
    [ev(5000, -3.0, 1.0)],                               # a single evaluation, negative return
    [ev(1000, 7.0, 0.0), ev(2000, 7.0, 0.0)],            # identical values: zero y range
    [ev(0, 0.0, 0.0)],                                   # one point at the origin: zero x and y range
    [ev(1000, -5.0, 1.0), ev(2000, 5.0, 1.0)],           # returns of both signs
])
def test_degenerate_ranges_stay_finite_and_inside(history):
    root = parse(report_svg(Report(history).build()))  # no controls
    assert len(by_class(root, "ci")) == len(history) and not by_class(root, "control")
    assert len(by_class(root, "recommended")) == 1
    for e in root.iter():
        for attr in ("x", "y", "cx", "cy", "x1", "x2", "y1", "y2"):
            if e.get(attr) is not None:
                v = float(e.get(attr))
                assert math.isfinite(v) and -1 <= v <= 801, (e.tag, attr, v)
    for bar in by_class(root, "ci"):  # inside the plot area, not on its frame
        x = float(bar.find(NS + "circle").get("cx"))
        assert 74 < x < 606


def test_empty_report_says_so():
    root = parse(report_svg(Report([]).build(), title="nothing"))
    assert "No evaluations yet." in texts(root) and "nothing" in texts(root)


def test_write_report_writes_the_chart_and_links_it(tmp_path, built):
    report = Report([ev(1000, 9.0, 1.0), ev(2000, 10.0, 1.0)], title="T")
    built = report.build()
    md_path, _ = write_report(tmp_path, built, report.markdown(built), stem="study")
    parse((tmp_path / "study.svg").read_text())
    lines = md_path.read_text().split("\n")
    # the first screen: the title, the verdict (none here: no controls), then the chart
    assert lines[0] == "# T" and lines[2].startswith("**Recommended: step") and f"![{CHART_ALT}](study.svg)" in lines[:6]
    assert sum("](study.svg)" in line for line in lines) == 1
    # markdown that already shows the chart is written as is
    md = report.markdown(built, chart="study.svg")
    assert f"![{CHART_ALT}](study.svg)" in md.split("\n")[:6]
    write_report(tmp_path, built, md, stem="study")
    assert md_path.read_text() == md


def y_axis(root: ET.Element) -> tuple[float, float]:
    """(value at the plot's bottom, value at its top), read back from two labelled y ticks."""
    ticks = [(float(t.get("y")) - 4, float(t.text.replace("\u2212", "-").replace(",", ""))) for t in root.iter(NS + "text")
             if t.get("text-anchor") == "end" and float(t.get("x")) == 67.0]
    (y1, v1), (y2, v2) = ticks[0], ticks[-1]
    per_px = (v2 - v1) / (y2 - y1)
    return v1 + (BOTTOM - y1) * per_px, v1 + (TOP - y1) * per_px


def test_off_scale_marks_only_controls_whose_mean_is_outside_the_axis():
    """A control with a CI far wider than the axis but its mean inside it is a CI bar cut at the frame,
    not an arrow (an arrow at the top made the worst control read as the best)."""
    history = [ev(1000, 4.0, 1.0, n=2), ev(2000, 5.0, 1.0, n=2)]
    controls = {"wide": ev(None, 3.0, 40.0, n=2), "far above": ev(None, 900.0, 1.0, n=2),
                "far below": ev(None, -900.0, 1.0, n=2), "also below": ev(None, -950.0, 1.0, n=2)}
    root = parse(report_svg(Report(history, controls).build()))
    lo, hi = y_axis(root)
    arrows = {m.get("data-name") for m in by_class(root, "control-offscale")}
    assert arrows == {"far above", "far below", "also below"}
    assert all(not lo <= controls[n]["mean_reward"] <= hi for n in arrows)
    bar = next(g for g in by_class(root, "control") if g.get("data-name") == "wide").find(NS + "line[@class='control-ci']")
    assert float(bar.get("y1")) == TOP and float(bar.get("y2")) == BOTTOM  # cut at the frame
    below = [m.get("d") for m in by_class(root, "control-offscale") if m.get("data-name") != "far above"]
    assert below[0] != below[1]  # two arrows at the same edge do not overlap


def test_chart_names_its_seeds_and_plots_the_heldout_headline():
    history = [ev(1000, 9.0, 1.0), ev(2000, 10.0, 1.0)]
    controls = {"random": ev(None, -4.0, 2.0), "always A": ev(None, 1.0, 0.5), "always B": ev(None, -300.0, 1.0)}
    held = {"step": 2000, "agent": {**ev(2000, 8.0, 1.0), "seed": 20_000},
            "controls": {n: {**c, "seed": 20_000} for n, c in controls.items()}, "adaptive": {}}
    built = Report(history, controls, heldout=held).build()
    root = parse(report_svg(built), height=450 + 60 + 20 * 4 + 40)
    assert any(t.startswith("Evaluation seeds 1,000..1,019 (checkpoints are chosen on these)") for t in texts(root))
    assert any(t.startswith("Held-out seeds 20,000..20,019 (the headline)") for t in texts(root))
    rows = by_class(root, "heldout-row")
    assert [r.get("data-name") for r in rows] == ["step 2,000", "always A", "random"]  # best first
    assert [m.get("data-name") for m in by_class(root, "heldout-offscale")] == ["always B"]  # -300: far out
    x = {r.get("data-name"): float(r.find(NS + "circle").get("cx")) for r in rows}
    assert x["random"] < x["always A"] < x["step 2,000"]  # higher return further right


def test_statuses_before_the_baseline_are_never_drawn_as_over_fitting():
    history = [ev(1000, 1.0, 1.0), ev(2000, 5.0, 1.0), ev(3000, 10.0, 1.0), ev(4000, 2.0, 1.0)]
    root = parse(report_svg(Report(history).build()))
    status = {b.get("data-step"): b.get("data-status") for b in by_class(root, "ci")}
    assert status["1000"] == status["2000"] == "under-trained" and status["4000"] == "severe over-fitting"
    assert by_class(root, "ci")[0].get("stroke") == STATUS_COLOURS["under-trained"]


def test_a_resume_is_marked():
    history = [ev(1000, 9.0, 1.0), ev(2000, 10.0, 1.0), ev(3000, 10.0, 1.0)]
    root = parse(report_svg(Report(history, resumes=[2000]).build()))
    assert [m.get("data-step") for m in by_class(root, "resume")] == ["2000"]
    assert "resumed from 2,000" in texts(root)
    assert not by_class(parse(report_svg(Report(history).build())), "resume")


def paired(step, returns, seed):
    """An evaluation with its episode returns, on seeds seed.. (so comparisons with it are paired)."""
    e = ev(step, sum(returns) / len(returns), float(__import__("numpy").std(returns, ddof=1)), n=len(returns))
    return {**e, "seed": seed, "episode_returns": list(returns)}


@pytest.mark.parametrize("agent_shift, outcome", [(+3.0, "beats"), (+0.05, "no better than"), (-3.0, "worse than")])
def test_the_verdict_is_written_on_the_chart_and_colours_the_agent(agent_shift, outcome):
    """On held-out seeds, against a tuned rule compared episode by episode: the verdict line says what
    the report says, in the verdict's colour, and the agent's held-out row wears it too (green is a win only)."""
    noise = [(-1) ** i * (i % 5) for i in range(12)]  # shared by every policy: the episodes' data
    rule = [20.0 + x for x in noise]
    agent = [r + agent_shift + 0.1 * ((i % 3) - 1) for i, r in enumerate(rule)]
    fixed = {"always A": paired(None, [10.0 + x for x in noise], 20_000)}
    held = {"step": 2000, "agent": paired(2000, agent, 20_000), "controls": fixed,
            "adaptive": {"tuned rule": paired(None, rule, 20_000)}}
    history = [ev(1000, 9.0, 1.0), ev(2000, 10.0, 1.0)]
    built = Report(history, {"always A": ev(None, 1.0, 0.5)}, heldout=held).build()
    root = parse(report_svg(built), height=450 + 60 + 20 * 3 + 40)
    lines = by_class(root, "verdict")
    assert {v.get("data-outcome") for v in lines} == {outcome}
    assert lines[0].text.startswith(f"Verdict (held-out seeds): step 2,000 {'is ' * (outcome != 'beats')}{outcome}"
                                    " the tuned rule")
    assert all(v.get("fill") == VERDICT_COLOURS[outcome] for v in lines)
    row = next(r for r in by_class(root, "heldout-row") if r.get("data-name") == "step 2,000")
    assert row.get("stroke") == VERDICT_COLOURS[outcome]
    assert (row.get("stroke") == STATUS_COLOURS["optimal"]) == (outcome == "beats")


def test_a_control_above_the_recommended_checkpoint_keeps_it_from_optimal():
    """The recommended checkpoint under a control's mean is "best of run" in the legend's slate, never
    "optimal" in green; with the control below it, it is optimal again."""
    history = [ev(1000, 15.0, 1.0), ev(2000, 16.0, 1.0)]
    for control, status in ((17.0, "best of run"), (12.0, "optimal")):
        built = Report(history, {"tuned rule": ev(None, control, 0.5)}).build()
        root = parse(report_svg(built))
        ring = by_class(root, "recommended")[0]
        assert ring.get("stroke") == STATUS_COLOURS[status]
        assert f"recommended 2,000 ({status})" in texts(root)


def test_far_controls_do_not_flatten_the_checkpoints():
    """Checkpoints spanning 2 return units, a control 6 units below: drawn to scale it would leave them a
    quarter of the axis; it becomes an edge mark and the checkpoints keep at least half of it."""
    history = [ev(1000, 17.0, 0.5, n=30), ev(2000, 18.0, 0.5, n=30), ev(3000, 18.5, 0.5, n=30)]
    controls = {"near": ev(None, 17.5, 0.5, n=30), "far": ev(None, 11.0, 0.5, n=30)}
    root = parse(report_svg(Report(history, controls).build()))
    lo, hi = y_axis(root)
    span = max(r["ci95_high"] for r in history) - min(r["ci95_low"] for r in history)
    assert span / (hi - lo) >= 0.5
    assert [m.get("data-name") for m in by_class(root, "control-offscale")] == ["far"]
    assert [g.get("data-name") for g in by_class(root, "control")] == ["near"]

"""The report's chart (stages/chart.py) from made-up evaluation histories, and write_report's report.svg."""
import math
import xml.etree.ElementTree as ET

import pytest

from common.stats import t975
from stages.chart import STATUS_COLOURS, report_svg
from stages.overfit import CHART_ALT, Report, write_report

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


def test_control_bands_and_off_scale_controls(built):
    root = parse(report_svg(built))
    bands = {b.get("data-name"): b for b in by_class(root, "control-band")}
    assert set(bands) == {"random", "always <A&B>"}  # escaped, and still the name once parsed
    # -400 would squeeze the checkpoints into a sliver: drawn as an arrow at the edge, not a band
    assert [m.get("data-name") for m in by_class(root, "control-offscale")] == ["always Z"]
    assert any(t.startswith("\u25bc always Z") for t in texts(root))
    assert len(by_class(root, "control-mean")) == 2
    # a band spans its CI: the random band (CI ~ -4 +- 0.94) is below the always-<A&B> one (1 +- 0.23)
    assert float(bands["random"].get("y")) > float(bands["always <A&B>"].get("y"))
    assert 0.5 < float(bands["random"].get("height")) / float(bands["always <A&B>"].get("height")) / 4 < 2


def test_recommended_and_baseline_marked(built):
    built["baseline"]["step"] = 2000
    root = parse(report_svg(built))
    assert [c.get("data-step") for c in by_class(root, "recommended")] == [str(built["recommended"]["step"])]
    assert [c.get("data-step") for c in by_class(root, "baseline")] == ["2000"]
    assert "recommended 2,000" in texts(root) and "baseline 2,000" in texts(root)
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
    assert len(by_class(root, "ci")) == len(history) and not by_class(root, "control-band")
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
    assert lines[0] == "# T" and f"![{CHART_ALT}](study.svg)" in lines[:4]
    assert sum("](study.svg)" in line for line in lines) == 1
    # markdown that already shows the chart is written as is
    md = report.markdown(built, chart="study.svg")
    assert md.split("\n")[2] == f"![{CHART_ALT}](study.svg)"
    write_report(tmp_path, built, md, stem="study")
    assert md_path.read_text() == md


def y_axis(root: ET.Element) -> tuple[float, float]:
    """(value at the plot's bottom, value at its top), read back from two labelled y ticks."""
    ticks = [(float(t.get("y")) - 4, float(t.text.replace("\u2212", "-").replace(",", ""))) for t in root.iter(NS + "text")
             if t.get("text-anchor") == "end" and float(t.get("x")) == 67.0]
    (y1, v1), (y2, v2) = ticks[0], ticks[-1]
    per_px = (v2 - v1) / (y2 - y1)
    return v1 + (352 - y1) * per_px, v1 + (58 - y1) * per_px


def test_off_scale_marks_only_controls_whose_mean_is_outside_the_axis():
    """A control with a CI far wider than the axis but its mean inside it is a band cut at the frame,
    not an arrow (an arrow at the top made the worst control read as the best)."""
    history = [ev(1000, 4.0, 1.0, n=2), ev(2000, 5.0, 1.0, n=2)]
    controls = {"wide": ev(None, 3.0, 40.0, n=2), "far above": ev(None, 900.0, 1.0, n=2),
                "far below": ev(None, -900.0, 1.0, n=2), "also below": ev(None, -950.0, 1.0, n=2)}
    root = parse(report_svg(Report(history, controls).build()))
    lo, hi = y_axis(root)
    arrows = {m.get("data-name") for m in by_class(root, "control-offscale")}
    assert arrows == {"far above", "far below", "also below"}
    assert all(not lo <= controls[n]["mean_reward"] <= hi for n in arrows)
    band = next(b for b in by_class(root, "control-band") if b.get("data-name") == "wide")
    assert float(band.get("y")) == 58 and float(band.get("y")) + float(band.get("height")) == 352  # cut at the frame
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
    assert [r.get("data-name") for r in rows] == ["step 2,000", "random", "always A"]
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

"""The over-fitting report (ppo/report.py) from made-up evaluation histories."""
import json
import math

import pytest

from ppo import Column, Report, Thresholds
from ppo.evaluation import t_quantile_975
from ppo.report import flag, recommend, write_report


def ev(step, mean, std, n=20, counts=(10, 5, 5), **extra):
    half = t_quantile_975(n - 1) * std / math.sqrt(n)
    return {"step": step, "mean_reward": mean, "std_reward": std, "ci95_low": mean - half, "ci95_high": mean + half,
            "n_episodes": n, "seed": 1000, "action_counts": list(counts), "extra": dict(extra)}


def test_the_spec_table_is_reproduced():
    """SPEC §1: 30,000 baseline optimal; 32,000 -21.1% over-fitting; 40,000 -110.0% severe."""
    history = [ev(30_000, 7.251, 0.040), ev(32_000, 5.721, 3.044), ev(40_000, -0.724, 6.634)]
    built = Report(history, baseline_step=30_000).build()
    rows = {r["step"]: r for r in built["rows"]}
    assert rows[30_000]["status"] == "optimal" and rows[30_000]["change_pct"] is None
    assert rows[32_000]["status"] == "over-fitting" and rows[32_000]["change_pct"] == pytest.approx(-21.1, abs=0.05)
    assert rows[40_000]["status"] == "severe over-fitting"
    assert rows[40_000]["change_pct"] == pytest.approx(-110.0, abs=0.05)
    assert built["recommended"]["step"] == 30_000
    assert built["baseline"] == {"step": 30_000, "kind": "resumed-from checkpoint"}


@pytest.mark.parametrize("mean,std,status", [
    (10.0, 1.0, "stable"),          # same as the baseline
    (8.5, 1.0, "stable"),           # 15% below: within the 20% limit
    (7.9, 1.0, "over-fitting"),     # 21% below
    (4.9, 1.0, "severe over-fitting"),  # 51% below
    (10.0, 2.5, "high variance"),   # std 2.5x
    (10.0, 5.5, "over-fitting"),    # std 5.5x
    (12.0, 1.9, "stable"),          # better, std 1.9x
])
def test_each_status_at_its_threshold(mean, std, status):
    assert flag(ev(2, mean, std), ev(1, 10.0, 1.0), Thresholds()) == status


def test_negative_baselines_use_the_magnitude():
    base = ev(1, -10.0, 1.0)
    assert flag(ev(2, -12.5, 1.0), base, Thresholds()) == "over-fitting"   # 25% lower
    assert flag(ev(2, -8.0, 1.0), base, Thresholds()) == "stable"          # 20% higher


def test_thresholds_are_configurable_and_validated():
    th = Thresholds(overfit_drop_pct=5, severe_drop_pct=10, overfit_std_factor=3, high_variance_factor=1.5)
    assert flag(ev(2, 9.4, 1.0), ev(1, 10.0, 1.0), th) == "over-fitting"
    assert flag(ev(2, 10.0, 1.6), ev(1, 10.0, 1.0), th) == "high variance"
    assert flag(ev(2, 10.0, 1.6), ev(1, 10.0, 0.0), Thresholds(min_std=1.0)) == "stable"  # floored baseline std
    with pytest.raises(ValueError, match="invalid thresholds"):
        Thresholds(overfit_drop_pct=60, severe_drop_pct=50)
    with pytest.raises(ValueError, match="invalid thresholds"):
        Thresholds(high_variance_factor=6, overfit_std_factor=5)


def test_recommendation_prefers_a_consistent_checkpoint_over_a_lucky_one():
    history = [ev(1000, 5.0, 0.1), ev(2000, 5.2, 3.0), ev(3000, 4.9, 0.1)]
    built = Report(history).build()
    # the best mean (2000) is the baseline, but its CI is wide; 1000 has the highest lower bound
    assert built["baseline"]["step"] == 2000
    assert built["recommended"]["step"] == 1000
    statuses = [r["status"] for r in built["rows"]]
    assert statuses == ["optimal", "stable", "stable"]
    # when everything but one is flagged, the unflagged one is chosen even with a lower bound below others
    assert recommend([ev(1, 1.0, 0.1), ev(2, 5.0, 0.1)], ["over-fitting", "stable"]) == 1


def test_baseline_must_have_been_evaluated():
    with pytest.raises(ValueError, match="no evaluation at the baseline step 5"):
        Report([ev(1, 1.0, 0.1)], baseline_step=5).build()


def test_controls_verdict_and_markdown(tmp_path):
    history = [ev(1000, 5.0, 0.2, phi_in_band_pct=80.0), ev(2000, 6.0, 0.2, phi_in_band_pct=95.0)]
    controls = {"random": ev(None, 3.0, 1.0, counts=(4, 3, 3), phi_in_band_pct=40.0),
                "always PHI": ev(None, 5.9, 0.2, counts=(0, 20, 0), phi_in_band_pct=50.0)}
    report = Report(history, controls, action_names=("TEXT", "PHI", "MIXED"),
                    columns=[Column("Φ in band", "phi_in_band_pct", "{:.0f}%")], title="T", notes=["a note"])
    built = report.build()
    assert built["recommended"]["step"] == 2000
    verdict = built["recommended"]["vs_controls"]
    assert verdict["best_control"] == "always PHI" and not verdict["beats_best_control"]  # CIs overlap
    assert [c["change_pct"] for c in built["controls"]] == pytest.approx([-50.0, -100 / 60])
    md = report.markdown(built)
    assert "| 2,000 (baseline) | +6.000 | ±0.200 |" in md and "| optimal | 95% | 50 / 25 / 25 |" in md
    assert "| 1,000 | +5.000 |" in md and "-16.7%" in md
    assert "| always PHI | +5.900 |" in md and "| 0 / 100 / 0 |" in md
    assert "std more than 5x the baseline's" in md  # thresholds are written in the report
    assert "does not beat the best control policy" in md
    controls["always PHI"] = ev(None, 5.0, 0.2)
    assert Report(history, controls).build()["recommended"]["vs_controls"]["beats_best_control"]
    md_path, json_path = write_report(tmp_path, built, md)
    assert md_path.read_text() == md and json.loads(json_path.read_text()) == json.loads(json.dumps(built))


def test_empty_history_renders():
    report = Report([])
    assert "No evaluations yet" in report.markdown()

"""The over-fitting report (stages/report/overfit.py) from made-up evaluation histories."""
import json
import math

import numpy as np
import pytest

from common.stats import t975
from stages.report.overfit import (CHART_ALT, Column, Report, Thresholds, embed_chart, flag, normalised_score, recommend,
                            significantly_lower, write_report)


def ev(step, mean, std, n=20, counts=(10, 5, 5), **extra):
    half = t975(n - 1) * std / math.sqrt(n)
    return {"step": step, "mean_reward": mean, "std_reward": std, "ci95_low": mean - half, "ci95_high": mean + half,
            "n_episodes": n, "seed": 1000, "action_counts": list(counts), "extra": dict(extra)}


def test_the_spec_table_is_reproduced():
    """The over-fitting table of docs/rl.md: 30,000 baseline optimal; 32,000 -1.53 over-fitting; 40,000 -7.98 severe."""
    history = [ev(30_000, 7.251, 0.040), ev(32_000, 5.721, 3.044), ev(40_000, -0.724, 6.634)]
    built = Report(history, baseline_step=30_000, baseline_kind="resumed-from checkpoint").build()
    rows = {r["step"]: r for r in built["rows"]}
    assert rows[30_000]["status"] == "optimal" and rows[30_000]["change"] is None
    assert rows[32_000]["status"] == "over-fitting" and rows[32_000]["change"] == pytest.approx(-1.530)
    assert rows[40_000]["status"] == "severe over-fitting"
    assert rows[40_000]["change"] == pytest.approx(-7.975)
    assert built["recommended"]["step"] == 30_000
    assert built["baseline"] == {"step": 30_000, "kind": "resumed-from checkpoint"}
    assert Report(history, baseline_step=30_000).build()["baseline"]["kind"] == "chosen with --baseline"
    assert Report(history).build()["baseline"]["kind"] == "the highest evaluation mean"


def test_checkpoints_before_the_baseline_are_under_trained_never_over_fitted():
    """A checkpoint that would be flagged for its drop or its variance, but comes before the baseline,
    has not learnt yet; one after the baseline with the same numbers is over-fitting."""
    history = [ev(1000, 2.0, 1.0), ev(2000, 6.0, 9.0), ev(3000, 10.0, 1.0), ev(4000, 2.0, 1.0), ev(5000, 6.0, 9.0)]
    rows = {r["step"]: r["status"] for r in Report(history).build()["rows"]}  # baseline: 3,000, the highest mean
    assert rows == {1000: "under-trained", 2000: "under-trained", 3000: "optimal",
                    4000: "severe over-fitting", 5000: "over-fitting"}
    later = Report(history, baseline_step=1000).build()["rows"]  # nothing before the baseline
    assert "under-trained" not in [r["status"] for r in later]


def test_tied_lower_bounds_are_named_in_the_reason():
    history = [ev(32, 5.0, 1.0), ev(64, 5.5, 3.0), ev(96, 5.0, 1.0), ev(128, 5.0, 1.0)]
    rec = Report(history, baseline_step=32).build()["recommended"]
    assert rec["step"] == 32 and "steps 32, 96 and 128 tie on that lower bound: the earliest is chosen" in rec["reason"]
    alone = Report([ev(32, 5.0, 1.0), ev(64, 6.0, 1.0)], baseline_step=32).build()["recommended"]["reason"]
    assert "tie" not in alone


def controls_spread(worst: float = 0.0, best: float = 12.0, offset: float = 0.0) -> dict:
    return {"always A": ev(None, worst + offset, 1.0), "always B": ev(None, best + offset, 1.0)}


@pytest.mark.parametrize("mean,std,n,status", [
    (10.0, 1.0, 20, "stable"),               # same as the baseline
    (8.0, 1.0, 20, "stable"),                # 0.17 control spreads below: within the 0.2 limit
    (7.5, 1.0, 20, "over-fitting"),          # 0.21 spreads below, significant
    (3.9, 1.0, 20, "severe over-fitting"),   # 0.51 spreads below
    (7.5, 2.0, 3, "stable"),                 # 0.21 spreads below, but 3 episodes cannot tell it from noise
    (10.0, 2.5, 20, "high variance"),        # std 2.5x
    (10.0, 5.5, 20, "over-fitting"),         # std 5.5x
    (12.5, 1.9, 20, "best of run"),          # better (std 1.9x): recommended, but always B (12) does as well
])
@pytest.mark.parametrize("offset", [0.0, -1000.0])
def test_each_status_at_its_threshold_in_control_spreads(mean, std, n, status, offset):
    """A baseline (10) below the best control (12): drops are measured in the controls' spread
    (worst 0, best 12), so a constant offset on every return — the action-independent part of a
    reward — changes nothing."""
    base = ev(1, 10.0 + offset, 1.0, n=n)
    built = Report([base, ev(2, mean + offset, std, n=n)], controls_spread(offset=offset), baseline_step=1).build()
    assert built["unit"] == "control spreads" and built["scale"] == pytest.approx(12.0)
    assert built["rows"][1]["status"] == status
    assert built["rows"][0]["score"] == pytest.approx(10.0 / 12.0)  # 0 = worst control, 1 = best


def with_returns(step, returns, seed=1000, **extra):
    e = ev(step, float(np.mean(returns)), float(np.std(returns, ddof=1)), n=len(returns), **extra)
    return {**e, "seed": seed, "episode_returns": list(returns)}


def test_a_baseline_that_beats_the_controls_measures_drops_in_its_lead():
    """Seeded episodes share most of their noise (here a per-seed offset of up to ±60): a paired
    test sees a drop that unpaired intervals hide. Losing the whole lead over the best control
    (always B, 2.6) is severe; losing a fifth of it, over-fitting."""
    rng = np.random.default_rng(0)
    seed_noise = rng.uniform(-60, 60, 30)
    base = with_returns(1, 15.0 + seed_noise + rng.normal(0, 0.5, 30))
    controls = {"always A": with_returns(None, -160 + seed_noise), "always B": with_returns(None, 2.6 + seed_noise)}
    lost_all = with_returns(2, 2.6 + seed_noise)                       # collapsed onto always B
    lost_fifth = with_returns(3, 12.0 + seed_noise + rng.normal(0, 0.5, 30))
    noise = with_returns(4, 14.6 + seed_noise + rng.normal(0, 0.5, 30))
    built = Report([base, lost_all, lost_fifth, noise], controls, baseline_step=1).build()
    assert built["unit"] == "x the baseline's lead over the best control"
    assert built["scale"] == pytest.approx(base["mean_reward"] - controls["always B"]["mean_reward"])
    # recommended, and no control does as well on these seeds (paired, the lead is clear): optimal
    assert [r["status"] for r in built["rows"]] == ["optimal", "severe over-fitting", "over-fitting", "stable"]
    assert not significantly_lower({**lost_all, "seed": 7}, base)   # other seeds: Welch, and ±60 hides it


def test_without_controls_drops_are_fractions_of_the_baseline_mean():
    base = ev(1, -10.0, 1.0)
    assert flag(ev(2, -12.5, 1.0), base, Thresholds()) == "over-fitting"   # 25% lower
    assert flag(ev(2, -8.0, 1.0), base, Thresholds()) == "stable"          # 20% higher


def test_thresholds_are_configurable_and_validated():
    th = Thresholds(overfit_drop=0.05, severe_drop=0.1, overfit_std_factor=3, high_variance_factor=1.5)
    assert flag(ev(2, 9.2, 1.0), ev(1, 10.0, 1.0), th) == "over-fitting"
    assert flag(ev(2, 10.0, 1.6), ev(1, 10.0, 1.0), th) == "high variance"
    assert flag(ev(2, 10.0, 1.6), ev(1, 10.0, 0.0), Thresholds(min_std=1.0)) == "stable"  # floored baseline std
    with pytest.raises(ValueError, match="invalid thresholds"):
        Thresholds(overfit_drop=0.6, severe_drop=0.5)
    with pytest.raises(ValueError, match="invalid thresholds"):
        Thresholds(high_variance_factor=6, overfit_std_factor=5)


def test_welch_test_needs_a_real_difference():
    base = ev(1, 10.0, 1.0, n=30)
    assert significantly_lower(ev(2, 9.0, 1.0, n=30), base)        # t ≈ 3.9
    assert not significantly_lower(ev(2, 9.7, 1.0, n=30), base)    # t ≈ 1.2
    assert not significantly_lower(ev(2, 11.0, 1.0, n=30), base)   # higher, not lower


def test_normalised_score():
    controls = controls_spread(worst=-40.0, best=-30.0)
    assert normalised_score(-30.0, controls) == 1.0 and normalised_score(-40.0, controls) == 0.0
    assert normalised_score(-28.0, controls) == pytest.approx(1.2)
    assert normalised_score(1.0, {"only": ev(None, 1.0, 0.1)}) is None


def test_heldout_seeds_make_the_headline():
    history = [ev(1000, 5.0, 0.2), ev(2000, 6.0, 0.2)]
    heldout = {"step": 2000, "agent": {**ev(2000, 5.5, 0.3), "seed": 20_000},
               "controls": {"random": ev(None, 3.0, 1.0), "always B": ev(None, 5.0, 0.2)}}
    report = Report(history, controls_spread(), heldout=heldout)
    built = report.build()
    held = built["heldout"]
    assert held["step"] == 2000 and held["seed"] == 20_000 and held["verdict"]["beats_best_control"]
    assert held["verdict"]["score"] == pytest.approx(1.25)   # (5.5 - 3) / (5 - 3), held-out controls
    md = report.markdown(built)
    assert md.index("## Headline: held-out seeds 20000..20019") < md.index("## Evaluations")
    assert "| step 2,000 | +5.500 | ±0.300 |" in md and "normalised score 1.25" in md
    stored = json.loads(json.dumps(built))  # report.json is enough to rebuild the headline
    assert Report(history, controls_spread(), heldout=stored["heldout"]["source"]).build()["heldout"] == stored["heldout"]


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
    assert [c["change"] for c in built["controls"]] == pytest.approx([-3.0, -0.1])
    assert [c["score"] for c in built["controls"]] == [0.0, 1.0]
    md = report.markdown(built)
    # recommended, but always PHI's CI overlaps: the status may not say "optimal"
    assert "| 2,000 (baseline) | +6.000 | ±0.200 |" in md and "| best of run | 95% | 50 / 25 / 25 |" in md
    assert "| 1.03 | — | best of run |" in md  # (6 - 3) / (5.9 - 3): above the best control's mean
    assert "| 1,000 | +5.000 |" in md and "| -1.000 | under-trained |" in md
    assert "| always PHI | +5.900 |" in md and "| 0 / 100 / 0 |" in md
    assert "std more than 5x the baseline's" in md  # thresholds are written in the report
    assert "more than 0.2 x the baseline's lead over the best control below" in md
    # a mean above the best fixed control's is not a win while the CIs overlap, and the words say so
    assert ("against the fixed controls (random and the constant policies) it does not beat the best of them "
            "(always PHI, 5.9 [5.806, 5.994]): a higher mean, but the 95% CIs overlap; normalised score 1.03") in md
    lines = md.split("\n")  # the first screen is the verdict; the run's notes come last
    assert lines[2].startswith("**Verdict so far, on the evaluation seeds") and "does not beat" in lines[2]
    assert md.endswith("## The run\n\na note  \n")
    controls["always PHI"] = ev(None, 5.0, 0.2)
    beaten = Report(history, controls).build()
    assert beaten["recommended"]["vs_controls"]["beats_best_control"]
    assert [r["status"] for r in beaten["rows"]] == ["under-trained", "optimal"]
    md_path, json_path = write_report(tmp_path, built, md)
    assert md_path.read_text() == embed_chart(md, "report.svg")  # the chart's image line after the verdict
    chart_at = md_path.read_text().split("\n").index(f"![{CHART_ALT}](report.svg)")
    assert 2 < chart_at < md_path.read_text().split("\n").index("## Evaluations (the seeds checkpoints are selected on)")
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(built))
    assert (tmp_path / "report.svg").read_text().startswith("<svg")


def test_empty_history_renders():
    report = Report([])
    assert "No evaluations yet" in report.markdown()


def test_the_detector_fires_on_a_deliberately_degraded_agent(tmp_path):
    """A cart-pole agent trained well, then continued with a destructive setting (learning rate
    x100, no entropy bonus): the report, with control policies on the same seeds, flags it."""
    from ppo.cartpole import CartPoleEnv, CartPoleVecEnv
    from common.episodes import run_episodes
    from common.policies import control_policies
    from ppo import PPO, EvalResult, PPOConfig

    cfg = PPOConfig(total_timesteps=24_576, n_steps=256, minibatch_size=512, n_epochs=4, progress_bar=False, seed=1)
    agent = PPO(CartPoleVecEnv(8), cfg).learn()
    envs = [CartPoleEnv() for _ in range(4)]  # evaluation plays single environments, on threads
    episodes = dict(n_episodes=16, seed=500)
    good = agent.evaluate(envs, **episodes)
    good.step = agent.global_step
    agent.save(str(tmp_path / "good.pt"))
    degraded = PPO.load(str(tmp_path / "good.pt"), CartPoleVecEnv(8),
                        config=cfg.replace(learning_rate=100 * cfg.learning_rate, ent_coef=0.0,
                                           total_timesteps=agent.global_step + 8192))
    degraded.learn()
    bad = degraded.evaluate(envs, **episodes)
    bad.step = degraded.global_step
    controls = {name: EvalResult.from_episodes(run_episodes(envs, policy, **episodes), 2, episodes["seed"],
                                               deterministic=name != "random")
                for name, policy in control_policies(2).items()}
    assert set(controls) == {"random", "always 0", "always 1"}
    built = Report([good.to_dict(), bad.to_dict()], {k: v.to_dict() for k, v in controls.items()},
                   baseline_step=good.step).build()
    rows = {r["step"]: r for r in built["rows"]}
    assert rows[good.step]["status"] == "optimal" and rows[good.step]["score"] > 1
    assert rows[bad.step]["status"] in ("over-fitting", "severe over-fitting"), rows[bad.step]
    assert built["recommended"]["step"] == good.step

"""The RL stage's CUSTOM SCALARS layout, read back from an event file and matched the way
TensorBoard matches it (tensorboard/plugins/custom_scalar): a Multiline chart joins its
regexes as (r1)|(r2) and the server keeps the tags `re.match` accepts; a Margin chart's
value/lower/upper are escaped by the front end and looked up by exact name."""
from __future__ import annotations

import re

import pytest

from common.logger import Logger
from stages.dashboards import (ACTION_FRAC, BASE_TAGS, EVAL_CATEGORY, RL_TAGS, SIDE_RUNS, VS_CONTROLS, SideRuns,
                               control_slug, record_eval_scalars, record_rollout_scalars, rl_layout, rl_tags)

MODES = ("TEXT", "PHI", "MIXED")
CONTROLS = ("random", "always TEXT", "always PHI", "always MIXED", "tuned rule", "bandit")

# Every scalar the RL run writes (PPO's trainer, env.RolloutMonitor, stages/rl.py), written out by hand.
RL_WRITES = [
    "train/policy_gradient_loss", "train/value_loss", "train/entropy_loss", "train/loss", "train/approx_kl",
    "train/clip_fraction", "train/explained_variance", "train/learning_rate", "train/clip_range",
    "train/clip_range_vf", "train/n_minibatch_updates", "train/kl_early_stop", "train/n_updates",
    "rollout/ep_rew_mean", "rollout/ep_len_mean", "time/fps",
    "env/phi", "env/consciousness", "env/perplexity", "env/memory_util", "env/phi_in_band_pct",
    "env/action_frac_text", "env/action_frac_phi", "env/action_frac_mixed", "env/lr_scale",
    "eval/mean_reward", "eval/std_reward", "eval/ci_lower", "eval/ci_upper", "eval/mean_ep_length",
    "eval/phi_mean", "eval/phi_in_band_pct", "eval/c_mean", "eval/final_ppl",
    "eval_vs_controls/mean_reward", "env/phi_band_low", "env/phi_band_high", "run/resumed_from",
]
SIDE_WRITES = ["eval_vs_controls/mean_reward", "env/action_frac"]  # the runs rl/policies/*, rl/modes/*
# Near misses a prefix-only regex would pick up: the old mean ± std tags, and the base stage's tags.
DISTRACTORS = ["eval/reward_lower", "eval/reward_upper", "eval/mean_reward_smoothed", "env/phi_mean",
               "controls/always_text_heldout", "x/env/phi", "eval_vs_controls/mean_reward_x"] + list(BASE_TAGS)
ALL_TAGS = RL_WRITES + SIDE_WRITES + DISTRACTORS

# chart title -> the tags it must draw, nothing more
INTENDED = {
    "eval reward: agent (run rl) vs control policies (runs rl/policies/*)": {"eval_vs_controls/mean_reward"},
    "eval Φ in band (%)": {"eval/phi_in_band_pct"},
    "resumes (one point per resume, at its step)": {"run/resumed_from"},
    "C": {"env/consciousness"},
    "Φ in band (%)": {"env/phi_in_band_pct"},
    "action mix (runs rl/modes/*)": {"env/action_frac"},
    "perplexity": {"env/perplexity"},
    "step size (× inner lr)": {"env/lr_scale"},
}


def read_layout(tmp_path, layout: dict):
    """Write `layout` with the stages' Logger, read it back as TensorBoard's Layout proto."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2
    logger = Logger(tmp_path / "runs", quiet=True)
    logger.add_custom_scalars(layout)
    logger.close()
    acc = EventAccumulator(str(tmp_path / "runs"), size_guidance={"tensors": 0}).Reload()
    raw = acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    return layout_pb2.Layout.FromString(raw)


def multiline_matches(regexes, tags) -> set:
    """The tags a Multiline chart draws: the front end's filter, the server's re.match."""
    joined = regexes[0] if len(regexes) == 1 else "|".join(f"({r})" for r in regexes)
    return {t for t in tags if re.match(joined, t)}


def margin_matches(series, tags) -> set:
    """The tags a Margin chart draws: escaped names, then an exact lookup of value/lower/upper."""
    names = [name for s in series for name in (s.value, s.lower, s.upper)]
    joined = "|".join("(" + re.escape(n) + ")" for n in names)
    served = {t for t in tags if re.match(joined, t)}
    return {n for n in names if n in served}


def charts(layout):
    return [(cat.title, chart) for cat in layout.category for chart in cat.chart]


def check(layout, tags) -> list[str]:
    """Every problem of the layout against `tags` (empty: each chart draws exactly its intended tags)."""
    problems = []
    for _, chart in charts(layout):
        if chart.HasField("multiline"):
            got, want = multiline_matches(list(chart.multiline.tag), tags), INTENDED[chart.title]
            if got != want:
                problems.append(f"{chart.title}: draws {sorted(got)}, not {sorted(want)}")
        else:
            series = chart.margin.series
            got = margin_matches(series, tags)
            want = {n for s in series for n in (s.value, s.lower, s.upper)}
            if got != want:
                problems.append(f"{chart.title}: margin finds {sorted(got)} of {sorted(want)}")
    return problems


def test_layout_read_back_draws_exactly_the_intended_tags(tmp_path):
    layout = read_layout(tmp_path, rl_layout(MODES, resumed=True, step_sizes=True))
    assert check(layout, ALL_TAGS) == []
    assert {title for _, c in charts(layout) for title in [c.title] if c.HasField("multiline")} == set(INTENDED)
    plain = read_layout(tmp_path / "plain", rl_layout(MODES))  # no empty resume or step-size chart
    titles = {c.title for _, c in charts(plain)}
    assert "resumes (one point per resume, at its step)" not in titles and "step size (× inner lr)" not in titles


def test_headline_first_margin_of_the_ci_then_the_controls(tmp_path):
    layout = read_layout(tmp_path, rl_layout(MODES))
    assert [c.title for c in layout.category] == [EVAL_CATEGORY, "environment"]
    first, second = layout.category[0].chart[:2]
    assert first.HasField("margin")
    assert [(s.value, s.lower, s.upper) for s in first.margin.series] == [
        ("eval/mean_reward", "eval/ci_lower", "eval/ci_upper")]
    assert second.HasField("multiline") and multiline_matches(list(second.multiline.tag), ALL_TAGS) == {VS_CONTROLS}


def test_phi_chart_shades_the_band_and_c_has_its_own(tmp_path):
    layout = read_layout(tmp_path, rl_layout(MODES))
    env = {c.title: c for c in layout.category[1].chart}
    phi = env["Φ (line) and the reward's band (shaded)"]
    assert [(s.value, s.lower, s.upper) for s in phi.margin.series] == [("env/phi", "env/phi_band_low",
                                                                          "env/phi_band_high")]
    assert multiline_matches(list(env["C"].multiline.tag), ALL_TAGS) == {"env/consciousness"}


def test_unanchored_tags_are_caught(tmp_path):
    """The check above is not vacuous: the same layout without anchors draws neighbours too."""
    loose = rl_layout(MODES)
    for cat in loose.values():
        for chart in cat.values():
            if chart[0] == "Multiline":
                chart[1] = [r.lstrip("^").rstrip("$") for r in chart[1]]
    problems = check(read_layout(tmp_path, loose), ALL_TAGS)
    assert any(p.startswith("eval reward: agent") and "eval_vs_controls/mean_reward_x" in p for p in problems), problems
    assert any(p.startswith("action mix") and "env/action_frac_text" in p for p in problems), problems


def test_anchored_margin_tags_would_draw_nothing(tmp_path):
    """Margin series are literal names: the front end escapes ^ and $, so anchors must not be used there."""
    layout = read_layout(tmp_path, {"c": {"m": ["Margin", ["^eval/mean_reward$", "^eval/ci_lower$",
                                                            "^eval/ci_upper$"]]}})
    assert margin_matches(layout.category[0].chart[0].margin.series, ALL_TAGS) == set()


def test_every_layout_tag_is_one_the_stage_writes():
    layout = rl_layout(MODES, resumed=True, step_sizes=True)
    assert set(rl_tags(MODES)) == set(RL_WRITES)  # RL_TAGS documents every tag, no more
    assert {tag for tag, _ in SIDE_RUNS.values()} == set(SIDE_WRITES)
    written = set(RL_WRITES) | set(SIDE_WRITES)
    for cat in layout.values():
        for kind, entries in cat.values():
            for entry in entries:
                tag = entry.lstrip("^").rstrip("$").replace("\\", "")
                assert tag in written, entry


def read_runs(root) -> dict:
    """{run folder relative to root: {tag: [(step, value)]}} of every event file under root."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    mux = EventMultiplexer().AddRunsFromDirectory(str(root)).Reload()
    return {run: {tag: [(e.step, e.value) for e in mux.Scalars(run, tag)] for tag in tags["scalars"]}
            for run, tags in mux.Runs().items()}


def test_controls_and_modes_are_runs_of_their_own(tmp_path):
    """TensorBoard colours by run: each control policy and each mode writes the shared tag in its own run."""
    from ppo.evaluation import EvalResult
    result = EvalResult([1.0, 2.0, 3.0, 4.0], [10] * 4)
    controls = {name: EvalResult([i, i + 1.0], [10, 10]).to_dict() for i, name in enumerate(CONTROLS)}
    logger, side = Logger(tmp_path / "rl", quiet=True), SideRuns(tmp_path / "rl", None)
    record_eval_scalars(logger, side, result, controls, 32)
    low, high = result.ci95
    assert logger.pending == pytest.approx({"eval/ci_lower": low, "eval/ci_upper": high, VS_CONTROLS: 2.5})
    stats = {"env/phi": 5.0, "env/action_frac_text": 0.5, "env/action_frac_phi": 0.25, "env/action_frac_mixed": 0.25}
    record_rollout_scalars(logger, side, stats, MODES, (3.0, 6.0), 32)
    logger.dump(32)
    logger.close()
    side.close()
    runs = read_runs(tmp_path)
    assert runs["rl/policies/tuned_rule"] == {VS_CONTROLS: [(32, 4.5)]}
    assert runs["rl/policies/always_text"] == {VS_CONTROLS: [(32, 1.5)]}
    assert runs["rl/modes/phi"] == {ACTION_FRAC: [(32, 0.25)]}
    assert len([r for r in runs if r.startswith("rl/policies/")]) == len(CONTROLS)
    assert runs["rl"]["env/phi_band_low"] == [(32, 3.0)] and runs["rl"]["env/phi_band_high"] == [(32, 6.0)]
    assert runs["rl"][VS_CONTROLS] == [(32, 2.5)]


def test_control_slug_and_tag_lists():
    assert control_slug("always TEXT") == "always_text" and control_slug("random") == "random"
    assert all(t.startswith("lm/") for t in BASE_TAGS)
    assert not set(BASE_TAGS) & set(RL_TAGS)

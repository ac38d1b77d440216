"""The RL stage's CUSTOM SCALARS layout, read back from an event file and matched the way
TensorBoard matches it (tensorboard/plugins/custom_scalar): a Multiline chart joins its
regexes as (r1)|(r2) and the server keeps the tags `re.match` accepts; a Margin chart's
value/lower/upper are escaped by the front end and looked up by exact name. Then the colours:
every run's colour in a real tiny run, by the rule and palettes read from the installed
TensorBoard's front end (stages/report/dashboards.py's docstring)."""
from __future__ import annotations

import json
import re
import shlex
import shutil
import zipfile
from pathlib import Path

import pytest

from common.logger import Logger
from stages.report.dashboards import (ACTION_FRAC, ACTION_MIX, BASE_TAGS, BASE_VIEW, COMPARISON, EVAL_CATEGORY, RL_TAGS,
                               RL_VIEW, SIDE_RUNS, VS_CONTROLS, SideRuns, control_slug, side_run_plan,
                               record_eval_scalars, record_rollout_scalars, rl_layout, rl_tags)

MODES = ("TEXT", "PHI", "MIXED")
CONTROLS = ("random", "always TEXT", "always PHI", "always MIXED", "tuned rule", "bandit")

# Every scalar the RL run writes (PPO's trainer, env.RolloutMonitor, stages/rl/stage.py), written out by hand.
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
    "teacher/teacher_mean_return", "teacher/agreement", "teacher/other_prob",
]
SIDE_WRITES = ["eval_vs_controls/mean_reward", "env/action_frac"]  # the runs rl/modes/*, rl/policies/*
# Near misses a prefix-only regex would pick up: the old mean ± std tags, and the base stage's tags.
DISTRACTORS = ["eval/reward_lower", "eval/reward_upper", "eval/mean_reward_smoothed", "env/phi_mean",
               "controls/always_text_heldout", "x/env/phi", "eval_vs_controls/mean_reward_x"] + list(BASE_TAGS)
ALL_TAGS = RL_WRITES + SIDE_WRITES + DISTRACTORS

# chart title -> the tags it must draw, nothing more
INTENDED = {
    COMPARISON: {"eval_vs_controls/mean_reward"},
    "eval Φ in band (%)": {"eval/phi_in_band_pct"},
    "resumes (one point per resume, at its step)": {"run/resumed_from"},
    "C": {"env/consciousness"},
    "Φ in band (%)": {"env/phi_in_band_pct"},
    ACTION_MIX: {"env/action_frac"},
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
    assert {tag for tags in SIDE_RUNS.values() for tag in tags} == set(SIDE_WRITES)
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


def test_modes_and_adaptive_controls_are_runs_of_their_own(tmp_path):
    """TensorBoard colours by run: each mode's run draws the agent's share of it and its constant control
    (always <mode>), each adaptive control's run its mean; the random control has none."""
    from ppo.evaluation import EvalResult
    result = EvalResult([1.0, 2.0, 3.0, 4.0], [10] * 4)
    controls = {name: EvalResult([i, i + 1.0], [10, 10]).to_dict() for i, name in enumerate(CONTROLS)}
    logger = Logger(tmp_path / "rl", quiet=True)
    side = SideRuns(tmp_path / "rl", None, side_run_plan(MODES, controls))
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
    assert runs["rl/policies/bandit"] == {VS_CONTROLS: [(32, 5.5)]}
    assert runs["rl/modes/text"] == {VS_CONTROLS: [(32, 1.5)], ACTION_FRAC: [(32, 0.5)]}
    assert runs["rl/modes/phi"] == {VS_CONTROLS: [(32, 2.5)], ACTION_FRAC: [(32, 0.25)]}
    assert sorted(runs) == ["rl", "rl/modes/mixed", "rl/modes/phi", "rl/modes/text", "rl/policies/bandit",
                            "rl/policies/tuned_rule"]  # no run for random
    assert runs["rl"]["env/phi_band_low"] == [(32, 3.0)] and runs["rl"]["env/phi_band_high"] == [(32, 6.0)]
    assert runs["rl"][VS_CONTROLS] == [(32, 2.5)]


def test_control_slug_and_tag_lists():
    assert control_slug("always TEXT") == "always_text" and control_slug("random") == "random"
    assert all(t.startswith("lm/") for t in BASE_TAGS)
    assert not set(BASE_TAGS) & set(RL_TAGS)


def test_side_runs_are_mode_families_then_the_best_adaptive_controls():
    """Six step-size modes in two families and five adaptive controls: a run per family (its best constant
    control), then the adaptive controls by mean while runs are left; random and the rest get none."""
    modes = [f"{f}@{s}" for f in ("TEXT", "MIXED") for s in ("0.2", "0.5", "1")]
    means = {"random": 0.0, "always TEXT@0.2": 1.0, "always TEXT@0.5": 3.0, "always TEXT@1": 2.0,
             "always MIXED@0.2": 0.5, "always MIXED@0.5": 0.7, "always MIXED@1": 0.6,
             "tuned rule": 2.5, "bandit": 1.5, "tuned time switch": 2.8, "step decay": 3.5, "plateau": 0.1}
    plan = side_run_plan(modes, {n: {"mean_reward": m} for n, m in means.items()})
    assert plan["families"] == ["TEXT", "MIXED"]
    assert plan["controls"] == {"always TEXT@0.5": ("modes", "TEXT"), "always MIXED@0.5": ("modes", "MIXED"),
                                "step decay": ("policies", "step decay"),
                                "tuned time switch": ("policies", "tuned time switch"),
                                "tuned rule": ("policies", "tuned rule"), "bandit": ("policies", "bandit")}
    assert len(plan["families"]) + sum(g == "policies" for g, _ in plan["controls"].values()) == 6


# --- colours: TensorBoard colours by run, from one palette, in the order of its run list ---------------

def tensorboard_palettes() -> dict:
    """{dashboards: palette} of the installed TensorBoard's front end (webfiles.zip's index.js), after
    checking its rule there: the run list's n-th run takes palette[n % len(palette)]."""
    import tensorboard
    with zipfile.ZipFile(Path(tensorboard.__file__).parent / "webfiles.zip") as z:
        js = z.read("index.js").decode()
    changed = "TensorBoard's colouring changed: read it again (stages/report/dashboards.py's docstring)"
    # Custom Scalars and Scalars: a colour scale over the runs store (/data/runs), its default palette
    # a named one, and setDomain giving run n the colour palette[n % length].
    default = re.search(r"(\w+)=\w+\.(\w+);var \w+=class\{constructor\(\w+=\1\)\{this\.palette=\w+", js)
    assert default and re.search(r"this\.palette\[\w+%this\.palette\.length\]", js), changed
    legacy = re.findall(r'"(#[0-9a-fA-F]{6})"', re.search(default.group(2) + r":\[([^\]]*)\]", js).group(1))
    # Time Series: colour ids handed out in the run list's order, palette colors[id % length]
    settings = re.search(r'colorPalette:\{id:"default".*?colors:\[(.*?)\],inactive', js)
    assert settings and re.search(r"\w+\.colors\[\w+%\w+\.colors\.length\]", js), changed
    series = re.findall(r'lightHex:"(#[0-9a-fA-F]{6})"', settings.group(1))
    assert len(legacy) == len(series) == 7, (legacy, series)
    return {"Custom Scalars and Scalars": legacy, "Time Series": series}


def run_list(root) -> list[str]:
    """TensorBoard's own run list (/data/runs, served by its core plugin) for --logdir root."""
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.core import core_plugin
    from werkzeug import test as wtest, wrappers
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(root))
    mux.Reload()
    context = base_plugin.TBContext(logdir=str(root), multiplexer=mux,
                                    data_provider=data_provider.MultiplexerDataProvider(mux, str(root)))
    app = core_plugin.CorePlugin(context).get_plugin_apps()["/data/runs"]
    return json.loads(wtest.Client(app, wrappers.Response).get("/data/runs").get_data())


def chart_runs(root) -> dict:
    """{chart title: the runs with data for its tags} of the layout the RL run wrote under root."""
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(root / "rl"), size_guidance={"tensors": 0}).Reload()
    layout = layout_pb2.Layout.FromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    tags = {run: set(values) for run, values in read_runs(root).items()}
    out = {}
    for _, chart in charts(layout):
        if chart.HasField("multiline"):
            drawn = {run: multiline_matches(list(chart.multiline.tag), t) for run, t in tags.items()}
        else:
            drawn = {run: margin_matches(chart.margin.series, t) for run, t in tags.items()}
        out[chart.title] = {run for run, matched in drawn.items() if matched}
    return out


def colour_problems(root, palette) -> list[str]:
    """Two runs of one chart in one colour, or another run in the agent's (run rl), under TensorBoard
    --logdir root; empty when there is none."""
    runs = run_list(root)
    colour = {run: palette[n % len(palette)] for n, run in enumerate(runs)}
    problems = [f"{run} has the agent's colour {colour['rl']}" for run in runs if run != "rl" and
                colour[run] == colour["rl"]]
    for title, drawn in chart_runs(root).items():
        for c in sorted({colour[r] for r in drawn}):
            same = sorted(r for r in drawn if colour[r] == c)
            if len(same) > 1:
                problems.append(f"{title!r}: {', '.join(same)} all in {c}")
    return problems


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # tensorboard's vendored html5lib, on import
def test_every_chart_tells_its_runs_apart_and_the_agent_has_a_colour_of_its_own(rl_dir, base_dir, tmp_path):
    """A real tiny run, as TensorBoard colours it: its run list (its own core plugin's, not assumed), each
    run's colour by the rule and palette of the installed front end, each custom-scalars chart's runs;
    alone (--base elsewhere) and beside the base stage's run (both stages into one --out)."""
    both = tmp_path / "runs"
    shutil.copytree(base_dir / "runs" / "base", both / "base")  # written first: first in the run list
    shutil.copytree(rl_dir / "runs" / "rl", both / "rl")
    assert run_list(both)[:2] == ["base", "rl"]
    for name, palette in tensorboard_palettes().items():
        for root in (rl_dir / "runs", both):
            assert colour_problems(root, palette) == [], (name, run_list(root))
    # not vacuous: the charts of several runs are there, every control but random among them
    drawn = chart_runs(both)
    assert drawn[COMPARISON] == {"rl", "rl/modes/text", "rl/modes/phi", "rl/modes/mixed", "rl/policies/tuned_rule",
                                 "rl/policies/tuned_time_switch", "rl/policies/bandit"}
    assert drawn[ACTION_MIX] == {"rl/modes/text", "rl/modes/phi", "rl/modes/mixed"}


def test_the_closing_hint_links_the_documented_view(tmp_path):
    """The stages' last line: a command to paste as it is (the link is in its comment), then the view
    docs/rl.md documents: Custom Scalars (Scalars after the base stage: no layout yet), smoothing 0."""
    from tensorboard.plugins.custom_scalar import metadata as custom_scalars
    from tensorboard.plugins.scalar import metadata as scalars
    from stages.outputs import next_steps
    assert RL_VIEW == f"http://localhost:6006/#{custom_scalars.PLUGIN_NAME}&_smoothingWeight=0"
    assert BASE_VIEW == f"http://localhost:6006/#{scalars.PLUGIN_NAME}&_smoothingWeight=0"
    for stage, view in (("rl", RL_VIEW), ("report", RL_VIEW), ("base", BASE_VIEW)):
        last = next_steps(tmp_path, stage, tmp_path / "runs").splitlines()[-1]
        assert shlex.split(last, comments=True) == ["tensorboard", "--logdir", str(tmp_path / "runs")], last
        assert f"# the dashboards: then open {view} and untick 'Ignore outliers in chart scaling'" in last, last

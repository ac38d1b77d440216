"""The schedule matters: the modes differ at every Φ level, text training pays from the start
snapshot, rewards are objects (v2 exact, progress), a fourth mode is one config line, and the
share of a return no decision can change is measured."""
import json

import numpy as np
import pytest

import train
from common.policies import ConstantPolicy, control_policies
from env import (PHI, TEXT, EnvConfig, EnvError, ProgressReward, RewardConfig, TextSchedulingEnv,
                 action_independent_share, load_base, reward_from_dict, run_policy, rule_family)
from bench.dynamics import difference, mode_effects, state_at_phi
from infinito.checkpoint import load_checkpoint

# the demo preset's decision (3 inner steps at lr 6e-4), on the tiny model
DECISION = EnvConfig(max_steps=10, inner_steps=3, inner_batch_size=4, seq_len=64, inner_lr=6e-4, reward=ProgressReward())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def snapshot(base_dir):
    """The tiny preset's base stage keeps its step-20 snapshot beside base.pt."""
    return base_dir / "base-step20.pt"


@pytest.fixture(scope="module")
def env(snapshot):
    return TextSchedulingEnv(load_base(snapshot, DECISION), DECISION)


def test_base_stage_keeps_the_snapshot(snapshot, base_dir):
    snap = load_checkpoint(snapshot, kind="infinito-base")
    final = load_checkpoint(base_dir / "base.pt", kind="infinito-base")
    assert snap["step"] == 20 and final["step"] == 30
    assert snap["metrics"]["ppl"] > final["metrics"]["val_ppl"]  # taken while training still moved the model


@pytest.mark.parametrize("level", [2.6, 4.5, None])  # below, inside, above the band [3, 6] (None: as reset)
def test_text_and_phi_move_phi_differently_at_every_level(env, level):
    state = state_at_phi(env, seed=7, level=level, tolerance=0.2)
    phi0 = state["prev"]["phi"]
    assert (phi0 < 3) if level == 2.6 else (3 <= phi0 <= 6) if level == 4.5 else phi0 > 6
    effects = mode_effects(env, state, seeds=range(4), actions=[TEXT, PHI])
    d = difference(effects, "PHI", "TEXT")
    assert abs(d["diff"]) > 3 * d["se"], (phi0, effects)  # the modes' difference exceeds the seeds' noise
    # and PHI moves Φ toward the target 4.5 relative to TEXT
    assert np.sign(d["diff"]) == np.sign(4.5 - phi0)


def test_text_training_lowers_heldout_perplexity_within_an_episode(env):
    runs = run_policy(env, ConstantPolicy(TEXT), n_episodes=2, seed=3)
    for tr in runs.traces:
        assert tr["ppl"][-1] < 0.95 * tr["initial"]["ppl"]  # > 5 % lower after 10 decisions


def test_reward_objects_name_their_terms_band_and_measurements():
    v2, progress = RewardConfig(), ProgressReward(phi_low=3.5, phi_high=5.5)
    assert v2.name == "v2" and "ppl_band" in v2.terms and v2.band == (3.0, 6.0)
    assert progress.terms == ("text_gain", "phi_out") and progress.band == (3.5, 5.5)
    assert set(progress.measurements) <= {"phi", "ppl"}
    for r in (v2, progress):
        assert reward_from_dict(json.loads(json.dumps(r.to_dict()))) == r
    assert reward_from_dict({"name": "v2", "phi_low": 5.5}) == RewardConfig(phi_low=5.5)
    with pytest.raises(EnvError, match="unknown reward 'None'"):  # a dict must say which reward it is
        reward_from_dict({"phi_low": 5.5})
    with pytest.raises(EnvError, match="unknown reward 'nope'"):
        reward_from_dict({"name": "nope"})
    with pytest.raises(EnvError, match="unknown reward 'progress' key"):
        reward_from_dict({"name": "progress", "w_dc": 1.0})


def test_progress_reward_values():
    r = ProgressReward()
    prev = {"phi": 5.0, "ppl": 20.0}
    total, terms = r(prev, {"phi": 7.5, "ppl": 10.0})
    assert terms["text_gain"] == pytest.approx(100 * np.log(2.0)) and terms["phi_out"] == -1.5
    assert total == pytest.approx(100 * np.log(2.0) - 1.5)
    assert r(prev, {"phi": 2.0, "ppl": 20.0})[1] == {"text_gain": 0.0, "phi_out": -1.0}
    assert r(prev, {"phi": 6.0, "ppl": 40.0})[1]["phi_out"] == 0.0  # band edges are inside
    # the gains telescope: an episode's total depends only on where perplexity starts and ends
    ppls = [20.0, 30.0, 12.0, 15.0]
    steps = [r({"phi": 4, "ppl": a}, {"phi": 4, "ppl": b})[1]["text_gain"] for a, b in zip(ppls, ppls[1:])]
    assert sum(steps) == pytest.approx(100 * np.log(20.0 / 15.0))
    assert r(None, {"phi": 9.0, "ppl": 1.0}) == (0.0, {"text_gain": 0.0, "phi_out": 0.0})


def test_action_independent_share():
    # v2 on a model under its perplexity band: every policy pays the same -36 of ppl_band
    v2_like = {"always TEXT": {"ppl_band": -36.0, "phi_band": -10.0}, "always PHI": {"ppl_band": -36.0, "phi_band": 2.0}}
    out = action_independent_share(v2_like)
    assert out["terms"]["ppl_band"] == (36.0, 36.0) and out["terms"]["phi_band"] == (0.0, 6.0)
    assert out["share"] == pytest.approx(36 / 42)
    decided = {"always TEXT": {"text_gain": 20.0, "phi_out": -25.0}, "always PHI": {"text_gain": -150.0, "phi_out": -2.0}}
    assert action_independent_share(decided)["share"] == pytest.approx(2.0 / (85.0 + 13.5))


def test_run_policy_keeps_each_episodes_reward_terms(env):
    runs = run_policy(env, ConstantPolicy(PHI), n_episodes=1, seed=0)
    terms = runs.traces[0]["terms"]
    assert set(terms) == {"text_gain", "phi_out"}
    assert sum(terms.values()) == pytest.approx(runs.returns[0])
    assert runs.summary(env.config.reward.band)["term_returns"] == pytest.approx(terms)


def test_a_fourth_mode_is_one_config_line(base_dir, tmp_path):
    """Four modes through the command line: the tiny RL preset trains, evaluates four constant
    controls and the adaptive ones (the rule tuned over the three other modes) and writes a report
    with a four-way action mix."""
    modes = '[["TEXT",1,0],["PHI",0.1,1],["MIXED",0.5,0.5],["GENTLE",1,0.2]]'
    assert train.main(["--stage", "rl", "--preset", "tiny", "--quiet", "--base", str(base_dir / "base-step20.pt"),
                       "--out", str(tmp_path), "--env", f"modes={modes}"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    names = [c["name"] for c in report["controls"]]
    assert names == ["random", "always TEXT", "always PHI", "always MIXED", "always GENTLE", "tuned rule",
                     "tuned time switch", "bandit"]
    tuned = next(c for c in report["controls"] if c["name"] == "tuned rule")
    assert tuned["detail"].startswith("TEXT in [") and len(rule_family(EnvConfig.from_dict(
        {"modes": json.loads(modes)}))) == 9
    assert all(len(r["action_mix"]) == 4 for r in report["rows"])
    assert "TEXT / PHI / MIXED / GENTLE %" in (tmp_path / "report.md").read_text()
    assert len(control_policies(4, ("A", "B", "C", "D"))) == 5

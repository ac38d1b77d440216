"""Adaptive controls (the tuned rule, the Exp3.S bandit), their cache, the paired verdict, and the
study's statistics (IQM with a bootstrap interval, probability of improvement)."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from common.episodes import play
from common.policies import Exp3S
from common.stats import bootstrap_interval, improvement_indicator, iqm
from env import EnvConfig, rule_family
from ppo import EvalResult
from stages.report.overfit import Report, paired_verdict
from stages.report.scoring import SUMMARY_KEYS
from stages.rl.presets import RL_PRESETS


def test_exp3s_follows_the_update_rule_on_a_hand_computed_case():
    bandit = Exp3S(3, horizon=25, gamma=0.5, alpha=0.1)
    assert np.allclose(bandit.probabilities(), [1 / 3] * 3)
    bandit.update(0, 1.0)
    # x_hat_0 = 1 / (1/3) = 3; w_0 = exp(0.5 * 3 / 3) + e * 0.1 / 3 * 3, w_1 = w_2 = 1 + e * 0.1
    w0, w1 = math.exp(0.5) + math.e * 0.1, 1 + math.e * 0.1
    total = w0 + 2 * w1
    expected = [0.5 * w0 / total + 0.5 / 3, 0.5 * w1 / total + 0.5 / 3, 0.5 * w1 / total + 0.5 / 3]
    assert np.allclose(bandit.probabilities(), expected)
    # a second step on arm 2 with reward 0 only shares weight (alpha): arm 0 keeps its lead
    bandit.update(2, 0.0)
    p = bandit.probabilities()
    assert p[0] > p[1] == pytest.approx(p[2]) and p.sum() == pytest.approx(1)


def test_exp3s_defaults_and_reward_scaling():
    bandit = Exp3S(3, horizon=25)
    assert bandit.gamma == pytest.approx(math.sqrt(3 * math.log(75) / 25)) and bandit.alpha == pytest.approx(0.04)
    seen = []
    bandit.update = lambda action, x: seen.append(x)
    for r in (5.0, 1.0, 3.0, 100.0):  # scaled by the 20th-80th percentiles of the rewards so far
        bandit.observe(0, r)
    lo, hi = np.percentile([5.0, 1.0, 3.0], [20, 80])
    assert seen[0] == 0.5 and seen[2] == pytest.approx((3.0 - lo) / (hi - lo)) and seen[3] == 1.0


class Rewarding:
    """Three steps; action 1 earns 1, the others 0."""
    uses_global_rng = False

    def reset(self, seed=None):
        self.t = 0
        return np.zeros(2), {}

    def step(self, action):
        self.t += 1
        return np.zeros(2), float(action == 1), False, self.t >= 3, {}


def test_the_episode_runner_tells_a_bandit_each_reward_and_a_reset_repeats_it():
    seen = []

    class Recorder(Exp3S):
        def observe(self, action, reward):
            seen.append((action, reward))
            super().observe(action, reward)
    bandit = Recorder(3, horizon=3, seed=0)
    first = play(Rewarding(), bandit, seed=7)
    assert [(a, float(a == 1)) for a in first.actions] == seen
    again = play(Rewarding(), bandit, seed=7)  # reset(seed): same draws, fresh weights
    assert again.actions == first.actions


def test_the_rule_family_covers_every_other_mode_and_margin():
    family = rule_family(EnvConfig())
    assert len(family) == 6
    assert "rule: TEXT in [3.5, 5.5], else MIXED" in family
    member = family["rule: TEXT in [3.25, 5.75], else PHI"]
    assert member(np.array([0.0, 5.8]), {}) == 1 and member(np.array([0.0, 5.7]), {}) == 0


def fake_score(means: dict):
    """stages.report.controls.score_together stand-in: the mean depends on (policy, seed); counts what it plays."""
    played = []

    def score_together(envs, policies, env_cfg, n, seed, on_episode=None):
        out = {}
        for name in policies:
            played.append((name, seed))
            mean = means.get((name, seed), 0.0)
            out[name] = EvalResult([mean - 1, mean + 1] * (n // 2) + [mean] * (n % 2), [1] * n, [n, 0, 0], True,
                                   seed, extra=dict.fromkeys(SUMMARY_KEYS, 1.0))
        return out
    return score_together, played


def test_the_rule_is_tuned_on_the_evaluation_seeds_only(monkeypatch, tmp_path):
    from stages.report import controls
    a, b = "rule: TEXT in [3, 6], else MIXED", "rule: TEXT in [3.5, 5.5], else PHI"
    # a is the best member on the evaluation seeds, b would be on the held-out ones
    score, played = fake_score({(a, 100): 5.0, (b, 100): 1.0, (a, 900): 1.0, (b, 900): 9.0})
    monkeypatch.setattr(controls, "score_together", score)
    run = RL_PRESETS["tiny"]["run"].replace(eval_episodes=4, eval_seed=100, heldout_seed=900)
    evaluation, heldout = controls.all_controls(None, EnvConfig(), run, tmp_path / "base.pt", "x", None,
                                                quiet=True)
    assert evaluation[1]["tuned rule"]["extra"]["rule"] == a and evaluation[1]["tuned rule"]["mean_reward"] == 5.0
    assert heldout[1]["tuned rule"]["extra"]["rule"] == a and heldout[1]["tuned rule"]["mean_reward"] == 1.0
    assert [name for name, seed in played if seed == 900 and name.startswith("rule: TEXT in")] == [a]  # b never there
    switch = evaluation[1]["tuned time switch"]["extra"]["rule"]
    assert switch.endswith(f"then {a.removeprefix('rule: ')}")  # the time switch is built on the tuned rule
    assert [name for name, seed in played if seed == 900 and "until" in name] == [switch]


def test_the_held_out_seeds_play_the_best_constant_even_where_random_outranks_it(monkeypatch, tmp_path):
    """The studies compare the agent with the best constant policy on the held-out seeds; where random
    beats every constant on the evaluation seeds (Tiny Shakespeare did), that constant is played too,
    and stored controls from a run that did not play it are played again."""
    from stages.report import controls
    means = {("random", 100): 3.0, ("always TEXT", 100): 2.0, ("always PHI", 100): -5.0, ("always MIXED", 100): 1.0}
    score, played = fake_score(means)
    monkeypatch.setattr(controls, "score_together", score)
    run = RL_PRESETS["tiny"]["run"].replace(eval_episodes=4, eval_seed=100, heldout_seed=900)
    evaluation, heldout = controls.all_controls(None, EnvConfig(), run, tmp_path / "base.pt", "x", None, quiet=True)
    assert set(heldout[0]) == {"always PHI", "random", "always TEXT"}  # worst, best, best constant
    assert "always MIXED" not in {name for name, seed in played if seed == 900}

    older = (evaluation, ({k: v for k, v in heldout[0].items() if k != "always TEXT"}, heldout[1]))
    stored = SimpleNamespace(stored_controls=lambda env_cfg, run: older)  # a run that played only the two ends
    again = controls.all_controls(None, EnvConfig(), run, tmp_path / "base2.pt", "y", stored, quiet=True)[1]
    assert "always TEXT" in again[0]
    means[("always TEXT", 100)] = 4.0  # a constant is the best: two played, as before
    assert controls.heldout_fixed(controls.all_controls(None, EnvConfig(), run, tmp_path / "b3.pt", "z", None,
                                                        quiet=True)[0][0]) == ("always PHI", "always TEXT")


def test_the_held_out_seeds_play_the_constants_chosen_on_the_evaluation_seeds(monkeypatch, tmp_path):
    from stages.report import controls
    # on the evaluation seeds PHI is the worst constant and MIXED the best; on the held-out ones TEXT would be
    score, played = fake_score({("always PHI", 100): -5.0, ("always MIXED", 100): 4.0, ("always PHI", 900): -5.0,
                                ("always MIXED", 900): 2.0, ("always TEXT", 900): 9.0})
    monkeypatch.setattr(controls, "score_together", score)
    run = RL_PRESETS["tiny"]["run"].replace(eval_episodes=2, eval_seed=100, heldout_seed=900)
    evaluation, heldout = controls.all_controls(None, EnvConfig(), run, tmp_path / "base.pt", "x", None, quiet=True)
    assert len(evaluation[0]) == 4 and list(heldout[0]) == ["always PHI", "always MIXED"]
    assert [name for name, seed in played if seed == 900 and name in evaluation[0]] == ["always PHI", "always MIXED"]
    verdict = Report([{**heldout[0]["always MIXED"], "step": 1}], heldout={
        "step": 1, "agent": heldout[0]["always MIXED"], "controls": heldout[0]}).build()["heldout"]["verdict"]
    assert verdict["best_control"] == "always MIXED"  # not TEXT, best on the held-out seeds but never chosen


def test_control_evaluations_are_played_once_per_base_and_environment(monkeypatch, tmp_path):
    from stages.report import controls
    score, played = fake_score({})
    monkeypatch.setattr(controls, "score_together", score)
    run = RL_PRESETS["tiny"]["run"].replace(eval_episodes=2, eval_seed=100, heldout_seed=900)

    def evaluate(identity="abc", env=EnvConfig()):
        played.clear()
        controls.all_controls(None, env, run, tmp_path / "base.pt", identity, None, quiet=True)
        return len(played)
    # 4 constant, 6 rule members, the bandit and 4 time switches; then the worst and the best constant,
    # the tuned rule, the bandit, the tuned switch (fewer than 10 episodes: the race is the full grid)
    assert evaluate() == 15 + 5
    assert evaluate() == 0       # nothing changed: nothing replayed
    assert evaluate(identity="another model") == 20
    assert evaluate(env=EnvConfig(max_steps=7)) == 20
    assert len(list((tmp_path / "cache" / "controls").glob("*.json"))) == 3 * 20


def test_constants_ride_along_the_later_families_rounds_and_keep_their_whole_sample(monkeypatch, tmp_path):
    from stages.report import controls
    score, played = fake_score({("always TEXT", 100): 3.0, ("always TEXT", 105): 5.0})
    monkeypatch.setattr(controls, "score_together", score)
    run = RL_PRESETS["tiny"]["run"].replace(eval_episodes=10, eval_seed=100, heldout_seed=900)  # two rounds of 5
    evaluation, heldout = controls.all_controls(None, EnvConfig(), run, tmp_path / "base.pt", "x", None, quiet=True)
    text = evaluation[0]["always TEXT"]
    assert text["n_episodes"] == 10 and text["seed"] == 100 and text["mean_reward"] == pytest.approx(4.0)
    # on the evaluation seeds the constants and the bandit play each round (seeds 100 and 105) beside
    # the time switches, never beside the rule's members (raced first: the switches are built on the winner)
    for name in [*evaluation[0], "bandit"]:
        assert [seed for who, seed in played if who == name and seed < 900] == [100, 105]
    order = [who for who, seed in played if seed < 900]
    last_rule = max(i for i, who in enumerate(order) if who.startswith("rule: ") and "until" not in who)
    assert order.index("always TEXT") > last_rule and order.index("bandit") > last_rule
    switches = [i for i, who in enumerate(order) if "until" in who]
    assert min(switches) > last_rule and len(switches) == 2 * 4  # 4 switches, both rounds (none behind)
    assert [seed for who, seed in played if who == "bandit"] == [100, 105, 900]  # held-out: one round of 10


# entries an older version (or a crash) could have left: each is played again and its file rewritten
WRONG_SHAPES = {
    "cut short": lambda d: json.dumps(d)[:40],
    "a list": lambda d: json.dumps(list(d.values())),
    "no mean_reward": lambda d: json.dumps({k: v for k, v in d.items() if k != "mean_reward"}),
    "mean_reward a string": lambda d: json.dumps({**d, "mean_reward": str(d["mean_reward"])}),
    "episode_returns a number": lambda d: json.dumps({**d, "episode_returns": d["mean_reward"]}),
    "extra a list": lambda d: json.dumps({**d, "extra": []}),
    "a statistic a string": lambda d: json.dumps({**d, "extra": {**d["extra"], "phi_mean": "6.5"}}),
    "another seed": lambda d: json.dumps({**d, "seed": d["seed"] + 1}),
    "null": lambda d: "null",
}


@pytest.mark.parametrize("shape", sorted(WRONG_SHAPES))
def test_a_control_cache_entry_of_another_shape_is_played_again(monkeypatch, tmp_path, shape):
    from stages.report import controls
    a, b = "rule: TEXT in [3, 6], else MIXED", "rule: TEXT in [3.5, 5.5], else PHI"
    score, played = fake_score({(a, 100): 5.0, (b, 100): 1.0, (a, 900): 2.0, ("always PHI", 100): 3.0})
    monkeypatch.setattr(controls, "score_together", score)
    run = RL_PRESETS["tiny"]["run"].replace(eval_episodes=2, eval_seed=100, heldout_seed=900)
    cfg = EnvConfig()
    clean = controls.all_controls(None, cfg, run, tmp_path / "base.pt", "x", None, quiet=True)
    files = sorted((tmp_path / "cache" / "controls").glob("*.json"))
    kept = {f: f.read_text() for f in files}
    for f in files:
        f.write_text(WRONG_SHAPES[shape](json.loads(kept[f])))
    played.clear()
    assert controls.all_controls(None, cfg, run, tmp_path / "base.pt", "x", None, quiet=True) == clean
    assert len(played) == len(files) == 20  # every entry played again ...
    assert {f: f.read_text() for f in files} == kept  # ... and rewritten whole
    assert not list(files[0].parent.glob(".*.tmp"))


def result(returns, seed=0, **extra):
    return EvalResult(list(returns), [1] * len(returns), [1, 0, 0], True, seed, extra=extra).to_dict()


def test_the_paired_verdict_uses_the_same_episodes():
    rule = result([1.0, 2.0, 3.0, 4.0, 5.0], detail="TEXT in [3, 6], else MIXED")
    assert paired_verdict(result([2.0, 3.1, 3.9, 5.2, 6.0]), {"tuned rule": rule})["verdict"] == "beats"
    assert paired_verdict(result([0.0, 1.1, 1.9, 3.2, 4.0]), {"tuned rule": rule})["verdict"] == "is worse than"
    tie = paired_verdict(result([1.5, 1.5, 3.5, 3.5, 5.0]), {"tuned rule": rule})
    assert tie["verdict"] == "is no better than" and tie["wins"] == 2 and "TEXT in [3, 6]" in tie["text"]
    assert paired_verdict(result([1.0] * 5, seed=1), {"tuned rule": rule}) is None  # other seeds: no pairing


def test_the_report_headline_leads_with_the_adaptive_verdict():
    evals = [{**result([1.0, 2.0, 3.0]), "step": 10}]
    constants = {"always TEXT": result([0.0, 0.0, 1.0]), "random": result([-1.0, -2.0, -1.0])}
    adaptive = {"tuned rule": result([1.5, 2.5, 3.5], detail="TEXT in [3, 6], else MIXED"),
                "bandit": result([0.0, 0.5, 0.0], detail="Exp3.S")}
    heldout = {"step": 10, "agent": result([1.0, 2.0, 3.0], seed=5), "controls": constants,
               "adaptive": {k: {**v, "seed": 5} for k, v in adaptive.items()}}
    report = Report(evals, constants, None, heldout=heldout, adaptive=adaptive)
    built = report.build()
    assert [c["name"] for c in built["controls"]] == ["always TEXT", "random", "tuned rule", "bandit"]
    assert built["heldout"]["vs_adaptive"]["verdict"] == "is worse than"  # -0.5 on every episode
    md = report.markdown(built)
    first = md.split("\n")[2]  # the report's first screen: the held-out verdict, the adaptive one first
    assert first.startswith("**Verdict on the held-out seeds")
    assert first.index("against the best adaptive control it is worse than the tuned rule") < first.index(
        "against the fixed controls")
    assert "tuned rule (TEXT in [3, 6], else MIXED)" in md


def test_iqm_on_known_cases():
    assert iqm([1, 2, 3, 4, 100, 5, 6, 7]) == 4.5  # 1, 2 and 7, 100 cut
    assert iqm(np.arange(10)) == 4.5               # 2 cut from each end
    assert iqm([3.0]) == 3.0


def test_the_bootstrap_interval_covers_the_true_iqm_at_about_the_nominal_rate():
    """Scores = training-run effect + episode effect + noise, all symmetric about 0: the true IQM is 0.
    Two-way resampling covers it at about 92 % (measured 0.90-0.92, 300 trials) for a 95 % interval."""
    rng = np.random.default_rng(0)
    hits = 0
    for trial in range(200):
        scores = 0.5 * rng.normal(size=(5, 1)) + rng.normal(size=(1, 30)) + 0.5 * rng.normal(size=(5, 30))
        ci = bootstrap_interval(scores, n_boot=500, seed=trial)
        hits += ci["low"] <= 0 <= ci["high"]
    assert 0.85 <= hits / 200 <= 0.99, hits


def test_probability_of_improvement():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 5.0, 1.0]])
    y = np.array([0.5, 2.0, 4.0, 2.0])
    ind = improvement_indicator(x, y)
    assert ind.mean() == pytest.approx((1 + 0.5 + 0 + 1 + 0 + 0.5 + 1 + 0) / 8)
    ci = bootstrap_interval(ind, "mean", n_boot=300)
    assert ci["low"] <= ci["value"] <= ci["high"]


def test_stored_controls_count_only_when_tuned_over_the_current_families(monkeypatch, tmp_path):
    import copy

    from env import step_size_modes
    from stages.report import controls
    score, _ = fake_score({})
    monkeypatch.setattr(controls, "score_together", score)
    cfg = EnvConfig(max_steps=8, modes=step_size_modes({"TEXT": (1, 0), "MIXED": (0.5, 0.5)}, (0.5, 1.0)))
    run = RL_PRESETS["tiny"]["run"].replace(eval_episodes=2, eval_seed=100, heldout_seed=900)
    evaluation, _ = controls.all_controls(None, cfg, run, tmp_path / "base.pt", "x", None, quiet=True)
    adaptive = evaluation[1]
    assert list(adaptive) == ["tuned rule", "tuned time switch", "tuned step-size decay", "tuned plateau decay", "bandit"]
    assert controls.tuned_over_current_families(adaptive, cfg)
    older = copy.deepcopy(adaptive)  # recorded before the decay family held the TEXT-only decays
    older["tuned step-size decay"]["extra"]["members"] = {
        m: v for m, v in adaptive["tuned step-size decay"]["extra"]["members"].items() if "TEXT only" not in m}
    assert not controls.tuned_over_current_families(older, cfg)
    assert not controls.tuned_over_current_families({k: v for k, v in adaptive.items() if "decay" not in k}, cfg)
    # recorded before the plateau family existed: the run plays it
    assert not controls.tuned_over_current_families({k: v for k, v in adaptive.items() if "plateau" not in k}, cfg)

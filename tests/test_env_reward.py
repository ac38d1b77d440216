"""Reward v2 term by term at the edges of its bands, the config, and the CI helper (no model needed)."""
import math

import pytest

from common.stats import summarize, t975
from env import EnvConfig, EnvError, RewardConfig

CFG = RewardConfig()


def m(phi=4.5, c=0.5, ppl=50.0, mem=0.0):
    return {"phi": phi, "consciousness": c, "ppl": ppl, "memory_util": mem}


def terms(cur, prev=None):
    return CFG(prev if prev is not None else cur, cur)[1]


@pytest.mark.parametrize("phi, expected", [(3.0, 0.1), (6.0, 0.1), (4.5, 0.1), (2.0, -0.3), (0.0, -0.9),
                                           (6.5, -0.3), (10.0, -2.4)])
def test_phi_band(phi, expected):
    assert terms(m(phi=phi))["phi_band"] == pytest.approx(expected)


@pytest.mark.parametrize("ppl, expected", [(10.0, 0.0), (200.0, 0.0), (50.0, 0.0), (5.0, -1.0), (1.0, -1.8),
                                           (300.0, -0.3), (1200.0, -3.0)])
def test_perplexity_band(ppl, expected):
    assert terms(m(ppl=ppl))["ppl_band"] == pytest.approx(expected)


@pytest.mark.parametrize("c, expected", [(0.3, 0.05), (0.7, 0.05), (0.5, 0.05), (0.1, -0.04), (0.0, -0.06),
                                         (0.9, -0.04), (1.0, -0.06)])
def test_consciousness_band(c, expected):
    assert terms(m(c=c))["c_band"] == pytest.approx(expected)


@pytest.mark.parametrize("d_phi, jump", [(0.0, 0.0), (1.0, 0.0), (-1.0, 0.0), (1.5, -0.4), (-2.0, -0.8)])
def test_phi_jump_penalty_only_beyond_one(d_phi, jump):
    t = CFG(m(phi=4.0), m(phi=4.0 + d_phi))[1]
    assert t["jump"] == pytest.approx(jump)
    assert t["delta_phi"] == pytest.approx(0.5 * d_phi)


def test_deltas_perplexity_gain_and_memory():
    t = CFG(m(c=0.4, ppl=40.0), m(c=0.5, ppl=30.0, mem=0.5))[1]
    assert t["delta_c"] == pytest.approx(0.1)
    assert t["ppl_gain"] == pytest.approx(0.1 * 10 / 40)
    assert t["memory"] == pytest.approx(-0.1)
    # the denominator is max(P_prev, 1): a perplexity below 1 cannot blow the term up
    assert CFG(m(ppl=0.5), m(ppl=0.25))[1]["ppl_gain"] == pytest.approx(0.1 * 0.25)
    assert CFG(m(ppl=30.0), m(ppl=40.0))[1]["ppl_gain"] < 0  # getting worse costs


def test_reward_is_the_sum_of_terms_and_zero_without_a_previous_measurement():
    prev, cur = m(phi=6.8, c=0.2, ppl=8.0, mem=0.3), m(phi=5.2, c=0.75, ppl=7.0, mem=0.4)
    r, t = CFG(prev, cur)
    assert r == pytest.approx(sum(t.values()))
    expected = (0.55 + 0.5 * -1.6 + 0.1 * 1 / 8 - 0.2 * 0.4 - 0.8 * 0.6 + 0.1 - 2 * 3 / 10 - 0.2 * 0.05)
    assert r == pytest.approx(expected)
    r0, t0 = CFG(None, cur)
    assert r0 == 0.0 and set(t0.values()) == {0.0}


def test_every_constant_is_configurable():
    cfg = RewardConfig(phi_low=4.0, phi_high=5.0, w_phi_above=1.0, phi_bonus=0.0, ppl_low=2.0, w_mem=0.0)
    t = cfg(m(phi=5.5, ppl=3.0, mem=1.0), m(phi=5.5, ppl=3.0, mem=1.0))[1]
    assert t["phi_band"] == pytest.approx(-0.5) and t["ppl_band"] == 0.0 and t["memory"] == 0.0
    assert cfg(m(phi=4.5), m(phi=4.5))[1]["phi_band"] == 0.0


def test_configs_round_trip_and_reject_bad_values():
    cfg = EnvConfig(max_steps=7, reward=RewardConfig(w_dc=2.0))
    again = EnvConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.reward.w_dc == 2.0
    assert cfg.replace(inner_steps=2).inner_steps == 2
    for bad in ({"max_steps": 0}, {"inner_lr": -1.0}, {"modes": [("X", 0.0, 0.0)]}, {"no_such_key": 1}):
        with pytest.raises(EnvError):
            EnvConfig.from_dict({**EnvConfig().to_dict(), **bad})
    with pytest.raises(EnvError, match="phi_low"):
        RewardConfig(phi_low=7.0)


def test_confidence_interval_uses_student_t():
    assert t975(1) == 12.706 and t975(19) == 2.093
    assert t975(35) == pytest.approx(2.030, abs=2e-3) and t975(10_000) == pytest.approx(1.960, abs=2e-3)
    s = summarize([1.0, 2.0, 3.0, 4.0])
    half = 3.182 * math.sqrt(5 / 3) / 2
    assert s["mean"] == 2.5 and s["ci95_low"] == pytest.approx(2.5 - half) and s["ci95_high"] == pytest.approx(2.5 + half)
    assert summarize([3.0])["ci95_low"] == 3.0

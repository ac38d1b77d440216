"""Policies played side by side (common.episodes.play_together): the episodes each would play
alone, the steps they agree on paid once; and families raced side by side."""
import numpy as np
import pytest

from common.episodes import play, play_together
from common.racing import race, race_families


@pytest.fixture
def tiny_env(base_dir, one_torch_thread):
    from env import EnvConfig, TextSchedulingEnv, load_base
    cfg = EnvConfig(max_steps=6, inner_steps=1, inner_batch_size=2, seq_len=32, measurement_batch_size=2)
    return TextSchedulingEnv(load_base(base_dir / "base.pt", cfg), cfg), cfg


def counting(env):
    """`env` with its steps counted in env.steps_taken."""
    step, env.steps_taken = env.step, 0

    def counted(action):
        env.steps_taken += 1
        return step(action)
    env.step = counted
    return env


def policies(cfg):
    from common.policies import control_policies
    from env import bandit, rule_family, switch_family
    rules = rule_family(cfg)
    rule = next(iter(rules.values()))
    return {**control_policies(len(cfg.modes), cfg.mode_names), **rules, **switch_family(cfg, rule),
            "bandit": bandit(cfg)}


def test_side_by_side_episodes_are_those_each_plays_alone(tiny_env):
    env, cfg = tiny_env
    together = play_together(counting(env), list(policies(cfg).values()), seed=7)
    shared_steps = env.steps_taken
    for (name, policy), ep in zip(policies(cfg).items(), together):  # fresh policies: the bandit restarts
        alone = play(env, policy, seed=7)
        assert ep.actions == alone.actions, name
        assert ep.rewards == alone.rewards, name  # exactly: the same arithmetic from the same state
        assert [i["phi"] for i in ep.infos] == [i["phi"] for i in alone.infos], name
    lengths = sum(ep.length for ep in together)
    assert shared_steps < lengths  # the time switch's TEXT start is "always TEXT"'s: paid once
    assert sum(ep.cost for ep in together) == pytest.approx(shared_steps)
    assert all(0 < ep.cost <= ep.length for ep in together)


def test_one_policy_pays_its_length_and_never_saves_the_state(tiny_env):
    env, cfg = tiny_env
    env.get_state = None  # an environment without snapshots can still play one policy at a time
    ep = play(env, policies(cfg)["always TEXT"], seed=3)
    assert ep.cost == ep.length == cfg.max_steps


def test_score_together_matches_score_and_says_what_it_paid(tiny_env):
    from stages.report.scoring import join_evaluations, paid, score, score_together
    env, cfg = tiny_env
    chosen = {k: v for k, v in policies(cfg).items() if k in ("always TEXT", "always MIXED", "random")}
    together = {k: r.to_dict() for k, r in score_together(env, chosen, cfg, 3, 40).items()}
    for name, policy in policies(cfg).items():
        if name in chosen:
            alone = score(env, policy, cfg, 3, 40, name=name).to_dict()
            assert together[name]["episode_returns"] == alone["episode_returns"]
            assert paid(alone) == sum(alone["episode_lengths"]) == 3 * cfg.max_steps
    assert sum(paid(r) for r in together.values()) <= 3 * 3 * cfg.max_steps
    parts = [score(env, chosen["random"], cfg, 1, 40).to_dict(), score(env, chosen["random"], cfg, 2, 41).to_dict()]
    assert paid(join_evaluations(parts)) == 3 * cfg.max_steps


def recorded(effects, n=30, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    episode = rng.normal(0, 8.0, n)
    return {f"m{i}": list(episode + e + rng.normal(0, 1.0, n)) for i, e in enumerate(effects)}


def test_families_raced_side_by_side_decide_as_raced_alone():
    a, b = recorded([0.0, -3.0, -0.2, -6.0], seed=1), recorded([1.0, -4.0, 0.5], seed=2)
    b = {f"b{k}": v for k, v in b.items()}
    rounds, calls = [], []

    def play(names, start, count):
        calls.append(list(names))
        rounds.append((start, count))
        return {m: {**a, **b}[m][start:start + count] for m in names}
    both = race_families({"a": list(a), "b": list(b)}, play, 30)
    for family, returns in (("a", a), ("b", b)):
        alone = race(list(returns), lambda ms, s, c, r=returns: {m: r[m][s:s + c] for m in ms}, 30)
        assert (both[family].chosen, both[family].dropped, both[family].returns) == \
               (alone.chosen, alone.dropped, alone.returns)
    assert [s for s, _ in rounds] == [0, 5, 10, 15, 20, 25]  # one call per round, every family in it
    assert all(len(c) == len(set(c)) for c in calls)


def test_a_member_two_families_share_is_played_once_per_round():
    returns = recorded([0.0, -0.1, -8.0])
    calls = []

    def play(names, start, count):
        calls.append(list(names))
        return {m: returns[m][start:start + count] for m in names}
    won = race_families({"x": ["m0", "m2"], "y": ["m0", "m1"]}, play, 30)
    assert all(c.count("m0") == 1 for c in calls)
    assert won["x"].dropped == {"m2": 5} and len(won["x"].returns["m2"]) == 5
    with pytest.raises(ValueError, match="at least one member"):
        race_families({"x": []}, play, 30)

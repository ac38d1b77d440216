"""Racing a family of controls (common/racing.py) and joining evaluations of consecutive seeds."""
import numpy as np
import pytest

from common.racing import behind, race, race_rounds
from common.stats import summarize


def recorded(effects, n=30, shared=8.0, own=1.0, seed=0) -> dict:
    """Members' returns on the same n episodes: a large part every member shares (the episode's
    data), the member's effect, and a small part of its own."""
    rng = np.random.default_rng(seed)
    episode = rng.normal(0, shared, n)
    return {f"m{i}": list(episode + e + rng.normal(0, own, n)) for i, e in enumerate(effects)}


def replay(returns: dict, calls: list | None = None):
    """A `play` over recorded returns; `calls` logs each (member, start, count)."""
    def play(members, start, count):
        if calls is not None:
            calls.extend((m, start, count) for m in members)
        return {m: returns[m][start:start + count] for m in members}
    return play


def test_rounds_are_equal_slices_with_enough_episodes_each():
    assert race_rounds(30) == (5, 10, 15, 20, 25, 30)
    assert race_rounds(30, 3) == (10, 20, 30)
    assert race_rounds(12) == (6, 12)
    assert race_rounds(2) == (2,)  # too few to drop anyone: the full grid
    with pytest.raises(ValueError):
        race_rounds(0)
    with pytest.raises(ValueError, match="rounds must increase"):
        race(["a"], replay({"a": [1.0] * 4}), 4, rounds=(2, 3))


def test_behind_means_the_paired_interval_lies_below_zero():
    leader = [10.0, 0.0, 5.0, 7.0, 3.0]
    assert behind([x - 1.0 + 0.1 * i for i, x in enumerate(leader)], leader)  # always ~1 behind, little spread
    assert not behind([x - 1.0 + (3 if i % 2 else -3) for i, x in enumerate(leader)], leader)  # behind within noise
    d = [-1.0, -0.2, -1.8, -0.5, -1.5]
    assert behind([x + y for x, y in zip(leader, d)], leader) == (summarize(d)["ci95_high"] < 0)


def test_members_within_noise_both_play_to_the_end():
    returns = recorded([0.0, 0.1])  # 0.1 apart; their paired difference's spread is ~1.4
    won = race(list(returns), replay(returns), 30)
    assert won.dropped == {}
    assert {m: len(r) for m, r in won.returns.items()} == {"m0": 30, "m1": 30}
    assert won.chosen == max(returns, key=lambda m: np.mean(returns[m]))


def test_a_member_is_dropped_only_when_clearly_behind_the_leader_of_its_round():
    effects = [0.0, -0.3, -1.0, -3.0, -5.0, 0.2]
    returns, calls = recorded(effects), []
    won = race(list(returns), replay(returns, calls), 30, rounds=(10, 20, 30))
    assert {"m3", "m4"} <= set(won.dropped) and "m5" not in won.dropped and "m0" not in won.dropped
    # replay the race from its log: at each round's end, the members dropped there were behind the
    # leader on every episode played so far, and those kept were not
    alive = list(returns)
    for end in (10, 20):
        leader = max(alive, key=lambda m: np.mean(returns[m][:end]))
        for m in alive:
            assert (won.dropped.get(m) == end) == (m != leader and behind(returns[m][:end], returns[leader][:end]))
        alive = [m for m in alive if won.dropped.get(m) != end]
    # every episode a member played was played once, in order, and a dropped member stopped
    for m in returns:
        starts = [(s, c) for who, s, c in calls if who == m]
        assert [s for s, _ in starts] == list(np.cumsum([0] + [c for _, c in starts])[:-1])
        assert sum(c for _, c in starts) == won.dropped.get(m, 30) == len(won.returns[m])
    assert won.episodes < won.full_grid() == 6 * 30


def test_the_race_picks_the_full_grids_member_on_recorded_families():
    # 200 families of 6 members, effects spread as the demo's rule members are (a few within noise
    # of the best, the rest behind): the race must agree with the full grid's best mean
    agree, spent = 0, 0
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        returns = recorded(list(rng.normal(0, 1.5, 6)), seed=seed)
        won = race(list(returns), replay(returns), 30)
        agree += won.chosen == max(returns, key=lambda m: np.mean(returns[m]))
        spent += won.episodes
    assert agree >= 196  # a true best dropped by chance: ~2.5 % per comparison at most
    assert spent < 0.8 * 200 * 180  # and the race saved episodes


def test_joined_evaluations_of_consecutive_seeds_equal_one_evaluation(base_dir, one_torch_thread):
    from common.policies import control_policies
    from env import EnvConfig, TextSchedulingEnv, load_base
    from stages.report.scoring import join_evaluations, score
    cfg = EnvConfig(max_steps=3, inner_steps=1, inner_batch_size=2, seq_len=32, measurement_batch_size=2)
    env = TextSchedulingEnv(load_base(base_dir / "base.pt", cfg), cfg)
    policy = control_policies(len(cfg.modes), cfg.mode_names)["random"]
    whole = score(env, policy, cfg, 5, 40).to_dict()
    joined = join_evaluations([score(env, policy, cfg, 2, 40).to_dict(), score(env, policy, cfg, 3, 42).to_dict()])
    for key in ("episode_returns", "episode_lengths", "action_counts", "seed", "n_episodes"):
        assert joined[key] == whole[key]
    assert joined["extra"] == pytest.approx(whole["extra"], rel=1e-9)
    assert joined["mean_reward"] == pytest.approx(whole["mean_reward"], rel=1e-12)
    with pytest.raises(ValueError, match="not consecutive"):
        join_evaluations([score(env, policy, cfg, 2, 40).to_dict(), score(env, policy, cfg, 2, 43).to_dict()])


def test_racing_check_reads_a_played_grid_and_agrees_with_it(base_dir, tmp_path, capsys):
    import shutil
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import racing_check
    base = shutil.copytree(base_dir, tmp_path / "base") / "base-step20.pt"
    with pytest.raises(SystemExit, match="run with --play"):
        racing_check.main(["--preset", "tiny", "--base", str(base)])  # nothing recorded yet
    assert racing_check.main(["--preset", "tiny", "--base", str(base), "--play"]) == 0
    assert racing_check.main(["--preset", "tiny", "--base", str(base)]) == 0  # now from the cache alone
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("controls' decisions: full grid") and out[-1].endswith("the same: True")
    assert sum("tuned time switch: 3 members" in line for line in out) == 2


def test_the_evaluation_rules_replay_which_episodes_they_play():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import eval_rule
    from ppo import EvalResult
    returns = recorded([0.0, 2.0, -6.0, 2.5])  # four checkpoints in order: the third clearly worse
    evals = [EvalResult(returns[f"m{i}"], [25] * 30, [30, 0], True, 10_000, step=1024 * (i + 1)).to_dict()
             for i in range(4)]
    kept, spent = eval_rule.replay(evals, "all")
    assert kept == evals and spent == 120
    kept, spent = eval_rule.replay(evals, "every 2nd")
    assert [e["step"] for e in kept] == [2048, 4096] and spent == 60
    kept, spent = eval_rule.replay(evals, "screen", screen=10)
    assert [e["step"] for e in kept] == [1024, 2048, 4096] and spent == 100  # the third stopped after 10
    assert eval_rule.truncated(evals[0], 10)["n_episodes"] == 10
    controls = {name: EvalResult(list(np.array(returns["m0"]) + shift), [25] * 30, [30, 0], True, 10_000).to_dict()
                for name, shift in (("always A", -10.0), ("always B", 0.0))}
    assert eval_rule.recommended(kept, controls)["step"] in (2048, 4096)


def test_the_report_says_what_tuning_the_families_cost(rl_dir):
    notes = (rl_dir / "report.md").read_text().split("## The run")[1]
    # tiny: 2 evaluation episodes, one round: the race is the full grid (6 rule members + 3 switches, 2 episodes each)
    assert "raced their members" in notes and "18 episodes where the full grid plays 18; 0 member(s) dropped early" in notes


def test_quickstart_cost_counts_the_rl_stages_steps_by_use(tmp_path, capsys):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import quickstart_cost
    out = tmp_path / "qs"
    assert quickstart_cost.main(["--out", str(out), "--", "--preset", "tiny"]) == 0
    spent = quickstart_cost.steps_by_use(out, out / "cache" / "controls")
    assert spent["PPO training"] == 64 and spent["held-out agent"] == 2 * 6
    assert spent["checkpoint evaluations"] == 2 * 2 * 6  # two evaluations of 2 episodes of 6 decisions
    # 14 controls on the evaluation seeds (too few episodes to race: the full grid) and 5 on the held-out
    # ones, 2 episodes of 6 decisions each; side by side they pay fewer steps (the time switches' TEXT start)
    import json
    played = [json.loads(f.read_text()) for f in (out / "cache" / "controls").glob("*.json")]
    assert sum(sum(c["episode_lengths"]) for c in played) == 19 * 2 * 6
    assert 0 < spent["control policies"] < 19 * 2 * 6
    printed = capsys.readouterr().out
    assert "| **all** |" in printed and "environment steps" in printed

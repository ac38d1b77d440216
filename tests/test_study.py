"""bench/rl_study.py at the tiny preset: a base, two agents, the controls played once, the aggregate
table; a second call replays nothing."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_study_trains_n_agents_plays_the_controls_once_and_resumes_without_replaying(tmp_path, capfd):
    sys.path.insert(0, str(ROOT))
    from bench import rl_study
    out = tmp_path / "study"
    assert rl_study.main(["--seeds", "2", "--preset", "tiny", "--out", str(out)]) == 0
    first = capfd.readouterr().out
    study = json.loads((out / "study.json").read_text())
    assert [r["seed"] for r in study["rows"]] == [1, 2] and study["episodes"] == 2
    assert 0 <= study["p_improvement"]["low"] <= study["p_improvement"]["value"] <= study["p_improvement"]["high"] <= 1
    assert set(study["control_iqm"]) == {"best constant", "tuned rule", "tuned time switch", "bandit"}
    for row in study["rows"]:  # the agent against every family's control, paired on the same episodes
        report = json.loads((out / f"seed-{row['seed']}" / "report.json").read_text())
        on_eval = {c["name"]: c["mean_reward"] for c in report["controls"] if c["name"].startswith("always ")}
        assert row["vs"]["best constant"]["detail"] == max(on_eval, key=on_eval.get)  # chosen on evaluation seeds
        vs = row["vs"]["tuned time switch"]
        assert vs["diff_low"] <= vs["diff"] <= vs["diff_high"] and 0 <= vs["wins"] <= 2
        assert row["beats_every_control"] == all(v["diff_low"] > 0 for v in row["vs"].values())
    assert f"P(agent > {study['best_control']})" in (out / "study.md").read_text()
    assert "| 64 | " in (out / "study.md").read_text()  # each seed's evaluation curve, step by step
    assert [step for step, _ in study["curves"]["1"]] == [32, 64]
    # on the evaluation seeds: constants 4 + rule members 6 + bandit, then the time switches (k = 1, 2, 4 of 6
    # decisions); on the held-out ones the worst and the best constant + the bandit, the tuned rule, the tuned
    # switch: each once
    assert len(list((out / "base" / "cache" / "controls").glob("*.json"))) == 11 + 3 + 3 + 1 + 1
    for what in ("tuned rule on seeds 10000", "later families and constants on seeds 10000",
                 "held-out controls on seeds 20000"):
        assert first.count(what) == 1, what
    # the study's cost: each piece's wall time, the steps by use (the controls once, though both seeds read them)
    assert set(study["speed"]["wall_s"]) == {"base", "seed-1", "seed-2"}
    steps = study["speed"]["env_steps"]
    assert steps["PPO training"] == 2 * 64 and steps["held-out agent"] == 2 * 2 * 6
    assert steps["control policies"] == round(sum(json.loads(f.read_text())["extra"]["env_steps"] for f in
                                                  (out / "base" / "cache" / "controls").glob("*.json")))
    assert "environment steps" in (out / "study.md").read_text()
    timing = (out / "timing.json").read_text()
    assert rl_study.main(["--seeds", "2", "--preset", "tiny", "--out", str(out)]) == 0
    assert "train.py" not in capfd.readouterr().out  # no stage ran again
    assert (out / "timing.json").read_text() == timing
    # a PPO lever after --: only the new seed trains, with the flag, and the table says which flags
    assert rl_study.main(["--seeds", "3", "--preset", "tiny", "--out", str(out), "--", "--learning-rate", "1e-4"]) == 0
    printed = capfd.readouterr().out
    assert printed.count("train.py --stage rl") == 1 and "--seed 3 --learning-rate 1e-4" in printed
    import torch
    assert torch.load(out / "seed-3" / "64.pt", weights_only=True)["config"]["learning_rate"] == 1e-4
    assert "tiny preset (--learning-rate 1e-4)" in (out / "study.md").read_text()


def test_a_corpus_env_setting_joins_the_users_env_flags():
    """argparse keeps only the last --env: a second one would silently drop the corpus's setting."""
    sys.path.insert(0, str(ROOT))
    from bench.rl_study import Corpus
    c = Corpus(demo_env=("inner_lr=3e-4",))
    assert c.rl_flags("demo", []) == ["--env", "inner_lr=3e-4"]
    assert c.rl_flags("demo", ["--gamma", "1", "--env", "max_steps=5"]) == [
        "--gamma", "1", "--env", "inner_lr=3e-4", "max_steps=5"]
    assert c.rl_flags("tiny", ["--gamma", "1"]) == ["--gamma", "1"]  # measured at demo scale only
    assert Corpus().rl_flags("demo", ["--gamma", "1"]) == ["--gamma", "1"]


def test_the_best_constant_is_the_best_always_policy_and_an_older_report_without_it_is_refused():
    """Random can outrank every constant on the evaluation seeds; the table's "best constant" is still
    the best `always` policy, and a report whose held-out seeds did not play it is refused in one line."""
    sys.path.insert(0, str(ROOT))
    from bench.rl_study import tuned_controls
    means = {"random": 3.0, "always TEXT": 2.0, "always PHI": -5.0}
    played = {"random": [3.0, 3.0], "always TEXT": [1.0, 2.0], "always PHI": [-5.0, -4.0]}
    report = {"title": "RL report: runs/seed-1", "controls": [{"name": n, "mean_reward": m} for n, m in means.items()],
              "heldout": {"source": {"controls": {n: {"episode_returns": r} for n, r in played.items()},
                                     "adaptive": {}}}}
    assert tuned_controls(report) == {"best constant": ("always TEXT", [1.0, 2.0])}
    del report["heldout"]["source"]["controls"]["always TEXT"]
    with pytest.raises(SystemExit, match="runs/seed-1's report did not play always TEXT .*--ckpt-dir runs/seed-1"):
        tuned_controls(report)

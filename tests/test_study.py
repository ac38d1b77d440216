"""bench/rl_study.py at the tiny preset: a base, two agents, the controls played once, the aggregate
table; a second call replays nothing."""
import json
import sys
from pathlib import Path

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
    assert "P(agent > rule)" in (out / "study.md").read_text()
    # constants 4 + rule members 6 + bandit on the evaluation seeds, 4 + tuned + bandit on the held-out ones: once
    assert len(list((out / "base" / "cache" / "controls").glob("*.json"))) == 17
    assert first.count("control policies on seeds") == 2
    assert rl_study.main(["--seeds", "2", "--preset", "tiny", "--out", str(out)]) == 0
    assert "train.py" not in capfd.readouterr().out  # no stage ran again

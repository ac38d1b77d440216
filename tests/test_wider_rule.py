"""bench/wider_rule.py at the tiny preset: the rules the control families leave out (thresholds past
Φ's band; the rule, then TEXT), tuned on a study's evaluation seeds and set against its agents."""
import json
import shutil

import pytest


def test_the_wider_rules_are_raced_and_set_against_the_agents(tiny_study, tmp_path, one_torch_thread):
    from bench import rl_study, wider_rule
    study = tmp_path / "s"
    shutil.copytree(tiny_study("a"), study)
    assert wider_rule.main([str(study), "--workers", "1", "--quiet"]) == 0
    result = json.loads((study / "wider_rule.json").read_text())
    raced = result["members"][wider_rule.WIDER]
    assert any("TEXT in [2, 7]" in m for m in raced) and "rule: TEXT in [3, 6], else MIXED" in raced
    late = result["members"][wider_rule.LATE]
    chosen = result["controls"][wider_rule.WIDER]["detail"]
    assert f"rule: {chosen}" in late and any(m.startswith(f"rule: {chosen}; TEXT only for the last") for m in late)
    # the report's own tuned rule: the same paired difference as the study's table
    report = json.loads((study / "seed-1" / "report.json").read_text())
    row = rl_study.aggregate({"seed-1": report})["rows"][0]
    assert result["rows"][0]["tuned rule"][0] == pytest.approx(row["vs"]["tuned rule"]["diff"])
    assert "| wider rule |" in (study / "wider_rule.md").read_text()


def test_a_study_scored_on_another_environment_is_refused(tiny_study, tmp_path, one_torch_thread):
    from bench import wider_rule
    study = tmp_path / "s"
    shutil.copytree(tiny_study("a"), study)
    path = study / "seed-1" / "report.json"
    report = json.loads(path.read_text())
    report["heldout"]["source"]["agent"]["episode_returns"][0] += 1.0  # not what this environment gives
    path.write_text(json.dumps(report))
    with pytest.raises(SystemExit) as e:
        wider_rule.main([str(study), "--workers", "1", "--quiet"])
    assert "does not reproduce its report's held-out returns" in str(e.value)

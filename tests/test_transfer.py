"""bench/transfer.py at the tiny preset: a schedule and the tuned controls carried from one study's
environment to another's. Two studies of the same corpus and preset share one environment, so
whatever is carried across must score exactly as it did at home; WikiText-2 against the built-in
corpus (skipped without ../shared) is a real change of text."""
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WT2 = ROOT.parent / "shared" / "data" / "wikitext-2"


def test_carried_to_the_same_environment_everything_scores_as_at_home(tiny_study, tmp_path, one_torch_thread):
    from bench import transfer
    a = tiny_study("a")
    b = tmp_path / "b"
    shutil.copytree(a, b)  # the same base model in another folder
    assert transfer.main([f"a={a}", f"b={b}", "--out", str(tmp_path / "t"), "--workers", "1"]) == 0
    tables = json.loads((tmp_path / "t" / "transfer.json").read_text())["tables"]
    assert [t["target"] for t in tables] == ["a", "b"]
    for t in tables:
        rows = {r["policy"].split(":")[0]: r for r in t["rows"]}
        home, away = ("a", "b") if t["target"] == "a" else ("b", "a")
        assert rows[f"{away} agent (transferred)"]["iqm"] == rows[f"{home} agent (trained here)"]["iqm"]
        assert rows[f"{away} agent (transferred)"]["mix"] == rows[f"{home} agent (trained here)"]["mix"]
        carried = [r for name, r in rows.items() if name.startswith(f"{away} ") and "transferred" in name
                   and "agent" not in name]
        assert {r["policy"].split(" (")[0].removeprefix(f"{away} ") for r in carried} == {
            "best constant", "tuned rule", "tuned time switch"}  # the bandit has nothing tuned to carry
        assert all(r["vs_same_family"] == [0.0, 0.0, 0.0] for r in carried)
    assert "## On a's held-out seeds" in (tmp_path / "t" / "transfer.md").read_text()


def test_a_study_that_is_not_finished_is_one_line(tmp_path, capsys):
    from bench import transfer
    with pytest.raises(SystemExit) as e:
        transfer.main([f"a={tmp_path}", f"b={tmp_path}"])
    assert "not a finished study" in str(e.value)


@pytest.mark.skipif(not (WT2 / "test.txt").is_file(), reason="../shared/data/wikitext-2 not present")
def test_the_builtin_schedule_plays_wikitext2(tiny_study, tmp_path, one_torch_thread):
    from bench import transfer
    builtin, wt2 = tiny_study("builtin"), tiny_study("wt2", "--corpus", "wt2")
    assert transfer.main([f"builtin={builtin}", f"wt2={wt2}", "--out", str(tmp_path), "--workers", "1"]) == 0
    on_wt2 = json.loads((tmp_path / "transfer.json").read_text())["tables"][1]
    rows = {r["policy"].split(":")[0]: r for r in on_wt2["rows"]}
    assert rows["builtin agent (transferred)"]["runs"] == 1 and len(rows) == 2 + 4 + 3

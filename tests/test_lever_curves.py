"""bench/lever_curves.py: evaluation curves side by side, read from the runs' evaluations.json."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import lever_curves  # noqa: E402


def _run(folder: Path, points: dict[int, float]) -> str:
    folder.mkdir()
    (folder / "evaluations.json").write_text(json.dumps([{"step": s, "mean_reward": v} for s, v in points.items()]))
    return str(folder)


def test_the_table_has_every_step_the_best_and_each_runs_second_half_mean(tmp_path, capsys):
    done = _run(tmp_path / "a", {100: 1.0, 200: 4.0, 300: 2.0, 400: 3.0})
    partial = _run(tmp_path / "b", {100: 5.0, 200: 7.0})
    assert lever_curves.main([f"preset={done}", f"lever=x={partial}"]) == 0
    head, _, row_a, row_b = capsys.readouterr().out.strip().splitlines()
    assert head == "| run | 100 | 200 | 300 | 400 | best | second-half mean |"
    assert row_a == "| preset | +1.00 | +4.00 | +2.00 | +3.00 | +4.00 | +3.00 |"
    # a shorter run shows what it has, its second half its own; the label may hold '='
    assert row_b == "| lever=x | +5.00 | +7.00 | — | — | +7.00 | +6.00 |"


def test_a_folder_without_evaluations_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="evaluations.json does not exist"):
        lever_curves.main([f"x={tmp_path / 'empty'}"])
    with pytest.raises(SystemExit):
        lever_curves.main(["no-label-given"])

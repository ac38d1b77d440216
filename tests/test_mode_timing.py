"""bench/mode_timing.py: an agent's decisions by position in the episode, beside its run's tuned rule,
played again on the run's held-out seeds."""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_timing_replays_the_reports_held_out_episodes(rl_dir, capsys):
    sys.path.insert(0, str(ROOT))
    from bench import mode_timing
    assert mode_timing.main([str(rl_dir / "best.pt"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    held = json.loads((rl_dir / "report.json").read_text())["heldout"]["source"]
    agent = held["agent"]["episode_returns"]
    rule = held["adaptive"]["tuned rule"]["episode_returns"]
    printed = dict(re.findall(r"^(agent|tuned rule): mean return ([-+.\d]+)", out, re.M))
    assert float(printed["agent"]) == round(sum(agent) / len(agent), 2)
    assert float(printed["tuned rule"]) == round(sum(rule) / len(rule), 2)
    rows = [line for line in out.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert len(rows) == 6  # the tiny preset's 6 decisions
    for row in rows:  # each policy's shares over the modes add up to 100 %
        for cell in row.strip("| ").split(" | ")[1:]:
            assert abs(sum(int(x) for x in cell.split(",")[0].split(" / ")) - 100) <= 2, cell

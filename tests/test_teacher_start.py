"""Teacher start in the RL stage (stages/rl/teacher.py): --teacher clones a named control before PPO."""
import json
import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train
from test_faults import one_line_error

TINY = ["--stage", "rl", "--preset", "tiny", "--quiet", "--threads", "1"]


@pytest.fixture(scope="module")
def taught(base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("taught")
    assert train.main([*TINY, "--base", str(base_dir / "base-step20.pt"), "--out", str(out),
                       "--teacher", "tuned rule", "--teacher-episodes", "8", "--group-size", "2"]) == 0
    return out


def test_the_clone_is_evaluated_at_step_0_and_plays_like_its_teacher(taught):
    evals = json.loads((taught / "evaluations.json").read_text())
    assert [e["step"] for e in evals] == [0, 32, 64] and (taught / "0.pt").is_file()
    report = json.loads((taught / "report.json").read_text())
    rule = next(c for c in report["controls"] if c["name"] == "tuned rule")
    step0 = next(r for r in report["rows"] if r["step"] == 0)
    assert step0["action_mix"] == rule["action_mix"]  # the same decisions on the same evaluation seeds
    assert step0["mean_reward"] == pytest.approx(rule["mean_reward"])


def test_what_the_agent_started_from_is_recorded_and_shown(taught):
    teacher = torch.load(taught / "64.pt", weights_only=True)["extra"]["teacher"]
    assert teacher["name"] == "tuned rule" and teacher["episodes"] == 8 and teacher["seed"] == 30_000
    assert teacher["agreement"] >= 0.99 and 0.05 <= teacher["other_prob"] <= 0.15
    md = (taught / "report.md").read_text()
    assert "**Teacher start:** Started from the teacher tuned rule" in md.split("![")[0]  # the first screen
    assert "| 0 (baseline) (teacher clone) |" in md or "| 0 (teacher clone) |" in md
    assert "teacher clone" in (taught / "report.svg").read_text()
    scalars = EventAccumulator(str(taught / "runs" / "rl")).Reload().Scalars("teacher/agreement")
    assert [(s.step, s.value) for s in scalars] == [(0, pytest.approx(teacher["agreement"]))]


def test_generate_adapts_with_a_teacher_started_group_agent(taught, capsys):
    from generate import main as generate
    assert generate(["--agent", str(taught / "64.pt"), "--agent-steps", "3", "--prompt", "The",
                     "--max-new-tokens", "5", "--temperature", "0", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["type"] == "adaptation" and len(rows[0]["actions"]) == 3 and rows[1]["type"] == "sample"


def test_a_resumed_teacher_run_keeps_its_record(taught, tmp_path, capsys):
    out = tmp_path / "ckpt"
    shutil.copytree(taught, out)
    resume = ["--stage", "rl", "--quiet", "--threads", "1"]
    assert train.main([*resume, "--resume", str(out / "64.pt"), "--timesteps", "32"]) == 0
    assert torch.load(out / "96.pt", weights_only=True)["extra"]["teacher"]["name"] == "tuned rule"
    assert "**Teacher start:**" in (out / "report.md").read_text()
    capsys.readouterr()
    one_line_error(capsys, train.main([*resume, "--resume", str(out / "96.pt"), "--teacher", "tuned rule"]),
                   "a resumed run continues its checkpoint's")


@pytest.mark.parametrize("flags, needle", [
    (["--teacher", "tuned nothing"], "unknown --teacher 'tuned nothing'"),
    (["--teacher", "always TEXT", "--teacher-seed", "9990"], "overlaps the --eval-seed episodes"),
    (["--teacher", "always TEXT", "--teacher-episodes", "0"], "--teacher-episodes must be >= 1"),
    (["--teacher-seed", "5"], "need --teacher NAME"),
])
def test_bad_teacher_flags_are_one_line_before_any_work(capsys, base_dir, tmp_path, flags, needle):
    one_line_error(capsys, train.main([*TINY, "--base", str(base_dir / "base-step20.pt"), "--out",
                                       str(tmp_path / "o"), *flags]), needle)
    assert not (tmp_path / "o").exists()


def test_until_level_stops_the_run_when_its_evaluation_curve_levels(base_dir, tmp_path, capsys):
    """--until-level 1 with a budget of 640 steps: the tiny agent's second evaluation is no better than
    its first (paired over the same episodes), so the run stops there and says why."""
    out = tmp_path / "o"
    assert train.main([*TINY, "--base", str(base_dir / "base-step20.pt"), "--out", str(out), "--timesteps", "640",
                       "--until-level", "1"]) == 0
    assert [e["step"] for e in json.loads((out / "evaluations.json").read_text())] == [32, 64]
    assert "(levelled: the last 1 evaluations average" in capsys.readouterr().out
    one_line_error(capsys, train.main([*TINY, "--base", str(base_dir / "base-step20.pt"), "--out", str(tmp_path / "x"),
                                       "--until-level", "0"]), "--until-level must be >= 1")

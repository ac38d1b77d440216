"""`python train.py --stage rl` and `--stage report`: tiny base -> rl -> resume, end to end, and bad input."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train

ROOT = Path(__file__).resolve().parents[1]


def rl(*argv):
    return train.main(["--stage", "rl", "--quiet", *map(str, argv)])


@pytest.fixture
def tiny_rl(rl_dir):
    """The shared tiny RL run (tests/conftest.py): 64 steps, checkpoints and evaluations at 32 and 64."""
    return rl_dir


def agent_ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_tiny_run_writes_checkpoints_evaluations_and_report(tiny_rl, base_dir):
    for name in ("32.pt", "64.pt", "best.pt", "evaluations.json", "report.md", "report.json"):
        assert (tiny_rl / name).is_file(), name
    assert agent_ckpt(tiny_rl / "32.pt")["global_step"] == 32
    evals = json.loads((tiny_rl / "evaluations.json").read_text())
    assert [e["step"] for e in evals] == [32, 64]
    assert all(e["n_episodes"] == 2 and e["seed"] == 10_000 for e in evals)
    assert all(0 <= e["extra"]["phi_in_band_pct"] <= 100 for e in evals)
    report = json.loads((tiny_rl / "report.json").read_text())
    assert [r["step"] for r in report["rows"]] == [32, 64]
    assert sorted(c["name"] for c in report["controls"]) == ["always MIXED", "always PHI", "always TEXT", "bandit", "random",
                                                           "tuned rule", "tuned time switch"]
    assert all(c["n_episodes"] == 2 and c["seed"] == 10_000 for c in report["controls"])
    assert report["recommended"]["step"] in (32, 64)
    # one meaning of "best": best.pt holds the checkpoint the report recommends
    assert agent_ckpt(tiny_rl / "best.pt")["global_step"] == report["recommended"]["step"]
    # two episodes per evaluation: the report says its CI ranking is mostly noise
    assert any("only 2 episode(s) per evaluation" in w for w in report["warnings"])  # on the first screen
    # one recommended checkpoint; "optimal" only where it beats every control on these seeds
    recommended = [r for r in report["rows"] if r["status"] in ("optimal", "best of run")]
    assert [r["step"] for r in recommended] == [report["recommended"]["step"]]
    wins = report["recommended"]["vs_controls"]["beats_best_control"] and (
        report["recommended"]["vs_adaptive"] or {}).get("verdict", "beats") == "beats"
    assert recommended[0]["status"] == ("optimal" if wins else "best of run")
    md = (tiny_rl / "report.md").read_text()
    assert "| Checkpoint |" in md and "## Control policies" in md and "## Recommendation" in md
    # the checkpoint carries what a resume needs: run settings, env config, base identity, controls
    extra = agent_ckpt(tiny_rl / "64.pt")["extra"]
    assert extra["run"]["save_freq"] == 32 and extra["env"]["max_steps"] == 6
    assert extra["base"] == str(base_dir / "base.pt") and len(extra["controls"]) == 4
    # the evaluation at a step is inside that step's checkpoint (the baseline of a later resume)
    assert [e["step"] for e in agent_ckpt(tiny_rl / "32.pt")["evaluations"]] == [32]


def test_tensorboard_tags_and_custom_scalars(tiny_rl):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tiny_rl / "runs" / "rl")).Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {"train/approx_kl", "train/clip_fraction", "train/entropy_loss", "train/explained_variance",
                "train/policy_gradient_loss", "train/value_loss", "train/learning_rate", "rollout/ep_rew_mean",
                "time/fps", "env/phi", "env/consciousness", "env/perplexity", "env/memory_util",
                "env/action_frac_text", "env/action_frac_phi", "env/action_frac_mixed",
                "eval/mean_reward", "eval/std_reward", "eval/ci_lower", "eval/ci_upper",
                "eval_vs_controls/mean_reward", "env/phi_band_low", "env/phi_band_high"}
    assert expected <= tags, expected - tags
    assert [e.step for e in acc.Scalars("eval/mean_reward")] == [32, 64]
    fracs = [acc.Scalars(f"env/action_frac_{m}")[-1].value for m in ("text", "phi", "mixed")]
    assert abs(sum(fracs) - 1) < 1e-6
    # the margin chart draws the interval the report ranks by: the 95 % CI of the mean
    first = json.loads((tiny_rl / "evaluations.json").read_text())[0]
    assert acc.Scalars("eval/ci_lower")[0].value == pytest.approx(first["ci95_low"], rel=1e-5)
    assert acc.Scalars("eval/ci_upper")[0].value == pytest.approx(first["ci95_high"], rel=1e-5)
    assert "run/resumed_from" not in tags  # a fresh run
    # runs of their own beside the agent's (TensorBoard colours by run; stages/report/dashboards.py): each mode's,
    # with its constant control (always <mode>), and each adaptive control's
    controls = {c["name"]: c["mean_reward"] for c in json.loads((tiny_rl / "report.json").read_text())["controls"]}
    side = EventAccumulator(str(tiny_rl / "runs" / "rl" / "modes" / "phi")).Reload()
    assert side.Scalars("eval_vs_controls/mean_reward")[0].value == pytest.approx(controls["always PHI"], rel=1e-5)
    assert {p.name for p in (tiny_rl / "runs" / "rl" / "policies").iterdir()} == {
        "tuned_rule", "tuned_time_switch", "bandit"}
    assert {p.name for p in (tiny_rl / "runs" / "rl" / "modes").iterdir()} == {"text", "phi", "mixed"}
    # the custom-scalars layout (margin chart of the evaluation reward) is in the event file
    from tensorboard.plugins.custom_scalar import layout_pb2
    acc = EventAccumulator(str(tiny_rl / "runs" / "rl"), size_guidance={"tensors": 0}).Reload()
    assert "custom_scalars__config__" in acc.Tags()["tensors"]
    raw = acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    layout = layout_pb2.Layout.FromString(raw)
    margins = [c.margin for cat in layout.category for c in cat.chart if c.HasField("margin")]
    assert [(s.value, s.lower, s.upper) for m in margins for s in m.series] == [
        ("eval/mean_reward", "eval/ci_lower", "eval/ci_upper"), ("env/phi", "env/phi_band_low", "env/phi_band_high")]


def test_anneal_lr_flag_turns_the_line_on_from_the_resumed_step(tiny_rl, tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_rl, out)
    assert agent_ckpt(out / "32.pt")["config"]["anneal_lr"] is False
    assert rl("--resume", out / "32.pt", "--timesteps", 32, "--anneal-lr") == 0
    assert agent_ckpt(out / "64.pt")["config"]["anneal_lr"] is True
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(out / "runs" / "rl")).Reload()
    # two updates (16 steps each) after step 32, each at the line's value where its rollout began:
    # from 3e-4 at step 32 toward 0 at step 64 (TensorBoard stores float32)
    lrs = [e.value for e in acc.Scalars("train/learning_rate") if e.step > 32]
    assert lrs == pytest.approx([3e-4, 1.5e-4], rel=1e-6)
    # --no-anneal-lr switches it off again from where the line is
    assert rl("--resume", out / "64.pt", "--timesteps", 32, "--no-anneal-lr") == 0
    assert agent_ckpt(out / "96.pt")["config"]["anneal_lr"] is False


def test_resume_numbers_steps_from_the_checkpoint_and_applies_overrides(tiny_rl, tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_rl, out)
    assert rl("--resume", out / "32.pt", "--timesteps", 64, "--ent-coef", 0.02, "--clip-range", 0.15,
              "--learning-rate", 1e-4, "--max-grad-norm", 0.3) == 0
    # the earlier run's later checkpoint is kept aside, not overwritten
    assert (out / "superseded-32" / "64.pt").is_file()
    assert {p.name for p in out.glob("*.pt")} >= {"32.pt", "64.pt", "96.pt"}
    ck = agent_ckpt(out / "96.pt")
    assert ck["global_step"] == 96
    cfg = ck["config"]
    assert (cfg["ent_coef"], cfg["clip_range"], cfg["learning_rate"], cfg["max_grad_norm"]) == (0.02, 0.15, 1e-4, 0.3)
    assert cfg["total_timesteps"] == 96
    assert all(g["lr"] == 1e-4 for g in ck["optimizer"]["param_groups"])
    # the overrides took effect in the updates themselves (logged by the trainer)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(out / "runs" / "rl")).Reload()
    # (TensorBoard stores float32)
    after = lambda tag: [e.value for e in acc.Scalars(tag) if e.step > 32]  # noqa: E731
    assert after("train/learning_rate") == pytest.approx([1e-4] * 4, rel=1e-6)
    assert after("train/clip_range") == pytest.approx([0.15] * 4, rel=1e-6)
    # one curve: the resumed run continues the original's, whose later point (64) was purged
    assert [e.step for e in acc.Scalars("eval/mean_reward")] == [32, 64, 96]
    # the report compares with the resumed-from checkpoint; other settings came from the checkpoint
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"] == {"step": 32, "kind": "resumed-from checkpoint"}
    assert [r["step"] for r in report["rows"]] == [32, 64, 96]
    assert agent_ckpt(out / "best.pt")["global_step"] == report["recommended"]["step"]
    notes = " ".join(report["notes"])
    assert "Rows up to step 32 come from the run this one resumed" in notes and "superseded-32" in notes
    assert ck["extra"]["run"]["save_freq"] == 32 and ck["extra"]["env"]["max_steps"] == 6
    # the resume is marked: in TensorBoard, on the chart; the side runs continue from the resumed step too
    assert [(e.step, e.value) for e in acc.Scalars("run/resumed_from")] == [(32, 32)]
    assert report["resumes"] == [32] and ck["extra"]["resumes"] == [32]
    assert 'class="resume" data-step="32"' in (out / "report.svg").read_text()
    side = EventAccumulator(str(out / "runs" / "rl" / "policies" / "bandit")).Reload()
    assert [e.step for e in side.Scalars("eval_vs_controls/mean_reward")] == [32, 64, 96]
    # a later report stage keeps the training's baseline, its note and the mark
    assert train.main(["--stage", "report", "--quiet", "--ckpt-dir", str(out)]) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["baseline"] == report["baseline"] and again["resumes"] == [32]
    assert "Rows up to step 32 come from the run this one resumed" in " ".join(again["notes"])
    assert 'class="resume" data-step="32"' in (out / "report.svg").read_text()


def test_resume_reproduces_the_uninterrupted_run(base_dir, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ("--preset", "tiny", "--base", base_dir / "base.pt", "--eval-freq", 1000)
    assert rl(*common, "--out", straight, "--timesteps", 64) == 0
    assert rl(*common, "--out", split, "--timesteps", 32) == 0
    assert rl("--resume", split / "32.pt", "--timesteps", 32) == 0
    a, b = agent_ckpt(straight / "64.pt"), agent_ckpt(split / "64.pt")
    for k in a["policy"]:
        assert torch.equal(a["policy"][k], b["policy"][k]), k
    envs_a, envs_b = a["rollout"]["env_state"]["envs"], b["rollout"]["env_state"]["envs"]
    for ea, eb in zip(envs_a, envs_b):
        for k in ea["model"]:
            assert torch.equal(ea["model"][k], eb["model"][k]), k
    # the one logger's JSONL: the resumed run kept the lines up to step 32 and continued them exactly
    def updates(d):
        rows = [json.loads(line) for line in (d / "rl_log.jsonl").read_text().splitlines()]
        return [(r["step"], r["train/loss"], r["env/phi"]) for r in rows if "train/loss" in r]
    assert updates(split) == updates(straight) and len(updates(straight)) == 4


def test_shared_seed_groups_train_checkpoint_and_resume(base_dir, tmp_path, capsys):
    """--group-size 2 --num-envs 4: two groups whose members play every episode on the same data."""
    out = tmp_path / "groups"
    common = ("--preset", "tiny", "--base", base_dir / "base.pt", "--eval-freq", 1000)
    assert rl(*common, "--out", out, "--timesteps", 32, "--group-size", 2, "--num-envs", 4) == 0
    assert "groups of 2 on shared seeds (advantage baseline loo+gae)" in capsys.readouterr().out
    ck = agent_ckpt(out / "32.pt")
    assert ck["config"]["group_size"] == 2 and ck["rollout"]["env_state"]["groups"]["size"] == 2
    # one rollout of 8 decisions: a 6-decision episode, then 2 of the next; its data streams are alike in a group
    streams = [e["data_rng"] for e in ck["rollout"]["env_state"]["envs"]]
    assert torch.equal(streams[0], streams[1]) and torch.equal(streams[2], streams[3])
    assert not torch.equal(streams[0], streams[2])
    assert rl("--resume", out / "32.pt", "--timesteps", 32, "--group-baseline", "loo") == 0
    assert "groups of 2 on shared seeds (advantage baseline loo)" in capsys.readouterr().out
    assert agent_ckpt(out / "64.pt")["config"]["group_size"] == 2
    expect_error(capsys, rl("--resume", out / "32.pt", "--timesteps", 32, "--group-size", 4),
                 "--group-size cannot change when resuming")
    expect_error(capsys, rl(*common, "--out", tmp_path / "odd", "--group-size", 3, "--num-envs", 4),
                 "--num-envs 4 is not a multiple of --group-size 3")


def test_report_stage_re_evaluates_every_checkpoint(tiny_rl, tmp_path, capsys):
    """Other settings than the training's: the report is written beside the training's one, which
    stays as it was, and so does best.pt."""
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_rl, out, ignore=shutil.ignore_patterns("runs"))
    before = {name: (out / name).read_bytes() for name in ("64.pt", "report.md", "report.json", "best.pt")}
    assert train.main(["--stage", "report", "--quiet", "--ckpt-dir", str(out), "--baseline", str(out / "32.pt"),
                       "--episodes", "3"]) == 0
    report = json.loads((out / "report-3ep-vs32.json").read_text())
    assert report["baseline"]["step"] == 32 and (out / "report-3ep-vs32.md").exists()
    assert [(r["step"], r["n_episodes"]) for r in report["rows"]] == [(32, 3), (64, 3)]
    assert all(c["n_episodes"] == 3 for c in report["controls"])
    assert {name: (out / name).read_bytes() for name in before} == before  # checkpoints, training report, best
    assert "re-scored 2 checkpoints on 3 episodes (2 played, 0 reused)" in capsys.readouterr().out


def test_report_stage_honours_new_heldout_seeds(tiny_rl, tmp_path, capsys):
    """Re-scoring the headline on fresh held-out seeds is what a sceptical user does: it is written
    beside the training's report, which stays as it was."""
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_rl, out, ignore=shutil.ignore_patterns("runs"))
    before = {name: (out / name).read_bytes() for name in ("report.json", "best.pt")}
    assert train.main(["--stage", "report", "--quiet", "--ckpt-dir", str(out), "--heldout-seed", "40000"]) == 0
    held = json.loads((out / "report-heldout40000.json").read_text())["heldout"]
    assert held["seed"] == 40_000 and all(r["seed"] == 40_000 for r in held["rows"])
    assert json.loads(before["report.json"])["heldout"]["seed"] == 20_000
    assert {name: (out / name).read_bytes() for name in before} == before
    assert "Held-out seeds 40,000..40,001" in (out / "report-heldout40000.svg").read_text()


def test_report_stage_reuses_stored_evaluations_and_continues_after_an_interruption(tiny_rl, tmp_path, capsys,
                                                                                   monkeypatch):
    import stages.report.stage
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_rl, out, ignore=shutil.ignore_patterns("runs"))
    played = []
    real_score = stages.report.stage.score

    def counting_score(envs, policy, env_cfg, n, seed, step=None, checkpoint=None, name=None):
        played.append((step, n))
        if len(played) == 2 and n == 4:
            raise KeyboardInterrupt  # Ctrl-C while the second checkpoint plays
        return real_score(envs, policy, env_cfg, n, seed, step, checkpoint, name)
    monkeypatch.setattr(stages.report.stage, "score", counting_score)
    # the training's settings: both checkpoints' evaluations are stored in them, none is played
    assert train.main(["--stage", "report", "--quiet", "--ckpt-dir", str(out)]) == 0
    assert played == [] and "(0 played, 2 reused)" in capsys.readouterr().out
    assert agent_ckpt(out / "best.pt")["global_step"] == json.loads((out / "report.json").read_text())["recommended"]["step"]
    # 4 episodes, interrupted on the second checkpoint: exit 130, the first is kept ...
    assert train.main(["--stage", "report", "--quiet", "--ckpt-dir", str(out), "--episodes", "4"]) == 130
    assert "run the same command again" in capsys.readouterr().err
    # ... and the rerun plays only the second one
    played.clear()
    assert train.main(["--stage", "report", "--quiet", "--ckpt-dir", str(out), "--episodes", "4"]) == 0
    assert played == [(64, 4)] and "(1 played, 1 reused)" in capsys.readouterr().out


def expect_error(capsys, code, *fragments):
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err
    return err


def snapshot(d: Path) -> dict:
    return {p.relative_to(d): p.read_bytes() for p in d.rglob("*") if p.is_file() and "runs" not in p.parts}


def test_bad_input(capsys, tiny_rl, base_dir, tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_rl, out, ignore=shutil.ignore_patterns("runs"))
    before = snapshot(out)
    # a base checkpoint is not an RL checkpoint
    expect_error(capsys, rl("--resume", base_dir / "base.pt"), "'infinito-base'", "'ppo-agent'")
    # a corrupt file
    bad = out / "999.pt"
    bad.write_bytes(b"not a checkpoint")
    expect_error(capsys, rl("--resume", bad), "corrupt")
    bad.unlink()
    # a missing base
    expect_error(capsys, rl("--out", tmp_path / "empty"), "base-step100.pt", "does not exist", "snapshot",
                 "--stage base")
    expect_error(capsys, rl("--base", tmp_path / "nope.pt", "--out", tmp_path / "x"), "does not exist")
    # an incompatible configuration: other actions than the agent was trained with
    expect_error(capsys, rl("--resume", out / "64.pt", "--timesteps", 32,
                            "--env", 'modes=[["TEXT",1,0],["PHI",0.1,1]]'), "3 actions")
    # another base model than the one the agent was trained on (the base stage's earlier snapshot)
    expect_error(capsys, rl("--resume", out / "64.pt", "--timesteps", 32, "--base", base_dir / "base-step20.pt"),
                 "not the base checkpoint")
    # flags of the other stage, invalid values, network changes on resume
    expect_error(capsys, rl("--resume", out / "64.pt", "--steps", 5), "--steps", "--stage base")
    expect_error(capsys, rl("--base", base_dir / "base.pt", "--out", tmp_path / "y", "--eval-freq", 0), "--eval-freq")
    expect_error(capsys, rl("--base", base_dir / "base.pt", "--out", tmp_path / "y", "--env", "max_steps=0"),
                 "max_steps")
    expect_error(capsys, rl("--base", base_dir / "base.pt", "--out", tmp_path / "y", "--clip-range", -1), "clip_range")
    expect_error(capsys, rl("--resume", out / "64.pt", "--preset", "demo"), "--preset")
    expect_error(capsys, train.main(["--stage", "report", "--ckpt-dir", str(tmp_path / "y")]), "no RL checkpoints")
    assert snapshot(out) == before  # nothing was overwritten by any of these


def test_a_resumed_run_keeps_its_reward(capsys, tiny_rl, base_dir, tmp_path):
    """The checkpoints' evaluations (the report's rows, the resumed-from baseline, best.pt) and the
    stored controls are returns under the run's reward: another reward on resume is refused in one
    line naming the new run to start (it used to fail on the old reward's w_out instead)."""
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_rl, out, ignore=shutil.ignore_patterns("runs"))
    before, controls = snapshot(out), sorted((base_dir / "cache" / "controls").iterdir())

    def refused(*env, needles=()):
        code = rl("--resume", out / "64.pt", "--env", *env)
        said = capsys.readouterr()
        assert code == 2 and said.out == "", said.out  # no note before the error: the resume did not start
        err = said.err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
        for n in needles:
            assert n in err, err
    new_run = f"start a new run with --preset tiny --base {base_dir / 'base.pt'} --out NEW --env"
    refused("reward.name=final", needles=("keeps its reward (progress)", f"under final, {new_run} reward.name=final"))
    refused("reward.w_out=2", needles=("keeps its reward (progress)", "under progress (w_out=2)"))
    refused("reward.name=v2", "reward.ppl_low=2", needles=("under v2 (ppl_low=2)", "reward.name=v2 reward.ppl_low=2"))
    refused("reward.name=nope", needles=("unknown reward 'nope' (choose from v2, progress, final)",))
    refused("reward.name=final", "reward.w_out=2", needles=("unknown reward 'final' key(s): w_out",))
    assert snapshot(out) == before and sorted((base_dir / "cache" / "controls").iterdir()) == controls
    # the run's own reward, spelled out, is no change
    assert rl("--resume", out / "64.pt", "--timesteps", 16, "--env", "reward.name=progress", "reward.w_out=1") == 0


def test_another_reward_is_built_from_its_own_defaults(tmp_path):
    """--env reward.name=X over a config holding another reward's constants (a checkpoint's, a
    preset's) takes X's defaults and only the reward.* flags given; the same name merges."""
    from env import EnvConfig
    from env.reward import FinalReward, ProgressReward
    from stages.rl.presets import env_config, parse_env_overrides
    stored = {"max_steps": 6, "reward": ProgressReward(w_out=3.0).to_dict()}

    def merged(*flags):
        return env_config(stored, parse_env_overrides(list(flags)), "auto", tmp_path / "base.pt")
    assert merged("reward.name=final").reward == FinalReward()
    assert merged("reward.name=final", "reward.w_end=5").reward == FinalReward(w_end=5.0)
    assert merged("reward.w_gain=2").reward == ProgressReward(w_gain=2.0, w_out=3.0)
    assert merged("reward.name=progress").reward == ProgressReward(w_out=3.0)
    assert merged().reward == ProgressReward(w_out=3.0) and merged().max_steps == 6
    assert env_config({}, {}, "auto", tmp_path / "base.pt").reward == EnvConfig().reward  # no reward: the default


def test_resume_at_the_runs_end_continues_for_five_evaluation_periods(capsys, tiny_rl, tmp_path):
    """`--resume ckpt/<last step>.pt` without --timesteps: the command users type after reading a report."""
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_rl, out, ignore=shutil.ignore_patterns("runs"))
    assert rl("--resume", out / "64.pt") == 0
    said = capsys.readouterr().out
    assert "planned end" in said and "5 more evaluation periods of 32 steps, to step 224" in said
    # a status printed during training is provisional (the final report may judge it otherwise): it says so
    # and its ± is the 95 % CI the charts draw, named as such (it used to be a std that read like one)
    line = re.search(r"step 96: eval ([+-][0-9.]+), 95% CI \[([+-][0-9.]+), ([+-][0-9.]+)\] "
                     r"\(Φ in band [0-9]+%; so far: [a-z -]+\)", said)
    assert line, said
    evaluation = next(e for e in json.loads((out / "evaluations.json").read_text()) if e["step"] == 96)
    assert [float(v) for v in line.groups()] == pytest.approx(
        [evaluation[k] for k in ("mean_reward", "ci95_low", "ci95_high")], abs=1e-3)
    assert "--heldout-seed 40000" in said and "--episodes" not in said.split("next:")[-1]
    evals = json.loads((out / "evaluations.json").read_text())
    assert [e["step"] for e in evals] == [32, 64, 96, 128, 160, 192, 224]
    assert agent_ckpt(out / "224.pt")["config"]["total_timesteps"] == 224


def test_sigterm_saves_a_resumable_checkpoint(base_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--stage", "rl", "--preset", "tiny", "--quiet",
                             "--base", str(base_dir / "base.pt"), "--out", str(tmp_path), "--timesteps", "1000000",
                             "--eval-freq", "1000000", "--save-freq", "1000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("PPO:"):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "--resume" in err and "Traceback" not in err
    saved = [p for p in tmp_path.glob("*.pt") if p.stem.isdigit()]
    assert len(saved) == 1
    step = agent_ckpt(saved[0])["global_step"]
    assert 0 < step < 1_000_000 and saved[0].stem == str(step)
    assert not list(tmp_path.glob(".*.tmp"))


def test_early_stop_on_over_fitting_keeps_the_best(base_dir, tmp_path, monkeypatch):
    """Evaluations that get worse (made so by shifting the agent's returns) stop the run at the first flag."""
    import stages.report.scoring as scoring
    from ppo import TrainedPolicy
    real = scoring.run_policies
    calls = {"agent": 0}

    def worsening(envs, policies, n_episodes, seed, on_episode=None):
        played = real(envs, policies, n_episodes, seed, on_episode)
        for name, policy in policies.items():
            if isinstance(policy, TrainedPolicy):
                calls["agent"] += 1
                shift = 1000.0 * (calls["agent"] - 1)  # far below every control
                played[name].returns = [r - shift for r in played[name].returns]
        return played

    monkeypatch.setattr(scoring, "run_policies", worsening)
    assert rl("--preset", "tiny", "--base", base_dir / "base.pt", "--out", tmp_path, "--timesteps", 320,
              "--eval-freq", 32, "--save-freq", 1000, "--early-stop") == 0
    evals = json.loads((tmp_path / "evaluations.json").read_text())
    assert [e["step"] for e in evals] == [32, 64]  # stopped after the first flagged evaluation, not at 320
    assert agent_ckpt(tmp_path / "best.pt")["global_step"] == 32
    assert [r["status"] for r in json.loads((tmp_path / "report.json").read_text())["rows"]][1:] == [
        "severe over-fitting"]


def test_each_setting_is_built_once_and_reaches_its_use_as_that_object(base_dir, tiny_rl, tmp_path, monkeypatch):
    """The run's PPOConfig, EnvConfig and reward are made once, from preset + flags (+ the resumed
    checkpoint), and the agent and every environment use those very objects."""
    from collections import Counter

    import stages.rl.stage
    from env import EnvConfig, ProgressReward
    counts, seen = Counter(), {}
    for cls in (EnvConfig, ProgressReward):
        def counted(self, _orig=cls.__post_init__, _name=cls.__name__):
            counts[_name] += 1
            _orig(self)
        monkeypatch.setattr(cls, "__post_init__", counted)
    real_build = stages.rl.stage.build_agent

    def build(p, train_env, extra):
        seen.update(plan=p, agent=real_build(p, train_env, extra), envs=train_env.envs, made=dict(counts))
        return seen["agent"]
    monkeypatch.setattr(stages.rl.stage, "build_agent", build)
    for argv in (("--preset", "tiny", "--base", base_dir / "base.pt", "--out", tmp_path / "new", "--timesteps", 32),
                 ("--resume", shutil.copytree(tiny_rl, tmp_path / "old") / "32.pt", "--timesteps", 32)):
        counts.clear()
        assert rl(*argv) == 0
        p, agent = seen["plan"], seen["agent"]
        assert seen["made"] == {"EnvConfig": 1, "ProgressReward": 1}, argv  # before the first decision
        assert agent.config is p.ppo_cfg
        assert all(env.config is p.env_cfg and env.config.reward is p.env_cfg.reward for env in seen["envs"])


def test_a_resumed_run_reads_its_checkpoint_once(tiny_rl, tmp_path, monkeypatch):
    """The plan reads the checkpoint (to check it against the flags) and the agent is built from
    that very dict: a full checkpoint holds every environment's model, read once is enough."""
    import common.files
    import stages.rl.stage
    resume = shutil.copytree(tiny_rl, tmp_path / "old") / "32.pt"
    reads, real_load, real_build = [], torch.load, stages.rl.stage.build_agent

    def counting_load(f, *args, **kwargs):
        reads.append(Path(f).resolve() if isinstance(f, (str, os.PathLike)) else f)
        return real_load(f, *args, **kwargs)

    def build(p, train_env, extra):
        reads_before = reads.count(resume.resolve())
        agent = real_build(p, train_env, extra)
        seen.update(before=reads_before, after=reads.count(resume.resolve()), left=p.checkpoint)
        return agent
    seen = {}
    monkeypatch.setattr(common.files.torch, "load", counting_load)
    monkeypatch.setattr(stages.rl.stage, "build_agent", build)
    assert rl("--resume", resume, "--timesteps", 32) == 0
    assert seen == {"before": 1, "after": 1, "left": None}


def test_logdir_is_the_stage_s_tensorboard_folder(base_dir, tmp_path, capsys):
    """--logdir DIR puts the run's events in DIR itself (the side runs beneath it) and the printed
    next step points TensorBoard there."""
    assert rl("--preset", "tiny", "--base", base_dir / "base.pt", "--out", tmp_path / "o", "--timesteps", 32,
              "--logdir", tmp_path / "tb") == 0
    assert list((tmp_path / "tb").glob("events.out.tfevents.*")) and (tmp_path / "tb" / "policies").is_dir()
    assert not (tmp_path / "o" / "runs").exists()
    assert f"tensorboard --logdir {tmp_path / 'tb'}" in capsys.readouterr().out


def test_a_preset_lists_only_what_it_changes_and_resolves_to_the_settings_the_studies_used():
    """One default per setting: the library class keeps it, a preset states only its changes (a
    preset restating a default would be a second copy that could drift). The values every
    published study ran with are pinned: a change of default must not move them."""
    from dataclasses import fields
    from env import EnvConfig
    from stages.rl.presets import RL_PRESETS, preset_env
    defaults = {f.name: getattr(EnvConfig(), f.name) for f in fields(EnvConfig)}
    for name, preset in RL_PRESETS.items():
        restated = {k for k, v in preset["env"].items() if k != "modes" and defaults[k] == v}
        assert not restated, (name, restated)
    used = {"tiny": (2e-4, "progress"), "paper": (2e-4, "progress"), "demo": (6e-4, "progress"),
            "demo-final": (6e-4, "final"), "demo-lr": (6e-4, "final")}
    for name, (inner_lr, reward) in used.items():
        cfg = preset_env(name, None)
        assert (cfg.inner_lr, cfg.reward.name) == (inner_lr, reward), name

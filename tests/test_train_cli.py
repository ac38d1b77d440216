"""`python train.py --stage base`: end to end on the tiny preset, checkpoints, resume, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train

ROOT = Path(__file__).resolve().parents[1]


def run_main(*argv):
    return train.main(["--stage", "base", "--quiet", *map(str, argv)])


@pytest.fixture(scope="module")
def tiny_run(base_dir):
    """The suite's one tiny base run (tests/conftest.py): 30 steps, logged at every step."""
    return base_dir


def read_log(out):
    return [json.loads(line) for line in (out / "base_log.jsonl").read_text().splitlines()]


def resolved_vocab(out):
    return json.loads((out / "base_config.json").read_text())["model"]["vocab_size"]


def test_tiny_run_writes_everything(tiny_run):
    for name in ("base.pt", "tokenizer.model", "base_config.json", "base_summary.json", "base_log.jsonl"):
        assert (tiny_run / name).is_file(), name
    summary = json.loads((tiny_run / "base_summary.json").read_text())
    assert summary["step"] == 30
    # 30 steps learn most of the token frequencies: far below a uniform guess, near the unigram model
    assert summary["val_ppl"] < 1.5 * summary["unigram_ppl"] < resolved_vocab(tiny_run) / 2
    log = read_log(tiny_run)
    assert [r["step"] for r in log] == list(range(1, 31))
    assert log[-1]["lm/train/loss_text"] < log[0]["lm/train/loss_text"]
    assert log[-1]["lm/train/memory_util"] > 0  # memory was written during training
    resolved = json.loads((tiny_run / "base_config.json").read_text())
    assert resolved["train"]["steps"] == 30 and resolved["model"]["d_model"] == 64


def test_tensorboard_tags(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tiny_run / "runs" / "base")).Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {"lm/train/loss", "lm/train/lr", "lm/train/phi", "lm/train/consciousness", "lm/train/memory_util",
                "lm/val/loss", "lm/val/ppl", "lm/time/tokens_per_sec"}
    assert expected <= tags
    assert not {t for t in tags if not t.startswith("lm/")}  # nothing that PPO's train/*, time/* could collide with
    assert [e.step for e in acc.Scalars("lm/val/ppl")] == [30]
    from stages.report.dashboards import BASE_TAGS
    assert tags <= set(BASE_TAGS)  # the documented list is complete


def test_checkpoint_loads_weights_only_in_fresh_process(tiny_run):
    code = (
        "import sys, torch\n"
        "from infinito.checkpoint import build_model\n"
        f"ck = torch.load({str(tiny_run / 'base.pt')!r}, map_location='cpu', weights_only=True)\n"
        "m = build_model(ck)\n"  # strict=True inside
        "print(ck['kind'], ck['format_version'], ck['step'], m.cfg.d_model, m.num_params())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    kind, version, step, d_model, n = res.stdout.split()
    assert (kind, version, step, d_model) == ("infinito-base", "2", "30", "64") and int(n) > 0


def test_checkpoint_rebuilds_identical_model(tiny_run):
    from infinito.checkpoint import build_model, load_checkpoint
    ck = load_checkpoint(tiny_run / "base.pt", kind="infinito-base")
    a, b = build_model(ck).eval(), build_model(ck).eval()
    x = torch.randint(0, a.cfg.vocab_size, (2, 16))
    assert torch.equal(a(x).logits, b(x).logits)
    assert torch.equal(a.memory.keys, ck["model"]["memory.keys"])  # memory contents travel with the checkpoint


def test_resume_reproduces_uninterrupted_run(tiny_run, tmp_path):
    assert run_main("--preset", "tiny", "--out", tmp_path, "--log-every", 1, "--steps", 30, "--stop-at", 17,
                    "--threads", 1) == 0
    assert torch.load(tmp_path / "base.pt", weights_only=True)["step"] == 17
    assert run_main("--resume", tmp_path / "base.pt") == 0  # --out defaults to the checkpoint's directory
    straight, resumed = read_log(tiny_run), read_log(tmp_path)
    assert [r["step"] for r in resumed] == list(range(1, 31))
    assert [r["lm/train/loss"] for r in resumed] == [r["lm/train/loss"] for r in straight]  # exact, not approximate
    assert [r["lm/train/phi"] for r in resumed] == [r["lm/train/phi"] for r in straight]
    a = torch.load(tiny_run / "base.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "base.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_file_and_flag_precedence(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nsteps = 4\neval_every = 2\n[model]\nd_model = 32\n")
    assert run_main("--preset", "tiny", "--config", cfg, "--steps", 3, "--out", tmp_path / "o") == 0
    resolved = json.loads((tmp_path / "o" / "base_config.json").read_text())
    assert resolved["train"]["steps"] == 3 and resolved["train"]["eval_every"] == 2
    assert resolved["model"]["d_model"] == 32


def expect_user_error(capsys, *argv, match):
    code = run_main(*argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err and err[-1].startswith("error:") and match in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_bad_data(capsys, tmp_path):
    expect_user_error(capsys, "--preset", "tiny", "--data", tmp_path / "nope", "--out", tmp_path / "o", match="does not exist")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    expect_user_error(capsys, "--preset", "tiny", "--data", empty, "--out", tmp_path / "o", match="empty")
    bare = tmp_path / "bare"
    bare.mkdir()
    expect_user_error(capsys, "--preset", "tiny", "--data", bare, "--out", tmp_path / "o", match=str(bare))
    binary = tmp_path / "bin.txt"
    binary.write_bytes(bytes(range(256)) * 20)
    expect_user_error(capsys, "--preset", "tiny", "--data", binary, "--out", tmp_path / "o", match=str(binary))
    assert not (tmp_path / "o" / "base.pt").exists()


def test_a_corpus_given_by_a_relative_path_is_found_from_any_folder(tmp_path, monkeypatch):
    from env import EnvConfig, load_base
    (tmp_path / "corpus.txt").write_text("".join(f"line {i} of a small text corpus for the test.\n" for i in range(400)))
    monkeypatch.chdir(tmp_path)
    assert run_main("--preset", "tiny", "--data", "corpus.txt", "--out", "run", "--steps", 3) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the RL stage run from another folder finds the base's text
    cfg = EnvConfig(max_steps=2, inner_steps=1, inner_batch_size=2, seq_len=16, measurement_batch_size=2)
    assert load_base(tmp_path / "run" / "base.pt", cfg).train_ids.size > 0


def test_bad_config(capsys, tmp_path):
    expect_user_error(capsys, "--preset", "huge", "--out", tmp_path, match="unknown preset")
    cfg = tmp_path / "c.toml"
    cfg.write_text("stepz = 3\n")
    expect_user_error(capsys, "--preset", "tiny", "--config", cfg, "--out", tmp_path, match="unknown config key 'stepz'")
    cfg.write_text("steps = = 3\n")
    expect_user_error(capsys, "--preset", "tiny", "--config", cfg, "--out", tmp_path, match="not valid TOML")
    expect_user_error(capsys, "--preset", "tiny", "--lr", "-1", "--out", tmp_path, match="lr must be > 0")
    expect_user_error(capsys, "--preset", "tiny", "--config", tmp_path / "missing.toml", "--out", tmp_path,
                      match="does not exist")


@pytest.mark.parametrize("argv,message", [
    (["--stage", "report", "--eval-episodes", "5"],
     "--eval-episodes is not used by --stage report (it is read by --stage rl); use --episodes"),
    (["--stage", "rl", "--episodes", "5"], "--episodes is not used by --stage rl (it is read by --stage report)"),
    (["--stage", "base", "--heldout-seed", "4"], "--heldout-seed is not used by --stage base"),
    (["--stage", "report", "--timesteps", "4", "--patience", "3"], "--timesteps is not used by --stage report"),
    (["--stage", "rl", "--d-model", "8"], "--d-model is not used by --stage rl (it is read by --stage base)"),
    (["--stage", "report", "--resume", "x.pt"], "--resume is not used by --stage report"),
])
def test_a_flag_the_stage_does_not_read_is_refused(capsys, tmp_path, argv, message):
    """Silently ignoring it would score or train something else than the user asked for."""
    assert train.main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_next_step_after_a_tiny_base_names_the_tiny_rl_preset(tmp_path):
    from stages.outputs import next_steps
    from infinito.presets import PRESETS, snapshot_name
    (tmp_path / snapshot_name(PRESETS["tiny"]["train"]["snapshot_at"])).touch()
    assert "--preset tiny --out" in next_steps(tmp_path, "base", tmp_path / "runs")
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / snapshot_name(PRESETS["demo"]["train"]["snapshot_at"])).touch()
    assert "--preset" not in next_steps(demo, "base", demo / "runs")  # the default needs no flag


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_but_absent(capsys, tmp_path):
    expect_user_error(capsys, "--preset", "tiny", "--device", "cuda", "--out", tmp_path, match="CUDA is not available")


def test_bad_resume_files(capsys, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    expect_user_error(capsys, "--resume", corrupt, "--out", tmp_path / "o", match="not a readable checkpoint")
    assert corrupt.read_bytes() == b"not a checkpoint at all"
    wrong = tmp_path / "agent.pt"
    torch.save({"kind": "ppo-agent", "format_version": 1}, wrong)
    expect_user_error(capsys, "--resume", wrong, "--out", tmp_path / "o", match="'ppo-agent' checkpoint")
    expect_user_error(capsys, "--resume", tmp_path / "missing.pt", "--out", tmp_path / "o", match="does not exist")
    assert not (tmp_path / "o" / "base.pt").exists()


def test_out_is_a_file(capsys, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    expect_user_error(capsys, "--preset", "tiny", "--out", target, match=str(target))
    assert target.read_text() == "keep me"


def test_resume_cannot_change_model_shape(capsys, tiny_run, tmp_path):
    expect_user_error(capsys, "--resume", tiny_run / "base.pt", "--d-model", 128, "--out", tmp_path, match="model shape")


def test_process_exit_code_and_single_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), "--stage", "base", "--preset", "nope",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and res.stderr.startswith("error: unknown preset")


def test_sigterm_saves_a_resumable_checkpoint(tmp_path):
    import signal
    import time
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--stage", "base", "--preset", "tiny", "--quiet",
                             "--steps", "100000", "--log-every", "1", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    log = tmp_path / "base_log.jsonl"
    deadline = time.time() + 120
    while not (log.exists() and log.stat().st_size > 0) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "interrupted at step" in err and "Traceback" not in err
    ck = torch.load(tmp_path / "base.pt", weights_only=True)
    assert 0 < ck["step"] < 100000
    assert not list(tmp_path.glob(".base.pt.*.tmp"))  # no temp file left behind


def test_nan_loss_is_one_line_and_keeps_last_good_checkpoint(capsys, tmp_path, monkeypatch):
    assert run_main("--preset", "tiny", "--steps", 30, "--out", tmp_path) == 0
    good = (tmp_path / "base.pt").read_bytes()
    import stages.base
    real_step = stages.base.train_step
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise stages.base.NonFiniteLoss("training loss is nan")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(stages.base, "train_step", poisoned)
    expect_user_error(capsys, "--resume", tmp_path / "base.pt", "--steps", 60, match="loss is nan at step 33")
    assert (tmp_path / "base.pt").read_bytes() == good  # the broken state was not saved


def test_packages_are_importable_outside_the_repo(tmp_path):
    """Every package is a real package (has __init__.py), so an installed copy works from any directory."""
    for pkg in ("infinito", "ppo", "data", "env", "common", "stages"):
        assert (ROOT / pkg / "__init__.py").is_file(), pkg


def test_every_flag_declares_the_stages_that_read_it():
    """The refusal above works for every flag only if none is added without its stages."""
    parser, flags = train.build_parser()
    declared = {a.dest for a in parser._actions} - {"help"}
    assert declared == set(flags.read_by)
    assert flags.read_by["seed"][0] == ("base", "rl") and flags.read_by["threads"][0] == ("base", "rl", "report")
    assert flags.read_by["learning_rate"][0] == ("rl",) and flags.read_by["lr"][0] == ("base",)


def test_seed_means_one_thing_a_resumed_base_takes_none(capsys, base_dir, tmp_path):
    import shutil
    shutil.copytree(base_dir, tmp_path / "b")
    assert train.main(["--stage", "base", "--resume", str(tmp_path / "b" / "base.pt"), "--seed", "7",
                       "--steps", "40", "--quiet"]) == 2
    assert "--seed cannot change when resuming" in capsys.readouterr().err
    assert train.main(["--stage", "rl", "--preset", "tiny", "--out", str(tmp_path / "o"), "--threads", "-1"]) == 2
    assert "--threads must be >= 0" in capsys.readouterr().err


def test_threads_zero_is_the_idle_cores_in_every_stage(monkeypatch, base_dir, tmp_path):
    """0 used to mean the idle cores for the base stage but one thread for the RL and report stages."""
    import common.cores
    from stages.rl.plan import plan
    monkeypatch.setattr(common.cores, "idle_cores", lambda: 3)
    parser, _ = train.build_parser()
    args = parser.parse_args(["--stage", "rl", "--preset", "tiny", "--base", str(base_dir / "base.pt"),
                              "--out", str(tmp_path / "o"), "--threads", "0"])
    p = plan(args)
    assert p.threads == 3 and p.ppo_cfg.torch_threads == 3
    args = parser.parse_args(["--stage", "rl", "--preset", "tiny", "--base", str(base_dir / "base.pt"),
                              "--out", str(tmp_path / "o")])
    assert plan(args).threads == 1  # the RL stage's default: PPO's small networks run fastest on one

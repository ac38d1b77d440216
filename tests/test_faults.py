"""Bad input and faults end in one `error:` line, exit status 2, no traceback, nothing damaged."""
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import generate
import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--stage", "base", "--preset", "tiny", "--quiet"]


def one_line_error(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("flags, needle", [
    (("--grad-clip", "-1"), "grad_clip must be > 0"),
    (("--min-lr-ratio", "-0.5"), "min_lr_ratio must be in [0, 1]"),
    (("--weight-decay", "-1"), "weight_decay must be >= 0"),
    (("--stop-at", "-3"), "--stop-at must be >= 1"),
    (("--stop-at", "0"), "--stop-at must be >= 1"),
    (("--seed", str(2**70)), "seed must be in [0, 2**63)"),
])
def test_invalid_values_are_refused_before_anything_is_written(capsys, tmp_path, flags, needle):
    out = tmp_path / "o"
    one_line_error(capsys, train.main(["--stage", "base", "--preset", "tiny", "--out", str(out), *flags]), needle)
    assert not out.exists()


def test_config_values_of_the_wrong_type_name_the_key(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('steps = "ten"\n')
    one_line_error(capsys, train.main(["--stage", "base", "--preset", "tiny", "--config", str(cfg),
                                       "--out", str(tmp_path / "o")]), "config key steps must be an integer", "'ten'")
    cfg.write_text("[train]\nlr = true\n")
    one_line_error(capsys, train.main(["--stage", "base", "--config", str(cfg), "--out", str(tmp_path / "o")]),
                   "config key lr must be a finite number")


def test_usage_errors_are_one_line_in_both_scripts(capsys):
    one_line_error(capsys, train.main(["--stage", "nope"]), "--stage", "train.py --help")
    one_line_error(capsys, train.main(["--bogus"]), "--bogus")
    one_line_error(capsys, generate.main(["--top-k", "x"]), "--top-k", "generate.py --help")


def test_generate_refuses_a_huge_seed_and_non_utf8_prompt(capsys, tmp_path):
    one_line_error(capsys, generate.main(["--seed", str(2**70), "--ckpt", str(tmp_path / "x.pt")]), "--seed")
    res = subprocess.run([sys.executable, str(ROOT / "generate.py"), "--prompt", b"caf\xe9"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "LC_ALL": "C.UTF-8"})
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "UTF-8" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(base_dir, tmp_path):
    """RLIMIT_FSIZE stands in for a full disk (no root needed): every write past it fails."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("base.pt", "tokenizer.model"):
        (out / name).write_bytes((base_dir / name).read_bytes())
    (out / "cache").mkdir()
    for f in (base_dir / "cache").glob("*.npy"):  # the token cache
        (out / "cache" / f.name).write_bytes(f.read_bytes())
    before = (out / "base.pt").read_bytes()
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), "--stage", "base", "--quiet",
                          "--resume", str(out / "base.pt"), "--steps", "60", "--eval-every", "5"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=_limit_file_size(200_000))
    err = res.stderr.strip()
    assert res.returncode == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert "base.pt" in err and "free disk space" in err
    assert (out / "base.pt").read_bytes() == before  # the previous checkpoint is intact
    assert not list(out.glob(".*.tmp"))  # and no temporary file is left behind


def test_a_failing_tensorboard_writer_thread_adds_no_traceback(base_dir, tmp_path):
    """TensorBoard writes its event file on a background thread. When that write fails (here a
    file-size limit, on a full disk ENOSPC) the thread used to print its own traceback after our
    `error:` line; now the one line names the log folder and nothing follows it."""
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), "--stage", "rl", "--preset", "tiny", "--quiet",
                          "--base", str(base_dir / "base.pt"), "--out", str(tmp_path / "rl")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=_limit_file_size(600))
    err = "\n".join(line for line in res.stderr.strip().splitlines() if not line.startswith("note: "))
    assert res.returncode == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert "File too large" in err and str(tmp_path / "rl" / "runs" / "rl") in err, err
    assert not list((tmp_path / "rl").glob(".*.tmp")) and not (tmp_path / "rl" / ".lock").exists()


def test_a_really_full_disk_is_one_line_too(base_dir, tmp_path):
    """A 400 KB tmpfs (needs root; skipped elsewhere): torch's zip writer then fails with a
    RuntimeError ("unexpected pos"), not an OSError, and still ends in one line."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        res = subprocess.run([sys.executable, str(ROOT / "train.py"), "--stage", "base", "--quiet",
                              "--resume", str(base_dir / "base.pt"), "--out", str(mount / "run"), "--steps", "60",
                              "--eval-every", "5"], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        err = res.stderr.strip()
        assert res.returncode == 2 and err.startswith("error: ") and "\n" not in err, err
        assert "Traceback" not in err and ("the disk is full" in err or "No space left" in err)
        assert not list((mount / "run").glob(".*.tmp"))
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 200 KB tmpfs (needs root; skipped elsewhere) and a function filling it to `free_kb` free."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")

    def fill(free_kb: int) -> Path:
        with open(mount / "filler", "wb") as f:
            f.write(b"\0" * (os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize - free_kb * 1024))
        return mount / "run"
    yield fill
    subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("stage, free_kb, where", [
    ("base", 0, ".lock"),           # not even the lock file fits
    ("base", 4, "runs/base"),       # TensorBoard's writer thread is the first to fail
    ("rl", 4, "runs/rl"),
])
def test_a_disk_full_from_the_start_is_one_line_and_leaves_nothing(base_dir, full_tmpfs, stage, free_kb, where):
    out = full_tmpfs(free_kb)
    flags = (["--resume", str(base_dir / "base.pt"), "--steps", "60", "--log-every", "1"] if stage == "base"
             else ["--preset", "tiny", "--base", str(base_dir / "base.pt")])
    res = subprocess.run([sys.executable, str(ROOT / "train.py"), "--stage", stage, "--quiet", "--out", str(out),
                          *flags], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    err = "\n".join(line for line in res.stderr.strip().splitlines() if not line.startswith("note: "))
    assert res.returncode == 2 and err.startswith("error: ") and "\n" not in err, err
    assert "No space left on device" in err and str(out / where) in err, err
    assert not out.exists() or not list(out.glob(".*"))  # no lock, no temporary file


def test_a_second_run_on_the_same_folder_stops_and_stale_leftovers_are_cleaned(capsys, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(f"{sleeper.pid}\n")  # a live run holds the folder
        one_line_error(capsys, train.main(["--stage", "base", "--preset", "tiny", "--out", str(out), "--steps", "3"]),
                       "in use by another run", str(sleeper.pid))
        assert not (out / "base.pt").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # its process is gone: the lock is stale and taken over; a killed save's temporary file is removed
    (out / ".base.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (out / "notes.tmp").write_text("not ours")
    (out / f".lock-{sleeper.pid}").write_text(f"{sleeper.pid}\n")  # a contender killed before it linked
    assert train.main(["--stage", "base", "--preset", "tiny", "--quiet", "--out", str(out), "--steps", "3"]) == 0
    assert not (out / ".base.pt.abc123.tmp").exists() and (out / "notes.tmp").exists()
    assert not (out / f".lock-{sleeper.pid}").exists()
    assert not (out / ".lock").exists()  # released at the end


def test_a_checkpoint_missing_a_key_is_refused_in_one_line(capsys, base_dir, tmp_path):
    import torch
    ck = torch.load(base_dir / "base.pt", weights_only=True)
    del ck["data_rng"]
    torch.save(ck, tmp_path / "partial.pt")
    one_line_error(capsys, train.main(["--stage", "base", "--resume", str(tmp_path / "partial.pt"),
                                       "--out", str(tmp_path / "o")]), "lacks data_rng")


def test_nan_in_a_new_run_does_not_name_an_earlier_runs_checkpoint(capsys, base_dir, tmp_path, monkeypatch):
    import stages.base
    out = tmp_path / "o"
    out.mkdir()
    (out / "base.pt").write_bytes((base_dir / "base.pt").read_bytes())  # an earlier run's file

    def nan_step(*args, **kwargs):
        raise stages.base.NonFiniteLoss("training loss is nan")

    monkeypatch.setattr(stages.base, "train_step", nan_step)
    err = one_line_error(capsys, train.main(["--stage", "base", "--preset", "tiny", "--quiet", "--out", str(out),
                                             "--overwrite"]), "loss is nan at step 1", "not written yet")
    assert str(out / "base.pt") not in err
    assert (out / "base.pt").read_bytes() == (base_dir / "base.pt").read_bytes()


def test_identical_runs_write_identical_checkpoint_bytes(tmp_path):
    """Every stored random state is seeded, so two identical runs (separate processes, whose
    unseeded generators would differ) give byte-identical files (agents know their base by its
    content anyway: see the test above)."""
    import hashlib
    digests = []
    for name in ("a", "b"):
        res = subprocess.run([sys.executable, str(ROOT / "train.py"), "--stage", "base", "--preset", "tiny", "--quiet",
                              "--steps", "3", "--threads", "1", "--out", str(tmp_path / name)],
                             capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert res.returncode == 0, res.stderr
        digests.append(hashlib.sha256((tmp_path / name / "base.pt").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_an_agent_knows_its_base_by_the_model_not_by_the_files_bytes(capsys, base_dir, rl_dir, tmp_path):
    """The same model in a file with other bytes (its optimiser state and step changed,
    as a re-save or another machine would) is accepted by generate.py --agent, --stage report and
    --resume; one weight changed is refused by each."""
    import torch
    from conftest import file_digest
    ck = torch.load(base_dir / "base.pt", weights_only=True)
    ck["step"] = ck["step"] + 1
    for state in ck["optimizer"]["state"].values():
        state["exp_avg"] = state["exp_avg"] + 1.0
    same = tmp_path / "same-model.pt"
    torch.save(ck, same)
    ck["model"]["tok_emb.weight"][0, 0] += 1e-3
    other = tmp_path / "other-model.pt"
    torch.save(ck, other)
    assert file_digest(same) != file_digest(base_dir / "base.pt")

    gen = ["--agent", str(rl_dir / "64.pt"), "--agent-steps", "2", "--max-new-tokens", "4"]
    assert generate.main([*gen, "--ckpt", str(same)]) == 0
    capsys.readouterr()  # that run's text and speed line
    one_line_error(capsys, generate.main([*gen, "--ckpt", str(other)]), "not the base checkpoint", "another model")
    report = ["--stage", "report", "--ckpt-dir", str(rl_dir), "--out", str(tmp_path / "r"), "--episodes", "1"]
    one_line_error(capsys, train.main([*report, "--base", str(other)]), "not the base checkpoint")
    resume = ["--stage", "rl", "--resume", str(rl_dir / "64.pt"), "--out", str(tmp_path / "rl"), "--quiet"]
    one_line_error(capsys, train.main([*resume, "--base", str(other), "--timesteps", "64"]), "not the base checkpoint")
    capsys.readouterr()


def test_a_failed_run_leaves_an_earlier_run_in_the_same_folder_byte_identical(capsys, base_dir, tmp_path,
                                                                              monkeypatch):
    import shutil
    import stages.base
    out = tmp_path / "o"
    shutil.copytree(base_dir, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def nan_step(*args, **kwargs):
        raise stages.base.NonFiniteLoss("training loss is nan")

    monkeypatch.setattr(stages.base, "train_step", nan_step)
    # without --overwrite the fresh run stops at once; with it, the earlier run is held aside while
    # the new one trains and put back when it fails
    one_line_error(capsys, train.main(["--stage", "base", "--preset", "tiny", "--quiet", "--out", str(out)]),
                   "already holds a base run", "--resume", "--overwrite")
    one_line_error(capsys, train.main(["--stage", "base", "--preset", "tiny", "--quiet", "--out", str(out),
                                       "--lr", "0.01", "--overwrite"]), "loss is nan at step 1")
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # config, tokenizer, logs, TensorBoard events, checkpoints: all as they were


def test_cache_entries_of_another_shape_are_rebuilt_and_the_rl_stage_scores_the_same(capsys, base_dir, tmp_path):
    """Control cache entries an older version could have left (a list, a dict without mean_reward,
    a number stored as a string) used to end the RL stage in `KeyError: 'mean_reward'`; they are
    played again like a file cut short, and so is a token cache cut short."""
    import json
    import shutil

    import torch
    base = tmp_path / "base"
    shutil.copytree(base_dir, base, ignore=shutil.ignore_patterns("runs", "controls"))
    rl = ["--stage", "rl", "--preset", "tiny", "--quiet", "--base", str(base / "base.pt"), "--timesteps", "16"]

    def controls(out):
        extra = torch.load(out / "16.pt", map_location="cpu", weights_only=True)["extra"]
        return {k: extra[k] for k in ("controls", "adaptive", "heldout_controls", "heldout_adaptive")}
    assert train.main([*rl, "--out", str(tmp_path / "clean")]) == 0  # fills the base's control cache
    entries = sorted((base / "cache" / "controls").glob("*.json"))
    kept = {f: f.read_text() for f in entries}
    shapes = [lambda d: list(d), lambda d: {k: v for k, v in d.items() if k != "mean_reward"},
              lambda d: {**d, "mean_reward": str(d["mean_reward"])}, lambda d: {**d, "extra": None}]
    for i, f in enumerate(entries):
        f.write_text(json.dumps(shapes[i % len(shapes)](json.loads(kept[f]))))
    tokens = {f: f.read_bytes() for f in (base / "cache").glob("*.npy") if "-test-" not in f.name}  # those it reads
    assert len(tokens) == 2
    for f, blob in tokens.items():
        f.write_bytes(blob[:len(blob) // 2])
    capsys.readouterr()
    assert train.main([*rl, "--out", str(tmp_path / "again")]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert controls(tmp_path / "again") == controls(tmp_path / "clean")
    assert {f: f.read_text() for f in entries} == kept  # every entry played again and rewritten whole
    assert {f: f.read_bytes() for f in tokens} == tokens
    assert not list((base / "cache").rglob(".*.tmp"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("script", ["train.py", "generate.py"])
def test_ctrl_c_while_starting_is_one_line(script, sig, tmp_path):
    import time
    proc = subprocess.Popen([sys.executable, str(ROOT / script), "--quiet" if script == "train.py" else "--json",
                             "--out" if script == "train.py" else "--prompt",
                             str(tmp_path / "o") if script == "train.py" else "x"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    time.sleep(0.15)  # torch is still loading
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().startswith("error: interrupted") and "\n" not in err.strip() and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, needle", [
    (("--patience", "0"), "--patience must be >= 1"),
    (("--eval-episodes", "0"), "--eval-episodes"),
    (("--clip-range", "-1"), "clip_range"),
    (("--eval-seed", str(2**70)), "--eval-seed must be in [0, 2**63"),
    (("--eval-seed", "5", "--heldout-seed", "6"), "overlapping episode seeds"),  # held out only in name
    (("--n-steps", str(10**20)), "a rollout of --n-steps"),                      # a 5 TiB buffer before
    (("--num-envs", str(10**11)), "--num-envs must be at most 1024"),
    (("--full-checkpoints", "-5"), "--full-checkpoints must be latest, all or positive steps"),
    (("--full-checkpoints", "0"), "got '0'"),
    (("--env", "inner_lr=abc"), "inner_lr must be a finite number, got 'abc'"),
    (("--env", "inner_lr=NaN"), "inner_lr must be a finite number, got nan"),
    (("--env", "reward.phi_low=abc"), "phi_low must be a finite number"),
    (("--env", "max_steps=2.5"), "max_steps must be an integer"),
    (("--env", "modes=xyz"), "modes must be a list of [name, w_text, w_phi]"),
    (("--env", "device=tpu"), "device must be cpu, cuda or cuda:N"),
])
def test_rl_flags_out_of_range_are_one_line(capsys, base_dir, tmp_path, flags, needle):
    one_line_error(capsys, train.main(["--stage", "rl", "--preset", "tiny", "--base", str(base_dir / "base.pt"),
                                       "--out", str(tmp_path / "o"), *flags]), needle)
    assert not (tmp_path / "o").exists()


def test_a_diverging_environment_is_one_line_naming_its_lr(capsys, base_dir, tmp_path):
    """NaN while the controls are scored (before PPO starts): one line naming the setting to lower."""
    one_line_error(capsys, train.main(["--stage", "rl", "--preset", "tiny", "--quiet", "--base", str(base_dir / "base.pt"),
                                       "--out", str(tmp_path / "o"), "--env", "inner_lr=1e6"]),
                   "loss is nan inside the environment (its inner_lr is 1e+06)", "--env inner_lr=100000")


def test_a_corpus_too_short_is_one_line_with_the_warning_as_a_note(capsys, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("one line\ntwo\n")
    code = train.main([*TINY, "--data", str(short), "--out", str(tmp_path / "o")])
    printed = capsys.readouterr()
    assert code == 2 and printed.err.startswith("error: ") and printed.err.count("\n") == 1, printed.err
    assert "fewer than context + 1" in printed.err and "UserWarning" not in printed.err + printed.out
    assert "note: vocab size 384 is more than this corpus supports" in printed.out
    assert not (tmp_path / "o").exists()


def test_an_overflowing_learning_rate_is_one_line(capsys, tmp_path):
    """lr 1e38 passes the NaN check and used to end in torch's own traceback inside AdamW."""
    out = tmp_path / "o"
    one_line_error(capsys, train.main([*TINY, "--lr", "1e38", "--warmup", "0", "--out", str(out)]),
                   "overflows float32 (learning rate 1e+38) at step 1", "lower --lr")
    assert not out.exists()


def test_out_of_memory_from_torch_is_one_line(capsys, tmp_path, monkeypatch):
    """torch's CPU allocator raises RuntimeError, not MemoryError (--context 100000 asks for 640 GB)."""
    import stages.base

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 640000000000 bytes. Error code 12")
    monkeypatch.setattr(stages.base, "train_step", no_memory)
    one_line_error(capsys, train.main([*TINY, "--out", str(tmp_path / "o")]), "out of memory", "--context")
    assert not (tmp_path / "o").exists()


def test_generate_refuses_an_absurd_length(capsys, base_dir):
    one_line_error(capsys, generate.main(["--ckpt", str(base_dir / "base.pt"), "--max-new-tokens", str(10**20)]),
                   "--max-new-tokens must be at most 1,000,000")


def test_a_missing_dependency_is_one_line(capsys, monkeypatch):
    from stages import startup
    monkeypatch.setattr(startup, "RUNTIME_DEPENDENCIES", ("torch", "no_such_module_xyz"))
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as stop:
            startup.guard_startup()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stop.value.code == 2
    one_line_error(capsys, 2, "no_such_module_xyz is not installed", "pip install torch==2.13.0 -e .")

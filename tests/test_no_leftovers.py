"""A refused or failed run leaves its output folder as it found it (or absent); a run killed
during --overwrite does not lose the earlier run; the last bad inputs give one line."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train
from test_faults import one_line_error

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--stage", "base", "--preset", "tiny", "--quiet"]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def corrupt(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"garbage")
    return path


@pytest.mark.parametrize("flags, needle", [
    (("--preset", "nope"), "unknown preset"),
    (("--config", "{bad_toml}"), "not valid TOML"),
    (("--lr", "-1"), "lr"),
    (("--resume", "{corrupt}"), "not a torch.save archive"),
])
def test_a_refused_base_start_creates_no_folder(capsys, tmp_path, corrupt, flags, needle):
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("x = [\n")
    out = tmp_path / "new" / "nested" / "out"  # three folders that did not exist
    flags = [f.format(bad_toml=bad_toml, corrupt=corrupt) for f in flags]
    one_line_error(capsys, train.main([*TINY, *flags, "--out", str(out)]), needle)
    assert not (tmp_path / "new").exists()


def test_a_refused_rl_start_creates_no_folder(capsys, rl_dir, corrupt, tmp_path):
    rl = ["--stage", "rl", "--preset", "tiny", "--quiet", "--out", str(tmp_path / "o")]
    one_line_error(capsys, train.main([*rl, "--base", str(rl_dir / "64.pt")]), "'ppo-agent'", "'infinito-base'")
    assert not (tmp_path / "o").exists()
    one_line_error(capsys, train.main([*rl, "--base", str(corrupt)]), "corrupt")
    assert not (tmp_path / "o").exists()


def test_a_run_failing_after_tokenising_leaves_no_folder_and_no_cache(capsys, base_dir, tmp_path):
    out = tmp_path / "o"
    one_line_error(capsys, train.main([*TINY, "--lr", "1e30", "--out", str(out)]), "loss is nan at step 2")
    assert not out.exists()  # the token cache went with it
    # in a folder holding an earlier run, under --overwrite: a new tokenizer (other vocabulary) would have
    # added its own token cache; the folder is byte-identical, with no new file
    shutil.copytree(base_dir, out)
    before = snapshot(out)
    one_line_error(capsys, train.main([*TINY, "--lr", "1e30", "--vocab-size", "400", "--out", str(out),
                                       "--overwrite"]), "loss is nan at step 2")
    assert snapshot(out) == before


def test_a_failed_run_in_a_shared_folder_removes_only_its_own_files(capsys, tmp_path, monkeypatch):
    """--out . is allowed: a file another program writes there during the run is not the run's to remove."""
    import stages.base
    out = tmp_path / "shared"
    out.mkdir()

    def someone_writes_then_nan(*args, **kwargs):
        (out / "notes.txt").write_text("mine")
        raise stages.base.NonFiniteLoss("training loss is nan")
    monkeypatch.setattr(stages.base, "train_step", someone_writes_then_nan)
    one_line_error(capsys, train.main([*TINY, "--out", str(out)]), "loss is nan at step 1")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the run's cache/ went, the note stayed


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


def _script(*args, cwd):
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _wait_for(condition, proc, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_sigterm_after_start_before_training_is_one_line_and_leaves_nothing(tmp_path):
    """The corpus is a FIFO nobody writes to: the run waits in the corpus reader, past start-up."""
    fifo = tmp_path / "corpus.txt"
    os.mkfifo(fifo)
    proc = _script(*TINY, "--data", str(fifo), "--out", str(tmp_path / "o"), cwd=tmp_path)
    _wait_for(lambda: (tmp_path / "o" / ".lock").exists(), proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().startswith("error: interrupted") and "\n" not in err.strip() and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("got_a_checkpoint", [False, True])
def test_a_run_killed_during_overwrite_does_not_lose_the_earlier_run(capsys, base_dir, tmp_path, got_a_checkpoint):
    out = tmp_path / "o"
    shutil.copytree(base_dir, out)
    before = snapshot(out)
    # a long run with no checkpoint for a while, or one that writes its first at step 1
    flags = ["--eval-every", "1"] if got_a_checkpoint else ["--steps", "100000", "--eval-every", "100000",
                                                            "--snapshot-at", "0"]
    proc = _script(*TINY, "--out", str(out), "--overwrite", "--log-every", "1", *flags, cwd=tmp_path)
    held = out / f".earlier-run-{proc.pid}"
    _wait_for(lambda: held.is_dir() and (not got_a_checkpoint or (out / "base.pt").exists()), proc)
    proc.kill()  # kill -9: no handler runs
    proc.communicate(timeout=60)
    assert held.is_dir() and not (out / "base_summary.json").exists()  # the earlier run is still aside
    # the next run in the folder (here a fresh one, which is refused) puts it back first
    assert train.main([*TINY, "--out", str(out)]) == 2
    printed = capsys.readouterr()
    assert not held.exists()
    if not got_a_checkpoint:
        assert f"put back the earlier base run in {out}" in printed.out
        assert snapshot(out) == before  # the killed run's logs are gone
        assert "already holds a base run" in printed.err
    else:  # both runs have checkpoints: the killed one stays, resumable; the earlier one is kept beside it
        kept = out / f"earlier-run-{proc.pid}"
        assert f"is kept in {kept}" in printed.out
        assert snapshot(kept) == {k: v for k, v in before.items() if k.parts[0] != "cache"}  # the cache is shared
        assert "continue it with --resume" in printed.err


def test_a_run_killed_while_moving_the_earlier_run_aside_is_put_back(capsys, base_dir, tmp_path):
    """kill -9 between the first and the last file moved: a .moving-run-<pid> folder, never taken
    for a complete held run (that would split the earlier run in two places)."""
    out = tmp_path / "o"
    shutil.copytree(base_dir, out)
    before = snapshot(out)
    moving = out / ".moving-run-99999"
    moving.mkdir()
    (out / "base_summary.json").replace(moving / "base_summary.json")
    (out / "runs" / "base").replace(moving / "runs__base")
    assert train.main([*TINY, "--out", str(out)]) == 2  # refused: the earlier run is back in place
    printed = capsys.readouterr()
    assert "put back the files of an earlier run" in printed.out and "already holds a base run" in printed.err
    assert snapshot(out) == before


def test_a_resumed_rl_run_makes_the_checkpoint_it_resumed_from_light(base_dir, rl_dir, tmp_path):
    import torch

    from ppo.checkpoint import is_light
    out = tmp_path / "ckpt"
    shutil.copytree(rl_dir, out)
    assert not is_light(torch.load(out / "64.pt", weights_only=True))
    assert train.main(["--stage", "rl", "--quiet", "--resume", str(out / "64.pt"), "--timesteps", "32"]) == 0
    assert is_light(torch.load(out / "64.pt", weights_only=True))
    assert not is_light(torch.load(out / "96.pt", weights_only=True))  # only the latest keeps the environments


def test_base_threads_follow_the_cores_idle_now_not_the_load_average(monkeypatch):
    """Right after `pip install` the 1-minute load average still counts it: an idle 2-core machine
    got 1 thread. /proc/stat over a quarter of a second says what is busy now."""
    import torch

    from common import cores
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.6, 0.9, 0.4))  # a pip install just ended
    for busy_ticks, threads in ((2, 2), (20, 2), (30, 1), (100, 1)):  # of 100 ticks over both cores
        ticks = iter([(1000, 500), (1100, 500 + 100 - busy_ticks)])
        monkeypatch.setattr(cores, "_cpu_times", lambda: next(ticks))
        assert cores.idle_cores() == threads, busy_ticks
    monkeypatch.setattr(cores, "_cpu_times", lambda: open("/no/such/file"))  # not Linux: the load average
    assert cores.idle_cores() == 1

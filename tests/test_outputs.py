"""What a run does to its --out folder: a fresh run never silently replaces an earlier run of the
same stage; a refused, failed or interrupted run leaves the folder as it found it (or absent); a
run killed during --overwrite does not lose the earlier run; only the latest RL checkpoint stays
full (the others are light)."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import train
from test_faults import TINY, one_line_error

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_fresh_rl_run_into_an_occupied_folder_stops_and_leaves_every_file(capsys, base_dir, rl_dir, tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(rl_dir, out)
    before = snapshot(out)
    rl = ["--stage", "rl", "--preset", "tiny", "--quiet", "--base", str(base_dir / "base.pt"), "--out", str(out)]
    assert train.main(rl) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "already holds an RL run" in err and f"--resume {out / '64.pt'}" in err and "--overwrite" in err
    assert snapshot(out) == before
    # --overwrite replaces it: the new run's files, none of the old run's left aside
    assert train.main([*rl, "--overwrite", "--timesteps", "32"]) == 0
    assert (out / "32.pt").exists() and not (out / "64.pt").exists()
    assert not list(out.glob(".earlier-run-*"))


def test_the_rl_stage_still_trains_beside_its_base_checkpoint_and_says_what_next(base_dir, tmp_path, capsys):
    out = tmp_path / "ckpt"
    shutil.copytree(base_dir, out)  # base.pt, the snapshot, tokenizer, logs: the base stage's files
    assert train.main(["--stage", "rl", "--preset", "tiny", "--quiet", "--base", str(out / "base.pt"),
                       "--out", str(out), "--timesteps", "32"]) == 0
    printed = capsys.readouterr().out
    assert f"python generate.py --agent {out / 'best.pt'}" in printed
    assert f"python train.py --stage report --ckpt-dir {out}" in printed and f"tensorboard --logdir {out / 'runs'}" in printed


def test_only_the_latest_checkpoint_is_full_and_a_light_one_evaluates_and_generates_the_same(
        rl_dir, tmp_path, capsys):
    import json

    import torch

    import generate
    from ppo.checkpoint import is_light, write_light
    ckpts = {name: torch.load(rl_dir / name, weights_only=True) for name in ("32.pt", "64.pt", "best.pt")}
    assert is_light(ckpts["32.pt"]) and is_light(ckpts["best.pt"]) and not is_light(ckpts["64.pt"])
    assert (rl_dir / "best.pt").stat().st_size < (rl_dir / "64.pt").stat().st_size / 4
    light = tmp_path / "64-light.pt"
    write_light(str(rl_dir / "64.pt"), str(light))

    def sample(agent):
        assert generate.main(["--agent", str(agent), "--agent-steps", "3", "--max-new-tokens", "8", "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return [{k: v for k, v in row.items() if k not in ("agent", "tokens_per_sec")} for row in rows]  # all but
        # the file's name and the measured speed
    assert sample(light) == sample(rl_dir / "64.pt")  # the adaptation's decisions and the text


def test_resuming_a_light_checkpoint_says_it_does_not_repeat_the_run(base_dir, rl_dir, tmp_path, capsys):
    out = tmp_path / "ckpt"
    shutil.copytree(rl_dir, out)
    assert train.main(["--stage", "rl", "--quiet", "--resume", str(out / "32.pt"), "--timesteps", "32"]) == 0
    assert "is a light checkpoint" in capsys.readouterr().out


def test_the_user_chooses_which_checkpoints_stay_full(base_dir, tmp_path, capsys):
    import torch

    from ppo.checkpoint import is_light
    rl = ["--stage", "rl", "--preset", "tiny", "--quiet", "--base", str(base_dir / "base.pt")]
    assert train.main([*rl, "--out", str(tmp_path / "a"), "--full-checkpoints", "32"]) == 0
    assert not any(is_light(torch.load(tmp_path / "a" / f, weights_only=True)) for f in ("32.pt", "64.pt"))
    assert train.main([*rl, "--out", str(tmp_path / "b"), "--full-checkpoints", "soon"]) == 2
    assert "--full-checkpoints must be latest, all or positive steps" in capsys.readouterr().err


def test_a_resumed_rl_run_makes_the_checkpoint_it_resumed_from_light(base_dir, rl_dir, tmp_path):
    import torch

    from ppo.checkpoint import is_light
    out = tmp_path / "ckpt"
    shutil.copytree(rl_dir, out)
    assert not is_light(torch.load(out / "64.pt", weights_only=True))
    assert train.main(["--stage", "rl", "--quiet", "--resume", str(out / "64.pt"), "--timesteps", "32"]) == 0
    assert is_light(torch.load(out / "64.pt", weights_only=True))
    assert not is_light(torch.load(out / "96.pt", weights_only=True))  # only the latest keeps the environments


# ----------------------------------------------------------------------------- refused, failed or killed runs

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

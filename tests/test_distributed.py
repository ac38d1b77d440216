"""torch.distributed on CPU (gloo, two processes): data-parallel base training equals one
process with the ranks' batches stacked; the RL stage's policies stay identical, bit for bit,
to one process stepping all the environments."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import dist_workers
import train

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="this torch has no gloo backend")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_train_the_base_model_like_one_process_with_both_batches(tmp_path):
    mp.spawn(dist_workers.base_rank, args=(2, free_port(), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    ref = dist_workers.reference(2)
    # the memory (a buffer) and the weights are the same on both ranks, exactly
    for k, v in ranks[0]["state"].items():
        assert torch.equal(v, ranks[1]["state"][k]), k
    assert ranks[0]["state"]["memory.used"].any()  # the memory was written
    # and equal, to floating-point tolerance, to one process over batch 2b
    assert ranks[0]["losses"] == pytest.approx(ref["losses"], rel=1e-5, abs=1e-6)
    # (weights: Adam divides by sqrt(v), so summation-order differences in the gradient show up
    # as ~1e-5 after six steps of lr 3e-3; 1e-4 is 3 % of one step)
    for k, v in ref["state"].items():
        torch.testing.assert_close(ranks[0]["state"][k], v, rtol=1e-3, atol=1e-4, msg=k)


def test_a_failure_on_one_rank_is_raised_on_every_rank(tmp_path):
    mp.spawn(dist_workers.failing_rank, args=(2, free_port(), str(tmp_path)), nprocs=2)
    for r in range(2):
        assert (tmp_path / f"rank{r}.txt").read_text() == "training loss is nan (rank 1's environment)"


def test_a_nan_loss_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    mp.spawn(dist_workers.nan_on_rank_1, args=(2, free_port(), str(tmp_path)), nprocs=2)
    assert (tmp_path / "rank1.txt").read_text() == "step 1: training loss is nan"
    assert (tmp_path / "rank0.txt").read_text() == "step 1: training loss is not finite on another process"


# ----------------------------------------------------------------------------- the stages under torchrun

ROOT = Path(__file__).resolve().parents[1]


def torchrun(nproc: int, *argv) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(free_port()), str(ROOT / "train.py"), *map(str, argv)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


def why(res: subprocess.CompletedProcess) -> str:
    """A failed torchrun's own lines (a rank's C++ abort message included), without its long summary."""
    keep = [line for line in res.stderr.splitlines()
            if any(k in line for k in ("error", "Error", "terminate", "what()", "rank1", "Abort"))]
    return "\n".join(keep[-40:]) or res.stderr[-2000:]


def weights(path: Path, key: str) -> dict:
    return torch.load(path, weights_only=True)[key]


def test_base_stage_under_torchrun_resumes_exactly(tmp_path):
    common = ("--stage", "base", "--preset", "tiny", "--quiet", "--steps", 20, "--eval-every", 10)
    assert torchrun(2, *common, "--out", tmp_path / "straight").returncode == 0
    res = torchrun(2, *common, "--out", tmp_path / "split", "--stop-at", 10)
    assert res.returncode == 0, why(res)
    res = torchrun(2, "--stage", "base", "--quiet", "--resume", tmp_path / "split" / "base.pt")
    assert res.returncode == 0, why(res)
    a, b = weights(tmp_path / "straight" / "base.pt", "model"), weights(tmp_path / "split" / "base.pt", "model")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ranks = torch.load(tmp_path / "straight" / "base.pt", weights_only=True)["ranks"]
    assert ranks["world"] == 2 and not torch.equal(ranks["data_rng"][0], ranks["data_rng"][1])  # own streams
    # one process resuming a 2-process checkpoint works and says the data order changes
    one = subprocess.run([sys.executable, str(ROOT / "train.py"), "--stage", "base", "--quiet", "--steps", "22",
                          "--resume", str(tmp_path / "straight" / "base.pt"), "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert one.returncode == 0 and "the data order differs" in one.stdout, one.stderr


def test_rl_stage_two_ranks_equal_one_process_bit_for_bit_and_resume_exactly(base_dir, tmp_path):
    common = ("--stage", "rl", "--preset", "tiny", "--quiet", "--num-envs", 4, "--base", base_dir / "base.pt",
              "--eval-freq", 1000)
    assert train.main([*map(str, common), "--timesteps", "64", "--out", str(tmp_path / "one")]) == 0
    # two ranks, stopped half-way and resumed: equal to one process only if both the ranks' split of
    # the environments and the resume are exact (an uninterrupted two-rank run adds nothing to that)
    res = torchrun(2, *common, "--timesteps", 32, "--out", tmp_path / "split")
    assert res.returncode == 0, why(res)
    res = torchrun(2, "--stage", "rl", "--quiet", "--resume", tmp_path / "split" / "32.pt", "--timesteps", 32)
    assert res.returncode == 0, why(res)
    ref = torch.load(tmp_path / "one" / "64.pt", weights_only=True)
    for run in ("split",):
        ck = torch.load(tmp_path / run / "64.pt", weights_only=True)
        for k, v in ref["policy"].items():
            assert torch.equal(v, ck["policy"][k]), (run, k)
        envs = ck["rollout"]["env_state"]["envs"]
        assert len(envs) == 4  # rank 0 saved every rank's environments
        for ea, eb in zip(ref["rollout"]["env_state"]["envs"], envs):
            assert all(torch.equal(ea["model"][k], eb["model"][k]) for k in ea["model"]), run


def test_a_world_size_that_does_not_divide_the_environments_is_one_line(base_dir, tmp_path):
    res = torchrun(2, "--stage", "rl", "--preset", "tiny", "--num-envs", 3, "--base", base_dir / "base.pt",
                   "--out", tmp_path / "o")
    assert res.returncode != 0
    ours = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "cannot be shared evenly by 2 processes" in ours[0], res.stderr[-2000:]
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").glob("*.pt"))

"""torch.distributed on CPU (gloo, two processes): data-parallel base training equals one
process with the ranks' batches stacked; the RL stage's policies stay identical, bit for bit,
to one process stepping all the environments."""
import socket

import pytest
import torch
import torch.multiprocessing as mp

import dist_workers

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

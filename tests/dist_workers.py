"""Worker functions the distributed tests start with torch.multiprocessing (spawn imports
this module in each child, so they live outside the test file)."""
from __future__ import annotations

import os

import torch

from common import distributed
from data import random_batch
from infinito.config import InfinitoConfig
from infinito.model import Infinito
from infinito.presets import PRESETS
from infinito.training import make_optimizer, train_step

SEED, STEPS, BATCH, VOCAB = 3, 6, 2, 64


def tiny_model() -> tuple[Infinito, torch.optim.Optimizer]:
    torch.manual_seed(SEED)
    model = Infinito(InfinitoConfig(**{**PRESETS["tiny"]["model"], "vocab_size": VOCAB, "context": 16}))
    return model, make_optimizer(model, 3e-3)


def ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2000,), generator=torch.Generator().manual_seed(0))


def join(rank: int, world: int, port: int) -> distributed.Dist:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    d = distributed.Dist.from_env("cpu")
    distributed.use(d)
    return d


def base_rank(rank: int, world: int, port: int, out: str) -> None:
    """The base stage's step on each rank: its own batch stream (seed + rank), gradients averaged
    by DDP, the memory written from the ranks' mean summary and Φ."""
    from stages.base import data_parallel
    d = join(rank, world, port)
    model, opt = tiny_model()
    ddp = data_parallel(model, torch.device("cpu"))
    gen, data, losses = torch.Generator().manual_seed(SEED + rank), ids(), []
    for _ in range(STEPS):
        x, y = random_batch(data, BATCH, 16, gen)
        stats = train_step(model, opt, x, y, 1.0, 0.1, 1.0, forward=ddp, average=d.mean)
        losses.append(d.sum([stats["loss"]])[0] / world)
    torch.save({"losses": losses, "state": model.state_dict()}, os.path.join(out, f"rank{rank}.pt"))
    d.close()


def reference(world: int) -> dict:
    """One process, batch world x BATCH: rank r's rows, stacked in rank order."""
    model, opt = tiny_model()
    gens, data, losses = [torch.Generator().manual_seed(SEED + r) for r in range(world)], ids(), []
    for _ in range(STEPS):
        parts = [random_batch(data, BATCH, 16, g) for g in gens]
        x, y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        losses.append(train_step(model, opt, x, y, 1.0, 0.1, 1.0)["loss"])
    return {"losses": losses, "state": model.state_dict()}


class _Failing:
    """A one-environment vector env whose step fails on rank 1 only."""
    num_envs = 1

    def __init__(self, rank: int):
        from common.spaces import Box, Discrete
        self.rank, self.observation_space, self.action_space = rank, Box(-1.0, 1.0, (2,)), Discrete(2)

    def reset(self, seed=None, options=None):
        import numpy as np
        return np.zeros((1, 2), np.float32), {"env_infos": [{}]}

    def step(self, actions):
        import numpy as np
        if self.rank == 1:
            raise FloatingPointError("training loss is nan (rank 1's environment)")
        return np.zeros((1, 2), np.float32), np.zeros(1), np.zeros(1, bool), np.zeros(1, bool), {"env_infos": [{}]}


def failing_rank(rank: int, world: int, port: int, out: str) -> None:
    """A failure on one rank is raised on every rank, not left for the others to wait on."""
    d = join(rank, world, port)
    env = distributed.DistributedVectorEnv(_Failing(rank), world, d)
    env.reset(seed=0)
    try:
        env.step([0] * world)
        outcome = "no error"
    except FloatingPointError as e:
        outcome = str(e)
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
        f.write(outcome)
    d.close()


def nan_on_rank_1(rank: int, world: int, port: int, out: str) -> None:
    """Rank 1's loss is NaN at the second step: both ranks stop there with NonFiniteLoss (none
    waits in the gradient all-reduce for the other)."""
    from infinito.training import NonFiniteLoss
    from stages.base import data_parallel
    d = join(rank, world, port)
    model, opt = tiny_model()
    ddp = data_parallel(model, torch.device("cpu"))

    def forward(x, y, **kw):
        result = ddp(x, y, **kw)
        if rank == 1 and step == 1:
            result.loss = result.loss * float("nan")
        return result
    gen, data, outcome = torch.Generator().manual_seed(SEED + rank), ids(), "no error"
    for step in range(3):
        x, y = random_batch(data, BATCH, 16, gen)
        try:
            train_step(model, opt, x, y, forward=forward, average=d.mean)
        except NonFiniteLoss as e:
            outcome = f"step {step}: {e}"
            break
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
        f.write(outcome)
    d.close()

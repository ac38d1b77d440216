"""Several processes on one job, through `torch.distributed` as `torchrun` starts it.

`torchrun --nproc_per_node N train.py ...` sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous address in each process's environment; `Dist.from_env` joins that
group (gloo on CPU, NCCL with one GPU per rank on CUDA: the same code path) or,
without torchrun, is a group of one whose every operation is the identity.

What the stages need is here, written once:
- `mean` / `any` / `gather` / `broadcast`: small collectives (floats, flags,
  picklable objects).
- `DistributedVectorEnv`: rank r steps its own slice of the environments, and
  every rank sees the whole batch (observations, rewards, infos) after each
  step, so every rank runs the same PPO update on the same data with the same
  generator: the policies stay identical without all-reducing gradients.
- `spread_episodes`: evaluation episodes split over the ranks by seed, the
  results gathered back in seed order.
- `use(d)`: also sets `common.files.WRITES_ENABLED`, so files (checkpoints, logs, reports) are written by rank 0 alone.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls, device: str = "cpu", timeout_s: float = 1800) -> "Dist":
        """The group torchrun started this process in (a group of one without torchrun).
        `device` "cuda" joins with NCCL and pins this rank to GPU LOCAL_RANK; else gloo."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        import torch.distributed as dist
        if device == "cuda":
            if not dist.is_nccl_available():
                raise RuntimeError("this torch has no NCCL backend; use --device cpu (gloo) or a CUDA build of torch")
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank, world_size=world,
                                    timeout=datetime.timedelta(seconds=timeout_s))
        return cls(rank, world, local)

    def close(self, together: bool = True) -> None:
        """Leave the group. `together` (a run that ended normally): first wait for every rank, so
        no rank tears its connections down while another still uses them. Not after a failure:
        the other ranks may never arrive."""
        if self.active:
            import torch.distributed as dist
            if dist.is_initialized():
                if together:
                    dist.barrier()
                dist.destroy_process_group()

    # ------------------------------------------------------------------ collectives
    def gather_or_raise(self, work: Callable[[], Any]) -> list:
        """Every rank's `work()` result on every rank; when it raised on some rank, the first
        such exception is raised on every rank (instead of the others waiting forever)."""
        try:
            mine = ("ok", work())
        except Exception as e:  # noqa: BLE001 -- re-raised below, on every rank
            mine = ("error", e)
        if not self.active:
            if mine[0] == "error":
                raise mine[1]
            return [mine[1]]
        parts = self.gather(mine)
        for kind, value in parts:
            if kind == "error":
                raise value
        return [value for _, value in parts]

    def barrier(self) -> None:
        """Wait for every rank (e.g. before reading a file rank 0 has just written)."""
        if self.active:
            import torch.distributed as dist
            dist.barrier()

    def gather(self, obj: Any) -> list:
        """Every rank's `obj`, in rank order, on every rank (any picklable object)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist
        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.active:
            return obj
        import torch.distributed as dist
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of `t` over the ranks (a new tensor; `t` is left as it was)."""
        if not self.active:
            return t
        import torch.distributed as dist
        out = t.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world

    def sum(self, values: list[float]) -> list[float]:
        if not self.active:
            return list(values)
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (a stop request, a failure)."""
        return bool(self.sum([float(flag)])[0] > 0) if self.active else bool(flag)

    def slice(self, n: int) -> range:
        """This rank's contiguous share of n items."""
        return share(n, self.world, self.rank)


def share(n: int, parts: int, i: int) -> range:
    """Part i of n items cut into `parts` contiguous blocks (the first n % parts take one more):
    how episodes are split over environments, and environments and episodes over ranks."""
    per, rest = divmod(n, parts)
    start = i * per + min(i, rest)
    return range(start, start + per + (i < rest))


SINGLE = Dist()
_current = SINGLE


def current() -> Dist:
    """The group this process belongs to (set by `use`; a group of one by default)."""
    return _current


def use(d: Dist) -> None:
    global _current
    _current = d
    from . import files
    files.WRITES_ENABLED = d.is_main  # rank 0 alone writes files


def reset() -> None:
    use(SINGLE)


def spread_episodes(run: Callable[[int, int], list], n: int, seed: int) -> list:
    """`run(count, first_seed)` plays `count` episodes seeded first_seed, first_seed+1, ...;
    here each rank plays its contiguous share of the n seeds and every rank gets all n
    episodes back in seed order: the same list as one process playing them all."""
    d = current()
    if not d.active:
        return run(n, seed)
    mine = d.slice(n)
    blocks = d.gather_or_raise(lambda: run(len(mine), seed + mine.start) if len(mine) else [])
    return [ep for block in blocks for ep in block]


class DistributedVectorEnv:
    """The vector-env contract (common/vector.py) over all ranks' environments.

    Rank r holds environments `Dist.slice(num_envs)` of the whole; `reset` and `step`
    take and return the whole batch on every rank (each rank steps its own slice and
    the results are gathered), so PPO on every rank sees what one process stepping all
    environments would see. Environment i is seeded `seed + i` whatever rank holds it."""

    def __init__(self, local, num_envs: int, dist: Dist):
        self.local, self.num_envs, self.dist = local, num_envs, dist
        self.mine = dist.slice(num_envs)
        if len(self.mine) != local.num_envs:
            raise ValueError(f"rank {dist.rank} holds {local.num_envs} environments, its share is {len(self.mine)}")
        self.observation_space, self.action_space = local.observation_space, local.action_space

    def reset(self, seed: int | None = None, options: dict | None = None):
        parts = self.dist.gather_or_raise(
            lambda: self.local.reset(seed=None if seed is None else seed + self.mine.start, options=options))
        return self._merge(parts)

    def step(self, actions):
        actions = np.asarray(actions).reshape(-1)
        parts = self.dist.gather_or_raise(lambda: self.local.step(actions[self.mine.start:self.mine.stop]))
        obs, packed = self._merge([(p[0], p[4]) for p in parts])
        cat = lambda k: np.concatenate([p[k] for p in parts])  # noqa: E731
        return obs, cat(1), cat(2), cat(3), packed

    def _merge(self, parts: list) -> tuple[np.ndarray, dict]:
        """Whole-batch observations and infos from every rank's (obs, infos)."""
        obs = np.concatenate([p[0] for p in parts])
        infos = [p[1] for p in parts]
        packed: dict = {"env_infos": [i for info in infos for i in info["env_infos"]]}
        for key in ("action_mask",):
            if all(key in info for info in infos):
                packed[key] = np.concatenate([info[key] for info in infos])
        if any("final_info" in info for info in infos):
            packed["final_observation"] = np.concatenate([
                info.get("final_observation", np.zeros((len(info["env_infos"]), *obs.shape[1:]), np.float32))
                for info in infos])
            packed["final_info"] = [x for info in infos for x in info.get("final_info", [None] * len(info["env_infos"]))]
        return obs, packed

    def get_state(self) -> dict | None:
        """Every rank's environment states, in environment order (on every rank; rank 0 saves them)."""
        state = self.local.get_state()
        parts = self.dist.gather(state)
        if any(p is None for p in parts):
            return None
        return {"envs": [s for p in parts for s in p["envs"]], "world": self.dist.world}

    def set_state(self, state: dict) -> None:
        envs = state.get("envs", ())
        if len(envs) != self.num_envs:
            raise ValueError(f"the state holds {len(envs)} environments, this run {self.num_envs}; "
                             "use the same number of environments")
        self.local.set_state({"envs": envs[self.mine.start:self.mine.stop]})

    def close(self) -> None:
        if hasattr(self.local, "close"):
            self.local.close()

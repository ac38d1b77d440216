"""What a PPO checkpoint is: kind "ppo-agent" in common.files' format (atomic, weights_only)."""
from __future__ import annotations

from common import files
from common.files import CheckpointError, load_checkpoint, save_checkpoint

AGENT_KIND = "ppo-agent"


def load_agent_checkpoint(path: str, required: tuple = (), map_location="cpu") -> dict:
    """Read a PPO checkpoint; every failure (missing, corrupt, another kind or version) is a CheckpointError."""
    return load_checkpoint(path, AGENT_KIND, map_location=map_location, required=required)


def is_light(ckpt: dict) -> bool:
    """A checkpoint without its environments' state: it evaluates and generates like a full one,
    and a run resumed from it restarts the environments (it continues, but does not repeat the
    uninterrupted run)."""
    rollout = ckpt.get("rollout")
    return rollout is None or rollout.get("env_state") is None


def write_light(src: str, dst: str) -> None:
    """`src` without the environments' state (their models and optimisers: nearly all of a full
    checkpoint's size), atomically to `dst` (which may be `src`)."""
    if not files.WRITES_ENABLED:  # a distributed job's other ranks: rank 0 writes
        return
    ckpt = load_agent_checkpoint(src)
    if ckpt.get("rollout") is not None:
        ckpt["rollout"]["env_state"] = None
    save_checkpoint(dst, ckpt)


__all__ = ["AGENT_KIND", "CheckpointError", "load_agent_checkpoint", "is_light", "write_light"]

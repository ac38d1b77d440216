"""What a PPO checkpoint is: kind "ppo-agent" in common.files' format (atomic, weights_only)."""
from __future__ import annotations

from common.files import CheckpointError, load_checkpoint

AGENT_KIND = "ppo-agent"


def load_agent_checkpoint(path: str, required: tuple = (), map_location="cpu") -> dict:
    """Read a PPO checkpoint; every failure (missing, corrupt, another kind or version) is a CheckpointError."""
    return load_checkpoint(path, AGENT_KIND, map_location=map_location, required=required)


__all__ = ["AGENT_KIND", "CheckpointError", "load_agent_checkpoint"]

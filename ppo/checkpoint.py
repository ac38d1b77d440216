"""What a PPO checkpoint file is: kind "ppo-agent" in common.files' format (atomic, weights_only)
holding `PPO.state_dict()` under a header (`checkpoint_dict`), and how a file becomes an agent
again (`load_for_resume`, `saved_config`, `check_resumable`, `restore_agent`). The agent's state
itself is PPO's own (`PPO.state_dict` / `PPO.load_state_dict`); `PPO.save`, `PPO.load` and
`PPO.from_checkpoint` are the entry points."""
from __future__ import annotations

from typing import Any

import torch

from common import files
from common.files import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from common.messages import first_line

from .config import PPOConfig

AGENT_KIND = "ppo-agent"
# Fields that define the trained network or the meaning of its inputs/targets; they
# cannot change when resuming (the weights would no longer fit them).
FROZEN_ON_RESUME = ("pi_hidden", "vf_hidden", "activation", "normalize_obs", "obs_clip",
                    "normalize_reward", "reward_clip", "norm_eps")
RESUME_KEYS = ("config", "obs_shape", "n_actions", "policy", "optimizer", "obs_normalizer", "reward_scaler", "rng",
               "global_step", "schedule")


def load_agent_checkpoint(path: str, required: tuple = (), map_location="cpu") -> dict:
    """Read a PPO checkpoint; every failure (missing, corrupt, another kind or version) is a CheckpointError."""
    return load_checkpoint(path, AGENT_KIND, map_location=map_location, required=required)


def load_for_resume(path: str, map_location: Any = "cpu") -> dict:
    """Read a checkpoint an agent can continue from (`PPO.from_checkpoint`): every key it needs present."""
    return load_agent_checkpoint(path, required=RESUME_KEYS, map_location=map_location)


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


def checkpoint_dict(agent) -> dict:
    """What `PPO.save` writes: the agent's `state_dict()` under the file's header."""
    return {"format_version": FORMAT_VERSION, "kind": AGENT_KIND, **agent.state_dict(),
            "torch_version": str(torch.__version__)}


def saved_config(ckpt: dict, source: str) -> PPOConfig:
    """The config a checkpoint was trained with; one that no longer parses is a CheckpointError."""
    try:
        return PPOConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: config cannot be used ({e}); re-create the file") from e


def check_resumable(saved: PPOConfig, config: PPOConfig) -> None:
    """A ValueError unless a run trained with `saved` can continue with `config`."""
    frozen = [k for k in FROZEN_ON_RESUME if getattr(config, k) != getattr(saved, k)]
    if frozen:
        raise ValueError(f"cannot override {', '.join(sorted(frozen))} when loading: they are fixed by the "
                         "trained network; start a new run instead")
    if config.group_size != saved.group_size:
        raise ValueError(f"cannot change group_size ({saved.group_size}) when loading: the environments' "
                         "episodes are seeded by group; start a new run instead")


def restore_agent(agent, ckpt: dict, source: str) -> None:
    """`agent.load_state_dict(ckpt)`, every failure but a refused config change (ValueError from
    `check_resumable`, checked first) as one CheckpointError line naming `source`."""
    check_resumable(saved_config(ckpt, source), agent.config)
    if [*agent.obs_shape] != list(ckpt["obs_shape"]) or agent.n_actions != ckpt["n_actions"]:
        raise CheckpointError(f"{source} was trained with observations {tuple(ckpt['obs_shape'])} and "
                              f"{ckpt['n_actions']} actions, the environment has {agent.obs_shape} and "
                              f"{agent.n_actions}; use the matching environment")
    try:
        agent.load_state_dict(ckpt)
    except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source} does not fit this agent ({first_line(e)}); the file is "
                              "damaged or from a different network") from e


__all__ = ["AGENT_KIND", "FROZEN_ON_RESUME", "RESUME_KEYS", "CheckpointError", "load_agent_checkpoint",
           "load_for_resume", "is_light", "write_light", "checkpoint_dict", "saved_config", "check_resumable",
           "restore_agent"]

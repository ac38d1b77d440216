"""What a PPO checkpoint is: kind "ppo-agent" in common.files' format (atomic, weights_only),
what it holds (`agent_state`) and how an agent is rebuilt from it (`read_for_resume`,
`restore_agent`; `PPO.save` / `PPO.load` are the entry points)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from common import files
from common.files import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from common.messages import first_line
from common.rng import capture_global_rng, generator_state, restore_generator, restore_global_rng

from .config import PPOConfig
from .evaluation import EvalResult

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


def agent_state(agent) -> dict:
    """Everything a PPO agent needs to continue exactly, as plain types and tensors."""
    env_state = agent.env.get_state() if hasattr(agent.env, "get_state") else None
    lr, clip = agent.current_schedule()
    start_step, start_lr_fraction, start_clip_fraction = agent.schedule_start
    return {
        "format_version": FORMAT_VERSION,
        "kind": AGENT_KIND,
        "config": agent.config.to_dict(),
        "obs_shape": list(agent.obs_shape),
        "n_actions": agent.n_actions,
        "policy": agent.policy.state_dict(),
        "optimizer": agent.optimizer.state_dict(),
        "obs_normalizer": agent.obs_normalizer.state_dict(),
        "reward_scaler": agent.reward_scaler.state_dict(),
        "rng": {**capture_global_rng(), "trainer": generator_state(agent.rng)},
        "global_step": agent.global_step,
        "n_updates": agent.n_updates,
        "schedule": {"learning_rate": lr, "clip_range": clip, "total_timesteps": agent.config.total_timesteps,
                     "progress": agent.global_step / agent.config.total_timesteps, "start_step": start_step,
                     "start_lr_fraction": start_lr_fraction, "start_clip_fraction": start_clip_fraction},
        "rollout": None if agent._obs is None else {
            "num_envs": agent.num_envs,
            "obs": torch.from_numpy(np.array(agent._obs, np.float32)),
            "mask": None if agent._mask is None else torch.from_numpy(agent._mask.copy()),
            "use_masks": agent._use_masks,
            "episode_return": torch.from_numpy(agent._ep_return.copy()),
            "episode_length": torch.from_numpy(agent._ep_length.copy()),
            "episode_index": torch.from_numpy(agent._ep_index.copy()),
            "env_state": env_state,
        },
        "recent_episodes": [list(e) for e in agent.recent_episodes],
        "evaluations": [r.to_dict() for r in agent.eval_history],
        "extra": dict(agent.extra),
        "torch_version": str(torch.__version__),
    }


def read_for_resume(path: str, overrides: Optional[dict], map_location: Any,
                    config: Optional[PPOConfig] = None) -> tuple[dict, PPOConfig, PPOConfig]:
    """(checkpoint, its config, the config to continue with: `config`, else the checkpoint's with
    `overrides`); a frozen field changed is a ValueError, a file that cannot be used a CheckpointError."""
    overrides = dict(overrides or {})
    ckpt = load_agent_checkpoint(path, map_location=map_location or "cpu", required=RESUME_KEYS)
    try:
        saved_config = PPOConfig.from_dict(ckpt["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: config cannot be used ({e}); re-create the file") from e
    if config is not None:
        overrides = {k: v for k, v in config.to_dict().items() if v != saved_config.to_dict()[k]}
    frozen = sorted(set(overrides) & set(FROZEN_ON_RESUME))
    if frozen:
        raise ValueError(f"cannot override {', '.join(frozen)} when loading: they are fixed by the trained "
                         "network; start a new run instead")
    if overrides.get("group_size", saved_config.group_size) != saved_config.group_size:
        raise ValueError(f"cannot change group_size ({saved_config.group_size}) when loading: the environments' "
                         "episodes are seeded by group; start a new run instead")
    if config is None:
        try:
            config = saved_config.replace(**overrides)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: config cannot be used ({e}); fix the overrides or the file") from e
    if map_location is not None:
        config = config.replace(device=str(map_location))
    return ckpt, saved_config, config


def restore_agent(agent, ckpt: dict, path: str) -> None:
    """Put a checkpoint's weights, optimiser, normalisers, counters, RNGs and rollout into `agent`
    (built with the checkpoint's config)."""
    if [*agent.obs_shape] != list(ckpt["obs_shape"]) or agent.n_actions != ckpt["n_actions"]:
        raise CheckpointError(f"{path} was trained with observations {tuple(ckpt['obs_shape'])} and "
                              f"{ckpt['n_actions']} actions, the environment has {agent.obs_shape} and "
                              f"{agent.n_actions}; use the matching environment")
    try:
        agent.policy.load_state_dict(ckpt["policy"])
        agent.optimizer.load_state_dict(ckpt["optimizer"])
        agent.obs_normalizer.load_state_dict(ckpt["obs_normalizer"])
        agent.reward_scaler.load_state_dict(ckpt["reward_scaler"])
        agent.global_step, agent.n_updates = int(ckpt["global_step"]), int(ckpt["n_updates"])
        agent.eval_history = [EvalResult.from_dict(d) for d in ckpt["evaluations"]]
        agent.recent_episodes.extend(tuple(e) for e in ckpt["recent_episodes"])
        restore_global_rng(ckpt["rng"])
        restore_generator(agent.rng, ckpt["rng"]["trainer"])
        _restore_rollout(agent, ckpt["rollout"])
        schedule = ckpt["schedule"]
        agent.schedule_start = (int(schedule["start_step"]), float(schedule["start_lr_fraction"]),
                                float(schedule["start_clip_fraction"]))
    except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path} does not fit this agent ({first_line(e)}); the file is "
                              "damaged or from a different network") from e
    best = [r for r in agent.eval_history if r.is_best]
    agent.best_eval = best[-1] if best else None


def _restore_rollout(agent, state: Optional[dict]) -> None:
    can_continue = (state is not None and state["num_envs"] == agent.num_envs
                    and state["env_state"] is not None and hasattr(agent.env, "set_state"))
    if not can_continue:
        if state is not None:  # mid-run checkpoint, environments cannot be restored
            agent._reset_envs(agent.config.seed + agent.global_step)
        return
    agent.env.set_state(state["env_state"])
    agent._obs = state["obs"].numpy().copy()
    agent._mask = None if state["mask"] is None else state["mask"].numpy().copy()
    agent._use_masks = bool(state["use_masks"])
    agent._ep_return = state["episode_return"].numpy().copy()
    agent._ep_length = state["episode_length"].numpy().copy()
    if "episode_index" in state:  # older files were trained without groups, which alone read episode numbers
        agent._ep_index = state["episode_index"].numpy().copy()


__all__ = ["AGENT_KIND", "FROZEN_ON_RESUME", "CheckpointError", "load_agent_checkpoint", "is_light", "write_light",
           "agent_state", "read_for_resume", "restore_agent"]

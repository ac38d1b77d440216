"""A trained agent for acting only: the policy network and its frozen observation normaliser.

Lighter than ``PPO.load`` (no environment, optimiser or rollout state): for
evaluating checkpoints side by side, or for letting a trained scheduler drive
an environment elsewhere (e.g. a generation script).
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from common.files import CheckpointError
from common.messages import first_line
from common.policies import MASK_KEY

from .checkpoint import load_agent_checkpoint
from .config import PPOConfig
from .normalize import ObsNormalizer
from .policy import ActorCritic


def policy_actions(policy: ActorCritic, obs_normalizer: ObsNormalizer, obs: np.ndarray, mask: np.ndarray | None,
                   deterministic: bool, rng: np.random.Generator | None) -> np.ndarray:
    """What a trained agent does (``PPO.predict`` and ``TrainedPolicy.act`` alike): raw
    observations [B, *S] (or flattened) under the frozen normaliser, legal actions bool [B, A]
    -> int64 actions [B]; sampled with ``rng`` unless ``deterministic``."""
    shape = obs_normalizer.rms.mean.shape  # the observation shape its statistics were kept in
    x = obs_normalizer(np.asarray(obs, np.float32).reshape(-1, *shape), update=False)
    return policy.act(x, mask, deterministic, rng)[0]


class TrainedPolicy:
    """``policy(obs, info) -> action`` for one raw observation (the protocol of
    ``common.policies``; greedy by default, legal actions from ``info["action_mask"]``);
    ``act(obs_batch)`` for a batch. Attributes from the checkpoint: ``config``,
    ``global_step``, ``extra``, ``evaluations`` (list of EvalResult dicts)."""

    def __init__(self, policy: ActorCritic, obs_normalizer: ObsNormalizer, config: PPOConfig,
                 global_step: int = 0, extra: dict | None = None, evaluations: list | None = None,
                 deterministic: bool = True, seed: int = 0):
        self.policy, self.obs_normalizer, self.config = policy, obs_normalizer, config
        self.global_step, self.extra, self.evaluations = int(global_step), dict(extra or {}), list(evaluations or [])
        self.deterministic = deterministic
        self.rng = np.random.default_rng(seed)  # only used when sampling (deterministic=False)

    @classmethod
    def from_agent(cls, agent: Any, deterministic: bool = True) -> "TrainedPolicy":
        """A snapshot of a training ``PPO`` agent (later training does not change it)."""
        return cls(copy.deepcopy(agent.policy), copy.deepcopy(agent.obs_normalizer), agent.config,
                   agent.global_step, agent.extra, [r.to_dict() for r in agent.eval_history], deterministic)

    @classmethod
    def load(cls, path: str, deterministic: bool = True) -> "TrainedPolicy":
        """Read a ``PPO.save`` checkpoint (weights_only); every failure is a CheckpointError."""
        ckpt = load_agent_checkpoint(path, required=("config", "obs_shape", "n_actions", "policy", "obs_normalizer"))
        try:
            cfg = PPOConfig.from_dict(ckpt["config"]).replace(device="cpu")
            shape = tuple(int(s) for s in ckpt["obs_shape"])
            policy = ActorCritic(math.prod(shape), int(ckpt["n_actions"]), cfg.pi_hidden, cfg.vf_hidden,
                                 cfg.activation)
            policy.load_state_dict(ckpt["policy"])
            norm = ObsNormalizer(shape, cfg.obs_clip, cfg.norm_eps, cfg.normalize_obs)
            norm.load_state_dict(ckpt["obs_normalizer"])
        except (KeyError, RuntimeError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path} does not hold a usable policy ({first_line(e)}); "
                                  "the file is damaged, pick another checkpoint") from e
        policy.eval()
        return cls(policy, norm, cfg, ckpt.get("global_step", 0), ckpt.get("extra"), ckpt.get("evaluations"),
                   deterministic)

    @property
    def n_actions(self) -> int:
        return self.policy.n_actions

    def reset(self, seed: int) -> None:
        """Called by the episode runner before each episode: sampled actions follow the seed."""
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Raw observations [B, *S] (legal actions bool [B, A]) -> int64 actions [B]."""
        return policy_actions(self.policy, self.obs_normalizer, obs, mask, self.deterministic, self.rng)

    def __call__(self, obs: np.ndarray, info: Any = None) -> int:
        mask = (info or {}).get(MASK_KEY)
        mask = None if mask is None else np.asarray(mask, bool)[None]
        return int(self.act(np.asarray(obs, np.float32)[None], mask)[0])

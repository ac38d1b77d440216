"""The text-scheduling environment: an agent picks how INFINITO trains next.

Joins `infinito/` (the model and its training step) and `data/` (corpus,
tokenizer, batches), on the foundation `common/` (spaces, policy protocol,
episode runner, vector env); knows nothing of PPO. See docs/env.md.
"""
from .base import BaseAssets, load_base
from .check import check_env
from .config import MIXED, MODES, PHI, TEXT, EnvConfig, step_size_modes
from .errors import EnvError
from .evaluate import PolicyRuns, action_independent_share, rescore, run_policies, run_policy
from .monitor import RolloutMonitor
from .policies import bandit
from .schedules import (PLATEAU_PATIENCES, RULE_MARGINS, BandPolicy, PlateauPolicy, SchedulePolicy, StepSizeSchedule,
                        decay_family, plateau_family, rule_family, step_sizes, switch_family, text_mode)
from .reward import REWARDS, FinalReward, ProgressReward, Reward, RewardConfig, reward_from_dict
from .scheduling import OBS_HIGH, OBS_NAMES, TextSchedulingEnv, reset_ratios
from .vector import VectorEnv, make_vec_env

__all__ = [
    "BandPolicy", "RULE_MARGINS", "SchedulePolicy", "StepSizeSchedule", "decay_family", "switch_family", "PLATEAU_PATIENCES", "PlateauPolicy", "plateau_family", "step_sizes", "step_size_modes", "bandit", "rule_family", "text_mode", "BaseAssets", "action_independent_share", "EnvConfig", "EnvError", "MIXED", "MODES", "OBS_HIGH",
    "OBS_NAMES", "PHI", "FinalReward", "ProgressReward", "Reward", "REWARDS", "reward_from_dict", "PolicyRuns", "RewardConfig", "TEXT", "TextSchedulingEnv",
    "VectorEnv", "check_env", "load_base", "make_vec_env",
    "rescore", "reset_ratios", "run_policies", "run_policy", "RolloutMonitor",
]

"""Hand-written PPO for Gymnasium-style environments (discrete actions, Box observations).

    from ppo import PPO, PPOConfig
    agent = PPO([make_env] * 8, PPOConfig(total_timesteps=100_000), log_dir="runs/x")
    agent.learn()

See docs/ppo.md for the environment contract, callbacks and checkpoint format.
"""
from .buffer import RolloutBuffer, compute_gae
from .callbacks import (Callback, CheckpointCallback, EvalCallback, FunctionCallback, JsonHistoryCallback,
                        PeriodicCallback, StopOnNoImprovement, StopOnOverfit, StopOnRewardThreshold)
from .checkpoint import AGENT_KIND, FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint, write_json
from .config import PPOConfig
from .evaluation import ConstantPolicy, EvalResult, RandomPolicy, compare_to_best, evaluate_policy
from .inference import TrainedPolicy
from .logger import Logger
from .normalize import ObsNormalizer, RewardScaler, RunningMeanStd
from .policy import ActorCritic
from .report import Column, Report, Thresholds, render_markdown, write_report
from .spaces import Box, Discrete
from .trainer import PPO
from .vec_env import SyncVectorEnv, as_vec_env

__all__ = [
    "PPO", "PPOConfig", "ActorCritic", "RolloutBuffer", "compute_gae", "SyncVectorEnv", "as_vec_env",
    "ObsNormalizer", "RewardScaler", "RunningMeanStd", "Logger", "EvalResult", "evaluate_policy",
    "ConstantPolicy", "RandomPolicy",
    "compare_to_best", "Callback", "FunctionCallback", "PeriodicCallback", "CheckpointCallback", "EvalCallback",
    "JsonHistoryCallback", "StopOnRewardThreshold", "StopOnNoImprovement", "StopOnOverfit", "CheckpointError",
    "load_checkpoint", "save_checkpoint", "write_json", "AGENT_KIND", "FORMAT_VERSION", "Box", "Discrete",
    "TrainedPolicy", "Report", "Thresholds", "Column", "render_markdown", "write_report",
]

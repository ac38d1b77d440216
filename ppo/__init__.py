"""Hand-written PPO for Gymnasium-style environments (discrete actions, Box observations).

    from ppo import PPO, PPOConfig
    agent = PPO([make_env] * 8, PPOConfig(total_timesteps=100_000), log_dir="runs/x")
    agent.learn()

Knows nothing of INFINITO or text. See docs/ppo.md for the environment contract,
callbacks and checkpoint format; spaces, the vector env, the episode runner and the
logger come from `common/`.
"""
from common.files import CheckpointError
from common.logger import Logger
from common.vector import VectorEnv, as_vec_env

from .buffer import RolloutBuffer, compute_gae
from .callbacks import (Callback, CheckpointCallback, EvalCallback, FunctionCallback, JsonHistoryCallback,
                        PeriodicCallback, StopOnNoImprovement, StopOnRewardThreshold, StopWhenLevel)
from .checkpoint import AGENT_KIND, load_agent_checkpoint
from .config import PPOConfig
from .evaluation import EvalResult
from .inference import TrainedPolicy
from .normalize import ObsNormalizer, RewardScaler, RunningMeanStd
from .policy import ActorCritic
from .trainer import PPO

__all__ = [
    "PPO", "PPOConfig", "ActorCritic", "RolloutBuffer", "compute_gae", "VectorEnv", "as_vec_env",
    "ObsNormalizer", "RewardScaler", "RunningMeanStd", "Logger", "EvalResult",
    "Callback", "FunctionCallback", "PeriodicCallback", "CheckpointCallback", "EvalCallback",
    "JsonHistoryCallback", "StopOnRewardThreshold", "StopOnNoImprovement", "StopWhenLevel", "CheckpointError",
    "load_agent_checkpoint", "AGENT_KIND", "TrainedPolicy",
]

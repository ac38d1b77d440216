"""INFINITO: a from-scratch causal transformer that reports Φ, C and memory use about itself.

Knows nothing of RL; see docs/model.md for the metric definitions.
"""
from .checkpoint import BASE_KIND, CheckpointError, build_model, load_checkpoint
from .config import InfinitoConfig
from .generation import Generation, generate
from .model import Infinito
from .sampling import SamplingConfig
from .training import NonFiniteLoss, evaluate, make_optimizer, train_step

__all__ = ["BASE_KIND", "CheckpointError", "Generation", "Infinito", "InfinitoConfig", "NonFiniteLoss",
           "SamplingConfig", "build_model", "evaluate", "generate", "load_checkpoint", "make_optimizer", "train_step"]

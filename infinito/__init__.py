"""INFINITO: a from-scratch causal transformer that reports Φ, C and memory use about itself.

Knows nothing of RL; see README.md ("INFINITO") for the metric definitions.
"""
from .checkpoint import BASE_KIND, CheckpointError, build_model, load_checkpoint
from .config import InfinitoConfig
from .model import Infinito
from .training import NonFiniteLoss, evaluate, make_optimizer, train_step

__all__ = ["BASE_KIND", "CheckpointError", "Infinito", "InfinitoConfig", "NonFiniteLoss", "build_model",
           "evaluate", "load_checkpoint", "make_optimizer", "train_step"]

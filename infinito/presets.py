"""Base-training configuration and the named presets (tiny / demo / paper)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .config import InfinitoConfig


@dataclass
class BaseTrainConfig:
    steps: int = 1500
    batch_size: int = 16
    lr: float = 2e-3             # peak rate of the warm-up + cosine schedule (tiny's and demo's; paper 6e-4)
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    lambda_phi: float = 0.0      # weight of the Φ loss: loss = CE + lambda_phi · L_phi
    eval_every: int = 250
    eval_batches: int = 20       # validation batches per periodic evaluation (0 = the whole split)
    log_every: int = 10
    seed: int = 1337
    builtin_size: str = "demo"   # size of the built-in corpus when --data is not given
    precision: str = "auto"      # auto | fp32 | bf16  (auto: bf16 autocast on CUDA, fp32 on CPU)
    threads: int = 0             # torch CPU threads; 0: the cores idle at start (docs/training.md, "Threads")
    snapshot_at: int = 0         # also keep the model at this step as base-step<N>.pt (0: none): the RL
                                 # stage's start, taken while text training still moves the model

    def __post_init__(self) -> None:
        problems = []
        for name in ("steps", "batch_size", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        for name in ("warmup", "eval_batches", "threads", "snapshot_at"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if not self.lr > 0:
            problems.append("lr must be > 0")
        if self.lambda_phi < 0:
            problems.append("lambda_phi must be >= 0")
        if not self.grad_clip > 0:
            problems.append("grad_clip must be > 0 (a negative norm would ascend the gradient)")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append("min_lr_ratio must be in [0, 1]")
        if self.weight_decay < 0:
            problems.append("weight_decay must be >= 0")
        if not 0 <= self.seed < 2**63:
            problems.append("seed must be in [0, 2**63)")
        if self.precision not in ("auto", "fp32", "bf16"):
            problems.append("precision must be auto, fp32 or bf16")
        if self.builtin_size not in ("tiny", "demo"):
            problems.append("builtin_size must be tiny or demo")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


SNAPSHOT_DEMO = 100  # text training still moves this model a lot (docs/env.md, "Why a decision matters here")


def snapshot_name(step: int) -> str:
    """File name of the base stage's snapshot at `step` (beside base.pt)."""
    return f"base-step{step}.pt"


PRESETS: dict[str, dict[str, dict]] = {
    # seconds on 2 CPU cores; used by the tests. The snapshot is the end of the warm-up, as demo's is:
    # with a 10-step warm-up, step 20 had taken 10 steps at the peak rate and landed on a one-step
    # loss spike (held-out perplexity 238 against 88 at step 19 and 83 at step 21, seed 1337), and
    # the reset's first AdamW step then either undid the spike or tripled it, depending on the
    # episode's batch (docs/env.md, "Where an episode starts").
    "tiny": {
        "model": dict(vocab_size=384, context=64, d_model=64, n_layers=2, n_heads=2, dropout=0.0, memory_slots=32),
        "train": dict(steps=60, batch_size=8, warmup=20, eval_every=30, eval_batches=4,
                      log_every=10, builtin_size="tiny", snapshot_at=20),
    },
    # the default: a few minutes on 2 CPU cores, visibly learns the built-in corpus
    "demo": {
        "model": dict(vocab_size=2048, context=128, d_model=128, n_layers=4, n_heads=4, dropout=0.0),
        "train": dict(steps=1200, batch_size=16, warmup=100, eval_every=200, eval_batches=20,
                      snapshot_at=SNAPSHOT_DEMO),
    },
    # the study's sizes
    "paper": {
        "model": dict(vocab_size=8000, context=256, d_model=512, n_layers=4, n_heads=8, dropout=0.1),
        "train": dict(steps=5000, batch_size=16, lr=6e-4, warmup=200, eval_every=500, eval_batches=40,
                      snapshot_at=500),  # not measured at this size: a tenth of the run, like demo's 100 of 1,200
    },
}


def field_names(cls) -> list[str]:
    return [f.name for f in fields(cls)]


def resolve(preset: str, overrides: dict[str, object] | None = None) -> tuple[InfinitoConfig, BaseTrainConfig]:
    """Preset values, then `overrides` (flat keys from either config); unknown keys raise ValueError."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}' (choose from {', '.join(PRESETS)})")
    model = dict(PRESETS[preset]["model"])
    train = dict(PRESETS[preset]["train"])
    model_keys, train_keys = set(field_names(InfinitoConfig)), set(field_names(BaseTrainConfig))
    for key, value in (overrides or {}).items():
        if key in model_keys:
            model[key] = value
        elif key in train_keys:
            train[key] = value
        else:
            raise ValueError(f"unknown config key '{key}'")
    return InfinitoConfig(**model), BaseTrainConfig(**train)

"""Model configuration: one dataclass, stored as a plain dict in every checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class InfinitoConfig:
    vocab_size: int = 4096
    context: int = 128          # maximum sequence length (learned absolute positions)
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    dropout: float = 0.1
    memory_slots: int = 128     # external memory size; 0 disables the memory
    memory_threshold: float = 3.0  # Φ-scale priority a batch needs to be written to memory
    phi_low: float = 3.0        # Φ target band used by the Φ loss
    phi_high: float = 6.0

    def __post_init__(self) -> None:
        problems = []
        for name in ("vocab_size", "context", "d_model", "n_layers", "n_heads"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if self.d_model % max(self.n_heads, 1):
            problems.append(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            problems.append("dropout must be in [0, 1)")
        if self.memory_slots < 0:
            problems.append("memory_slots must be >= 0")
        if not 0.0 <= self.phi_low < self.phi_high <= 10.0:
            problems.append("need 0 <= phi_low < phi_high <= 10")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InfinitoConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config key(s): {', '.join(unknown)}")
        return cls(**d)

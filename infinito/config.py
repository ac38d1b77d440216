"""Model configuration: one dataclass, stored as a plain dict in every checkpoint."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from common.fields import checked_fields

# Φ's healthy band: the one default of the model's Φ loss, the rewards and the band policies.
PHI_BAND = (3.0, 6.0)


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
    memory_decay: float = 0.98  # every write attempt multiplies the stored priorities by this (1 = never forget)
    phi_low: float = PHI_BAND[0]  # Φ's healthy band: the Φ loss pulls Φ into it ...
    phi_high: float = PHI_BAND[1]
    phi_target: float = -1.0    # ... and, inside it, toward this point (< 0: the band's midpoint)

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
        elif self.phi_target >= 0 and not self.phi_low <= self.phi_target <= self.phi_high:
            problems.append("phi_target must lie in [phi_low, phi_high] (or be < 0 for the midpoint)")
        if not 0.0 < self.memory_decay <= 1.0:
            problems.append("memory_decay must be in (0, 1]")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    @property
    def phi_star(self) -> float:
        """The point inside the band the Φ loss pulls toward."""
        return self.phi_target if self.phi_target >= 0 else (self.phi_low + self.phi_high) / 2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InfinitoConfig":
        return cls(**checked_fields(cls, d, "model config"))

"""Scalar logger: collect ``record(tag, value)`` calls, write them all at one step.

The trainer, the evaluation callback and any user callback record into the same
logger during an update; ``dump(step)`` then writes every tag at the same global
step to TensorBoard, so ``env/...`` tags from a downstream environment line up with
``train/...`` ones.
"""
from __future__ import annotations

from typing import Optional


class Logger:
    def __init__(self, log_dir: Optional[str] = None, keep_history: bool = True):
        self.log_dir = log_dir
        self._writer = None
        if log_dir is not None:
            # Imported here: tensorboard takes ~1 s to import and many uses never log.
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=log_dir)
        self.pending: dict[str, float] = {}
        self.latest: dict[str, float] = {}  # last value written for every tag
        self.keep_history = keep_history
        self.history: list[tuple[int, dict[str, float]]] = []  # (step, {tag: value}) per dump

    def record(self, tag: str, value: float) -> None:
        self.pending[tag] = float(value)

    def dump(self, step: int) -> dict[str, float]:
        """Write pending scalars at ``step``; returns what was written."""
        written, self.pending = self.pending, {}
        if self._writer is not None:
            for tag, value in written.items():
                self._writer.add_scalar(tag, value, global_step=step)
            self._writer.flush()
        self.latest.update(written)
        if self.keep_history and written:
            self.history.append((int(step), dict(written)))
        return written

    def add_custom_scalars(self, layout: dict) -> None:
        """TensorBoard's custom-scalars dashboard layout: {category: {chart: ["Multiline" |
        "Margin", tags]}}; a Margin chart takes [value, lower, upper] tags."""
        if self._writer is not None:
            self._writer.add_custom_scalars(layout)
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

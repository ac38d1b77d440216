"""One logger for both training stages: TensorBoard scalars, a JSON Lines file, console lines.

Everyone (a trainer, its callbacks, an environment monitor) `record`s scalars
during a step or an update; `dump(step)` then writes them all at the same
global step — to TensorBoard, and as one `{"step": ..., tag: value, ...}` line
of the JSONL file — so tags from different sources line up. `print` writes a
console line that does not break a progress bar.
"""
from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path

from . import files
from .files import naming


class Logger:
    """`log_dir`: TensorBoard directory (None: none). `jsonl`: JSON Lines file (None: none).
    `resume_step`: continuing a run in the same directories: TensorBoard events and JSONL lines
    after this step (from a run that went further before) are dropped, so the curves continue
    from the resumed step instead of folding back."""

    def __init__(self, log_dir: str | Path | None = None, jsonl: str | Path | None = None, quiet: bool = False,
                 resume_step: int | None = None):
        self.log_dir, self.quiet, self._resume_step = log_dir, quiet, resume_step
        self.jsonl = Path(jsonl) if jsonl is not None else None
        self._writer, self._started = None, False
        self.pending: dict[str, float] = {}
        self.latest: dict[str, float] = {}  # the last value written for every tag
        self.history: list[tuple[int, dict[str, float]]] = []  # (step, {tag: value}) per dump

    def _start(self) -> None:
        """Open the files at the first write, not before: a run that fails before it has logged
        anything leaves an earlier run's logs in the same folder as they were."""
        if self._started:
            return
        self._started = True
        if not files.WRITES_ENABLED:  # a distributed job's ranks other than 0 log nothing
            self.log_dir = self.jsonl = None
        if self.log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # ~1 s to import; many uses never log
            # Events after the resumed step (a run that went further before) are purged; the
            # resumed step's own point stays, so the continued curve joins the old one.
            purge = None if self._resume_step is None else self._resume_step + 1
            _quiet_writer_thread_errors()
            with naming(self.log_dir):
                self._writer = SummaryWriter(str(self.log_dir), purge_step=purge)
        if self.jsonl is not None:
            with naming(self.jsonl):
                _keep_lines_up_to(self.jsonl, self._resume_step)

    def record(self, tag: str, value: float) -> None:
        self.pending[tag] = float(value)

    def dump(self, step: int) -> dict[str, float]:
        """Write the pending scalars at `step`; returns what was written."""
        written, self.pending = self.pending, {}
        if not written:
            return written
        self._start()
        if self._writer is not None:
            with self._tensorboard():
                for tag, value in written.items():
                    self._writer.add_scalar(tag, value, global_step=step)
                self._writer.flush()
        if self.jsonl is not None:
            with naming(self.jsonl), self.jsonl.open("a") as f:
                f.write(json.dumps({"step": int(step), **written}) + "\n")
        self.latest.update(written)
        self.history.append((int(step), dict(written)))
        return written

    def print(self, line: str) -> None:
        """A console line; above a running tqdm bar when there is one."""
        if self.quiet:
            print(line)
        else:
            from tqdm import tqdm
            tqdm.write(line)

    def add_custom_scalars(self, layout: dict) -> None:
        """TensorBoard's custom-scalars layout: {category: {chart: ["Multiline" | "Margin", tags]}};
        a Margin chart takes [value, lower, upper] tags."""
        self._start()
        if self._writer is not None:
            with self._tensorboard():
                self._writer.add_custom_scalars(layout)
                self._writer.flush()

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        """Closes; while another error is on its way out, a failure to close (the same full disk)
        does not replace it."""
        if exc_type is None:
            self.close()
        else:
            with contextlib.suppress(Exception):
                self.close()

    def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            with naming(self.log_dir):
                writer.close()

    @contextlib.contextmanager
    def _tensorboard(self):
        """A failed TensorBoard write (a full disk) is an OSError naming the log folder; the
        writer is dropped, so closing the logger afterwards does not fail a second time."""
        try:
            with naming(self.log_dir):
                yield
        except OSError:
            writer, self._writer = self._writer, None
            with contextlib.suppress(Exception):
                writer.close()
            raise


def _quiet_writer_thread_errors() -> None:
    """TensorBoard writes events on a background thread; when a write fails there (a full disk)
    the thread dies printing a traceback, and the same error is raised again in the main thread
    at the next write or flush, where the scripts turn it into one line. Silence the thread's copy."""
    previous = threading.excepthook
    if getattr(previous, "_keeps_tensorboard_quiet", False):
        return

    def hook(args):
        if type(args.thread).__name__ == "_AsyncWriterThread" and issubclass(args.exc_type, OSError):
            return
        previous(args)

    hook._keeps_tensorboard_quiet = True
    threading.excepthook = hook


def _keep_lines_up_to(path: Path, step: int | None) -> None:
    """A new run starts the file afresh; a resumed one keeps the lines up to its step."""
    if step is None:
        path.unlink(missing_ok=True)
    elif path.exists():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))

"""The first thing both scripts do, before torch loads (seconds): make Ctrl-C or SIGTERM during
that time, and a dependency that is not installed, one line each instead of a traceback.
Imports nothing heavy."""
from __future__ import annotations

import importlib.util
import os
import signal
import sys

RUNTIME_DEPENDENCIES = ("torch", "numpy", "sentencepiece", "tqdm", "tensorboard")


def guard_startup() -> None:
    # os._exit, not sys.exit: an import that catches broad exceptions would swallow SystemExit
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, or a job scheduler's stop
        signal.signal(sig, lambda *_: (print("error: interrupted while starting; nothing was written",
                                             file=sys.stderr, flush=True), os._exit(130)))
    missing = [m for m in RUNTIME_DEPENDENCIES if importlib.util.find_spec(m) is None]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        print(f"error: {', '.join(missing)} {verb} not installed for {sys.executable}; install the project with "
              "`pip install torch==2.13.0 -e .` (README, Quickstart)", file=sys.stderr)
        sys.exit(2)


def started() -> None:
    """Loaded: Ctrl-C and SIGTERM raise KeyboardInterrupt, for run_cli and StopFlag to handle
    (training loops save first; before them, what the run created is removed)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)

"""What the command-line scripts (train.py, generate.py) share: user errors, device choice, exit codes,
interruption.

Every failure a user can cause ends with one line on stderr starting "error:"
and exit status 2; an interruption exits with 130.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import warnings
from typing import Callable

import torch

from common.messages import first_line

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but CUDA is not available; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@contextlib.contextmanager
def diverged(what: str, advice: str):
    """A NaN/inf loss inside (an environment's training, an adaptation) as one line with advice."""
    from infinito.training import NonFiniteLoss
    try:
        yield
    except NonFiniteLoss as e:
        raise UserError(f"{e} {what}; {advice}") from None


def fail(message: object, status: int = EXIT_USER_ERROR) -> int:
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone says it (every rank exits too)
        print(f"error: {message}", file=sys.stderr)
    return status


@contextlib.contextmanager
def joined(device_name: str):
    """The stage's processes: the torchrun group this one belongs to (a group of one without
    torchrun). Rank 0 alone prints and writes files; the group is left at the end."""
    from common import distributed
    try:
        d = distributed.Dist.from_env(pick_device(device_name).type)
    except RuntimeError as e:
        raise UserError(f"cannot join the torchrun group: {first_line(e)}") from None
    distributed.use(d)
    saved = sys.stdout, sys.stderr
    if not d.is_main:  # progress bars and lines too: failures reach rank 0 through the collectives
        sys.stdout = sys.stderr = open(os.devnull, "w")
    ended_normally = False
    try:
        yield d
        ended_normally = True
    finally:
        distributed.reset()
        d.close(together=ended_normally)
        if sys.stdout is not saved[0]:
            sys.stdout.close()
            sys.stdout, sys.stderr = saved


def run_cli(body: Callable[[], int], user_errors: tuple = (), os_hint: str = "",
            interrupted: str = "interrupted") -> int:
    """Run a script's body; user errors (UserError, `user_errors`, config ValueErrors starting
    "invalid"/"unknown", OSError, MemoryError) become one `error:` line and exit 2, Ctrl-C exit 130.
    Anything else is a bug and keeps its traceback."""
    try:
        with warnings.catch_warnings():  # a library's warning is a one-line note, not two lines and a source path
            warnings.showwarning = _note
            return body()
    except (UserError, *user_errors) as e:
        return fail(e)
    except ValueError as e:  # config validation
        if str(e).startswith(("invalid ", "unknown ")):
            return fail(e)
        raise
    except OSError as e:  # unreadable or unwritable paths, disk full, a closed stdout
        where = f" ({e.filename})" if e.filename else ""
        return fail(f"{e.strerror or e}{where}{os_hint}")
    except MemoryError:
        return fail(OUT_OF_MEMORY)
    except RuntimeError as e:  # torch's allocators raise RuntimeError (CPU) or its OutOfMemoryError subclass (CUDA)
        if "can't allocate memory" in str(e) or isinstance(e, torch.cuda.OutOfMemoryError):
            return fail(OUT_OF_MEMORY)
        raise
    except KeyboardInterrupt:
        return fail(interrupted, EXIT_INTERRUPTED)


OUT_OF_MEMORY = ("out of memory; use a smaller preset, --context or --batch-size, fewer environments or a shorter "
                 "text")


def _note(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"note: {first_line(str(message))}", flush=True)


class StopFlag:
    """Ctrl-C / SIGTERM ask a training loop to stop after the current step (it then saves and
    exits 130); a second Ctrl-C aborts at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one `error:` line and exit 2, like every other error (not the whole usage)."""

    def error(self, message: str):
        raise UserError(f"{message} (see python {self.prog} --help)")


SEED_ON_RESUME = "--seed cannot change when resuming (the random state continues from the checkpoint)"


def resolve_threads(n: int) -> int:
    """--threads as every stage reads it: n torch threads, or with 0 as many as cores are idle now."""
    from common.cores import idle_cores
    return n if n > 0 else idle_cores()


class StageFlags:
    """A multi-stage script's flags, each declared with the stages that read it: a flag given to a
    stage that does not read it is refused (`unused`) rather than silently ignored."""

    def __init__(self, stages: tuple):
        self.stages, self.read_by = stages, {}

    def add(self, group, *names: str, stages: tuple, **kw) -> argparse.Action:
        action = group.add_argument(*names, **kw)
        self.read_by[action.dest] = (stages, action)
        return action

    def add_fields(self, group, cls, names, stages_of, choices: dict | None = None, helps: dict | None = None) -> None:
        """One flag per field of dataclass `cls` named in `names` (`--learning-rate` for
        learning_rate), typed by its annotation; `stages_of(name)` -> the stages that read it."""
        by_name = {f.name: f for f in dataclasses.fields(cls)}
        for name in names:
            kind = _annotation(by_name[name])
            kw = ({"choices": choices[name]} if choices and name in choices
                  else {"action": argparse.BooleanOptionalAction} if kind == "bool"
                  else {"type": {"int": int, "float": float, "str": str}[kind], "metavar": kind.upper()})
            self.add(group, "--" + name.replace("_", "-"), dest=name, default=None, stages=stages_of(name),
                     help=(helps or {}).get(name, f"{cls.__name__}.{name}"), **kw)

    def unused(self, args: argparse.Namespace, instead: dict | None = None) -> list[str]:
        """The flags given (not at their default) that args.stage does not read, one line each;
        `instead`: {(stage, dest): the flag that stage reads for it}."""
        out = []
        for dest, (stages, action) in self.read_by.items():
            if args.stage not in stages and getattr(args, dest, None) != action.default:
                hint = (instead or {}).get((args.stage, dest))
                out.append(f"{action.option_strings[-1]} is not used by --stage {args.stage} (it is read by --stage "
                           f"{' and --stage '.join(stages)})" + (f"; use {hint}" if hint else ""))
        return out


def _annotation(f: dataclasses.Field) -> str:
    """"int", "float", "str" or "bool" from a field's annotation (`Optional[float]`, `float | None`: float)."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    return kind.removeprefix("Optional[").removesuffix("]").split(" | ")[0]

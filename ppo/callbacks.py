"""Training hooks: periodic checkpoints, periodic evaluation, early stopping.

A callback overrides any of the ``Callback`` methods; each receives the trainer
(``PPO``), whose public state they may read (``global_step``, ``logger``,
``eval_history``, ``best_eval``, ``last_rollout_infos``...). Order of events in one
iteration: ``on_step`` (after every vector-env step of the rollout),
``on_rollout_end``, the update, ``on_update_end`` (train/* tags already recorded;
record your own with ``trainer.logger.record``), then the logger writes everything
at the same global step. ``on_evaluation`` fires whenever an evaluation is added
(``PPO.add_evaluation``, e.g. by ``EvalCallback``). Stop training with
``trainer.request_stop(reason)``.

Early-stopping decisions are pure functions of ``trainer.eval_history``, which the
checkpoint stores, so they survive a resume unchanged.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from common.files import write_json
from common.stats import summarize

from .checkpoint import write_light
from .evaluation import EvalResult


class Callback:
    def on_training_start(self, trainer) -> None: ...

    def on_step(self, trainer, infos: dict) -> None:
        """After every vector-env step (inside ``torch.inference_mode``); ``infos`` is
        what the vector env returned. Not called at all unless overridden."""

    def on_rollout_end(self, trainer) -> None: ...

    def on_update_end(self, trainer) -> None: ...

    def on_evaluation(self, trainer, result: EvalResult) -> None: ...

    def on_training_end(self, trainer) -> None: ...


class FunctionCallback(Callback):
    """Wrap plain functions: ``FunctionCallback(on_evaluation=lambda trainer, result: ...)``."""

    def __init__(self, **hooks: Callable):
        unknown = set(hooks) - {n for n in vars(Callback) if n.startswith("on_")}
        if unknown:
            raise TypeError(f"unknown hook name(s): {', '.join(sorted(unknown))}")
        for name, fn in hooks.items():
            setattr(self, name, fn)


class PeriodicCallback(Callback):
    """Runs ``fire(trainer)`` at the first update end at or after every multiple of
    ``every`` env steps. Aligned to multiples (not to the start), so a resumed run
    fires at the same steps as an uninterrupted one."""

    def __init__(self, every: int):
        if every < 1:
            raise ValueError(f"every={every} must be >= 1 env steps")
        self.every = int(every)
        self._next = self.every

    def on_training_start(self, trainer) -> None:
        self._next = (trainer.global_step // self.every + 1) * self.every

    def on_update_end(self, trainer) -> None:
        if trainer.global_step >= self._next:
            self._next = (trainer.global_step // self.every + 1) * self.every
            self.fire(trainer)

    def fire(self, trainer) -> None:
        raise NotImplementedError


class CheckpointCallback(PeriodicCallback):
    """Save ``path.format(step=global_step)`` every ``every`` steps, e.g. ``ckpt/{step}.pt``; with
    ``on_evaluation=True`` also at every evaluated step (so every evaluation has its checkpoint,
    with that evaluation in it). ``env_state="latest"``: only the newest file (and those of the
    steps in ``keep_full``) keeps the environments' state; each earlier one is rewritten light
    (``checkpoint.write_light``). One file per step, written once per state: a periodic save and
    an evaluation on the same step write it once, or twice if the periodic save ran first."""

    def __init__(self, every: int, path: str = "ckpt/{step}.pt", on_evaluation: bool = False,
                 env_state: str = "all", keep_full: tuple = ()):
        if env_state not in ("all", "latest"):
            raise ValueError(f"env_state must be 'all' or 'latest', got {env_state!r}")
        super().__init__(every)
        self.path, self.at_evaluations, self.env_state = path, on_evaluation, env_state
        self.keep_full = {self.path.format(step=s) for s in keep_full}  # stay full, with "latest" too
        self.saved: dict[int, str] = {}  # step -> path
        self._evaluations_in: dict[int, int] = {}  # step -> len(eval_history) when that file was written
        self._full: set[str] = set()  # files this run wrote with the environments' state

    def save(self, trainer) -> str:
        # A periodic save can run before an evaluation of the same step (callback order):
        # that file lacks the evaluation, so it is written again; an unchanged state is not.
        step, n_evaluations = trainer.global_step, len(trainer.eval_history)
        if self._evaluations_in.get(step) != n_evaluations:
            self.saved[step] = self.path.format(step=step)
            trainer.save(self.saved[step])
            self._evaluations_in[step] = n_evaluations
            if self.env_state == "latest":  # the earlier files become light: exact resume needs the latest only
                for older in sorted(self._full - {self.saved[step]} - self.keep_full):
                    write_light(older, older)
                self._full = {self.saved[step]}
        return self.saved[step]

    def continue_from(self, path: str) -> None:
        """A resumed run's checkpoint, when it is one of this callback's files (`path` formatted
        like them): it was the latest, so the next save makes it light like any earlier one."""
        self._full.add(path)

    def fire(self, trainer) -> None:
        self.save(trainer)

    def on_evaluation(self, trainer, result: EvalResult) -> None:
        if self.at_evaluations:
            self.save(trainer)


class EvalCallback(PeriodicCallback):
    """Evaluate every ``every`` steps; record eval/* tags; keep the best in ``best_path``.

    ``evaluate(trainer) -> EvalResult`` plays the episodes: by default ``trainer.evaluate(envs,
    n_episodes, deterministic, seed)`` (envs: one environment or a list, see
    ``common.episodes.run_episodes``); an application passes its own to add environment
    statistics to ``result.extra``. After saving ``best_path`` (if this is the new best), every
    callback's ``on_evaluation`` runs with the result (``result.is_best`` tells).
    """

    def __init__(self, envs: Any, every: int, n_episodes: int = 10, deterministic: bool = True, seed: int = 0,
                 best_path: Optional[str] = None, evaluate: Optional[Callable[[Any], EvalResult]] = None):
        super().__init__(every)
        self.evaluate = evaluate or (lambda trainer: trainer.evaluate(envs, n_episodes, deterministic, seed))
        self.best_path = best_path

    def fire(self, trainer) -> None:
        result = self.evaluate(trainer)
        trainer.add_evaluation(result)
        if result.is_best and self.best_path is not None:
            trainer.save(self.best_path)
        trainer.dispatch("on_evaluation", result)


class JsonHistoryCallback(Callback):
    """Rewrite ``path`` (atomically) with every evaluation so far as a JSON list.

    ``extra_fn(trainer, result) -> dict`` may add fields (e.g. the checkpoint path or
    the environment's action mix) to the newest entry; they are kept in
    ``result.extra`` and therefore also in later rewrites and in checkpoints.
    """

    def __init__(self, path: str, extra_fn: Optional[Callable[[Any, EvalResult], dict]] = None):
        self.path, self.extra_fn = path, extra_fn

    def on_evaluation(self, trainer, result: EvalResult) -> None:
        if self.extra_fn is not None:
            result.extra.update(self.extra_fn(trainer, result))
        write_json(self.path, [r.to_dict() for r in trainer.eval_history])


class StopOnRewardThreshold(Callback):
    def __init__(self, threshold: float):
        self.threshold = float(threshold)

    def on_evaluation(self, trainer, result: EvalResult) -> None:
        if result.mean_reward >= self.threshold:
            trainer.request_stop(f"evaluation mean {result.mean_reward:.4g} reached the threshold {self.threshold:g}")


def evaluations_without_improvement(history: list, min_delta: float = 0.0) -> int:
    """Evaluations since the last one that beat all earlier ones by more than min_delta."""
    best, since = None, 0
    for r in history:
        if best is None or r.mean_reward > best + min_delta:
            best, since = r.mean_reward, 0
        else:
            since += 1
    return since


class StopOnNoImprovement(Callback):
    """Stop after ``patience`` consecutive evaluations without a new best mean."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        if patience < 1:
            raise ValueError("patience must be >= 1")
        self.patience, self.min_delta = int(patience), float(min_delta)

    def on_evaluation(self, trainer, result: EvalResult) -> None:
        n = evaluations_without_improvement(trainer.eval_history, self.min_delta)
        if n >= self.patience:
            trainer.request_stop(f"no improvement of the evaluation mean in {n} evaluations")


def levelled(history: list, window: int) -> Optional[dict]:
    """Whether the evaluation curve has levelled: each episode's return averaged over the last
    `window` evaluations against the same over the `window` before, paired over the episodes
    (every evaluation must have played the same seeded episodes: else None, not judged).
    -> {"mean", "ci95_low", "ci95_high", "level"}: level when the 95 % CI of the gain reaches 0.
    A best-so-far rule would keep finding a new best in the noise of a flat curve; averaging
    `window` evaluations and pairing the episodes leaves the trend."""
    if len(history) < 2 * window:
        return None
    recent, before = history[-window:], history[-2 * window:-window]
    if len({(r.seed, r.n_episodes) for r in recent + before}) != 1 or recent[0].n_episodes < 2:
        return None
    gain = np.mean([r.episode_returns for r in recent], axis=0) - np.mean([r.episode_returns for r in before], axis=0)
    s = summarize(gain)
    return {"mean": s["mean"], "ci95_low": s["ci95_low"], "ci95_high": s["ci95_high"], "level": s["ci95_low"] <= 0}


class StopWhenLevel(Callback):
    """Stop once the evaluation curve has levelled (`levelled`): train for as long as it rises,
    with the run's total steps as the budget, instead of for a fixed number of steps."""

    def __init__(self, window: int):
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = int(window)

    def on_evaluation(self, trainer, result: EvalResult) -> None:
        test = levelled(trainer.eval_history, self.window)
        if test and test["level"]:
            trainer.request_stop(f"levelled: the last {self.window} evaluations average {test['mean']:+.3g} "
                                 f"[{test['ci95_low']:+.3g}, {test['ci95_high']:+.3g}] above the {self.window} before "
                                 "(per episode, 95% CI)")


__all__ = ["Callback", "FunctionCallback", "PeriodicCallback", "CheckpointCallback", "EvalCallback",
           "JsonHistoryCallback", "StopOnRewardThreshold", "StopOnNoImprovement", "StopWhenLevel",
           "evaluations_without_improvement", "levelled"]

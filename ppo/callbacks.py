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

from .checkpoint import write_json
from .evaluation import EvalResult, compare_to_best
from .vec_env import is_env_factory


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
    """Save ``path.format(step=global_step)`` every ``every`` steps, e.g. ``ckpt/{step}.pt``."""

    def __init__(self, every: int, path: str = "ckpt/{step}.pt"):
        super().__init__(every)
        self.path = path
        self.saved: list[str] = []

    def fire(self, trainer) -> None:
        path = self.path.format(step=trainer.global_step)
        trainer.save(path)
        self.saved.append(path)


class EvalCallback(PeriodicCallback):
    """Evaluate every ``every`` steps; record eval/* tags; keep the best in ``best_path``.

    ``env``: single env, env factory or vector env (see ``evaluate_policy``); a factory
    is called once and the env reused. ``step_hook`` is passed to ``evaluate_policy``.
    ``evaluator(trainer) -> EvalResult``, if given, replaces ``trainer.evaluate`` (e.g.
    an environment's own seeded runner that also measures environment statistics into
    ``result.extra``); ``env`` is then unused.
    After saving ``best_path`` (if this is the new best), every callback's
    ``on_evaluation`` runs with the ``EvalResult`` (``result.is_best`` tells).
    """

    def __init__(self, env: Any, every: int, n_episodes: int = 10, deterministic: bool = True, seed: int = 0,
                 best_path: Optional[str] = None, eval_at_end: bool = False,
                 step_hook: Optional[Callable[[dict], None]] = None,
                 evaluator: Optional[Callable[[Any], EvalResult]] = None):
        super().__init__(every)
        self.env, self.n_episodes, self.deterministic, self.seed = env, n_episodes, deterministic, seed
        self.evaluator = evaluator
        self.best_path, self.eval_at_end, self.step_hook = best_path, eval_at_end, step_hook
        self._last_step: Optional[int] = None

    def fire(self, trainer) -> None:
        if self.evaluator is not None:
            result = self.evaluator(trainer)
        else:
            if is_env_factory(self.env):
                self.env = self.env()
            result = trainer.evaluate(self.env, self.n_episodes, self.deterministic, self.seed, self.step_hook)
        trainer.add_evaluation(result)
        if result.is_best and self.best_path is not None:
            trainer.save(self.best_path)
        self._last_step = trainer.global_step
        trainer.dispatch("on_evaluation", result)

    def on_training_end(self, trainer) -> None:
        if self.eval_at_end and self._last_step != trainer.global_step:
            self.fire(trainer)
            trainer.logger.dump(trainer.global_step)


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


class StopOnOverfit(Callback):
    """Stop when ``patience`` consecutive evaluations are flagged by ``compare_to_best``
    (std > std_factor x best std, or mean more than drop_pct % below the best)."""

    def __init__(self, std_factor: float = 5.0, drop_pct: float = 20.0, patience: int = 1, min_std: float = 0.0):
        if patience < 1:
            raise ValueError("patience must be >= 1")
        self.std_factor, self.drop_pct, self.patience, self.min_std = std_factor, drop_pct, int(patience), min_std

    def flags(self, result: EvalResult, best: EvalResult) -> dict:
        return compare_to_best(result, best, self.std_factor, self.drop_pct, self.min_std)

    def on_evaluation(self, trainer, result: EvalResult) -> None:
        # Each entry is judged against the best *at its time* (``is_best`` was set when
        # it was added), not against today's best.
        streak, best, last_reasons = 0, None, []
        for r in trainer.eval_history:
            if r.is_best or best is None:
                best, streak = r, 0
                continue
            verdict = self.flags(r, best)
            streak = streak + 1 if verdict["overfit"] else 0
            last_reasons = verdict["reasons"]
        if streak >= self.patience:
            trainer.request_stop(f"over-fitting: {'; '.join(last_reasons)} (best at step {best.step})")


__all__ = ["Callback", "FunctionCallback", "PeriodicCallback", "CheckpointCallback", "EvalCallback",
           "JsonHistoryCallback", "StopOnRewardThreshold", "StopOnNoImprovement", "StopOnOverfit",
           "evaluations_without_improvement"]

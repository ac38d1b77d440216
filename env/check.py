"""`check_env(env)`: check any Gymnasium-style environment against the API contract.

Checks the spaces, what reset/step return (types, shapes, dtypes, bounds,
finiteness), that the same seed and actions reproduce the same observations
and rewards, and that an out-of-range action is refused. All problems found
are collected and raised together as one EnvError.
"""
from __future__ import annotations

import numbers

import numpy as np

from common.messages import first_line

from .errors import EnvError


def _check_obs(obs, space, where: str, problems: list) -> None:
    if not isinstance(obs, np.ndarray):
        problems.append(f"{where}: observation is a {type(obs).__name__}, not a numpy array")
        return
    if obs.dtype != np.float32:
        problems.append(f"{where}: observation dtype is {obs.dtype}, not float32")
    if tuple(obs.shape) != tuple(space.shape):
        problems.append(f"{where}: observation shape {tuple(obs.shape)} != observation_space.shape {tuple(space.shape)}")
        return
    if not np.all(np.isfinite(obs)):
        problems.append(f"{where}: observation has non-finite values {obs.tolist()}")
    elif hasattr(space, "low") and (np.any(obs < space.low) or np.any(obs > space.high)):
        problems.append(f"{where}: observation {np.round(obs, 4).tolist()} is outside [low, high]")


def _check_spaces(env, problems: list) -> bool:
    obs_space, act_space = getattr(env, "observation_space", None), getattr(env, "action_space", None)
    if obs_space is None or not hasattr(obs_space, "shape"):
        problems.append("observation_space with a .shape is missing")
        return False
    if not all(hasattr(obs_space, k) for k in ("low", "high")):
        problems.append("observation_space needs .low and .high")
    else:
        low, high = np.asarray(obs_space.low), np.asarray(obs_space.high)
        if low.shape != tuple(obs_space.shape) or high.shape != tuple(obs_space.shape):
            problems.append(f"observation_space low/high shapes {low.shape}/{high.shape} != shape {tuple(obs_space.shape)}")
        elif np.any(low > high):
            problems.append("observation_space has low > high")
    if getattr(obs_space, "dtype", np.float32) != np.float32:
        problems.append(f"observation_space dtype is {obs_space.dtype}, not float32")
    n = getattr(act_space, "n", None)
    if not isinstance(n, numbers.Integral) or n < 1:
        problems.append(f"action_space.n must be an integer >= 1, got {n!r}")
        return False
    return True


def _rollout(env, seed: int, actions: list, problems: list, tag: str) -> tuple[list, list]:
    """reset(seed) then step through `actions`, checking every return; stops at the episode's end."""
    out = env.reset(seed=seed)
    if not (isinstance(out, tuple) and len(out) == 2):
        problems.append(f"{tag}reset() must return (obs, info), got {type(out).__name__}")
        return [], []
    obs, info = out
    _check_obs(obs, env.observation_space, f"{tag}reset", problems)
    if not isinstance(info, dict):
        problems.append(f"{tag}reset info is a {type(info).__name__}, not a dict")
    observations, rewards = [np.array(obs, copy=True)], []
    for t, a in enumerate(actions):
        out = env.step(a)
        if not (isinstance(out, tuple) and len(out) == 5):
            problems.append(f"{tag}step() must return (obs, reward, terminated, truncated, info)")
            break
        obs, r, terminated, truncated, info = out
        _check_obs(obs, env.observation_space, f"{tag}step {t + 1}", problems)
        if isinstance(r, (bool, np.bool_)) or not isinstance(r, numbers.Real) or not np.isfinite(r):
            problems.append(f"{tag}step {t + 1}: reward {r!r} is not a finite real number")
        for flag, value in (("terminated", terminated), ("truncated", truncated)):
            if not isinstance(value, (bool, np.bool_)):
                problems.append(f"{tag}step {t + 1}: {flag} is a {type(value).__name__}, not a bool")
        if not isinstance(info, dict):
            problems.append(f"{tag}step {t + 1}: info is a {type(info).__name__}, not a dict")
        observations.append(np.array(obs, copy=True))
        rewards.append(float(r))
        if terminated or truncated:
            break
    return observations, rewards


def check_env(env, seed: int = 0, n_steps: int | None = None) -> None:
    """Raise EnvError listing every contract violation found; return None if there are none.

    Steps through each action in turn (`n_steps`, default one of each action plus one),
    twice from the same seed, and compares the two runs exactly.
    """
    problems: list[str] = []
    if not all(callable(getattr(env, m, None)) for m in ("reset", "step")):
        raise EnvError(f"check_env: {type(env).__name__} needs reset() and step() methods")
    if _check_spaces(env, problems):
        n = int(env.action_space.n)
        actions = [t % n for t in range(n_steps if n_steps is not None else n + 1)]
        try:
            obs_a, rew_a = _rollout(env, seed, actions, problems, "")
            obs_b, rew_b = _rollout(env, seed, actions, [], "")  # problems already reported by the first run
            if obs_a and obs_b and not np.array_equal(obs_a[0], obs_b[0]):
                problems.append(f"reset(seed={seed}) twice gave different first observations")
            elif len(obs_a) != len(obs_b) or any(not np.array_equal(x, y) for x, y in zip(obs_a, obs_b)) \
                    or rew_a != rew_b:
                problems.append(f"the same seed ({seed}) and actions gave a different trajectory (not deterministic)")
            env.reset(seed=seed)
            try:
                env.step(n)
                problems.append(f"step({n}) with action_space.n = {n} was accepted; invalid actions must raise")
            except Exception:  # noqa: BLE001 - any clear exception is what we want
                pass
        except Exception as e:  # noqa: BLE001 - report the crash as a contract problem
            problems.append(f"calling the environment raised {first_line(e)}")
    if problems:
        raise EnvError(f"check_env found {len(problems)} problem(s): " + "; ".join(problems))

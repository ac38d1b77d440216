"""The text-scheduling environment: each action picks how INFINITO trains next.

One decision (`step`) = `inner_steps` real AdamW steps of the model on
`w_text·CE + w_phi·L_phi` with the chosen mode's weights, at the learning rate
`inner_lr × lr_scale` of the mode (1 unless the mode carries a step size; the
AdamW moments carry over between decisions whatever the rate), then a measurement
on a fixed held-out batch (no_grad, eval mode): C, Φ, the held-out text loss
and Φ loss, memory use and perplexity. The observation is

    [C, Φ, loss_text, loss_phi, memory_util, t_norm, time_left]   float32, clipped to [0, OBS_HIGH]

with t_norm = steps since C last exceeded `c_threshold`, / max_steps, capped at 1
(docs/env.md), and time_left = decisions left / max_steps. The reward is the
config's reward object (env/reward.py) between consecutive measurements; it is
told which decision is the episode's last (the `final` reward prices the end).

The episode ends after `max_steps` decisions. The observation shows the time
left, so the end is part of the task the agent sees and is reported as
`terminated` (PPO does not bootstrap past it; evaluation and training agree).
C need not ever cross `c_threshold` — on the demo model it does not — and
t_norm would then be a clock, which time_left now is openly.
`terminate_at_max_steps=False` reports the end as `truncated` instead.

Determinism: the data stream is a torch.Generator owned by the environment and
re-seeded by `reset(seed=...)`. Dropout draws from torch's global generator, so
when the model has dropout the environment swaps in its own saved generator
state around its training steps (and restores the caller's afterwards): the
same seed and actions give the same trajectory, and neither the caller's RNG
nor other environments in the same process disturb it.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
from pathlib import Path

import numpy as np
import torch

from data import random_batch
from infinito.config import InfinitoConfig
from infinito.model import Infinito
from infinito.training import make_optimizer, train_step

from .base import BaseAssets, check_assets, load_base
from .config import EnvConfig
from .errors import EnvError
from common.messages import first_line
from common.spaces import Box, Discrete

OBS_NAMES = ("consciousness", "phi", "loss_text", "loss_phi", "memory_util", "t_norm", "time_left")
OBS_HIGH = np.array([1.0, 10.0, 20.0, 20.0, 1.0, 1.0, 1.0], dtype=np.float32)
RESET_WEIGHTS = (1.0, 0.0)  # the inner step `reset` runs to produce the first observation: TEXT


def _normal_mode(method):
    """Run with autograd available whatever the caller's mode: PPO steps its environments
    inside torch.inference_mode, and our inner steps need gradients and in-place updates."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            return method(self, *args, **kwargs)
    return wrapper


def phi_loss_config(model_config: dict, band: tuple) -> InfinitoConfig:
    """The base model's config with its Φ loss pulling toward the reward's band: PHI and MIXED
    train Φ into the band the reward prices (`--env reward.phi_low=5.5` moves both). A target
    point that the new band leaves outside falls back to the band's midpoint."""
    cfg = InfinitoConfig.from_dict(model_config)
    low, high = band
    target = cfg.phi_target if low <= cfg.phi_target <= high else -1.0
    return InfinitoConfig.from_dict({**cfg.to_dict(), "phi_low": low, "phi_high": high, "phi_target": target})


def reset_ratios(env: "TextSchedulingEnv", seeds) -> np.ndarray:
    """Each seed's reset perplexity over the start state's (`measure_start`): above 1, the reset's
    own inner step made the model worse before any decision (docs/env.md, "Where an episode starts")."""
    start = env.measure_start()["ppl"]
    return np.array([env.reset(seed=int(s))[1]["ppl"] for s in seeds]) / start


class TextSchedulingEnv:
    """Gymnasium-style environment over an INFINITO base checkpoint (no gymnasium import).

    `base`: the path of a base checkpoint, or `BaseAssets` from `load_base` to
    share one loaded checkpoint between several environments (loaded with a config
    that agrees on the batch, held-out and device fields; checked).
    """

    def __init__(self, base: str | Path | BaseAssets, config: EnvConfig | None = None):
        self.config = config if config is not None else EnvConfig()
        self.assets = base if isinstance(base, BaseAssets) else load_base(base, self.config)
        check_assets(self.assets, self.config)
        self.device = self.assets.device
        self.model = Infinito(phi_loss_config(self.assets.model_config, self.config.reward.band)).to(self.device)
        self.model.load_state_dict(self.assets.snapshot)
        self.observation_space = Box(np.zeros(len(OBS_NAMES), np.float32), OBS_HIGH)
        self.action_space = Discrete(len(self.config.modes))
        self.optimizer: torch.optim.Optimizer | None = None
        self._data_rng = torch.Generator()
        self._stochastic = self.model.cfg.dropout > 0  # only then does training consume global RNG
        self._rng_state: dict | None = None  # our dropout RNG state while we are not training
        self._seeded = False
        self._needs_reset = True
        self._steps = 0
        self._since_c = 0
        self._history: list[int] = []
        self._prev: dict | None = None

    # ------------------------------------------------------------------ Gymnasium API
    @_normal_mode
    def reset(self, seed: int | None = None, options: dict | None = None):
        """Restore the base model (in-memory snapshot), a fresh AdamW, empty memory;
        re-seed the data stream (when `seed` is given; otherwise it continues);
        run one TEXT inner step and measure. Returns (obs, info)."""
        if seed is not None or not self._seeded:
            if seed is None:  # never seeded: fresh entropy, like Gymnasium
                seed = int(np.random.SeedSequence().entropy % (1 << 63))
            self._seed(int(seed))
        self.model.load_state_dict(self.assets.snapshot)
        self.model.memory.clear()
        self.optimizer = self._new_optimizer()
        train = self._train(*RESET_WEIGHTS, n=1)
        cur = self._measure()
        self._steps, self._since_c, self._history, self._prev = 0, 0, [], cur
        self._needs_reset = False
        return self._observe(cur), {**self._info(cur, train, None, "TEXT"), "lr_scale": 1.0}

    @_normal_mode
    def step(self, action):
        """Train `inner_steps` steps in the chosen mode, measure, reward.
        Returns (obs, reward, terminated, truncated, info)."""
        if self._needs_reset:
            what = "before reset()" if self.optimizer is None else "after the episode ended"
            raise EnvError(f"step() called {what}; call reset() first")
        a = self._check_action(action)
        name, w_text, w_phi, lr_scale = self.config.modes[a]
        for group in self.optimizer.param_groups:  # this decision's step size (the mode's scale)
            group["lr"] = self.config.inner_lr * lr_scale
        train = self._train(w_text, w_phi, n=self.config.inner_steps)
        cur = self._measure()
        done = self._steps + 1 >= self.config.max_steps
        reward, terms = self.config.reward.score_decision(self._steps, self._prev, cur, last=done)
        self._steps += 1
        self._since_c = 0 if cur["consciousness"] > self.config.c_threshold else self._since_c + 1
        self._history.append(a)
        self._prev = cur
        terminated = done and self.config.terminate_at_max_steps
        self._needs_reset = done
        return (self._observe(cur), reward, terminated, done and not terminated,
                {**self._info(cur, train, terms, name), "lr_scale": lr_scale})

    def close(self) -> None:
        pass

    @_normal_mode
    def measure_start(self) -> dict:
        """The measurement of the state every episode trains from — the snapshot's weights with an
        empty memory — before the reset's inner step. Leaves the environment needing a reset.
        A reset that lands far above this has been wrecked by its first step (docs/env.md,
        "Where an episode starts")."""
        self.model.load_state_dict(self.assets.snapshot)
        self.model.memory.clear()
        self._needs_reset = True
        return self._measure()

    @property
    def uses_global_rng(self) -> bool:
        """True when training draws dropout masks from torch's global RNG (swapped in and out, so
        this environment must not be stepped concurrently with another one that does too)."""
        return self._stochastic

    # ------------------------------------------------------------------ snapshots (exact resume)
    def get_state(self) -> dict:
        """Everything the next steps depend on, as plain types and tensors (copies)."""
        return {
            "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "optimizer": None if self.optimizer is None else copy.deepcopy(self.optimizer.state_dict()),
            "data_rng": self._data_rng.get_state(),
            "dropout_rng": None if self._rng_state is None else {k: v.clone() for k, v in self._rng_state.items()},
            "seeded": self._seeded, "needs_reset": self._needs_reset, "steps": self._steps,
            "since_c": self._since_c, "history": list(self._history),
            "prev": None if self._prev is None else dict(self._prev),
        }

    @_normal_mode
    def set_state(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer = None
            if state["optimizer"] is not None:
                self.optimizer = self._new_optimizer()
                # deep copy: the optimiser keeps (and later mutates) the tensors it is given
                self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
            self._data_rng.set_state(state["data_rng"])
            rng = state["dropout_rng"]
            self._rng_state = None if rng is None else {k: v.clone() for k, v in rng.items()}
            self._seeded, self._needs_reset = bool(state["seeded"]), bool(state["needs_reset"])
            self._steps, self._since_c = int(state["steps"]), int(state["since_c"])
            self._history = [int(a) for a in state["history"]]
            self._prev = None if state["prev"] is None else dict(state["prev"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise EnvError(f"environment state does not fit this environment ({first_line(e)}); "
                           "it comes from a different base checkpoint or config") from None

    # ------------------------------------------------------------------ internals
    def _new_optimizer(self) -> torch.optim.Optimizer:
        """AdamW with the config's inner settings: every episode starts with a fresh one, and a saved
        state's moments load into one built the same way."""
        cfg = self.config
        return make_optimizer(self.model, cfg.inner_lr, (cfg.inner_beta1, cfg.inner_beta2), cfg.inner_weight_decay)

    def _seed(self, seed: int) -> None:
        self._data_rng.manual_seed(seed)
        if self._stochastic:  # a separate stream for dropout, derived from the same seed
            self._rng_state = {"cpu": torch.Generator().manual_seed(seed + 1).get_state()}
            if self.device.type == "cuda":
                self._rng_state["cuda"] = torch.Generator(self.device).manual_seed(seed + 1).get_state()
        self._seeded = True

    @contextlib.contextmanager
    def _own_rng(self):
        """Run with this environment's dropout RNG in torch's global generator(s); restore the caller's after."""
        if not self._stochastic:
            yield
            return
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.set_rng_state(self._rng_state["cpu"])
            if cuda:
                torch.cuda.set_rng_state(self._rng_state["cuda"], self.device)
            yield
            self._rng_state["cpu"] = torch.get_rng_state()
            if cuda:
                self._rng_state["cuda"] = torch.cuda.get_rng_state(self.device)

    def _train(self, w_text: float, w_phi: float, n: int) -> dict:
        """n real optimiser steps (train_step also writes each batch to memory, as base training does)."""
        a, cfg = self.assets, self.config
        stats = []
        with self._own_rng():
            for _ in range(n):
                x, y = random_batch(a.train_ids, cfg.inner_batch_size, a.seq_len, self._data_rng)
                stats.append(train_step(self.model, self.optimizer, x.to(self.device), y.to(self.device),
                                        w_text, w_phi, cfg.inner_grad_clip))
        return {"train_loss_text": sum(s["loss_text"] for s in stats) / n,
                "train_phi": sum(s["phi"] for s in stats) / n,
                "grad_norm": sum(s["grad_norm"] for s in stats) / n}

    @torch.no_grad()
    def _measure(self) -> dict:
        """One forward pass over the fixed held-out batch: cheap next to the inner steps."""
        self.model.eval()
        x, y = self.assets.heldout
        out = self.model(x, y, metrics=True)
        loss = float(out.loss)
        m = out.metrics
        return {"consciousness": float(m["consciousness"]), "phi": float(m["phi"]), "loss_text": loss,
                "loss_phi": float(m["loss_phi"]), "memory_util": self.model.memory.utilisation,
                "ppl": math.exp(min(loss, 50.0))}

    def _t_norm(self) -> float:
        return min(self._since_c / self.config.max_steps, 1.0)

    def _observe(self, cur: dict) -> np.ndarray:
        raw = [cur["consciousness"], cur["phi"], cur["loss_text"], cur["loss_phi"], cur["memory_util"], self._t_norm(),
               1.0 - self._steps / self.config.max_steps]  # time_left
        return np.clip(np.asarray(raw, dtype=np.float32), 0.0, OBS_HIGH)

    def _info(self, cur: dict, train: dict, terms: dict | None, mode: str) -> dict:
        return {**cur, **train, "t_norm": self._t_norm(), "time_left": 1.0 - self._steps / self.config.max_steps,
                "step": self._steps, "mode": mode,
                "action_history": tuple(self._history), "reward_terms": terms or {}}

    def _check_action(self, action) -> int:
        a = action
        if isinstance(a, (np.ndarray, torch.Tensor)) and a.ndim == 0:
            a = a.item()
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)) or not 0 <= a < self.action_space.n:
            choices = ", ".join(f"{i}={m[0]}" for i, m in enumerate(self.config.modes))
            raise EnvError(f"invalid action {action!r}: expected an integer in 0..{self.action_space.n - 1} ({choices})")
        return int(a)

    def __repr__(self) -> str:
        return (f"TextSchedulingEnv(base={self.assets.path!r}, modes={self.config.mode_names}, "
                f"max_steps={self.config.max_steps}, inner_steps={self.config.inner_steps})")

"""A surrogate of the `demo-lr` environment: the same six modes, observation and reward, in microseconds.

Fitted to real episodes by `bench/surrogate.py` (docs/studies.md, "Choosing levers on a surrogate
of demo-lr"). A decision picks loss weights (TEXT, or MIXED: half text, half Φ loss) and a step
size s (0.2, 0.5 or 1 x the inner learning rate), in the real environment's order:
TEXT@0.2, TEXT@0.5, TEXT@1, MIXED@0.2, MIXED@0.5, MIXED@1.

**Mean dynamics.** The held-out text loss is L = L_inf + B + N + D + K:

- B, what is left to learn: B <- B exp(-c s^q w), w = 1 for TEXT, `w_mixed` for MIXED;
- N, the loss the step size's own noise holds the model at: it relaxes by 1 - exp(-k s^kappa) of
  the way per decision toward nu_s (1 + amp A) (1 + nu_mixed [MIXED]), nu_s one level per step size
  and A the optimiser's youth (1 at the reset, then A <- A exp(-1/tau): fresh AdamW moments are
  noisier). A lower step size lowers N within a few decisions (what a step-size decay earns), a
  higher one raises it: a decision's effect depends on the step sizes before it, as the real
  AdamW run's does, and on the time (A);
- D and K, what MIXED's Φ loss costs the text: each MIXED decision's fall of Φ above `phi_cost`,
  times g (1 + g_young A), is paid through a pending state (P <- lag P + fall; g (1 - lag) P per
  decision): a share `keep` for good (K), the rest into D, which training repairs:
  D <- D exp(-r s), r = r_repair under TEXT, r_repair_mixed under MIXED.

Φ moves toward phi_text - phi_text_slope s under TEXT and toward phi_mixed under MIXED, by
1 - exp(-a s) of the way (a = a_text or a_mixed), with a velocity that keeps mu_phi of the last
decision's. The reward is the real `final` reward: 100 (L_prev - L) per decision, and on the last
one minus w_end x Φ's distance outside [phi_low, phi_high].

**Noise, set by the episode's seed** (the real environment's data stream), so that episodes of
one seed share it whatever the actions, and the same seed and actions give the same episode:

- the loss's deviation X from the mean path: X_0 ~ N(0, sd_reset^2) after the reset, then
  X <- rho X + s^gamma (sd_batch z_t + luck u[t, a]): z_t the decision's batch, the same for
  every action; u[t, a] the luck of mode a on that batch (luck = sd_luck for TEXT, sd_luck_mixed
  for MIXED). z makes schedules of different step sizes differ a little, u makes any two
  different decisions differ;
- Φ's deviation: Y_0 ~ N(0, sd_phi^2), Y <- rho_phi * Y + sqrt(1 - rho_phi^2) * sd_phi * z'_t.

The observation is the real one's seven floats (env/scheduling.py OBS_NAMES): C (a per-step mean,
no noise), Φ, the held-out text loss, the Φ loss (a quadratic in Φ fitted to the real pairs),
memory use (the real fill: (1 + 3 t) / 128), t_norm (= 1 - time_left: C never crosses its
threshold on the demo model), time_left. What it leaves out is said in docs/studies.md.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from common.spaces import Box, Discrete

MODE_NAMES = ("TEXT@0.2", "TEXT@0.5", "TEXT@1", "MIXED@0.2", "MIXED@0.5", "MIXED@1")
STEP = np.array([0.2, 0.5, 1.0, 0.2, 0.5, 1.0])
MIXED = np.array([0, 0, 0, 1, 1, 1], bool)
OBS_HIGH = np.array([1.0, 10.0, 20.0, 20.0, 1.0, 1.0, 1.0], np.float32)  # env/scheduling.py's
PHI_OBS, LOSS_OBS, TIME_LEFT_OBS = 1, 2, 6


@dataclass
class SurrogateParams:
    """Every constant of the surrogate (module docstring). Losses in nats, Φ in its own units."""
    # mean dynamics of the text loss: L = L_inf + B + N + D
    L_inf: float = 2.2
    B0: float = 0.4           # what is left to learn at the reset
    c: float = 0.05           # B <- B exp(-c s^q w)
    q: float = 0.7
    N0: float = 0.15          # the step-size noise's loss at the reset
    nu02: float = 0.03        # the noise's level N relaxes to at step size 0.2, 0.5, 1 ...
    nu05: float = 0.07
    nu1: float = 0.15
    amp: float = 1.0          # ... times 1 + amp * A: a young optimiser (A = 1 at the reset, then
    tau: float = 3.0          # A <- A exp(-1 / tau) per decision) is noisier (fresh AdamW moments)
    k: float = 1.0            # N relaxes by 1 - exp(-k s^kappa) of the way per decision
    kappa: float = 0.5
    w_mixed: float = 0.5      # MIXED's share of TEXT's progress
    g: float = 0.25           # text loss per unit of Φ that MIXED removes above phi_cost, times
    # (1 + g_young A) (a fresh AdamW's Φ steps are large; A below), paid
    phi_cost: float = 6.0     # through a pending state P <- lag P + fall, D += g (1 - lag) P: spread
    lag: float = 0.5          # over the next decisions (AdamW's momentum carries the Φ loss's push)
    g_young: float = 0.0
    keep: float = 0.0         # the share of that cost no training repairs (K); the rest is D
    nu_mixed: float = 0.0     # MIXED's noise level is (1 + nu_mixed) x TEXT's at the same step size
    r_repair: float = 1.0     # D <- D exp(-r s), r = r_repair under TEXT, r_repair_mixed under MIXED
    r_repair_mixed: float = 0.5
    # Φ: relaxes toward phi_text - phi_text_slope * s under TEXT, toward phi_mixed under MIXED
    phi0: float = 7.2
    phi_text: float = 7.0
    phi_text_slope: float = 0.1
    a_text: float = 0.2
    phi_mixed: float = 4.5
    a_mixed: float = 0.3
    mu_phi: float = 0.3       # Φ's velocity keeps mu_phi of the last decision's (AdamW's momentum)
    # the reward
    w_end: float = 10.0
    phi_low: float = 3.0
    phi_high: float = 6.0
    horizon: int = 25
    # noise set by the seed
    sd_reset: float = 0.05
    rho: float = 0.9
    gamma: float = 0.3
    sd_batch: float = 0.015
    sd_luck: float = 0.005
    sd_luck_mixed: float = 0.02
    sd_phi: float = 0.06
    rho_phi: float = 0.6
    # the observation's other floats
    c_mean: list = field(default_factory=lambda: [0.46] * 26)
    loss_phi_coef: list = field(default_factory=lambda: [0.0, 0.0, 0.0])  # a + b Φ + c Φ^2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SurrogateParams":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, path) -> "SurrogateParams":
        return cls.from_dict(json.loads(Path(path).read_text())["params"])


def _table(values: np.ndarray, xp):
    return values if xp is np else xp.tensor(values, dtype=xp.float64)


def mean_step(p: SurrogateParams, state: tuple, a, xp=np) -> tuple:
    """One decision of the mean dynamics on a batch: state (B, N, D, Φ, A, V) arrays, actions `a` ->
    the next state. `xp` is numpy or torch (the fit differentiates through it)."""
    B, N, D, phi, A, V, P, K = state
    s, m = _table(STEP, xp)[a], _table(MIXED.astype(float), xp)[a]
    is02, is05 = _table((STEP == 0.2).astype(float), xp)[a], _table((STEP == 0.5).astype(float), xp)[a]
    w = 1.0 + m * (p.w_mixed - 1.0)
    nu = is02 * p.nu02 + is05 * p.nu05 + (1.0 - is02 - is05) * p.nu1
    target_n = nu * (1.0 + p.amp * A) * (1.0 + m * p.nu_mixed)
    B = B * xp.exp(-p.c * s ** p.q * w)
    N = N + (1.0 - xp.exp(-p.k * s ** p.kappa)) * (target_n - N)
    target = (p.phi_text - p.phi_text_slope * s) + m * (p.phi_mixed - p.phi_text + p.phi_text_slope * s)
    rate = p.a_text + m * (p.a_mixed - p.a_text)
    V = p.mu_phi * V + (1.0 - p.mu_phi) * (1.0 - xp.exp(-rate * s)) * (target - phi)
    new_phi = phi + V
    if xp is np:
        above = np.maximum(new_phi, p.phi_cost)
    else:
        above = xp.maximum(new_phi, p.phi_cost if isinstance(p.phi_cost, xp.Tensor) else xp.tensor(p.phi_cost))
    removed = m * (phi - above) * (phi > above)  # MIXED's fall of Φ above phi_cost: what costs text
    repair = p.r_repair + m * (p.r_repair_mixed - p.r_repair)
    P = p.lag * P + removed * (1.0 + p.g_young * A)  # a young optimiser's fall costs more
    D = D * xp.exp(-repair * s) + (1.0 - p.keep) * p.g * (1.0 - p.lag) * P
    K = K + p.keep * p.g * (1.0 - p.lag) * P
    fade = math.exp(-1.0 / p.tau) if isinstance(p.tau, (int, float)) else xp.exp(-1.0 / p.tau)
    return B, N, D, new_phi, A * fade, V, P, K


def initial_state(p: SurrogateParams, n: int, xp=np) -> tuple:
    z = xp.zeros(n) if xp is np else xp.zeros(n, dtype=xp.float64)
    return z + p.B0, z + p.N0, z, z + p.phi0, z + 1.0, z, z, z


def phi_distance(phi, low: float, high: float):
    return np.maximum(low - phi, 0.0) + np.maximum(phi - high, 0.0)


class SurrogateBatch:
    """n episodes of the surrogate stepped together (numpy): `reset(seeds)`, `step(actions)`.
    Each episode draws its noise from its own seed, so a seed gives the same episode in any batch."""

    def __init__(self, params: SurrogateParams):
        self.p = params
        self.n = 0
        self.t = 0

    def reset(self, seeds) -> np.ndarray:
        p, T = self.p, self.p.horizon
        seeds = [int(s) for s in np.atleast_1d(seeds)]
        self.n, self.t = len(seeds), 0
        noise = [np.random.default_rng(s) for s in seeds]
        draws = [(r.standard_normal(), r.standard_normal(T), r.standard_normal((T, len(STEP))),
                  r.standard_normal(), r.standard_normal(T)) for r in noise]
        self.x = np.array([d[0] for d in draws]) * p.sd_reset
        self.z = np.stack([d[1] for d in draws])
        self.u = np.stack([d[2] for d in draws])
        self.y = np.array([d[3] for d in draws]) * p.sd_phi
        self.zp = np.stack([d[4] for d in draws])
        self.state = initial_state(p, self.n)
        self.loss = self._loss()
        return self._obs()

    def _loss(self) -> np.ndarray:
        B, N, D, K = self.state[0], self.state[1], self.state[2], self.state[7]
        return self.p.L_inf + B + N + D + K + self.x

    def _phi(self) -> np.ndarray:
        return self.state[3] + self.y

    def _obs(self) -> np.ndarray:
        p, t = self.p, self.t
        phi = self._phi()
        a, b, c = p.loss_phi_coef
        obs = np.empty((self.n, 7), np.float32)
        obs[:, 0] = p.c_mean[min(t, len(p.c_mean) - 1)]
        obs[:, 1] = phi
        obs[:, 2] = self.loss
        obs[:, 3] = np.maximum(a + b * phi + c * phi * phi, 0.0)
        obs[:, 4] = min(1.0, (1 + 3 * t) / 128)
        obs[:, 5] = t / p.horizon
        obs[:, 6] = 1.0 - t / p.horizon
        return np.clip(obs, 0.0, OBS_HIGH)

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, bool]:
        """-> (obs [n, 7], rewards [n], done): done after the horizon's last decision."""
        p, t = self.p, self.t
        a = np.asarray(actions, np.int64)
        s = STEP[a]
        rows = np.arange(self.n)
        self.state = mean_step(p, self.state, a)
        luck = np.where(MIXED[a], p.sd_luck_mixed, p.sd_luck)
        self.x = p.rho * self.x + s ** p.gamma * (p.sd_batch * self.z[:, t] + luck * self.u[rows, t, a])
        self.y = p.rho_phi * self.y + math.sqrt(max(1.0 - p.rho_phi ** 2, 0.0)) * p.sd_phi * self.zp[:, t]
        loss = self._loss()
        reward = 100.0 * (self.loss - loss)
        self.loss = loss
        self.t += 1
        done = self.t >= p.horizon
        if done:
            reward = reward - p.w_end * phi_distance(self._phi(), p.phi_low, p.phi_high)
        return self._obs(), reward, done


class SurrogateEnv:
    """One episode at a time, Gymnasium-style (no gymnasium import), like ppo/cartpole.py:
    `reset(seed)` -> (obs, info), `step(a)` -> (obs, reward, terminated, truncated, info).
    Episodes are `horizon` decisions and end in `terminated`, as the real environment's do."""

    uses_global_rng = False  # its own generators: safe to step on threads

    def __init__(self, params: Optional[SurrogateParams] = None):
        self.params = params or SurrogateParams()
        self.observation_space = Box(np.zeros(7, np.float32), OBS_HIGH)
        self.action_space = Discrete(len(MODE_NAMES))
        self._batch = SurrogateBatch(self.params)
        self._seeds = np.random.default_rng()  # the next episodes' seeds when reset is not given one
        self._needs_reset = True

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self._seeds = np.random.default_rng(int(seed))
            episode = int(seed)
        else:
            episode = int(self._seeds.integers(2 ** 62))
        obs = self._batch.reset([episode])[0]
        self._needs_reset = False
        return obs, {"seed": episode, "time_left": float(obs[TIME_LEFT_OBS])}

    def step(self, action):
        if self._needs_reset:
            raise RuntimeError("step() before reset() or after the episode ended; call reset() first")
        if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)) \
                or not 0 <= int(action) < len(MODE_NAMES):
            raise ValueError(f"invalid action {action!r}: expected an integer in 0..{len(MODE_NAMES) - 1}")
        a = int(action)
        obs, reward, done = self._batch.step([a])
        self._needs_reset = done
        return obs[0], float(reward[0]), bool(done), False, {"mode": MODE_NAMES[a], "lr_scale": float(STEP[a]),
                                                            "phi": float(obs[0, PHI_OBS]),
                                                            "loss_text": float(obs[0, LOSS_OBS])}


def decay_actions(obs: np.ndarray, switch_left: int = 6, horizon: int = 25) -> np.ndarray:
    """The tuned decay control on a batch of observations: TEXT@1, TEXT@0.5 for the last `switch_left`."""
    left = np.rint(obs[:, TIME_LEFT_OBS] * horizon)
    return np.where(left > switch_left, 2, 1)


def play_batch(params: SurrogateParams, act, seeds) -> tuple[np.ndarray, np.ndarray]:
    """Episodes of `act(obs [n, 7]) -> actions [n]` on `seeds`, stepped together ->
    (returns [n], actions [n, horizon])."""
    batch = SurrogateBatch(params)
    obs = batch.reset(seeds)
    total, taken, done = np.zeros(batch.n), [], False
    while not done:
        a = np.asarray(act(obs), np.int64)
        obs, r, done = batch.step(a)
        total += r
        taken.append(a)
    return total, np.stack(taken, 1)

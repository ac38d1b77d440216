"""Teacher start: behaviour cloning of any policy into a PPO agent, before PPO trains it.

A learned controller need not rediscover a good hand-written schedule: started from it, PPO
only has to improve on it (Shala et al. 2020 started their learned CMA-ES step-size policy
from the hand-designed heuristic, and it went on to beat it). `clone` plays the teacher — any
callable `(obs, info) -> action`, with the optional `reset(seed)` / `observe(action, reward)`
hooks of `common.episodes.play` — on the given seeds, then fits the agent to it:

- the observation normaliser's statistics to the teacher's observations (they are the states
  PPO will start from);
- the policy head by cross-entropy to the teacher's action, smoothed: the target puts
  `1 - smoothing` on the teacher's action and spreads `smoothing` over the others. The clone
  keeps that much probability on other actions (about 0.1 by default), because PPO learns only
  from actions it samples: a clone that never tries anything else has nothing to improve on,
  and its log-probabilities of other actions would be large negative numbers that make the
  first updates' ratios explode;
- the value head by squared error to the teacher's discounted returns-to-go (in the reward
  scaler's units when it is on), so the first advantages measure the policy against the
  teacher, not against an untrained critic.

Generic: any Gymnasium-style environment with discrete actions. The agent's own optimiser
is not used (a separate Adam fits the clone), so PPO starts with fresh moments.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from common.episodes import run_episodes


@dataclass
class CloneResult:
    """What cloning did: the teacher's returns and how closely the clone follows it."""
    episodes: int
    samples: int
    teacher_mean_return: float
    agreement: float          # greedy clone action == teacher action, over the teacher's states
    other_prob: float         # mean probability the clone puts on actions other than the teacher's
    value_explained_variance: float
    epochs: int

    def to_dict(self) -> dict:
        return asdict(self)


class _Recorder:
    """Wraps the teacher and records (seed, t, obs, action) of every decision. Deep copies (the
    episode runner gives each thread its own policy) share one store, so nothing is lost."""

    def __init__(self, teacher: Callable, store: list, lock: threading.Lock):
        self.teacher, self.store, self.lock = teacher, store, lock
        self.seed, self.t = None, 0

    def __deepcopy__(self, memo):
        return _Recorder(copy.deepcopy(self.teacher, memo), self.store, self.lock)

    def reset(self, seed: int) -> None:
        self.seed, self.t = seed, 0
        if hasattr(self.teacher, "reset"):
            self.teacher.reset(seed)

    def observe(self, action, reward) -> None:
        if hasattr(self.teacher, "observe"):
            self.teacher.observe(action, reward)

    def __call__(self, obs, info=None) -> int:
        action = int(self.teacher(obs, info))
        with self.lock:
            self.store.append((self.seed, self.t, np.array(obs, np.float32, copy=True), action))
        self.t += 1
        return action


def teacher_data(envs, teacher: Callable, n_episodes: int, seed: int, gamma: float):
    """The teacher's decisions on episodes seed .. seed+n-1 -> (obs [B, *S], actions [B],
    returns-to-go [B], episode returns [n]), in seed and step order."""
    store: list = []
    episodes = run_episodes(envs, _Recorder(teacher, store, threading.Lock()), n_episodes, seed)
    store.sort(key=lambda r: (r[0], r[1]))
    togo: dict = {}
    for ep in episodes:
        g, out = 0.0, []
        for r in reversed(ep.rewards):
            g = r + gamma * g
            out.append(g)
        togo[ep.seed] = out[::-1]
    obs = np.stack([r[2] for r in store])
    actions = np.array([r[3] for r in store], np.int64)
    returns = np.array([togo[s][t] for s, t, _, _ in store], np.float64)
    return obs, actions, returns, np.array([ep.total_reward for ep in episodes])


def _value_scale(agent) -> float:
    """Value targets are in the units PPO trains its critic in: rewards divided by the reward
    scaler's running std of the return when reward scaling is on."""
    scaler = agent.reward_scaler
    return float(np.sqrt(scaler.rms.var + scaler.eps)) if scaler.enabled else 1.0


def clone(agent, envs, teacher: Callable, n_episodes: int, seed: int, epochs: int = 100,
          smoothing: float = 0.1, lr: float = 1e-2, minibatch_size: int = 512) -> CloneResult:
    """Fit `agent` (a ppo.PPO) to `teacher` on episodes seeded seed .. seed+n-1 of `envs` (one
    environment or a list: common.episodes.run_episodes). Deterministic given the agent's seed."""
    if not 0 <= smoothing < 1:
        raise ValueError("smoothing must be in [0, 1)")
    obs, actions, returns, episode_returns = teacher_data(envs, teacher, n_episodes, seed, agent.config.gamma)
    scaler = agent.reward_scaler
    if scaler.enabled:  # the scaler learns the return's spread from the teacher's episodes
        scaler.rms.update(returns)
    x = torch.from_numpy(agent.obs_normalizer(obs.reshape(len(obs), *agent.obs_shape), update=True))
    x = x.to(agent.device)
    a = torch.from_numpy(actions).to(agent.device)
    v_target = torch.from_numpy(returns / _value_scale(agent)).float().to(agent.device)
    n_actions = agent.n_actions
    target = torch.full((len(a), n_actions), smoothing / max(n_actions - 1, 1), device=agent.device)
    target.scatter_(1, a[:, None], 1.0 - smoothing if n_actions > 1 else 1.0)
    policy = agent.policy
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    # the rate decays to 0 over the epochs: the last ones place the decision boundary, where a
    # teacher that keeps its system near the boundary (a balancing controller) spends its time
    steps = epochs * -(-len(a) // minibatch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 - i / steps)
    gen = torch.Generator().manual_seed(int(agent.config.seed) + 7919)
    for _ in range(epochs):
        for idx in torch.randperm(len(a), generator=gen).split(minibatch_size):
            logits, values = policy(x[idx])
            loss = -(target[idx] * F.log_softmax(logits, -1)).sum(-1).mean() + F.mse_loss(values, v_target[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        logits, values = policy(x)
        probs = logits.softmax(-1)
        agreement = float((probs.argmax(-1) == a).float().mean())
        other = float(1.0 - probs.gather(1, a[:, None]).mean())
        resid = float((v_target - values).var() / v_target.var().clamp_min(1e-12))
    return CloneResult(n_episodes, len(a), float(episode_returns.mean()), agreement, other, 1.0 - resid, epochs)


def greedy_agreement(agent, envs, teacher: Callable, n_episodes: int, seed: int) -> float:
    """On the states the clone itself visits (its greedy episodes seeded seed ..), the share of
    decisions where its action equals what `teacher` would do there."""
    from .inference import TrainedPolicy
    store: list = []
    run_episodes(envs, _Recorder(TrainedPolicy.from_agent(agent, True), store, threading.Lock()), n_episodes, seed)
    obs = np.stack([r[2] for r in store])
    mine = np.array([r[3] for r in store])
    theirs = np.array([int(teacher(o, {})) for o in obs])
    return float((mine == theirs).mean())


__all__: Sequence[str] = ("CloneResult", "clone", "greedy_agreement", "teacher_data")

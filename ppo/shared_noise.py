"""A toy environment whose return depends far more on the episode's seed than on the actions.

Like the text-scheduling environment, where the data stream an episode meets moves its return
more than one decision does, but in a few microseconds a step. ``SharedNoiseEnv``: episodes of
``horizon`` steps; ``reset(seed)`` draws the episode's offset c ~ N(0, offset_std^2), the step
noises e_t ~ N(0, noise_std^2) and the action's luck u_t ~ N(0, interaction_std^2) from the seed,
and step t pays

    c + e_t + (effect + u_t) * (action == 1),

so action 1 is better by ``effect`` on average, while c, e_t and u_t are the same for every
episode started from the same seed (and unseen: the observation is the time left). Members of a
group that take the same actions get the same return; u_t makes those that take different ones
differ by more than ``effect`` (as a data batch helps one training mode more than another).
Used by the tests of the group baseline (tests/test_ppo_groups.py) and by bench/group_baseline.py, with
``rollout_gradients``: the policy-gradient estimates whose spread the group baseline narrows.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from common.spaces import Box, Discrete


class SharedNoiseEnv:
    uses_global_rng = False  # its own generator: safe to step on threads

    def __init__(self, horizon: int = 4, offset_std: float = 10.0, noise_std: float = 1.0, effect: float = 0.5,
                 interaction_std: float = 0.0):
        self.horizon, self.offset_std, self.noise_std, self.effect = horizon, offset_std, noise_std, effect
        self.interaction_std = interaction_std
        self.observation_space = Box(0.0, 1.0, (1,))
        self.action_space = Discrete(2)
        self._rng = np.random.default_rng()
        self._rewards = np.zeros(horizon)  # what the seed adds at each step: c + e_t
        self._luck = np.zeros(horizon)  # what it adds to action 1's effect: u_t
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.array([(self.horizon - self._t) / self.horizon], np.float32)

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        # drawn whatever the actions, so episodes from one seed share them
        self._rewards = self._rng.normal(0.0, self.offset_std) + self._rng.normal(0.0, self.noise_std, self.horizon)
        self._luck = self._rng.normal(0.0, self.interaction_std, self.horizon)
        self._t = 0
        return self._obs(), {}

    def step(self, action: int):
        reward = float(self._rewards[self._t] + (self.effect + self._luck[self._t]) * (int(action) == 1))
        self._t += 1
        return self._obs(), reward, self._t >= self.horizon, False, {}

    def get_state(self) -> dict:
        return {"rewards": self._rewards.tolist(), "luck": self._luck.tolist(), "t": self._t,
                "rng": self._rng.bit_generator.state}

    def set_state(self, s: dict) -> None:
        self._rewards, self._luck, self._t = np.array(s["rewards"]), np.array(s["luck"]), int(s["t"])
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = s["rng"]


def rollout_gradients(agent, n_rollouts: int) -> np.ndarray:
    """[n_rollouts, P]: for each of `n_rollouts` fresh rollouts of `agent` (PPO, not updated in
    between), the gradient over the policy's P parameters of the policy-gradient loss
    -mean(advantage * log pi(a|s)) with the advantages PPO computes (its config's group baseline),
    before per-minibatch normalisation: one estimate of the policy gradient per rollout."""
    params = [p for name, p in agent.policy.named_parameters() if name.startswith("pi")]
    out = []
    for _ in range(n_rollouts):
        batch = agent.collect_batch()
        logp, _, _ = agent.policy.evaluate_actions(batch["obs"], batch["actions"], batch["masks"])
        grads = torch.autograd.grad(-(batch["advantages"] * logp).mean(), params)
        out.append(torch.cat([g.flatten() for g in grads]).numpy())
    return np.array(out)

"""Actor-critic with separate policy and value MLPs and a categorical policy.

The categorical distribution is written out (log_softmax, then a gather and
-sum p log p) rather than ``torch.distributions.Categorical``: acting and the update
then compute log-probabilities with the same formula, so the stored pi_old and the
update's pi agree before its first step (up to rounding between batch sizes), and
sampling draws from the caller's numpy generator, whose state the checkpoint stores.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {"tanh": (nn.Tanh, torch.tanh), "relu": (nn.ReLU, torch.relu)}


def _mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), _ACTIVATIONS[activation][0]()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def _orthogonal_init(seq: nn.Sequential, head_gain: float, generator: Optional[torch.Generator]) -> None:
    # Orthogonal hidden weights with gain sqrt 2 as in the reference PPO code (OpenAI
    # baselines) keep activations well scaled; the tiny policy-head gain starts the
    # policy near uniform, so early updates are not steered by a random preference
    # (Andrychowicz et al. 2021 found this one of the choices that matter most).
    linears = [m for m in seq if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        gain = head_gain if i == len(linears) - 1 else math.sqrt(2.0)
        nn.init.orthogonal_(layer.weight, gain=gain, generator=generator)
        nn.init.zeros_(layer.bias)


def masked_logits(logits: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Illegal actions get the most negative finite logit: probability exactly 0, and
    unlike -inf it keeps ``p * log p`` (entropy) and its gradient free of NaNs."""
    if mask is None:
        return logits
    return torch.where(mask, logits, torch.finfo(logits.dtype).min)


def sample_from_probs(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """probs [B, A] -> one sampled action per row, int64 [B].

    Exponential race (equivalent to the Gumbel-max trick): with E_i ~ Exp(1),
    argmax_i p_i / E_i = argmin_i E_i / p_i, the first of independent exponential
    clocks with rates p_i, which is action i with probability p_i / sum(p). A
    zero-probability (masked) action can never win.
    """
    return (probs / rng.standard_exponential(probs.shape)).argmax(axis=1)


class ActorCritic(nn.Module):
    """Policy logits and state value from two independent MLPs (no shared trunk)."""

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        pi_hidden: Sequence[int] = (128, 128),
        vf_hidden: Sequence[int] = (128, 128),
        activation: str = "tanh",
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation {activation!r} not supported; use one of {sorted(_ACTIVATIONS)}")
        self.obs_dim, self.n_actions = int(obs_dim), int(n_actions)
        self.pi = _mlp(self.obs_dim, pi_hidden, self.n_actions, activation)
        self.vf = _mlp(self.obs_dim, vf_hidden, 1, activation)
        _orthogonal_init(self.pi, head_gain=0.01, generator=generator)
        _orthogonal_init(self.vf, head_gain=1.0, generator=generator)
        # The MLPs run as F.linear calls on their layers' (weight, bias): at the batch sizes
        # of acting, nn.Module's per-call overhead costs more than the matmuls, and going
        # through the Sequentials was 10-25 % slower end to end (bench/ppo_classic.py,
        # docs/ppo.md "Speed"). The Parameter objects outlive load_state_dict and .to().
        self._pi_layers = [(m.weight, m.bias) for m in self.pi if isinstance(m, nn.Linear)]
        self._vf_layers = [(m.weight, m.bias) for m in self.vf if isinstance(m, nn.Linear)]
        self._activation = _ACTIVATIONS[activation][1]

    def _run(self, layers: list, obs: torch.Tensor) -> torch.Tensor:
        """What the Sequential computes: obs [B, *obs_shape] -> [B, out]."""
        x = obs.flatten(1)
        for i, (weight, bias) in enumerate(layers):
            x = F.linear(x, weight, bias)
            if i < len(layers) - 1:
                x = self._activation(x)
        return x

    def logits(self, obs: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """obs [B, *obs_shape] -> logits [B, A]; masked entries set to the dtype minimum."""
        return masked_logits(self._run(self._pi_layers, obs), mask)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [B, *obs_shape] -> V(s) [B]."""
        return self._run(self._vf_layers, obs).squeeze(-1)

    def forward(self, obs: torch.Tensor, mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.logits(obs, mask), self.value(obs)

    def evaluate_actions(
        self, obs: torch.Tensor, actions: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> log pi(a|s) [B], entropy [B], V(s) [B] (all differentiable)."""
        logp_all = F.log_softmax(self.logits(obs, mask), dim=-1)  # [B, A]
        logp = logp_all.gather(1, actions.long().unsqueeze(1)).squeeze(1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return logp, entropy, self.value(obs)

    @torch.inference_mode()
    def act(
        self,
        obs: np.ndarray,
        mask: Optional[np.ndarray] = None,
        deterministic: bool = False,
        rng: Optional[np.random.Generator] = None,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Act on a batch of (already normalised) observations.

        obs: float32 [B, *obs_shape]; mask: bool [B, A] or None -> (actions int64 [B],
        log pi(action|s) float32 [B], V(s) float32 [B]). The trainer stores the
        log-probabilities and values as those of the policy that collected the data.
        Sampling uses ``rng`` (numpy), so the caller owns the random stream; greedy
        (argmax) when ``deterministic``.
        """
        if not deterministic and rng is None:
            raise ValueError("ActorCritic.act needs a numpy Generator (rng=...) to sample")
        device = self._pi_layers[0][0].device
        x = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32)).to(device)
        m = None if mask is None else torch.from_numpy(np.ascontiguousarray(mask, dtype=bool)).to(device)
        logp_all = F.log_softmax(self.logits(x, m), dim=-1).cpu().numpy()  # [B, A]
        actions = logp_all.argmax(1) if deterministic else sample_from_probs(np.exp(logp_all), rng)
        logp = np.take_along_axis(logp_all, actions[:, None], axis=1)[:, 0]
        return actions, logp, self.value(x).cpu().numpy()

"""External memory: fixed slots of detached batch summaries, read through a gate.

Each slot holds one summary (the mean final hidden state of a training batch,
detached) and a priority. A batch is written only when its priority — its Φ,
on the same [0, 10] scale as the threshold — reaches `threshold`; a full
memory replaces its lowest-priority slot, and only with a higher priority.
Stored priorities decay: every write attempt (one per training step)
multiplies them by `decay`, so a slot written k steps ago competes with
Φ·decay^k. Without the decay a full memory would freeze on the early,
high-Φ batches of training (Φ falls as the model learns) and stop following
the model; with it, recent batches keep coming in (at 0.98 an old slot's
claim halves in ~35 steps). Writing is explicit (`write`), never a side
effect of forward, so a forward pass can never read anything derived from its
own batch.

Reading: every position attends over the used slots with learned projections,
and a per-position sigmoid gate g decides how much of the read enters the
residual stream: h <- h + g · W_o(read). C (the "consciousness"/broadcast
score) is the mean gate activation over positions: how strongly the memory is
broadcast into the stream; 0 when the memory is empty (nothing to broadcast).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class Memory(nn.Module):
    def __init__(self, d_model: int, slots: int, threshold: float, decay: float = 1.0):
        super().__init__()
        self.slots = slots
        self.threshold = threshold
        self.decay = decay
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model)
        self.gate = nn.Linear(d_model, 1)
        # persistent buffers: memory contents travel with checkpoints, so a resumed run reads what the original read
        self.register_buffer("keys", torch.zeros(slots, d_model))
        self.register_buffer("priority", torch.zeros(slots))
        self.register_buffer("used", torch.zeros(slots, dtype=torch.bool))
        self._kv, self._kv_stamp = None, None  # projected slots, reused while nothing changed (_slot_kv)

    @property
    def utilisation(self) -> float:
        return float(self.used.float().mean()) if self.slots else 0.0

    def clear(self) -> None:
        self.keys.zero_()
        self.priority.zero_()
        self.used.zero_()

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h: (B, T, C) -> (h with the gated read added, C score as a 0-dim tensor)."""
        kv = self._slot_kv(h)
        if kv is None:
            return h, h.new_zeros(())
        q, (k, v) = self.q(h), kv                                    # (B, T, C), (S, C), (S, C)
        att = F.softmax(q @ k.t() / math.sqrt(h.size(-1)), dim=-1)  # (B, T, S)
        g = torch.sigmoid(self.gate(h))                              # (B, T, 1)
        return h + g * self.out(att @ v), g.float().mean()

    def _slot_kv(self, h: torch.Tensor):
        """Keys and values of the used slots, (S_used, C) each, or None when the memory is empty.

        Without autograd (measuring, generating) they are kept until the slots or the k/v
        projections change — tensors' version counters tell, an optimiser step or a write
        bumps them — so decoding one token at a time does not re-project every slot. The
        projections' output dtype depends on h's dtype and on autocast, so both are part of
        the key: a bf16-autocast forward must not hand its bf16 projections to an fp32 one."""
        dev = h.device.type
        autocast = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        tensors = (self.keys, self.used, self.k.weight, self.v.weight)
        stamp = (h.dtype, h.device, autocast) + tuple((t.data_ptr(), t._version) for t in tensors)
        if not torch.is_grad_enabled() and self._kv_stamp == stamp:
            return self._kv
        if self.slots == 0 or not bool(self.used.any()):
            kv = None
        else:
            mem = self.keys[self.used].to(h.dtype)                   # (S_used, C)
            kv = (self.k(mem), self.v(mem))
        if not torch.is_grad_enabled():
            self._kv, self._kv_stamp = kv, stamp
        return kv

    @torch.no_grad()
    def write(self, summary: torch.Tensor, priority: float) -> bool:
        """Store `summary` (C,) if `priority` passes the threshold; returns whether it was written.
        Every call ages the stored priorities by `decay` first (it is one training step)."""
        if self.slots == 0:
            return False
        if self.decay != 1.0:
            self.priority.mul_(self.decay)
        if not priority >= self.threshold:
            return False
        free = (~self.used).nonzero()
        if len(free):
            i = int(free[0])
        else:
            i = int(self.priority.argmin())
            if priority <= float(self.priority[i]):
                return False
        self.keys[i] = summary.detach().float()
        self.priority[i] = priority
        self.used[i] = True
        return True

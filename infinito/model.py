"""INFINITO: a decoder-only causal transformer that reports Φ, C and memory use.

Pre-LayerNorm blocks, GELU MLP, learned absolute positions, tied input/output
embeddings, dropout, a gated external memory read before the final norm.
`forward(idx, targets, metrics=True)` also returns the integration metrics;
`forward(idx, cache=...)` decodes incrementally with a key/value cache. There is
one forward path: a cached decoding step is the same blocks run on fewer
positions, reading earlier keys and values from the cache.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import InfinitoConfig
from .memory import Memory
from .metrics import phi_components, phi_from_components, phi_loss

class KVCache:
    """Keys and values of every layer, preallocated for the whole context window.

    k[i], v[i]: (B, H, capacity, head_dim) for layer i, filled on [0, length). A forward
    pass writes its positions in place and then advances `length`, so the cache is
    continued, never copied: appending with torch.cat would re-copy every earlier
    position at every token. In place also means that continuing a cache consumes it;
    to try two continuations of one prefix, prime two caches.
    """

    def __init__(self, n_layers: int, capacity: int):
        self.capacity, self.length = capacity, 0
        self.k: list[torch.Tensor | None] = [None] * n_layers
        self.v: list[torch.Tensor | None] = [None] * n_layers

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this call's (B, H, T, hd) keys and values of `layer` after the cached ones;
        returns views of all of them, (B, H, length + T, hd). `length` moves on in `advance`."""
        end = self.length + k.size(2)
        if self.k[layer] is None:  # allocated on first use: batch size and dtype (autocast) come from k
            B, H, _, hd = k.shape
            self.k[layer] = k.new_empty(B, H, self.capacity, hd)
            self.v[layer] = v.new_empty(B, H, self.capacity, hd)
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: InfinitoConfig, layer: int = 0):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.layer = layer  # this layer's slot in a KVCache
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.dropout = cfg.dropout

    @staticmethod
    def _probs(q, k, mask):
        att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, S)
        return F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)

    def forward(self, x, cache: KVCache | None = None, need_probs=False, probs_grad=True):
        """x: (B, T, C), the positions after the `cache`'s (if any), which this call extends.

        Returns (y, probs (B, H, T, S) or None).
        """
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
        if cache is not None:
            k, v = cache.extend(self.layer, k, v)  # (B, H, S, hd): cached positions + this call's
        S = k.size(2)
        # query i of this call sits at absolute position S - T + i and may see keys 0..S-T+i
        mask = None
        if need_probs or 1 < T < S:  # S == T is plain causal; T == 1 (a cached decoding step) sees every key
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T)
        probs = None
        if need_probs and probs_grad and torch.is_grad_enabled():  # the Φ loss differentiates through them
            probs = self._probs(q, k, mask)
            y = self.attn_drop(probs) @ v
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if S == T else mask, is_causal=S == T and T > 1,
                dropout_p=self.dropout if self.training else 0.0)
            if need_probs:  # for measuring only: the fused kernel does not expose them, so recompute
                with torch.no_grad():
                    probs = self._probs(q, k, mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y)), probs


class MLP(nn.Module):
    def __init__(self, cfg: InfinitoConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.proj = nn.Linear(4 * cfg.d_model, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: InfinitoConfig, layer: int = 0):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = CausalSelfAttention(cfg, layer)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x, cache=None, need_probs=False, probs_grad=True):
        a, probs = self.attn(self.ln1(x), cache, need_probs, probs_grad)
        x = x + a
        return x + self.mlp(self.ln2(x)), probs


@dataclass
class Output:
    logits: torch.Tensor                 # (B, T, vocab)
    loss: torch.Tensor | None = None     # mean token cross-entropy, when targets are given
    metrics: dict | None = None          # phi, consciousness, memory_util, loss_phi (+ components)
    summary: torch.Tensor | None = None  # (C,) detached batch summary, the memory's write candidate
    cache: KVCache | None = None


class Infinito(nn.Module):
    def __init__(self, cfg: InfinitoConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.context, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.memory = Memory(cfg.d_model, cfg.memory_slots, cfg.memory_threshold, cfg.memory_decay)
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None, metrics=False, cache: KVCache | None = None, use_cache=False,
                phi_grad=True):
        """idx: (B, T) token ids. With `cache`, idx continues the cached positions and the cache
        is extended in place; use_cache=True without one starts a cache. Either way out.cache
        holds it.

        metrics=True adds Φ, L_phi, C and memory use; phi_grad=False measures them
        without building their graph (cheaper when the Φ loss is not trained on).
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.context:
            raise ValueError(f"sequence of {start + T} tokens exceeds the context window ({self.cfg.context})")
        if cache is None and use_cache:
            cache = KVCache(len(self.blocks), self.cfg.context)
        x = self.drop(self.tok_emb(idx) + self.pos_emb.weight[start:start + T])  # (B, T, C)
        probs, last = None, len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x, p = block(x, cache, metrics and i == last, phi_grad)
            probs = p if p is not None else probs
        if cache is not None:
            cache.advance(T)
        h, consciousness = self.memory(x)  # (B, T, C)
        logits = F.linear(self.ln_f(h), self.tok_emb.weight)  # tied embeddings
        out = Output(logits=logits, cache=cache)
        if targets is not None:
            out.loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        if metrics:
            with torch.set_grad_enabled(torch.is_grad_enabled() and phi_grad):
                parts = phi_components(h if phi_grad else h.detach(), probs)
                phi_seq = phi_from_components(parts)  # (B,)
            phi = phi_seq.mean()
            out.metrics = {
                "phi": phi,
                "loss_phi": phi_loss(phi_seq, self.cfg.phi_low, self.cfg.phi_high, self.cfg.phi_star),
                "consciousness": consciousness,
                "memory_util": self.memory.utilisation,
                **{k: v.mean() for k, v in parts.items()},
            }
            out.summary = h.detach().float().mean(dim=(0, 1))
        return out

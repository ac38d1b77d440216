"""Optimisation pieces shared by base training and the scheduling environment."""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

from .model import Infinito


def make_optimizer(model: nn.Module, lr: float, betas=(0.9, 0.95), weight_decay: float = 0.1) -> torch.optim.AdamW:
    """AdamW with decay on weight matrices only (not on biases, norms, embeddings or memory gate bias)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_matrix = p.dim() >= 2 and "emb" not in name
        (decay if is_matrix else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def cosine_lr(step: int, base_lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up to base_lr, then cosine decay to min_ratio·base_lr at `total`."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


def train_step(model: Infinito, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               w_text: float = 1.0, w_phi: float = 0.0, grad_clip: float = 1.0,
               bf16: bool = False, metrics: bool = True) -> dict:
    """One real optimiser step on loss = w_text·CE + w_phi·L_phi; writes the batch to memory.

    Returns plain floats: loss, loss_text, loss_phi, phi, consciousness, memory_util, grad_norm.
    """
    model.train()
    need_metrics = metrics or w_phi > 0
    with autocast(x.device, bf16):
        out = model(x, y, metrics=need_metrics, phi_grad=w_phi > 0)
    loss = w_text * out.loss
    if w_phi > 0:
        loss = loss + w_phi * out.metrics["loss_phi"]
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"training loss is {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    stats = {"loss": loss.item(), "loss_text": out.loss.item(), "grad_norm": grad_norm.item()}
    if need_metrics:
        m = out.metrics
        phi = m["phi"].item()
        model.memory.write(out.summary, phi)
        stats.update(loss_phi=m["loss_phi"].item(), phi=phi, consciousness=m["consciousness"].item(),
                     memory_util=model.memory.utilisation)
    return stats


@torch.no_grad()
def evaluate(model: Infinito, batches, bf16: bool = False) -> dict:
    """Mean token NLL over (x, y) batches, plus mean metrics. Leaves the model in eval mode."""
    model.eval()
    total_nll, total_tokens, phis, cs = 0.0, 0, [], []
    for x, y in batches:
        with autocast(x.device, bf16):
            out = model(x, y, metrics=True)
        n = y.numel()
        total_nll += float(out.loss) * n
        total_tokens += n
        phis.append(float(out.metrics["phi"]))
        cs.append(float(out.metrics["consciousness"]))
    if total_tokens == 0:
        raise ValueError("evaluation got no batches")
    return {"nll_sum": total_nll, "tokens": total_tokens, "loss": total_nll / total_tokens,
            "phi": sum(phis) / len(phis), "consciousness": sum(cs) / len(cs),
            "memory_util": model.memory.utilisation}

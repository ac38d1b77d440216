"""Optimisation pieces shared by base training and the scheduling environment."""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

from .model import Infinito


def make_optimizer(model: nn.Module, lr: float, betas=(0.9, 0.95), weight_decay: float = 0.1) -> torch.optim.AdamW:
    """AdamW with decay on nn.Linear weights only: never on embeddings, norms or biases.

    Chosen by module type, not by parameter name, so renaming a module cannot move it into the
    wrong group. A parameter owned by anything else (a bare nn.Parameter) is not decayed. A
    parameter shared by several modules is listed once, and decayed only if every owner is a
    Linear using it as its weight: an output head tied to an embedding stays undecayed."""
    owners: dict[int, tuple[nn.Parameter, bool]] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            decays = isinstance(module, nn.Linear) and name == "weight"
            owners[id(p)] = (p, decays and owners.get(id(p), (p, True))[1])
    decay = [p for p, d in owners.values() if d and p.requires_grad]
    no_decay = [p for p, d in owners.values() if not d and p.requires_grad]
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
    """Training diverged: the loss became NaN or infinite, or the optimiser's step overflowed float32."""


def train_step(model: Infinito, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               w_text: float = 1.0, w_phi: float = 0.0, grad_clip: float = 1.0,
               bf16: bool = False, metrics: bool = True, forward=None, average=None) -> dict:
    """One real optimiser step on loss = w_text·CE + w_phi·L_phi; writes the batch to memory.

    Data-parallel training passes `forward` (the DistributedDataParallel wrapper of `model`,
    which averages the gradients over the ranks) and `average` (a tensor's mean over the
    ranks): every rank then writes the same summary, of the whole global batch, to its memory.

    Returns plain floats: loss, loss_text, grad_norm and, with `metrics`, loss_phi, phi,
    consciousness, memory_util. `metrics` only chooses what is reported: Φ is the memory's
    write priority, so it is computed whenever the model has a memory, and the model
    evolves the same either way.
    """
    model.train()
    need_phi = metrics or w_phi > 0 or model.memory.slots > 0
    with autocast(x.device, bf16):
        out = (forward or model)(x, y, metrics=need_phi, phi_grad=w_phi > 0)
    loss = w_text * out.loss
    if w_phi > 0:
        loss = loss + w_phi * out.metrics["loss_phi"]
    finite = torch.isfinite(loss.detach()).float()
    if average is not None:  # one rank's NaN stops every rank here, before the gradients' all-reduce
        finite = average(finite)
    if finite.item() < 1:
        local = loss.item()
        raise NonFiniteLoss(f"training loss is {local}" if not math.isfinite(local)
                            else "training loss is not finite on another process")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    try:
        optimizer.step()
    except RuntimeError as e:  # lr / (1 - beta1) past float32's range (lr 1e38): torch cannot convert the step size
        if "overflow" not in str(e):
            raise
        lr = optimizer.param_groups[0]["lr"]
        raise NonFiniteLoss(f"the optimiser's step overflows float32 (learning rate {lr:g})") from None
    stats = {"loss": loss.item(), "loss_text": out.loss.item(), "grad_norm": grad_norm.item()}
    if need_phi:
        summary, phi_t = out.summary, out.metrics["phi"].detach()
        if average is not None:
            summary, phi_t = average(summary), average(phi_t)
        phi = phi_t.item()
        model.memory.write(summary, phi)
    if metrics:
        m = out.metrics
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
    return {"nll_sum": total_nll, "tokens": total_tokens, "loss": total_nll / total_tokens, "batches": len(phis),
            "phi": sum(phis) / len(phis), "consciousness": sum(cs) / len(cs),
            "memory_util": model.memory.utilisation}

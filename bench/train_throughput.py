"""Base-training throughput and model FLOPs utilisation (MFU) on this device.

    python bench/train_throughput.py [--presets demo paper] [--steps 6]

Measures, in one run: the peak matmul throughput of the device (fp32 and bf16,
large square matmuls), then tokens/s of full training steps (forward with the
Φ metrics, backward, AdamW, memory write) for each preset in fp32 and with
bf16 autocast, and the model FLOPs utilisation against the peak of the same
dtype. The Φ/C metrics are part of every step: Φ is the memory's write
priority, so a step without them would be a different training step.

MFU counts 6·N FLOPs per token for the N matmul weights (blocks, memory,
tied output head) plus 12·L·T·d for attention scores (PaLM, appendix B).

The published table: bench/README.md, "Base-training throughput".
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import cpu_model  # noqa: E402  (bench/ is on sys.path when run as a script)
from infinito.config import InfinitoConfig  # noqa: E402
from infinito.model import Infinito  # noqa: E402
from infinito.presets import PRESETS  # noqa: E402
from infinito.training import make_optimizer, train_step  # noqa: E402


def peak_matmul_flops(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def flops_per_token(cfg: InfinitoConfig) -> float:
    model = Infinito(cfg)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    matmul += cfg.vocab_size * cfg.d_model  # tied output head
    return 6 * matmul + 12 * cfg.n_layers * cfg.context * cfg.d_model


def time_steps(cfg: InfinitoConfig, batch: int, steps: int, bf16: bool) -> tuple[float, float]:
    """Seconds per training step (median of `steps` after 2 warm-up steps) and the last loss."""
    torch.manual_seed(0)
    model = Infinito(cfg)
    opt = make_optimizer(model, 1e-3)
    g = torch.Generator().manual_seed(0)
    times, loss = [], float("nan")
    for i in range(steps + 2):
        x = torch.randint(0, cfg.vocab_size, (batch, cfg.context), generator=g)
        t0 = time.perf_counter()
        loss = train_step(model, opt, x, x.roll(-1, 1), bf16=bf16)["loss_text"]
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2], loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["demo", "paper"])
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peak = {"fp32": peak_matmul_flops(torch.float32), "bf16": peak_matmul_flops(torch.bfloat16)}
    print(f"peak matmul: fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.0f} GFLOP/s "
          f"(bf16/fp32 {peak['bf16'] / peak['fp32']:.2f}x)")
    print(f"CPU: {cpu_model()}")
    print("| preset | precision | tokens/s | ms/step | MFU vs same-dtype peak | loss after warm-up |")
    print("|---|---|---|---|---|---|")
    for name in args.presets:
        cfg = InfinitoConfig(**PRESETS[name]["model"])
        batch = PRESETS[name]["train"]["batch_size"]
        fpt = flops_per_token(cfg)
        base = None
        for prec in ("fp32", "bf16"):
            sec, loss = time_steps(cfg, batch, args.steps, prec == "bf16")
            tps = batch * cfg.context / sec
            mfu = tps * fpt / peak[prec]
            base = base or sec
            extra = "" if prec == "fp32" else f" ({base / sec:.2f}x fp32)"
            print(f"| {name} | {prec} | {tps:,.0f} | {sec * 1e3:.0f}{extra} | {100 * mfu:.1f}% | {loss:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()

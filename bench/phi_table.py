"""Φ, C and memory use of (a) a fresh model, (b) text-only training, (c) the same with Φ-loss weight 1.

    python bench/phi_table.py [--preset demo] [--out bench/out/phi] [--steps N]

Trains (b) and (c) with the base stage (`train.py --stage base`) on the built-in corpus (same
seed, same steps; only --lambda-phi differs), then measures all three models on
the same validation batches and prints a Markdown table.

The published table: docs/studies.md, "Φ, C and memory use".
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from data import Tokenizer, encode_cached, eval_batches, load_corpus  # noqa: E402
from infinito.checkpoint import build_model, load_checkpoint, tensor_to_bytes  # noqa: E402
from infinito.config import InfinitoConfig  # noqa: E402
from infinito.model import Infinito  # noqa: E402
from infinito.training import evaluate  # noqa: E402
from stages.base import BasePlan, run_base_plan  # noqa: E402


def measure(model, batches) -> dict:
    ev = evaluate(model, batches)
    parts = {k: [] for k in ("coherence", "integration", "complexity", "diversity")}
    with torch.no_grad():
        for x, _ in batches:
            m = model(x, metrics=True).metrics
            for k in parts:
                parts[k].append(float(m[k]))
    return {**ev, **{k: sum(v) / len(v) for k, v in parts.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "phi"))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batches", type=int, default=20)
    args = ap.parse_args()
    out = Path(args.out)
    steps = {"steps": args.steps} if args.steps else {}
    for name, lam in (("text", 0.0), ("phi", 1.0)):
        if not (out / name / "base_summary.json").exists():
            code = run_base_plan(BasePlan(out / name, {"lambda_phi": lam, **steps}, preset=args.preset, quiet=True))
            assert code == 0, f"training {name} failed"

    text_ck = load_checkpoint(out / "text" / "base.pt", kind="infinito-base")
    tok = Tokenizer.from_bytes(tensor_to_bytes(text_ck["tokenizer"]))
    corpus = load_corpus(None, builtin_size=text_ck["train_config"]["builtin_size"])
    valid = torch.from_numpy(encode_cached(corpus.valid, tok, out / "cache", "valid").astype("int64"))
    cfg = InfinitoConfig.from_dict(text_ck["model_config"])
    batches = list(eval_batches(valid, 16, cfg.context, args.batches))

    torch.manual_seed(text_ck["train_config"]["seed"])
    rows = {"(a) fresh model": measure(Infinito(cfg), batches)}
    for label, name in (("(b) text loss only", "text"), ("(c) text + Φ loss (λ=1)", "phi")):
        rows[label] = measure(build_model(load_checkpoint(out / name / "base.pt", kind="infinito-base")), batches)

    print(f"preset {args.preset}, {text_ck['step']} steps, {args.batches} validation batches of 16 x {cfg.context}")
    print("| model | Φ | C | memory_util | val ppl | coherence | integration | complexity | diversity |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['phi']:.2f} | {r['consciousness']:.3f} | {r['memory_util']:.2f} | "
              f"{torch.tensor(r['loss']).exp():.2f} | {r['coherence']:.3f} | {r['integration']:.3f} | "
              f"{r['complexity']:.3f} | {r['diversity']:.3f} |")
    (out / "phi_table.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":  # a user's error (a missing corpus, a full disk) is one line, as in train.py
    from common.files import CheckpointError
    from data import DataError
    from stages.cli import run_cli
    sys.exit(run_cli(main, (DataError, CheckpointError)))

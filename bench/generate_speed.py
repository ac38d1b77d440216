"""Generation speed with and without the key/value cache: tokens/s at 64, 256 and 512 new tokens.

    python bench/generate_speed.py                       # demo-size model with random weights
    python bench/generate_speed.py --preset paper        # the paper size (context 256, d_model 512), random weights
    python bench/generate_speed.py --ckpt ckpt/base.pt   # a trained base checkpoint instead
    python bench/generate_speed.py --quick               # smoke run: 16 and 140 tokens, one repetition

Three ways to generate the same number of tokens, all with the same model,
prompt (16 tokens), sampling settings (the CLI defaults: temperature 0.8,
top-k 40, top-p 0.9) and seed:

* **cache** — `infinito.generation.generate(use_cache=True)`: one
  single-position forward per token. When the text outgrows the context (128
  tokens for demo, 256 for paper) the window restarts on its last half
  (`window jumps`): the cache is re-primed by one forward over that half.
* **no cache, same windows** — `generate(use_cache=False)`: the same window
  policy, but every token re-runs the whole current window (half a context
  to a full one). It computes exactly what the cached path computes (the table checks
  that the tokens are identical), so this ratio is the cache's saving alone.
* **no cache, sliding** — the usual no-cache loop (nanoGPT): every token
  re-runs the last `context` tokens, cropped, so once the text is longer than
  the context each token costs a full-context forward. This is what one
  would run without a cache (a sliding window is only affordable without
  one: with learned absolute positions, sliding renumbers every cached
  position), and it is the baseline for the ≥ 6x target at 256 tokens.

Sampling costs the same in all three and is included (it is part of
generating). Timing: wall clock (`time.perf_counter`), one warm-up run, then
the best of `--reps` runs per cell (the least disturbed by other jobs);
tokens/s = new tokens / seconds. Threads: torch's default unless `--threads`.
Writes bench/out/generate_speed[_<preset>].json (`--quick`: ..._quick.json)
beside printing the CPU model and a Markdown table.

The published table: bench/README.md, "Generation speed".
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machine import cpu_model  # noqa: E402  (bench/ is on sys.path when run as a script)
from infinito.checkpoint import build_model, load_checkpoint  # noqa: E402
from infinito.config import InfinitoConfig  # noqa: E402
from infinito.generation import generate  # noqa: E402
from infinito.model import Infinito  # noqa: E402
from infinito.presets import PRESETS  # noqa: E402
from infinito.sampling import SamplingConfig, sample_next, seen_mask  # noqa: E402

PROMPT_TOKENS = 16


def load_model(ckpt: str | None, preset: str) -> tuple[Infinito, str]:
    if ckpt:
        return build_model(load_checkpoint(ckpt, kind="infinito-base")).eval(), ckpt
    torch.manual_seed(0)
    return Infinito(InfinitoConfig(**PRESETS[preset]["model"])).eval(), f"{preset} preset, random weights"


@torch.no_grad()
def generate_sliding(model, prompt, n: int, cfg: SamplingConfig, gen: torch.Generator) -> torch.Tensor:
    """The plain no-cache loop: every token re-runs the last `context` tokens. Returns (1, n) new ids."""
    model.eval()
    seq = prompt.view(1, -1)
    seen = seen_mask(seq, model.cfg.vocab_size)
    for _ in range(n):
        logits = model(seq[:, -model.cfg.context:]).logits[:, -1]   # (1, V)
        nxt = sample_next(logits, cfg, gen, seen)                   # (1,)
        seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
        seen[0, nxt] = True
    return seq[:, prompt.numel():]


def timed(run, reps: int, seed: int):
    """Best wall time of `reps` runs (after one warm-up) and the last run's result; run(generator)."""
    best, out = float("inf"), None
    for rep in range(reps + 1):
        gen = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        out = run(gen)
        dt = time.perf_counter() - t0
        if rep:  # rep 0 warms up allocators and kernels
            best = min(best, dt)
    return best, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None, help="base checkpoint (default: the preset's shape with random weights)")
    p.add_argument("--preset", default="demo", choices=list(PRESETS), help="model size without --ckpt (default demo)")
    p.add_argument("--tokens", type=int, nargs="+", default=[64, 256, 512], help="new-token counts")
    p.add_argument("--reps", type=int, default=3, help="timed runs per cell, best kept (default 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 16 and 140 tokens, 1 rep")
    p.add_argument("--out", default=None, help="JSON results (default bench/out/generate_speed[_<preset>][_quick].json)")
    args = p.parse_args(argv)
    if args.quick:
        args.tokens, args.reps = [16, 140], 1
    if args.out is None:
        suffix = ("" if args.preset == "demo" or args.ckpt else f"_{args.preset}") + ("_quick" if args.quick else "")
        args.out = str(ROOT / "bench" / "out" / f"generate_speed{suffix}.json")
    if args.threads:
        torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]  # on a shared machine other jobs distort every column: say how busy it was
    model, source = load_model(args.ckpt, args.preset)
    prompt = torch.randint(0, model.cfg.vocab_size, (PROMPT_TOKENS,), generator=torch.Generator().manual_seed(1))
    cfg = SamplingConfig()
    rows = []
    for n in args.tokens:
        with torch.inference_mode():
            t_slide, _ = timed(lambda g: generate_sliding(model, prompt, n, cfg, g), args.reps, args.seed)
            t_same, same = timed(lambda g: generate(model, prompt, n, cfg, g, use_cache=False), args.reps, args.seed)
            t_cache, cached = timed(lambda g: generate(model, prompt, n, cfg, g, use_cache=True), args.reps, args.seed)
        rows.append({"new_tokens": n, "window_jumps": cached.window_jumps, "sliding_tok_s": n / t_slide,
                     "same_windows_tok_s": n / t_same, "cache_tok_s": n / t_cache,
                     "speedup_vs_sliding": t_slide / t_cache, "speedup_vs_same_windows": t_same / t_cache,
                     "same_tokens": bool(torch.equal(same.tokens, cached.tokens))})

    cpu = cpu_model()
    print(f"model: {source}; {model.num_params() / 1e6:.2f} M params, context {model.cfg.context}, "
          f"d_model {model.cfg.d_model}; prompt {PROMPT_TOKENS} tokens; best of {args.reps}")
    print(f"CPU: {cpu} ({os.cpu_count()} logical CPUs); {torch.get_num_threads()} torch threads; "
          f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print()
    print("| new tokens | window jumps | no cache, sliding (tok/s) | no cache, same windows (tok/s) | cache (tok/s) "
          "| speed-up vs sliding | speed-up vs same windows | cache = same-window tokens |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['new_tokens']} | {r['window_jumps']} | {r['sliding_tok_s']:,.0f} | {r['same_windows_tok_s']:,.0f} "
              f"| {r['cache_tok_s']:,.0f} | {r['speedup_vs_sliding']:.1f}x | {r['speedup_vs_same_windows']:.1f}x "
              f"| {'yes' if r['same_tokens'] else 'NO'} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": source, "cpu": cpu, "threads": torch.get_num_threads(),
                               "load_before": load_before, "reps": args.reps,
                               "prompt_tokens": PROMPT_TOKENS, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

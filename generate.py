"""Generate text with INFINITO, optionally after the trained PPO scheduler has adapted it.

    python generate.py --prompt "The river"                          # ckpt/base.pt, default sampling
    python generate.py --prompt "The river" --temperature 0           # greedy
    python generate.py --prompt "The river" --rep-penalty 2.0 --num-samples 3 --seed 7
    python generate.py --prompt "The river" --stream
    python generate.py --prompt "The river" --agent ckpt/best.pt --agent-steps 20 --compare
    python generate.py --prompt "The river" --json                     # JSON Lines on stdout

Sampling (infinito/sampling.py): repetition penalty (CTRL rule, once per
distinct token of the prompt and the text so far), then temperature (0 =
greedy), top-k (ties with the k-th kept), top-p (the smallest set reaching p,
the crossing token included). Decoding uses the key/value cache; when the
context window is full it restarts on its last half (infinito/generation.py).
Sample k (from 0) is drawn with seed --seed + k. See docs/generate.md.

Every user error ends with one line on stderr starting "error:" and exit status 2.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # Ctrl-C while torch loads, or torch not installed: one line, not a traceback
    from stages.startup import guard_startup, started
    guard_startup()

import argparse  # noqa: E402
import json

from common.files import CheckpointError
from data import DataError
from env import EnvError
from infinito.sampling import SamplingConfig
from stages.generation.adapt import adapt_with_agent, load_agent
from stages.cli import OneLineParser, UserError, diverged, pick_device, run_cli
from stages.generation.sampling import Output, load_base_model, run_sample

DEFAULT_CKPT = "ckpt/base.pt"
MAX_NEW_TOKENS = 1_000_000


def build_parser() -> argparse.ArgumentParser:
    d = SamplingConfig()
    p = OneLineParser(prog="generate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", default=None,
                   help=f"base checkpoint (train.py --stage base); default {DEFAULT_CKPT}, or with --agent the "
                        "base checkpoint the agent was trained on")
    p.add_argument("--prompt", default="The", help="text to continue (default %(default)r)")
    p.add_argument("--max-new-tokens", type=int, default=200,
                   help="tokens to generate per sample (default %(default)s)")
    p.add_argument("--temperature", type=float, default=d.temperature,
                   help="softmax temperature, >= 0; 0 = greedy (default %(default)s)")
    p.add_argument("--top-k", type=int, default=d.top_k,
                   help="keep the k most likely tokens (and ties with the k-th); 0 = off (default %(default)s)")
    p.add_argument("--top-p", type=float, default=d.top_p,
                   help="keep the smallest set of tokens whose probability reaches p, in (0, 1]; 1 = off "
                        "(default %(default)s)")
    p.add_argument("--rep-penalty", type=float, default=d.rep_penalty,
                   help="repetition penalty, > 0: seen tokens' positive logits / R, negative ones * R; 1 = off "
                        "(default %(default)s)")
    p.add_argument("--seed", type=int, default=1337,
                   help="the seed of everything random the command does: sample k draws with seed + k, and --agent's "
                        "adaptation episode starts from seed (default %(default)s)")
    p.add_argument("--num-samples", type=int, default=1, help="samples to draw (default %(default)s)")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    p.add_argument("--json", action="store_true",
                   help="JSON Lines on stdout: one object per sample (and one for the adaptation with --agent)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto = cuda when available (default %(default)s)")
    p.add_argument("--agent", default=None, metavar="CKPT",
                   help="an RL checkpoint (train.py --stage rl, e.g. ckpt/best.pt): its scheduler adapts a copy of "
                        "the model first")
    p.add_argument("--agent-steps", type=int, default=None,
                   help="scheduling decisions of the adaptation with --agent (default and maximum: the length of "
                        "the episodes the agent was trained on)")
    p.add_argument("--compare", action="store_true",
                   help="with --agent: also print the unadapted model's text for the same seeds")
    return p


def sampling_config(args: argparse.Namespace) -> SamplingConfig:
    try:
        return SamplingConfig(args.temperature, args.top_k, args.top_p, args.rep_penalty)
    except ValueError as e:
        raise UserError(str(e).replace("invalid sampling config: ", "")) from None


def check_args(args: argparse.Namespace) -> None:
    if args.prompt == "":
        raise UserError("--prompt is empty; give some text for the model to continue")
    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as lone surrogates
        raise UserError("--prompt is not valid UTF-8 text; pass it in a UTF-8 locale or encoding") from None
    if not 0 <= args.seed < 2**63 - args.num_samples:
        raise UserError(f"--seed must be in [0, 2**63 - --num-samples), got {args.seed}")
    for flag, value in (("--max-new-tokens", args.max_new_tokens), ("--num-samples", args.num_samples),
                        ("--agent-steps", args.agent_steps)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if args.max_new_tokens > MAX_NEW_TOKENS:  # the text is held in one preallocated tensor
        raise UserError(f"--max-new-tokens must be at most {MAX_NEW_TOKENS:,}, got {args.max_new_tokens}")
    if args.agent is None:
        for flag, given in (("--compare", args.compare), ("--agent-steps", args.agent_steps is not None)):
            if given:
                raise UserError(f"{flag} only applies with --agent CKPT")
    if args.stream and args.json:
        raise UserError("--stream and --json cannot be combined (JSON objects are printed whole)")


def emit_json(obj: dict) -> None:
    print(json.dumps(obj, ensure_ascii=False))


# ----------------------------------------------------------------------------- main

def run(args: argparse.Namespace) -> int:
    check_args(args)
    cfg = sampling_config(args)
    output = Output(args.max_new_tokens, args.stream, args.json)
    device = pick_device(args.device)
    policy = None
    if args.agent is not None:
        policy, base_path = load_agent(args.agent, args.ckpt)
    else:
        base_path = args.ckpt or DEFAULT_CKPT
    model, tokenizer = load_base_model(base_path, device)
    prompt_ids = tokenizer.encode(args.prompt)
    context = model.cfg.context
    if len(prompt_ids) > context:
        print(f"note: the prompt is {len(prompt_ids)} tokens and the context {context}; "
              f"the model sees the last {context}", file=sys.stderr)

    models = [("base", model)]
    if policy is not None:
        with diverged("while the agent adapted the model", "try fewer --agent-steps or another agent"):
            adapted, trace = adapt_with_agent(policy, args.agent, base_path, args.agent_steps, args.seed, device)
        if args.json:
            emit_json({"type": "adaptation", **trace.summary()})
        else:
            print("\n".join(trace.describe()))
        models = [("adapted", adapted)] + ([("base", model)] if args.compare else [])

    for k in range(args.num_samples):
        seed = args.seed + k
        for name, m in models:
            header = None
            if args.num_samples > 1 or len(models) > 1 or policy is not None:
                label = {"base": "base model" if policy is None else "base model (unadapted)",
                         "adapted": "adapted model"}[name]
                header = f"--- sample {k + 1}/{args.num_samples}, seed {seed}, {label} ---"
            sample = run_sample(m, tokenizer, args.prompt, prompt_ids, output, cfg, seed, device, header)
            if args.json:
                emit_json({"type": "sample", "model": name, "sample": k, "sampling": cfg.to_dict(),
                           "max_new_tokens": args.max_new_tokens, **sample})
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: run(build_parser().parse_args(argv)), (CheckpointError, DataError, EnvError))


if __name__ == "__main__":
    started()  # loaded: from here Ctrl-C is handled by run_cli / StopFlag
    sys.exit(main())

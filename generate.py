"""Generate text with INFINITO, optionally after the trained PPO scheduler has adapted it.

    python generate.py --prompt "The river"                          # ckpt/base.pt, default sampling
    python generate.py --prompt "The river" --temperature 0           # greedy
    python generate.py --prompt "The river" --rep-penalty 2.0 --num-samples 3 --seed 7
    python generate.py --prompt "The river" --stream
    python generate.py --prompt "The river" --agent ckpt/best.pt --agent-steps 50 --compare
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

import argparse
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from data import DataError, Tokenizer
from env import EnvConfig, EnvError, TextSchedulingEnv
from infinito.cli import UserError, file_digest, pick_device, run_cli
from infinito.checkpoint import BASE_KIND, CheckpointError, build_model, load_checkpoint, tensor_to_bytes
from infinito.generation import Generation, generate
from infinito.model import Infinito
from infinito.sampling import SamplingConfig
from infinito.training import NonFiniteLoss
from ppo import CheckpointError as AgentCheckpointError
from ppo import TrainedPolicy

DEFAULT_CKPT = "ckpt/base.pt"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2 like every other error, not usage + message
        raise UserError(f"{message} (see python generate.py --help)")


def build_parser() -> argparse.ArgumentParser:
    d = SamplingConfig()
    p = _Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    p.add_argument("--seed", type=int, default=1337, help="sample k uses seed + k (default %(default)s)")
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
                   help="scheduling decisions of the adaptation with --agent (default 50)")
    p.add_argument("--compare", action="store_true",
                   help="with --agent: also print the unadapted model's text for the same seeds")
    return p


# ----------------------------------------------------------------------------- inputs

def sampling_config(args: argparse.Namespace) -> SamplingConfig:
    try:
        return SamplingConfig(args.temperature, args.top_k, args.top_p, args.rep_penalty)
    except ValueError as e:
        raise UserError(str(e).replace("invalid sampling config: ", "")) from None


def check_args(args: argparse.Namespace) -> None:
    if args.prompt == "":
        raise UserError("--prompt is empty; give some text for the model to continue")
    for flag, value in (("--max-new-tokens", args.max_new_tokens), ("--num-samples", args.num_samples),
                        ("--agent-steps", args.agent_steps)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if args.agent is None:
        for flag, given in (("--compare", args.compare), ("--agent-steps", args.agent_steps is not None)):
            if given:
                raise UserError(f"{flag} only applies with --agent CKPT")
    if args.stream and args.json:
        raise UserError("--stream and --json cannot be combined (JSON objects are printed whole)")


def load_base_model(path: str | Path, device: torch.device) -> tuple[Infinito, Tokenizer]:
    """The model (eval mode) and the tokenizer stored in a base checkpoint."""
    ckpt = load_checkpoint(path)  # missing / corrupt -> CheckpointError
    if ckpt["kind"] != BASE_KIND:
        hint = " (an RL checkpoint: pass it with --agent)" if ckpt["kind"] == "ppo-agent" else ""
        raise UserError(f"{path} is a '{ckpt['kind']}' checkpoint{hint}; --ckpt needs a base checkpoint "
                        f"from train.py --stage base")
    if "tokenizer" not in ckpt:
        raise UserError(f"{path} holds no tokenizer; re-create it with train.py --stage base")
    tokenizer = Tokenizer.from_bytes(tensor_to_bytes(ckpt["tokenizer"]))
    model = build_model(ckpt, device).eval()
    if tokenizer.vocab_size != model.cfg.vocab_size:
        raise UserError(f"{path}: its tokenizer has {tokenizer.vocab_size} pieces but the model "
                        f"{model.cfg.vocab_size}; the checkpoint is inconsistent, re-create it")
    return model, tokenizer


# ----------------------------------------------------------------------------- --agent

@dataclass
class Adaptation:
    """What the scheduler chose and what the environment measured, per step (the reset excluded)."""
    agent: str
    global_step: int
    base: str
    seed: int
    modes: tuple
    band: tuple                             # the Φ band the agent's reward calls healthy
    initial: dict                           # the reset's measurement: phi, consciousness, ppl
    actions: list = field(default_factory=list)
    phi: list = field(default_factory=list)
    consciousness: list = field(default_factory=list)
    ppl: list = field(default_factory=list)
    rewards: list = field(default_factory=list)

    def summary(self) -> dict:
        n = len(self.actions)
        lo, hi = self.band
        counts = {m: self.actions.count(a) for a, m in enumerate(self.modes)}
        return {
            "agent": self.agent, "agent_step": self.global_step, "base": self.base, "seed": self.seed, "steps": n,
            "actions": counts, "action_pct": {m: 100.0 * c / n for m, c in counts.items()},
            "phi": {"mean": statistics.fmean(self.phi), "std": statistics.pstdev(self.phi),
                    "min": min(self.phi), "max": max(self.phi)},
            "phi_band": [lo, hi], "phi_in_band_pct": 100.0 * sum(lo <= p <= hi for p in self.phi) / n,
            "c_mean": statistics.fmean(self.consciousness),
            "ppl_initial": self.initial["ppl"], "ppl_final": self.ppl[-1],
            "total_reward": sum(self.rewards),
        }

    def describe(self) -> list[str]:
        s = self.summary()
        mix = ", ".join(f"{m} {c} ({s['action_pct'][m]:.0f}%)" for m, c in s["actions"].items())
        phi = s["phi"]
        band = f"in the reward's band [{self.band[0]:g}, {self.band[1]:g}] on {s['phi_in_band_pct']:.0f}% of steps"
        return [
            f"agent {self.agent} (PPO step {self.global_step:,}) adapted {self.base} for {s['steps']} steps "
            f"(seed {self.seed}):",
            f"  actions     {mix}",
            f"  Φ           mean {phi['mean']:.3f}, std {phi['std']:.3f}, range [{phi['min']:.3f}, {phi['max']:.3f}]; "
            f"{band}",
            f"  C           mean {s['c_mean']:.3f}",
            f"  perplexity  {s['ppl_initial']:.2f} -> {s['ppl_final']:.2f} (held-out batch, after reset -> after "
            f"the last step)",
            f"  reward      total {s['total_reward']:+.3f}",
        ]


def load_agent(agent_path: str, ckpt_flag: str | None):
    """Load the trained policy and decide which base checkpoint it runs on (checked by digest)."""
    policy = TrainedPolicy.load(agent_path)  # missing / corrupt / wrong kind -> ppo.CheckpointError
    extra = policy.extra
    if not all(k in extra for k in ("env", "base", "base_digest")):
        raise UserError(f"{agent_path} is a PPO checkpoint but not one of train.py --stage rl "
                        "(it names no environment or base checkpoint)")
    base = ckpt_flag or extra["base"]
    if not Path(base).is_file():
        raise UserError(f"the base checkpoint {base} does not exist; pass the one {agent_path} was trained on "
                        f"({extra['base']}) with --ckpt")
    if file_digest(base) != extra["base_digest"]:
        raise UserError(f"{base} is not the base checkpoint {agent_path} was trained on ({extra['base']}, "
                        f"sha256 {extra['base_digest']}...); pass that one with --ckpt")
    return policy, base


def adapt_with_agent(policy, agent_path: str, base: str | Path, steps: int, seed: int,
                     device: torch.device) -> tuple[Infinito, Adaptation]:
    """Run the scheduler greedily for `steps` decisions of its environment, from reset(seed).

    Returns the adapted model (the environment's own copy; the base file is untouched) and the trace."""
    env_cfg = EnvConfig.from_dict(policy.extra["env"]).replace(max_steps=steps, device=device.type)
    if policy.n_actions != len(env_cfg.modes):
        raise UserError(f"{agent_path} has {policy.n_actions} actions but its environment config "
                        f"{len(env_cfg.modes)} modes; the checkpoint is inconsistent")
    env = TextSchedulingEnv(base, env_cfg)
    obs, info = env.reset(seed=seed)
    trace = Adaptation(agent_path, policy.global_step, str(base), seed, env_cfg.mode_names,
                       env_cfg.reward.band,
                       {k: float(info[k]) for k in ("phi", "consciousness", "ppl")})
    done = False
    while not done:
        action = policy(obs, info)
        obs, reward, terminated, truncated, info = env.step(action)
        done = bool(terminated or truncated)
        trace.actions.append(int(action))
        trace.phi.append(float(info["phi"]))
        trace.consciousness.append(float(info["consciousness"]))
        trace.ppl.append(float(info["ppl"]))
        trace.rewards.append(float(reward))
    return env.model.eval(), trace


# ----------------------------------------------------------------------------- output

class StreamPrinter:
    """Writes the text as tokens arrive: decodes everything so far and prints what is new.

    Decoding the whole sequence (not token by token) gets spaces and multi-byte
    characters split over byte pieces right; an unfinished character (decoded
    as U+FFFD at the end) is held back until its last byte arrives."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int], out=None):
        self.tok, self.ids, self.out = tokenizer, list(prompt_ids), out or sys.stdout
        self.printed = len(tokenizer.decode(self.ids))

    def __call__(self, new: torch.Tensor) -> None:
        self.ids.append(int(new[0]))
        self._emit(final=False)

    def _emit(self, final: bool) -> None:
        text = self.tok.decode(self.ids)
        if not final and text.endswith("\ufffd"):
            return
        self.out.write(text[self.printed:])
        self.out.flush()
        self.printed = len(text)

    def finish(self) -> None:
        self._emit(final=True)
        self.out.write("\n")
        self.out.flush()


def completion_text(tokenizer: Tokenizer, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The generated text, decoded together with the prompt so the join is right."""
    full = tokenizer.decode(prompt_ids + new_ids)
    head = tokenizer.decode(prompt_ids)
    return full[len(head):] if full.startswith(head) else tokenizer.decode(new_ids)


def run_sample(model: Infinito, tokenizer: Tokenizer, prompt: str, prompt_ids: list[int], args, cfg: SamplingConfig,
               seed: int, device: torch.device, header: str | None) -> dict:
    gen = torch.Generator(device=device).manual_seed(seed)
    printer = None
    if args.stream:
        if header:
            print(header)
        sys.stdout.write(prompt)
        printer = StreamPrinter(tokenizer, prompt_ids)
    result: Generation = generate(model, prompt_ids, args.max_new_tokens, cfg, gen, use_cache=True,
                                  stream_callback=printer)
    new_ids = result.tokens[0].tolist()
    completion = completion_text(tokenizer, prompt_ids, new_ids)
    if printer is not None:
        printer.finish()
    elif not args.json:
        if header:
            print(header)
        print(prompt + completion)
    return {"seed": seed, "prompt": prompt, "completion": completion, "text": prompt + completion,
            "prompt_tokens": len(prompt_ids), "prompt_cropped": result.prompt_cropped,
            "window_jumps": result.window_jumps, "new_tokens": new_ids}


def emit_json(obj: dict) -> None:
    print(json.dumps(obj, ensure_ascii=False))


# ----------------------------------------------------------------------------- main

def run(args: argparse.Namespace) -> int:
    check_args(args)
    cfg = sampling_config(args)
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
        try:
            adapted, trace = adapt_with_agent(policy, args.agent, base_path, args.agent_steps or 50, args.seed, device)
        except NonFiniteLoss as e:
            raise UserError(f"{e} while the agent adapted the model; try fewer --agent-steps or another agent") from None
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
            sample = run_sample(m, tokenizer, args.prompt, prompt_ids, args, cfg, seed, device, header)
            if args.json:
                emit_json({"type": "sample", "model": name, "sample": k, "sampling": cfg.to_dict(),
                           "max_new_tokens": args.max_new_tokens, **sample})
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: run(build_parser().parse_args(argv)), (CheckpointError, AgentCheckpointError, DataError,
                                                                  EnvError))


if __name__ == "__main__":
    sys.exit(main())

"""`generate.py`: loading a base model, sampling text from it and printing it (whole or streamed).

Sampling itself (repetition penalty, temperature, top-k, top-p) is in
infinito/sampling.py and decoding with the key/value cache in
infinito/generation.py; this module joins them to the tokenizer and the console.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from data import Tokenizer
from infinito.checkpoint import BASE_KIND, build_model, load_checkpoint, tensor_to_bytes
from infinito.generation import Generation, generate
from infinito.model import Infinito
from infinito.sampling import SamplingConfig

from ..cli import UserError


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


@dataclass
class Output:
    """How generate.py shows a sample: --max-new-tokens, --stream, --json."""
    max_new_tokens: int
    stream: bool = False
    json: bool = False


def run_sample(model: Infinito, tokenizer: Tokenizer, prompt: str, prompt_ids: list[int], out: Output,
               cfg: SamplingConfig, seed: int, device: torch.device, header: str | None) -> dict:
    gen = torch.Generator(device=device).manual_seed(seed)
    printer = None
    if out.stream:
        if header:
            print(header)
        sys.stdout.write(prompt)
        printer = StreamPrinter(tokenizer, prompt_ids)
    started = time.perf_counter()
    result: Generation = generate(model, prompt_ids, out.max_new_tokens, cfg, gen, use_cache=True,
                                  stream_callback=printer)
    seconds = time.perf_counter() - started
    new_ids = result.tokens[0].tolist()
    completion = completion_text(tokenizer, prompt_ids, new_ids)
    if printer is not None:
        printer.finish()
    elif not out.json:
        if header:
            print(header)
        print(prompt + completion)
    speed = len(new_ids) / max(seconds, 1e-9)
    if not out.json:  # on stderr: the text on stdout stays the text alone
        print(f"[{len(new_ids)} tokens in {seconds:.2f} s: {speed:,.0f} tokens/s on {device.type}]", file=sys.stderr)
    return {"seed": seed, "tokens_per_sec": speed,
            "prompt": prompt, "completion": completion, "text": prompt + completion,
            "prompt_tokens": len(prompt_ids), "prompt_cropped": result.prompt_cropped,
            "window_jumps": result.window_jumps, "new_tokens": new_ids}

"""Train INFINITO (`--stage base`).

    python train.py --stage base                       # demo preset on the built-in corpus
    python train.py --stage base --preset tiny --out /tmp/ck
    python train.py --stage base --data ../shared/data/wikitext-2 --train-split valid
    python train.py --stage base --resume ckpt/base.pt --steps 3000

Every failure a user can cause ends with one line on stderr and a non-zero exit.
"""
from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
import tomllib
from dataclasses import fields
from pathlib import Path

import torch

from data import DataError, Tokenizer, count_words, encode_cached, eval_batches, load_corpus, random_batch, train_tokenizer
from data.stats import unigram_perplexity
from infinito.checkpoint import (BASE_KIND, FORMAT_VERSION, CheckpointError, atomic_save, build_model,
                                 bytes_to_tensor, load_checkpoint, rng_state, set_rng_state, tensor_to_bytes)
from infinito.config import InfinitoConfig
from infinito.model import Infinito
from infinito.presets import PRESETS, BaseTrainConfig, resolve
from infinito.training import NonFiniteLoss, cosine_lr, evaluate, make_optimizer, train_step

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- command line

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["base"], default="base", help="what to train")
    p.add_argument("--preset", default=None, help=f"size preset: {', '.join(PRESETS)} (default demo)")
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="TOML file of config keys (flat, or under [model] / [train]); command-line flags win")
    p.add_argument("--data", default=None, help="WikiText-layout directory or a text file (default: built-in corpus)")
    p.add_argument("--train-split", default="train",
                   help="split used for training in a WikiText directory (e.g. 'valid' when there is no train split)")
    p.add_argument("--out", default=None,
                   help="output directory: base.pt, tokenizer.model, logs (default ckpt, or the --resume file's directory)")
    p.add_argument("--logdir", default=None, help="TensorBoard directory (default <out>/runs/base)")
    p.add_argument("--resume", default=None, metavar="CKPT", help="continue from a base checkpoint")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="save and stop once this global step is done (the schedule still plans for --steps)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    cfg = p.add_argument_group("config overrides (any key of the model or training config)")
    for dc in (InfinitoConfig, BaseTrainConfig):
        for f in fields(dc):
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            cfg.add_argument(_flag(f.name), dest=f.name, type=kind, default=None, metavar=kind.__name__.upper())
    return p


def config_overrides(args: argparse.Namespace) -> dict:
    """Keys from --config FILE.toml, then the explicit flags on top."""
    values: dict = {}
    if args.config:
        try:
            with open(args.config, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise UserError(f"config file {args.config} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"config file {args.config} is not valid TOML ({e})") from None
        for key, value in raw.items():
            if isinstance(value, dict) and key in ("model", "train"):
                values.update(value)
            else:
                values[key] = value
    names = [f.name for dc in (InfinitoConfig, BaseTrainConfig) for f in fields(dc)]
    values.update({n: getattr(args, n) for n in names if getattr(args, n) is not None})
    return values


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but CUDA is not available; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


# ----------------------------------------------------------------------------- interruption

class StopFlag:
    """Ctrl-C / SIGTERM ask the loop to stop after the current step; a second Ctrl-C aborts."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------- base stage

def perplexities(ev: dict, words: int | None) -> dict:
    out = {"loss": ev["loss"], "ppl": math.exp(min(ev["loss"], 50))}
    if words:
        out["word_ppl"] = math.exp(min(ev["nll_sum"] / words, 50))
    return out


def run_base(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    out_dir = Path(args.out or (Path(args.resume).parent if args.resume else "ckpt"))
    overrides = config_overrides(args)

    if args.resume:
        ckpt = load_checkpoint(args.resume, kind=BASE_KIND, map_location=device)
        model_overrides = sorted(k for k in overrides if k in {f.name for f in fields(InfinitoConfig)})
        if model_overrides:
            raise UserError(f"cannot change the model shape when resuming ({', '.join(model_overrides)})")
        if args.preset:
            raise UserError("--preset cannot be combined with --resume (the checkpoint holds its config)")
        model_cfg = InfinitoConfig.from_dict(ckpt["model_config"])
        train_cfg = BaseTrainConfig(**{**ckpt["train_config"], **overrides})
        data_info = ckpt["data"]
        data_path = args.data if args.data else data_info["source"]
        train_split = args.train_split if args.data else data_info["train_split"]
        tokenizer = Tokenizer.from_bytes(tensor_to_bytes(ckpt["tokenizer"]))
    else:
        ckpt = None
        model_cfg, train_cfg = resolve(args.preset or "demo", overrides)
        data_path, train_split = args.data, args.train_split
        tokenizer = None

    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    bf16 = train_cfg.precision == "bf16" or (train_cfg.precision == "auto" and device.type == "cuda")

    corpus = load_corpus(data_path, builtin_size=train_cfg.builtin_size, train_split=train_split)
    if corpus.builtin:
        print(f"no --data given: using the built-in generated corpus ({len(corpus.train) / 1e6:.1f} MB of training text)")
    else:
        print(f"corpus {corpus.name} from {corpus.source} (training on the '{train_split}' split)")

    out_dir.mkdir(parents=True, exist_ok=True)
    tok_path = out_dir / "tokenizer.model"
    if tokenizer is None:
        t0 = time.time()
        tokenizer = train_tokenizer(corpus.train, str(tok_path), model_cfg.vocab_size)
        print(f"trained a {tokenizer.vocab_size}-piece SentencePiece tokenizer in {time.time() - t0:.1f}s -> {tok_path}")
        model_cfg = InfinitoConfig(**{**model_cfg.to_dict(), "vocab_size": tokenizer.vocab_size})
    cache_dir = out_dir / "cache"
    train_ids = torch.from_numpy(encode_cached(corpus.train, tokenizer, cache_dir, corpus.name + "-train").astype("int64"))
    valid_ids = torch.from_numpy(encode_cached(corpus.valid, tokenizer, cache_dir, corpus.name + "-valid").astype("int64"))
    valid_words = count_words(corpus.valid) if corpus.wikitext else None

    torch.manual_seed(train_cfg.seed)
    model = Infinito(model_cfg).to(device)
    optimizer = make_optimizer(model, train_cfg.lr, weight_decay=train_cfg.weight_decay)
    data_gen = torch.Generator().manual_seed(train_cfg.seed)
    step = 0
    if ckpt is not None:
        model = build_model(ckpt, device)
        optimizer = make_optimizer(model, train_cfg.lr, weight_decay=train_cfg.weight_decay)
        optimizer.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        set_rng_state(ckpt["rng"])
        data_gen.set_state(ckpt["data_rng"])
        print(f"resumed from {args.resume} at step {step}")
    print(f"model: {model.num_params() / 1e6:.2f}M parameters, {model_cfg.n_layers} layers, d_model {model_cfg.d_model}, "
          f"context {model_cfg.context}; device {device}{' (bf16 autocast)' if bf16 else ''}")

    def save(path: Path, metrics: dict | None = None) -> None:
        atomic_save({
            "format_version": FORMAT_VERSION, "kind": BASE_KIND,
            "model_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict(),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
            "rng": rng_state(), "data_rng": data_gen.get_state(),
            "tokenizer": bytes_to_tensor(tokenizer.to_bytes()),
            "data": {"source": corpus.source if not corpus.builtin else None, "name": corpus.name,
                     "train_split": train_split, "wikitext": corpus.wikitext},
            "metrics": metrics or {},
        }, path)

    resolved = {"model": model_cfg.to_dict(), "train": train_cfg.to_dict(), "data": corpus.source,
                "train_split": train_split, "device": str(device)}
    (out_dir / "base_config.json").write_text(json.dumps(resolved, indent=2) + "\n")

    from torch.utils.tensorboard import SummaryWriter  # imported late: it is slow to import
    from tqdm import tqdm
    writer = SummaryWriter(args.logdir or str(out_dir / "runs" / "base"), purge_step=step or None)
    log_path = out_dir / "base_log.jsonl"
    if not args.resume:
        log_path.unlink(missing_ok=True)
    elif log_path.exists():  # resuming from an earlier checkpoint: drop the log lines it never saw
        kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= step]
        log_path.write_text("".join(line + "\n" for line in kept))
    ckpt_path = out_dir / "base.pt"
    tokens_per_step = train_cfg.batch_size * model_cfg.context
    last_eval: dict = {}

    def run_eval(max_batches: int | None) -> dict:
        ev = evaluate(model, ((x.to(device), y.to(device)) for x, y in
                              eval_batches(valid_ids, train_cfg.batch_size, model_cfg.context, max_batches)), bf16)
        full = max_batches is None
        return {**ev, **perplexities(ev, valid_words if full else None)}

    stop_at = min(args.stop_at or train_cfg.steps, train_cfg.steps)
    bar = tqdm(total=train_cfg.steps, initial=step, desc="base", disable=args.quiet, dynamic_ncols=True)
    t_last, tokens_since = time.perf_counter(), 0
    with StopFlag() as stop, writer:
        while step < stop_at and not stop.requested:
            lr = cosine_lr(step, train_cfg.lr, train_cfg.warmup, train_cfg.steps, train_cfg.min_lr_ratio)
            for g in optimizer.param_groups:
                g["lr"] = lr
            x, y = random_batch(train_ids, train_cfg.batch_size, model_cfg.context, data_gen)
            try:
                stats = train_step(model, optimizer, x.to(device), y.to(device), 1.0, train_cfg.lambda_phi,
                                   train_cfg.grad_clip, bf16)
            except NonFiniteLoss as e:
                bar.close()
                raise UserError(f"{e} at step {step + 1}; lower --lr or use --precision fp32; "
                                f"the last good checkpoint is {ckpt_path if ckpt_path.exists() else 'not written yet'}") from None
            step += 1
            tokens_since += tokens_per_step
            bar.update(1)
            if step % train_cfg.log_every == 0 or step == stop_at:
                now = time.perf_counter()
                tps = tokens_since / max(now - t_last, 1e-9)
                t_last, tokens_since = now, 0
                for k in ("loss", "phi", "consciousness", "memory_util"):
                    writer.add_scalar(f"train/{k}", stats[k], step)
                writer.add_scalar("train/lr", lr, step)
                writer.add_scalar("time/tokens_per_sec", tps, step)
                with log_path.open("a") as f:
                    f.write(json.dumps({"step": step, "lr": lr, **stats}) + "\n")
                bar.set_postfix(loss=f"{stats['loss_text']:.3f}", ppl=f"{math.exp(min(stats['loss_text'], 50)):.1f}",
                                phi=f"{stats['phi']:.2f}", tok_s=f"{tps:,.0f}")
            if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
                last_eval = run_eval(train_cfg.eval_batches or None)
                for k in ("loss", "ppl", "phi", "consciousness"):
                    writer.add_scalar(f"val/{k}", last_eval[k], step)
                bar.write(f"step {step}: val loss {last_eval['loss']:.3f}, ppl {last_eval['ppl']:.2f}, "
                          f"phi {last_eval['phi']:.2f}, C {last_eval['consciousness']:.2f}, "
                          f"memory {last_eval['memory_util']:.2f}")
                save(ckpt_path, last_eval)
        bar.close()
        save(ckpt_path, last_eval)
        if stop.requested:
            print(f"interrupted at step {step}; checkpoint saved to {ckpt_path}; continue with --resume {ckpt_path}",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
    if step < train_cfg.steps:
        print(f"stopped at step {step} as asked; checkpoint {ckpt_path}; continue with --resume {ckpt_path}")
        return 0

    final = run_eval(None)
    unigram = unigram_perplexity(train_ids.numpy(), valid_ids.numpy(), tokenizer.vocab_size)
    summary = {"step": step, "val_loss": final["loss"], "val_ppl": final["ppl"], "unigram_ppl": unigram,
               "phi": final["phi"], "consciousness": final["consciousness"], "memory_util": final["memory_util"]}
    if "word_ppl" in final:
        summary["val_word_ppl"] = final["word_ppl"]
    if corpus.test:
        test_ids = torch.from_numpy(encode_cached(corpus.test, tokenizer, cache_dir, corpus.name + "-test").astype("int64"))
        ev = evaluate(model, ((x.to(device), y.to(device)) for x, y in
                              eval_batches(test_ids, train_cfg.batch_size, model_cfg.context)), bf16)
        summary.update({f"test_{k}": v for k, v in perplexities(ev, count_words(corpus.test) if corpus.wikitext else None).items()})
    save(ckpt_path, summary)
    (out_dir / "base_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    words = f", word ppl {summary['val_word_ppl']:.1f}" if "val_word_ppl" in summary else ""
    print(f"done: {step} steps; validation ppl {final['ppl']:.2f}{words} (unigram ppl {unigram:.1f}, "
          f"{unigram / final['ppl']:.1f}x lower); phi {final['phi']:.2f}; checkpoint {ckpt_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines show up promptly in logs too
    try:
        return run_base(args)
    except (UserError, DataError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ValueError as e:  # config validation
        if str(e).startswith(("invalid ", "unknown ")):
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USER_ERROR
        raise
    except OSError as e:  # unwritable --out, disk full, ...: atomic writes leave the old files intact
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}; check the path and free disk space", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted before training started; nothing was saved", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

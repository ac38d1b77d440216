"""The base stage: train INFINITO on a corpus (`python train.py --stage base`).

Writes into the output folder: base.pt (the latest checkpoint, rewritten at every
evaluation and at the end), base-step<N>.pt (the snapshot the RL stage starts
from), tokenizer.model, base_config.json, base_log.jsonl and base_summary.json,
the token cache (cache/) and TensorBoard scalars (runs/base/; tags lm/train/*, lm/val/*,
lm/time/tokens_per_sec: stages/report/dashboards.py, BASE_TAGS).
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from common import distributed
from common.distributed import Dist
from common.fields import type_problems
from common.files import FORMAT_VERSION, save_checkpoint, write_bytes, write_json
from common.logger import Logger
from common.rng import capture_global_rng, restore_global_rng
from data import Tokenizer, count_words, encode_cached, eval_batches, load_corpus, random_batch, train_tokenizer
from data.stats import unigram_perplexity
from infinito.checkpoint import BASE_KIND, build_model, bytes_to_tensor, load_checkpoint, tensor_to_bytes
from infinito.config import InfinitoConfig
from infinito.model import Infinito
from infinito.presets import BaseTrainConfig, resolve, snapshot_name
from infinito.training import NonFiniteLoss, cosine_lr, evaluate, make_optimizer, train_step

from .cli import EXIT_INTERRUPTED, SEED_ON_RESUME, StopFlag, UserError, joined, pick_device, resolve_threads
from .outputs import claimed, fresh_run_check, log_folder, next_steps, output_folder, replacing, tensorboard_root

CONFIG_CLASSES = (InfinitoConfig, BaseTrainConfig)


def config_overrides(args: argparse.Namespace) -> dict:
    """Keys from --config FILE.toml (flat, or under [model] / [train]), then the explicit flags on top."""
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
    names = [f.name for dc in CONFIG_CLASSES for f in fields(dc)]
    values.update({n: getattr(args, n) for n in names if getattr(args, n) is not None})
    check_types(values)
    return values


def check_types(values: dict) -> None:
    """A TOML value of the wrong type (`steps = "ten"`) is a one-line error naming the key."""
    for dc in CONFIG_CLASSES:
        problems = type_problems(dc, values)
        if problems:
            raise UserError(f"config key {problems[0]}")


@dataclass
class BaseRun:
    """Everything the training loop reads and changes."""
    model_cfg: InfinitoConfig
    train_cfg: BaseTrainConfig
    tokenizer: Tokenizer
    corpus: object                 # data.Corpus
    train_split: str
    out_dir: Path
    device: torch.device
    bf16: bool
    model: Infinito = None
    optimizer: torch.optim.Optimizer = None
    data_gen: torch.Generator = None
    step: int = 0
    train_ids: torch.Tensor = None
    valid_ids: torch.Tensor = None
    last_good: Path | None = None  # this run's latest checkpoint (or the one it resumed from)
    dist: Dist = field(default_factory=Dist)  # the torchrun group (a group of one without torchrun)
    ddp: object = None               # DistributedDataParallel(model) when there are several ranks
    run_files_written: bool = False  # tokenizer.model and base_config.json, with the first checkpoint
    quiet: bool = False              # --quiet: no progress bars

    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / "base.pt"

    def ids(self, split: str) -> torch.Tensor:
        text = getattr(self.corpus, split)
        ids = encode_cached(text, self.tokenizer, self.out_dir / "cache", f"{self.corpus.name}-{split}",
                            progress=not self.quiet)
        return torch.from_numpy(ids.astype("int64"))

    def save(self, path: Path, metrics: dict | None = None) -> None:
        """Called on every rank (the ranks' random states are gathered); rank 0 writes."""
        corpus = self.corpus
        ranks = {}
        if self.dist.active:  # each rank's own streams, so a resume with as many ranks is exact
            ranks = {"ranks": {"world": self.dist.world, "data_rng": self.dist.gather(self.data_gen.get_state()),
                               "rng": self.dist.gather(capture_global_rng())}}
        save_checkpoint(path, {**ranks,
            "format_version": FORMAT_VERSION, "kind": BASE_KIND,
            "model_config": self.model_cfg.to_dict(), "train_config": self.train_cfg.to_dict(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
            "rng": capture_global_rng(), "data_rng": self.data_gen.get_state(),
            "tokenizer": bytes_to_tensor(self.tokenizer.to_bytes()),
            # the corpus by its absolute path: the RL stage and generation find it from any folder
            "data": {"source": None if corpus.builtin else str(Path(corpus.source).resolve()), "name": corpus.name,
                     "train_split": self.train_split, "wikitext": corpus.wikitext},
            "metrics": metrics or {},
        })
        if Path(path) == self.ckpt_path:
            self.last_good = self.ckpt_path
        if not self.run_files_written:  # only now: a run that fails earlier leaves an earlier run's files alone
            self.run_files_written = True
            write_bytes(self.out_dir / "tokenizer.model", self.tokenizer.to_bytes())
            write_json(self.out_dir / "base_config.json", {
                "model": self.model_cfg.to_dict(), "train": self.train_cfg.to_dict(), "data": self.corpus.source,
                "train_split": self.train_split, "device": str(self.device)})

    def evaluate(self, ids: torch.Tensor, max_batches: int | None = None, words: int | None = None) -> dict:
        """Mean loss and metrics on `ids`; perplexity, and per word when `words` is given."""
        cfg, d = self.train_cfg, self.dist
        batches = ((x.to(self.device), y.to(self.device))
                   for k, (x, y) in enumerate(eval_batches(ids, cfg.batch_size, self.model_cfg.context, max_batches))
                   if k % d.world == d.rank)  # sharded over the ranks, summed below
        ev = evaluate(self.model, batches, self.bf16)
        if d.active:
            nll, tokens, phi, c, n = d.sum([ev["nll_sum"], ev["tokens"], ev["phi"] * ev["batches"],
                                            ev["consciousness"] * ev["batches"], ev["batches"]])
            ev.update(nll_sum=nll, tokens=tokens, loss=nll / tokens, phi=phi / n, consciousness=c / n, batches=n)
        ev["ppl"] = math.exp(min(ev["loss"], 50))
        if words:
            ev["word_ppl"] = math.exp(min(ev["nll_sum"] / words, 50))
        return ev


@dataclass
class BasePlan:
    """Everything one base-stage run reads from the command line, once (nothing below run_base
    sees the flags)."""
    out_dir: Path
    overrides: dict               # config keys from --config and the flags
    resume: str | None = None
    preset: str | None = None
    data: str | None = None
    train_split: str = "train"
    device: str = "auto"
    stop_at: int | None = None
    logdir: Path | None = None
    quiet: bool = False
    overwrite: bool = False


def plan_base(args: argparse.Namespace) -> BasePlan:
    if args.stop_at is not None and args.stop_at < 1:
        raise UserError(f"--stop-at must be >= 1, got {args.stop_at}")
    return BasePlan(output_folder(args.out, args.resume), config_overrides(args), args.resume, args.preset, args.data,
                    args.train_split, args.device, args.stop_at, Path(args.logdir) if args.logdir else None,
                    args.quiet, args.overwrite)


def _resumed_configs(p: BasePlan, device: torch.device):
    overrides = p.overrides
    ckpt = load_checkpoint(p.resume, kind=BASE_KIND, map_location=device,
                           required=("model_config", "train_config", "model", "optimizer", "step", "rng",
                                     "data_rng", "tokenizer", "data"))
    model_keys = sorted(k for k in overrides if k in {f.name for f in fields(InfinitoConfig)})
    if model_keys:
        raise UserError(f"cannot change the model shape when resuming ({', '.join(model_keys)})")
    if p.preset:
        raise UserError("--preset cannot be combined with --resume (the checkpoint holds its config)")
    if "seed" in overrides:
        raise UserError(SEED_ON_RESUME)
    train_cfg = BaseTrainConfig(**{**ckpt["train_config"], **overrides})
    data = ckpt["data"]
    source, split = (p.data, p.train_split) if p.data else (data["source"], data["train_split"])
    tokenizer = Tokenizer.from_bytes(tensor_to_bytes(ckpt["tokenizer"]))
    return ckpt, InfinitoConfig.from_dict(ckpt["model_config"]), train_cfg, source, split, tokenizer


def prepare(p: BasePlan) -> tuple[BaseRun, dict | None]:
    """Configs, corpus, tokenizer, token ids, model and optimiser: new, or from --resume."""
    device, d = pick_device(p.device), distributed.current()
    if d.active and device.type == "cuda":
        device = torch.device("cuda", d.local_rank)  # one GPU per rank
    out_dir = p.out_dir
    if p.resume:
        ckpt, model_cfg, train_cfg, source, split, tokenizer = _resumed_configs(p, device)
    else:
        ckpt, tokenizer, (source, split) = None, None, (p.data, p.train_split)
        model_cfg, train_cfg = resolve(p.preset or "demo", p.overrides)
    if not train_cfg.threads:  # resolved once and stored, so a resume (or a rerun with --threads) repeats it
        train_cfg = BaseTrainConfig(**{**train_cfg.to_dict(), "threads": resolve_threads(0)})
    torch.set_num_threads(train_cfg.threads)
    bf16 = train_cfg.precision == "bf16" or (train_cfg.precision == "auto" and device.type == "cuda")
    corpus = load_corpus(source, builtin_size=train_cfg.builtin_size, train_split=split)
    if corpus.builtin:
        print(f"no --data given: using the built-in generated corpus ({len(corpus.train) / 1e6:.1f} MB of training text)")
    else:
        print(f"corpus {corpus.name} from {corpus.source} (training on the '{split}' split)")
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        t0 = time.time()
        blob = None
        if d.is_main:  # trained once and sent to the other ranks: every rank must cut text the same way
            with tempfile.TemporaryDirectory() as scratch:  # tokenizer.model is written with the first checkpoint
                blob = train_tokenizer(corpus.train, str(Path(scratch) / "tokenizer.model"),
                                       model_cfg.vocab_size).to_bytes()
        tokenizer = Tokenizer.from_bytes(d.broadcast(blob))
        print(f"trained a {tokenizer.vocab_size}-piece SentencePiece tokenizer in {time.time() - t0:.1f}s")
        model_cfg = InfinitoConfig(**{**model_cfg.to_dict(), "vocab_size": tokenizer.vocab_size})
    run = BaseRun(model_cfg, train_cfg, tokenizer, corpus, split, out_dir, device, bf16, dist=d, quiet=p.quiet)
    run.train_ids, run.valid_ids = run.ids("train"), run.ids("valid")
    _build_model(run, ckpt)
    if ckpt is not None:
        run.last_good = Path(p.resume)
        print(f"resumed from {p.resume} at step {run.step}")
    print(f"model: {run.model.num_params() / 1e6:.2f}M parameters, {model_cfg.n_layers} layers, d_model "
          f"{model_cfg.d_model}, context {model_cfg.context}; device {device}{' (bf16 autocast)' if bf16 else ''}, "
          f"{train_cfg.threads} torch thread(s)")
    return run, ckpt


def _build_model(run: BaseRun, ckpt: dict | None) -> None:
    cfg, d = run.train_cfg, run.dist
    # every generator whose state a checkpoint stores is seeded: identical runs write identical bytes
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    run.model = Infinito(run.model_cfg).to(run.device) if ckpt is None else build_model(ckpt, run.device)
    if d.rank:
        torch.manual_seed(cfg.seed + d.rank)  # each rank's own dropout masks
    run.optimizer = make_optimizer(run.model, cfg.lr, weight_decay=cfg.weight_decay)
    run.data_gen = torch.Generator().manual_seed(cfg.seed + d.rank)  # each rank's own batches
    if ckpt is not None:
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.step = ckpt["step"]
        rng, data_rng = _rank_states(ckpt, d)
        restore_global_rng(rng)
        if data_rng is not None:
            run.data_gen.set_state(data_rng)
    if d.active:
        run.ddp = data_parallel(run.model, run.device)


def data_parallel(model: Infinito, device: torch.device):
    """DistributedDataParallel over the ranks. The memory is a buffer that every rank writes
    from the gathered summaries (train_step's `average`): no buffer broadcast, which would
    impose rank 0's. Its read-out has no gradient while it is empty, hence find_unused_parameters
    (DDP then warns once, from C++, that it found none: expected once the memory fills)."""
    import warnings
    from torch.nn.parallel import DistributedDataParallel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # broadcast_buffers' successor still syncs at init
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       broadcast_buffers=False, find_unused_parameters=True)


def _rank_states(ckpt: dict, d: Dist) -> tuple[dict, torch.Tensor | None]:
    """This rank's (global RNG, data stream) from a checkpoint. With as many ranks as wrote it,
    exact; otherwise rank r continues rank r's stream where there is one and the data order changes."""
    ranks = ckpt.get("ranks") or {"world": 1, "rng": [ckpt["rng"]], "data_rng": [ckpt["data_rng"]]}
    if ranks["world"] != d.world:
        print(f"note: the checkpoint was written by {ranks['world']} process(es), this run has {d.world}: "
              "the data order differs from the uninterrupted run")
    if d.rank < ranks["world"]:
        return ranks["rng"][d.rank], ranks["data_rng"][d.rank]
    return ranks["rng"][0], None  # a new rank: its freshly seeded stream


def one_step(run: BaseRun) -> tuple[dict, float]:
    """One optimiser step on a random training batch at the cosine schedule's rate -> (stats, lr)."""
    cfg, mcfg = run.train_cfg, run.model_cfg
    lr = cosine_lr(run.step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
    for g in run.optimizer.param_groups:
        g["lr"] = lr
    x, y = random_batch(run.train_ids, cfg.batch_size, mcfg.context, run.data_gen)
    average = run.dist.mean if run.dist.active else None
    try:
        stats = train_step(run.model, run.optimizer, x.to(run.device), y.to(run.device), 1.0, cfg.lambda_phi,
                           cfg.grad_clip, run.bf16, forward=run.ddp, average=average)
    except NonFiniteLoss as e:
        last = run.last_good or "not written yet"  # never an earlier run's file in the same folder
        raise UserError(f"{e} at step {run.step + 1}; lower --lr or use --precision fp32; "
                        f"the last good checkpoint is {last}") from None
    run.step += 1
    return stats, lr


def train_loop(run: BaseRun, stop_at: int, logger: Logger, quiet: bool) -> bool:
    """Train until `stop_at` or Ctrl-C, logging, evaluating and saving on schedule -> interrupted?"""
    from tqdm import tqdm
    cfg, d = run.train_cfg, run.dist
    bar = tqdm(total=cfg.steps, initial=run.step, desc="base", disable=quiet, dynamic_ncols=True)
    t_last, steps_since, last_eval, stopping = time.perf_counter(), 0, {}, False
    with StopFlag() as stop, bar:  # the bar is closed before any error line is printed
        while run.step < stop_at and not stopping:
            stats, lr = one_step(run)
            steps_since += 1
            bar.update(1)
            if run.step % cfg.log_every == 0 or run.step == stop_at:
                now = time.perf_counter()
                tps = steps_since * cfg.batch_size * d.world * run.model_cfg.context / max(now - t_last, 1e-9)
                t_last, steps_since = now, 0
                stats = dict(zip(stats, (v / d.world for v in d.sum(list(stats.values())))))  # over the ranks
                _record_train(logger, stats, lr, tps)
                bar.set_postfix(loss=f"{stats['loss_text']:.3f}", ppl=f"{math.exp(min(stats['loss_text'], 50)):.1f}",
                                phi=f"{stats['phi']:.2f}", tok_s=f"{tps:,.0f}")
            if run.step % cfg.eval_every == 0 or run.step == cfg.steps:
                last_eval = _evaluate_and_save(run, logger)
            logger.dump(run.step)
            if run.step == cfg.snapshot_at:
                snap = run.out_dir / snapshot_name(run.step)
                run.save(snap, run.evaluate(run.valid_ids, cfg.eval_batches or None))
                logger.print(f"step {run.step}: snapshot for the RL stage -> {snap}")
            stopping = d.any(stop.requested)  # every rank stops after the same step
        bar.close()
        run.save(run.ckpt_path, last_eval)
        return stopping


def _record_train(logger: Logger, stats: dict, lr: float, tokens_per_sec: float) -> None:
    # lm/ prefix: PPO writes train/* under the same log root (stages/report/dashboards.py, BASE_TAGS)
    for k, v in stats.items():
        logger.record(f"lm/train/{k}", v)
    logger.record("lm/train/lr", lr)
    logger.record("lm/time/tokens_per_sec", tokens_per_sec)


def _evaluate_and_save(run: BaseRun, logger: Logger) -> dict:
    ev = run.evaluate(run.valid_ids, run.train_cfg.eval_batches or None)
    for k in ("loss", "ppl", "phi", "consciousness"):
        logger.record(f"lm/val/{k}", ev[k])
    logger.print(f"step {run.step}: val loss {ev['loss']:.3f}, ppl {ev['ppl']:.2f}, phi {ev['phi']:.2f}, "
                 f"C {ev['consciousness']:.2f}, memory {ev['memory_util']:.2f}")
    run.save(run.ckpt_path, ev)
    return ev


def summarize(run: BaseRun) -> dict:
    """Full validation (and test, when the corpus has one) beside the unigram baseline."""
    words = lambda text: count_words(text) if run.corpus.wikitext else None  # noqa: E731
    final = run.evaluate(run.valid_ids, None, words(run.corpus.valid))
    unigram = unigram_perplexity(run.train_ids.numpy(), run.valid_ids.numpy(), run.tokenizer.vocab_size)
    summary = {"step": run.step, "val_loss": final["loss"], "val_ppl": final["ppl"], "unigram_ppl": unigram,
               "phi": final["phi"], "consciousness": final["consciousness"], "memory_util": final["memory_util"]}
    if "word_ppl" in final:
        summary["val_word_ppl"] = final["word_ppl"]
    if run.corpus.test:
        test = run.evaluate(run.ids("test"), None, words(run.corpus.test))
        summary.update({f"test_{k}": test[k] for k in ("loss", "ppl", "word_ppl") if k in test})
    return summary


def run_base(args: argparse.Namespace) -> int:
    return run_base_plan(plan_base(args))  # every flag is read here, once


def run_base_plan(p: BasePlan) -> int:
    """One base-stage run as planned: what `train.py --stage base` runs, for scripts that build the
    plan themselves (bench/) rather than through the command line."""
    with joined(p.device), claimed(p.out_dir, "base"):
        return _run_base(p, fresh_run_check(p.out_dir, p.resume, p.overwrite, "base"))


def _run_base(p: BasePlan, earlier: list[Path]) -> int:
    run, ckpt = prepare(p)
    with replacing(earlier, "base"):  # --overwrite: only now, every check has passed
        return _train_base(p, run, ckpt)


def _train_base(p: BasePlan, run: BaseRun, ckpt: dict | None) -> int:
    cfg = run.train_cfg
    if cfg.snapshot_at > cfg.steps:
        print(f"note: no snapshot is kept: snapshot_at {cfg.snapshot_at} is past the last step {cfg.steps}")
    logger = Logger(log_folder(p.out_dir, p.logdir, "base"), jsonl=run.out_dir / "base_log.jsonl",
                    quiet=p.quiet, resume_step=run.step if ckpt is not None else None)
    stop_at = min(p.stop_at or cfg.steps, cfg.steps)
    with logger:
        interrupted = train_loop(run, stop_at, logger, p.quiet)
    path = run.ckpt_path
    if interrupted:
        print(f"interrupted at step {run.step}; checkpoint saved to {path}; continue with --resume {path}",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if run.step < cfg.steps:
        print(f"stopped at step {run.step} as asked; checkpoint {path}; continue with --resume {path}")
        return 0
    summary = summarize(run)
    run.save(path, summary)
    write_json(run.out_dir / "base_summary.json", summary)
    words = f", word ppl {summary['val_word_ppl']:.1f}" if "val_word_ppl" in summary else ""
    print(f"done: {run.step} steps; validation ppl {summary['val_ppl']:.2f}{words} (unigram ppl "
          f"{summary['unigram_ppl']:.1f}, {summary['unigram_ppl'] / summary['val_ppl']:.1f}x lower); "
          f"phi {summary['phi']:.2f}; checkpoint {path}")
    print(next_steps(run.out_dir, "base", tensorboard_root(p.out_dir, p.logdir)))
    return 0




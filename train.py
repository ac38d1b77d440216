"""Train INFINITO (`--stage base`), then the PPO scheduler that trains it (`--stage rl`).

    python train.py --stage base                       # demo preset on the built-in corpus
    python train.py --stage base --preset tiny --out /tmp/ck
    python train.py --stage base --data ../shared/data/wikitext-2 --train-split valid
    python train.py --stage base --resume ckpt/base.pt --steps 3000
    python train.py --stage rl                         # PPO on ckpt/base.pt: ckpt/<step>.pt, best.pt, report.md
    python train.py --stage rl --resume ckpt/4096.pt --timesteps 5120 --ent-coef 0.02
    python train.py --stage report --ckpt-dir ckpt --episodes 30

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
from infinito.cli import EXIT_INTERRUPTED, UserError, file_digest, pick_device, run_cli
from infinito.checkpoint import (BASE_KIND, FORMAT_VERSION, CheckpointError, atomic_save, build_model,
                                 bytes_to_tensor, load_checkpoint, rng_state, set_rng_state, tensor_to_bytes)
from infinito.config import InfinitoConfig
from infinito.model import Infinito
from infinito.presets import PRESETS, BaseTrainConfig, resolve, snapshot_name
from infinito.training import NonFiniteLoss, cosine_lr, evaluate, make_optimizer, train_step
from env.errors import EnvError
from ppo.callbacks import PeriodicCallback
from ppo.checkpoint import CheckpointError as AgentCheckpointError

# ----------------------------------------------------------------------------- command line

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage", choices=["base", "rl", "report"], default="base",
                   help="base: train INFINITO; rl: train the PPO scheduler; report: re-evaluate RL checkpoints")
    p.add_argument("--preset", default=None, help=f"size preset: {', '.join(PRESETS)} (default demo)")
    p.add_argument("--config", default=None, metavar="FILE.toml",
                   help="TOML file of config keys (flat, or under [model] / [train]); command-line flags win")
    p.add_argument("--data", default=None, help="WikiText-layout directory or a text file (default: built-in corpus)")
    p.add_argument("--train-split", default="train",
                   help="split used for training in a WikiText directory (e.g. 'valid' when there is no train split)")
    p.add_argument("--out", default=None,
                   help="output directory: base.pt, tokenizer.model / <step>.pt, best.pt, report.md, logs "
                        "(default ckpt, or the --resume file's directory)")
    p.add_argument("--logdir", default=None, help="TensorBoard directory (default <out>/runs/base)")
    p.add_argument("--resume", default=None, metavar="CKPT",
                   help="continue from a checkpoint: base.pt (--stage base) or <step>.pt (--stage rl)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="save and stop once this global step is done (the schedule still plans for --steps)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_rl_arguments(p)
    cfg = p.add_argument_group("--stage base: config overrides (any key of the model or training config); "
                                "--lr, --batch-size, --seed, --threads also apply to --stage rl")
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

    if train_cfg.snapshot_at > train_cfg.steps:
        print(f"note: no snapshot is kept: snapshot_at {train_cfg.snapshot_at} is past the last step {train_cfg.steps}")
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
            if step == train_cfg.snapshot_at:
                snap = out_dir / snapshot_name(step)
                save(snap, run_eval(train_cfg.eval_batches or None))
                bar.write(f"step {step}: snapshot for the RL stage -> {snap}")
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


# ----------------------------------------------------------------------------- rl stage

PPO_FLAGS = ("clip_range", "ent_coef", "vf_coef", "max_grad_norm", "target_kl", "clip_range_vf", "n_steps",
             "n_epochs", "gamma", "gae_lambda")
RL_SHARED = {"lr": "learning_rate", "batch_size": "batch_size", "seed": "seed"}  # base flags rl reuses
CONTROL_NOTE = "control policies on the same seeds"


def add_rl_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--stage rl (defaults from --preset; on --resume, from the checkpoint)")
    g.add_argument("--base", default=None,
                   help="base checkpoint the agent schedules (default: the preset's snapshot, <out>/base-step<N>.pt)")
    g.add_argument("--timesteps", type=int, default=None,
                   help="environment decisions to train; on --resume, counted from the resumed step")
    g.add_argument("--save-freq", type=int, default=None, help="write <out>/<step>.pt every this many steps")
    g.add_argument("--eval-freq", type=int, default=None, help="evaluate (and rewrite the report) every this many steps")
    g.add_argument("--eval-episodes", type=int, default=None, help="seeded episodes per evaluation")
    g.add_argument("--eval-seed", type=int, default=None,
                   help="evaluation episode k uses seed eval_seed + k (checkpoints are selected on these)")
    g.add_argument("--heldout-seed", type=int, default=None,
                   help="held-out episode k uses seed heldout_seed + k: the recommended checkpoint and the control "
                        "policies are scored there for the report's headline")
    g.add_argument("--num-envs", type=int, default=None, help="environments stepped together")
    g.add_argument("--workers", type=int, default=None, help="threads stepping them (one torch thread each)")
    g.add_argument("--env", nargs="+", default=[], metavar="KEY=VALUE",
                   help="environment config, e.g. max_steps=30 reward.phi_low=5.5 (see docs/env.md)")
    g.add_argument("--early-stop", action="store_true",
                   help="stop when an evaluation is flagged as over-fitting against the best (best.pt is kept)")
    g.add_argument("--patience", type=int, default=1, help="consecutive flagged evaluations before --early-stop stops")
    g.add_argument("--overfit-drop", type=float, default=0.2,
                   help="over-fitting: mean this many control spreads (best minus worst control mean) below the baseline")
    g.add_argument("--severe-drop", type=float, default=0.5, help="severe over-fitting: mean this many control spreads below")
    g.add_argument("--overfit-std-factor", type=float, default=5.0, help="over-fitting: std this many times the baseline's")
    g.add_argument("--high-variance-factor", type=float, default=2.0, help="high variance: std this many times the baseline's")
    for name in PPO_FLAGS:
        g.add_argument(_flag(name), dest=name, type=float if name not in ("n_steps", "n_epochs") else int,
                       default=None, metavar="N" if name in ("n_steps", "n_epochs") else "X", help=f"PPOConfig.{name}")
    r = p.add_argument_group("--stage report")
    r.add_argument("--ckpt-dir", default=None, help="directory of RL checkpoints <step>.pt (default ckpt)")
    r.add_argument("--baseline", default=None, metavar="CKPT", help="checkpoint the others are compared with (default: the best)")
    r.add_argument("--episodes", type=int, default=None, help="seeded episodes per checkpoint (default: as in training)")


def rl_flag_problems(args: argparse.Namespace) -> list[str]:
    """Base-stage flags given to --stage rl/report, which would otherwise be silently ignored."""
    base_only = [f.name for dc in (InfinitoConfig, BaseTrainConfig) for f in fields(dc)
                 if f.name not in RL_SHARED and f.name != "threads"]
    given = [_flag(n) for n in base_only if getattr(args, n) is not None]
    given += ["--config"] * bool(args.config) + ["--data"] * bool(args.data) + ["--stop-at"] * bool(args.stop_at)
    return given


def parse_env_overrides(items: list[str]) -> dict:
    """["max_steps=30", "reward.phi_low=5.5"] -> {"max_steps": 30, "reward": {"phi_low": 5.5}} (JSON values)."""
    out: dict = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--env {item!r}: expected KEY=VALUE, e.g. max_steps=30 or reward.phi_low=5.5")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key.startswith("reward."):
            out.setdefault("reward", {})[key[len("reward."):]] = value
        else:
            out[key] = value
    return out


def merge_env(base: dict, overrides: dict) -> "EnvConfig":
    from env import EnvConfig
    d = {**base, **{k: v for k, v in overrides.items() if k != "reward"}}
    d["reward"] = {**base.get("reward", {}), **overrides.get("reward", {})}
    return EnvConfig.from_dict(d)


def runs_to_eval(runs, env_cfg, seed: int, step: int | None = None, checkpoint: str | None = None) -> dict:
    """env.PolicyRuns -> an EvalResult dict (the form reports and evaluations.json hold)."""
    from ppo import EvalResult
    summary = runs.summary(env_cfg.reward.band)
    actions = [a for tr in runs.traces for a in tr["action"]]
    counts = [actions.count(a) for a in range(len(env_cfg.modes))]
    extra = {k: summary[k] for k in ("phi_mean", "phi_in_band_pct", "c_mean", "final_ppl", "memory_util_mean")}
    if checkpoint:
        extra["checkpoint"] = checkpoint
    result = EvalResult(list(runs.returns), list(runs.lengths), counts, True, seed, step, extra=extra)
    return result


def evaluate_controls(envs, env_cfg, episodes: int, seed: int, quiet: bool) -> dict:
    from env import control_policies, run_policy_parallel
    out = {}
    for name, policy in control_policies(len(env_cfg.modes), env_cfg.mode_names).items():
        t0 = time.time()
        out[name] = runs_to_eval(run_policy_parallel(envs, policy, episodes, seed, name), env_cfg, seed).to_dict()
        if not quiet:
            print(f"control policy {name}: {out[name]['mean_reward']:+.3f} ± {out[name]['std_reward']:.3f} "
                  f"over {episodes} episodes ({time.time() - t0:.0f}s)")
    return out


def make_thresholds(args: argparse.Namespace):
    from ppo import Thresholds
    try:
        return Thresholds(args.overfit_drop, args.severe_drop, args.overfit_std_factor, args.high_variance_factor)
    except ValueError as e:
        raise UserError(f"{e} (--overfit-drop, --severe-drop, --overfit-std-factor, --high-variance-factor)") from None


def evaluate_heldout(envs, env_cfg, run: dict, checkpoint: Path, heldout_controls: dict) -> dict:
    """The checkpoint's greedy policy on the held-out seeds, beside the controls' results there."""
    from env import run_policy_parallel
    from ppo import TrainedPolicy
    policy = TrainedPolicy.load(str(checkpoint))
    seed, episodes = run["heldout_seed"], run["eval_episodes"]
    runs = run_policy_parallel(envs, policy, episodes, seed)
    agent = runs_to_eval(runs, env_cfg, seed, policy.global_step, str(checkpoint)).to_dict()
    return {"step": policy.global_step, "agent": agent, "controls": heldout_controls}


def rl_report(out_dir: Path, evaluations: list, controls: dict, baseline_step: int | None, env_cfg,
              thresholds, notes: list[str], heldout: dict | None = None) -> dict:
    from ppo import Column, Report, write_report
    band = "[{:g}, {:g}]".format(*env_cfg.reward.band)
    report = Report(evaluations, controls, baseline_step, thresholds, env_cfg.mode_names,
                    [Column(f"Φ in {band}", "phi_in_band_pct", "{:.0f}%"), Column("Φ mean", "phi_mean", "{:.2f}"),
                     Column("C mean", "c_mean", "{:.3f}"), Column("final ppl", "final_ppl", "{:.2f}")],
                    title=f"RL report: {out_dir}", notes=notes, heldout=heldout)
    built = report.build()
    write_report(out_dir, built, report.markdown(built))
    return built


def report_notes(base: str, env_cfg, run: dict, n_episodes: int, seed: int) -> list[str]:
    changed = {k: v for k, v in env_cfg.to_dict().items() if k not in ("reward", "modes", "device", "cache_dir")}
    return [f"Base checkpoint `{base}`; environment {', '.join(f'{k}={v}' for k, v in changed.items())}; "
            f"reward `{env_cfg.reward.describe()}` (env/reward.py).",
            f"Every row: the greedy policy over the same {n_episodes} seeded episodes (seeds {seed}..{seed + n_episodes - 1}); "
            f"mean, sample std and Student-t 95% CI of the episode return. Control policies below on the same seeds."]


def run_rl(args: argparse.Namespace) -> int:
    from env import RolloutMonitor, TextSchedulingEnv, VectorEnv, load_base
    from env.presets import RL_PRESETS, RUN_KEYS
    from ppo import (PPO, EvalCallback, FunctionCallback, JsonHistoryCallback, PPOConfig, Report,
                     TrainedPolicy, load_checkpoint as load_agent_checkpoint)
    from env.presets import HELDOUT_SEED
    from env import run_policy_parallel
    import ppo as ppo_pkg

    bad = rl_flag_problems(args)
    if bad:
        raise UserError(f"{', '.join(sorted(set(bad)))} only apply to --stage base")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but CUDA is not available; use --device cpu or auto")
    threads = args.threads if args.threads is not None else 1
    torch.set_num_threads(max(threads, 1))
    out_dir = Path(args.out or (Path(args.resume).parent if args.resume else "ckpt"))
    env_overrides = parse_env_overrides(args.env)
    run_flags = {k: getattr(args, k) for k in RUN_KEYS if getattr(args, k) is not None}
    ppo_flags = {k: getattr(args, k) for k in PPO_FLAGS if getattr(args, k) is not None}
    ppo_flags.update({RL_SHARED[k]: getattr(args, k) for k in ("lr", "batch_size") if getattr(args, k) is not None})
    for k, v in run_flags.items():
        if v < (0 if k in ("eval_seed", "heldout_seed") else 1):
            raise UserError(f"--{k.replace('_', '-')} must be >= 1, got {v}")
    thresholds = make_thresholds(args)

    if args.resume:
        if args.preset:
            raise UserError("--preset cannot be combined with --resume (the checkpoint holds its config)")
        if args.seed is not None:
            raise UserError("--seed cannot change when resuming (the random state continues from the checkpoint)")
        head = load_agent_checkpoint(args.resume, required=("global_step", "extra"))
        extra = head["extra"]
        if "run" not in extra or "env" not in extra:
            raise UserError(f"{args.resume} is a PPO checkpoint but not one of train.py --stage rl; "
                            "resume it from the code that wrote it")
        run = {**extra["run"], **run_flags}
        start_step = int(head["global_step"])
        run["timesteps"] = start_step + run_flags["timesteps"] if "timesteps" in run_flags else head["config"]["total_timesteps"]
        if run["timesteps"] <= start_step:
            raise UserError(f"{args.resume} is already at step {start_step:,}, the run's planned total; "
                            "pass --timesteps N to train N more steps")
        env_cfg = merge_env(extra["env"], env_overrides)
        base_path = Path(args.base or extra["base"])
        if not base_path.is_file():
            raise UserError(f"the base checkpoint {base_path} this agent was trained on does not exist; "
                            "pass its new location with --base")
        if file_digest(base_path) != extra["base_digest"]:
            raise UserError(f"{base_path} is not the base checkpoint {args.resume} was trained on (its contents "
                            f"differ); pass the original with --base, or start a new run")
        if len(env_cfg.modes) != head["n_actions"]:
            raise UserError(f"{args.resume} was trained with {head['n_actions']} actions, the environment now has "
                            f"{len(env_cfg.modes)}; resume with the original modes or start a new run")
        try:
            ppo_cfg = PPOConfig.from_dict(head["config"]).replace(**ppo_flags)
        except ValueError as e:
            raise UserError(str(e)) from None
        del head
    else:
        preset = args.preset or "demo"
        if preset not in RL_PRESETS:
            raise UserError(f"unknown preset '{preset}' (choose from {', '.join(RL_PRESETS)})")
        if "timesteps" in run_flags and run_flags["timesteps"] < 1:
            raise UserError("--timesteps must be >= 1")
        run = {**RL_PRESETS[preset]["run"], **run_flags, "preset": preset}
        env_cfg = merge_env(RL_PRESETS[preset]["env"], env_overrides)
        base_path = Path(args.base) if args.base else out_dir / run["base_file"]
        if not base_path.is_file():
            hint = "" if args.base else f" (preset {preset} starts from the base stage's snapshot {run['base_file']})"
            raise UserError(f"base checkpoint {base_path} does not exist{hint}; train one with "
                            f"`python train.py --stage base --out {base_path.parent}` or pass --base")
        extra = {}
        start_step = 0
        try:
            ppo_cfg = PPOConfig(**{**RL_PRESETS[preset]["ppo"], **ppo_flags, "total_timesteps": run["timesteps"],
                                   "seed": args.seed if args.seed is not None else 0,
                                   "torch_threads": max(threads, 1), "progress_bar": not args.quiet})
        except ValueError as e:
            raise UserError(str(e)) from None
    if args.device != "auto":
        env_cfg = env_cfg.replace(device=args.device)
    env_cfg = env_cfg.replace(cache_dir=env_cfg.cache_dir or str(base_path.parent / "cache"))

    out_dir.mkdir(parents=True, exist_ok=True)
    assets = load_base(base_path, env_cfg)
    workers = run["workers"]
    train_env = VectorEnv([TextSchedulingEnv(assets, env_cfg) for _ in range(run["num_envs"])], workers)
    eval_envs = [TextSchedulingEnv(assets, env_cfg) for _ in range(max(1, min(workers, run["eval_episodes"])))]
    digest = extra.get("base_digest") or file_digest(base_path)
    episodes, seed = run["eval_episodes"], run["eval_seed"]

    run.setdefault("heldout_seed", HELDOUT_SEED)
    same_env = extra.get("env") == env_cfg.to_dict() and extra.get("run", {}).get("eval_episodes") == episodes
    controls, heldout_controls = extra.get("controls"), extra.get("heldout_controls")
    if not (controls and same_env and extra["run"].get("eval_seed") == seed):
        print(f"evaluating the {CONTROL_NOTE} ({episodes} episodes each)")
        controls = evaluate_controls(eval_envs, env_cfg, episodes, seed, args.quiet)
    if not (heldout_controls and same_env and extra["run"].get("heldout_seed") == run["heldout_seed"]):
        print(f"evaluating the control policies on the held-out seeds ({episodes} episodes each)")
        heldout_controls = evaluate_controls(eval_envs, env_cfg, episodes, run["heldout_seed"], args.quiet)
    new_extra = {"run": run, "env": env_cfg.to_dict(), "base": str(base_path), "base_digest": digest,
                 "controls": controls, "heldout_controls": heldout_controls}

    log_dir = args.logdir or str(out_dir / "runs" / ("rl" if not args.resume else f"rl-resume-{start_step}"))
    if args.resume:
        agent = PPO.load(args.resume, train_env, overrides={**ppo_flags, "total_timesteps": run["timesteps"],
                                                             "progress_bar": not args.quiet}, log_dir=log_dir)
        agent.extra.update(new_extra)
        archive_later_run(out_dir, start_step)  # only now: every check has passed
        print(f"resumed from {args.resume} at step {agent.global_step:,}; training to {run['timesteps']:,}")
    else:
        agent = PPO(train_env, ppo_cfg, log_dir=log_dir, extra=new_extra)
    cfg = agent.config
    baseline_step = start_step if args.resume else None
    print(f"PPO: {run['num_envs']} environments x {cfg.n_steps} steps per rollout, minibatch {cfg.batch_size}, "
          f"{cfg.n_epochs} epochs, lr {cfg.learning_rate:g}; {env_cfg.max_steps} decisions per episode, "
          f"{env_cfg.inner_steps} inner steps of {env_cfg.batch_size}x{assets.seq_len} tokens; logs {log_dir}")

    notes = report_notes(str(base_path), env_cfg, run, episodes, seed)

    def evaluate_agent(trainer) -> "ppo_pkg.EvalResult":
        runs = run_policy_parallel(eval_envs, TrainedPolicy.from_agent(trainer), episodes, seed)
        return runs_to_eval(runs, env_cfg, seed, checkpoint=str(out_dir / f"{trainer.global_step}.pt"))

    saved_at: set = set()

    def save_step(trainer) -> Path:
        path = out_dir / f"{trainer.global_step}.pt"
        if trainer.global_step not in saved_at:  # an evaluation and a periodic save may share a step
            trainer.save(str(path))
            saved_at.add(trainer.global_step)
        return path

    def on_evaluation(trainer, result) -> None:
        trainer.logger.record("eval/reward_lower", result.mean_reward - result.std_reward)
        trainer.logger.record("eval/reward_upper", result.mean_reward + result.std_reward)
        for key in ("phi_mean", "phi_in_band_pct", "c_mean", "final_ppl"):
            trainer.logger.record(f"eval/{key}", result.extra[key])
        save_step(trainer)  # every evaluated step has its checkpoint, with this evaluation in it
        built = rl_report(out_dir, [r.to_dict() for r in trainer.eval_history], controls, baseline_step, env_cfg,
                          thresholds, notes)
        status = next(r["status"] for r in built["rows"] if r["step"] == trainer.global_step)
        flagged[0] = flagged[0] + 1 if "over-fitting" in status else 0
        if args.early_stop and flagged[0] >= args.patience:
            trainer.request_stop(f"over-fitting: {flagged[0]} flagged evaluation(s) in a row")
        tqdm_write(f"step {trainer.global_step:,}: eval {result.mean_reward:+.3f} ± {result.std_reward:.3f} "
                   f"(Φ in band {result.extra['phi_in_band_pct']:.0f}%, {status}); report {out_dir / 'report.md'}",
                   args.quiet)

    flagged = [0]  # consecutive evaluations the report flags as over-fitting (for --early-stop)
    monitor = RolloutMonitor(env_cfg)
    with StopFlag() as stop:
        def on_step(trainer, infos) -> None:
            monitor.observe(infos)
            if stop.requested:
                trainer.request_stop("interrupted")

        def on_update_end(trainer) -> None:
            for tag, value in monitor.pop().items():
                trainer.logger.record(tag, value)

        def on_training_start(trainer) -> None:
            agent.logger.add_custom_scalars({
                "evaluation": {"reward mean ± std": ["Margin", ["eval/mean_reward", "eval/reward_lower",
                                                              "eval/reward_upper"]],
                               "Φ in band (%)": ["Multiline", ["eval/phi_in_band_pct"]]},
                "environment": {"Φ and C": ["Multiline", ["env/phi", "env/consciousness"]],
                                "action mix": ["Multiline", [f"env/action_frac_{m.lower()}" for m in env_cfg.mode_names]],
                                "perplexity": ["Multiline", ["env/perplexity"]]},
            })
            if args.resume and not any(r.step == trainer.global_step for r in trainer.eval_history):
                eval_cb.fire(trainer)  # the baseline needs an evaluation on the same seeds
                trainer.logger.dump(trainer.global_step)

        eval_cb = EvalCallback(None, run["eval_freq"], episodes, seed=seed, best_path=str(out_dir / "best.pt"),
                               evaluator=evaluate_agent)
        callbacks = [FunctionCallback(on_training_start=on_training_start, on_step=on_step, on_update_end=on_update_end),
                     eval_cb, StepCheckpoints(run["save_freq"], save_step),
                     JsonHistoryCallback(str(out_dir / "evaluations.json")), FunctionCallback(on_evaluation=on_evaluation)]
        t0 = time.time()
        try:
            agent.learn(callbacks=callbacks)
        except NonFiniteLoss as e:
            raise UserError(f"{e} inside the environment at step {agent.global_step}; the last good checkpoints "
                            f"are in {out_dir}; lower the environment's lr (--env lr=1e-4)") from None
        interrupted = agent.stop_reason == "interrupted"
        if not interrupted and (not agent.eval_history or agent.eval_history[-1].step != agent.global_step):
            eval_cb.fire(agent)  # the final policy is always evaluated and in the report
            agent.logger.dump(agent.global_step)
        final = save_step(agent)
        agent.close()
    if interrupted:
        print(f"interrupted at step {agent.global_step:,}; checkpoint saved to {final}; continue with "
              f"--resume {final}", file=sys.stderr)
        return EXIT_INTERRUPTED
    evaluations = [r.to_dict() for r in agent.eval_history]
    rec = Report(evaluations, controls, baseline_step, thresholds).build()["recommended"]
    print(f"scoring the recommended checkpoint (step {rec['step']:,}) on the held-out seeds")
    heldout = evaluate_heldout(eval_envs, env_cfg, run, Path(rec["checkpoint"]), heldout_controls)
    built = rl_report(out_dir, evaluations, controls, baseline_step, env_cfg, thresholds, notes, heldout)
    why = f" ({agent.stop_reason})" if agent.stop_reason else ""
    print(f"done: step {agent.global_step:,} in {(time.time() - t0) / 60:.1f} min{why}; best evaluation at step "
          f"{agent.best_eval.step:,} ({agent.best_eval.mean_reward:+.3f}); recommended checkpoint: step "
          f"{rec['step']:,}; on held-out seeds it {built['heldout']['verdict']['text']}; report {out_dir / 'report.md'}")
    return 0


class StepCheckpoints(PeriodicCallback):
    """`save(trainer)` every `every` steps (the RL stage's <step>.pt, shared with its evaluations)."""

    def __init__(self, every: int, save):
        super().__init__(every)
        self.save = save

    def fire(self, trainer) -> None:
        self.save(trainer)


def archive_later_run(out_dir: Path, step: int) -> None:
    """Resuming from step S in a directory where the earlier run went past S: move that run's
    later checkpoints, evaluations and report aside instead of overwriting them."""
    later = sorted((p for p in out_dir.glob("*.pt") if p.stem.isdigit() and int(p.stem) > step), key=lambda p: int(p.stem))
    if not later:
        return
    dest = out_dir / f"superseded-{step}"
    n = 1
    while dest.exists():
        n += 1
        dest = out_dir / f"superseded-{step}-{n}"
    dest.mkdir()
    from ppo import TrainedPolicy
    best = out_dir / "best.pt"
    moved = list(later)
    if best.exists() and TrainedPolicy.load(str(best)).global_step > step:  # the earlier run's best, not this lineage's
        moved.append(best)
    moved += [p for p in (out_dir / name for name in ("evaluations.json", "report.md", "report.json")) if p.exists()]
    for p in moved:
        p.replace(dest / p.name)
    also = ", best.pt" if best in moved else ""
    print(f"the earlier run in {out_dir} went past step {step:,}: moved its {len(later)} later checkpoints "
          f"({later[0].name} ... {later[-1].name}){also}, evaluations and report to {dest}")


def tqdm_write(line: str, quiet: bool) -> None:
    from tqdm import tqdm
    (print if quiet else tqdm.write)(line)


# ----------------------------------------------------------------------------- report stage

def run_report(args: argparse.Namespace) -> int:
    from env import TextSchedulingEnv, load_base, run_policy_parallel
    from env.presets import HELDOUT_SEED
    from ppo import Report, TrainedPolicy

    bad = rl_flag_problems(args)
    if bad:
        raise UserError(f"{', '.join(sorted(set(bad)))} only apply to --stage base")
    torch.set_num_threads(max(args.threads or 1, 1))
    ckpt_dir = Path(args.ckpt_dir or args.out or "ckpt")
    files = sorted((p for p in ckpt_dir.glob("*.pt") if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not files:
        raise UserError(f"no RL checkpoints (<step>.pt) in {ckpt_dir}; train with --stage rl first or pass --ckpt-dir")
    agents = [TrainedPolicy.load(str(p)) for p in files]
    first = agents[-1].extra
    if "run" not in first or "env" not in first:
        raise UserError(f"{files[-1]} is a PPO checkpoint but not one of train.py --stage rl")
    for p, a in zip(files, agents):
        if a.extra.get("base_digest") != first["base_digest"] or a.extra.get("env") != first["env"]:
            raise UserError(f"{p} was trained on another base checkpoint or environment than {files[-1]}; "
                            "keep one run per directory")
    baseline_step = None
    if args.baseline:
        baseline_step = TrainedPolicy.load(args.baseline).global_step
        if baseline_step not in [a.global_step for a in agents]:
            raise UserError(f"--baseline {args.baseline} (step {baseline_step}) is not among the checkpoints in {ckpt_dir}")
    run = first["run"]
    episodes = args.episodes if args.episodes is not None else run["eval_episodes"]
    if episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {episodes}")
    seed = run["eval_seed"]
    from env import EnvConfig
    env_cfg = EnvConfig.from_dict(first["env"])
    base_path = Path(args.base or first["base"])
    if not base_path.is_file():
        raise UserError(f"the base checkpoint {base_path} does not exist; pass its location with --base")
    if file_digest(base_path) != first["base_digest"]:
        raise UserError(f"{base_path} is not the base checkpoint these agents were trained on; pass the original with --base")
    workers = args.workers or run["workers"]
    assets = load_base(base_path, env_cfg)
    envs = [TextSchedulingEnv(assets, env_cfg) for _ in range(max(1, min(workers, episodes)))]
    from tqdm import tqdm
    t0 = time.time()
    evaluations = []
    for p, a in tqdm(list(zip(files, agents)), desc="checkpoints", disable=args.quiet, dynamic_ncols=True):
        runs = run_policy_parallel(envs, a, episodes, seed)
        evaluations.append(runs_to_eval(runs, env_cfg, seed, a.global_step, str(p)).to_dict())
    controls = evaluate_controls(envs, env_cfg, episodes, seed, args.quiet)
    thresholds = make_thresholds(args)
    run = {**run, "eval_episodes": episodes, "heldout_seed": run.get("heldout_seed", HELDOUT_SEED)}
    heldout_controls = first.get("heldout_controls")
    if not heldout_controls or first["run"].get("eval_episodes") != episodes:
        heldout_controls = evaluate_controls(envs, env_cfg, episodes, run["heldout_seed"], args.quiet)
    rec = Report(evaluations, controls, baseline_step, thresholds).build()["recommended"]
    heldout = evaluate_heldout(envs, env_cfg, run, Path(rec["checkpoint"]), heldout_controls)
    built = rl_report(ckpt_dir, evaluations, controls, baseline_step, env_cfg, thresholds,
                      report_notes(str(base_path), env_cfg, run, episodes, seed), heldout)
    print(f"re-evaluated {len(files)} checkpoints and {len(controls)} control policies on {episodes} episodes in "
          f"{(time.time() - t0) / 60:.1f} min; recommended: step {rec['step']:,}; on held-out seeds it "
          f"{built['heldout']['verdict']['text']}; report {ckpt_dir / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # progress lines show up promptly in logs too
    stage = {"base": run_base, "rl": run_rl, "report": run_report}[args.stage]
    return run_cli(lambda: stage(args), (DataError, CheckpointError, AgentCheckpointError, EnvError),
                   os_hint="; check the path and free disk space",
                   interrupted="interrupted before training started; nothing was saved")


if __name__ == "__main__":
    sys.exit(main())

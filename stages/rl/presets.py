"""The RL stage's named setups (`train.py --stage rl --preset NAME`) and `resolve`, the one place
a preset (or a resumed checkpoint's settings) and the command line become typed settings.

Each preset has three parts: `env` (the EnvConfig fields it changes from the library's defaults;
`reward` a dict of the reward's fields), `ppo` (a PPOConfig; the run fills in its length, seed and
threads) and `run` (a RunSettings: the stage's own settings). Command-line flags override any of them; nothing below `resolve` merges dicts.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path

from infinito.presets import PRESETS as BASE_PRESETS
from infinito.presets import snapshot_name
from env import EnvConfig, step_size_modes
from ppo import PPOConfig
from ppo.groups import GROUP_BASELINES

from ..cli import UserError


@dataclass(frozen=True)
class RunSettings:
    """The RL stage's own settings: length, checkpoint and evaluation frequency, episodes per
    evaluation, the evaluation seeds (selection) and the held-out seeds (the report's headline),
    environments and worker threads, and the base stage's file the environment starts from."""
    timesteps: int
    save_freq: int
    eval_freq: int
    eval_episodes: int
    eval_seed: int
    heldout_seed: int
    num_envs: int
    workers: int
    base_file: str
    preset: str | None = None  # the preset the run was made from (the report's advice names it)

    def replace(self, **changes) -> "RunSettings":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSettings":
        """From `to_dict()` (a checkpoint's RunRecord.run)."""
        return cls(**{k: v for k, v in d.items() if k in RUN_FIELDS})


RUN_FIELDS = {f.name for f in dataclasses.fields(RunSettings)}
RUN_KEYS = tuple(f.name for f in dataclasses.fields(RunSettings) if f.name not in ("base_file", "preset"))  # flags set these


def _snapshot(preset: str) -> str:
    """The file the base stage's preset of the same name keeps as the RL stage's start."""
    return snapshot_name(BASE_PRESETS[preset]["train"]["snapshot_at"])

# The variants where the best schedule needs foresight (docs/rl.md, "Variants"), as --env
# settings any preset can take: `final` prices only the model the episode ends with; `lr` adds
# step sizes to the modes — TEXT and MIXED at STEP_SIZES x the inner learning rate, chosen
# from bench/schedule_probe.py's measurement before any agent was trained (docs/studies.md,
# "Schedules that need foresight").
STEP_SIZES = (0.2, 0.5, 1.0)
VARIANTS = {
    "final": dict(reward=dict(name="final")),
    "lr": dict(modes=[list(m) for m in step_size_modes({"TEXT": (1.0, 0.0), "MIXED": (0.5, 0.5)}, STEP_SIZES)],
               reward=dict(name="final")),
}

# the demo study on the built-in corpus (docs/studies.md, "The first study at demo scale"): ~26
# minutes on 2 CPU cores, 10 of them scoring the controls (bench/README.md, "Spending decisions"). The environment starts from the base stage's snapshot at step 100
# (held-out perplexity ~15, Φ ~7.2, above its band), where an episode of text training still
# lowers perplexity by ~20 %. Cheaper decisions than the study's (3 inner steps of 4 x 64 tokens,
# 25 per episode) so that ten thousand decisions fit, at a higher inner learning rate so that one
# decision moves Φ visibly. gamma 1: the progress reward's perplexity gains telescope over the
# episode (where the model ends is what counts), and only an undiscounted return keeps that true —
# with gamma < 1 a decision that raises perplexity now and lets it fall later is penalised even
# when the episode's net gain is the same. A first run with gamma 0.9 collapsed onto always-TEXT
# (docs/studies.md, "The first study at demo scale"). Episodes are 25 decisions and end in a
# termination the observation announces (time_left), so the undiscounted return is finite and well
# defined. Checkpoints are evaluated every 2,048 decisions (5 evaluations): replayed on a recorded demo
# run evaluated every 1,024, half as many evaluations recommend the same checkpoint (bench/README.md,
# "Spending decisions").
DEMO = {
    "env": dict(max_steps=25, inner_steps=3, seq_len=64),
    "ppo": PPOConfig(n_steps=32, minibatch_size=64, n_epochs=10, gamma=1.0),
    "run": RunSettings(timesteps=10_240, save_freq=2048, eval_freq=2048, eval_episodes=30, eval_seed=10_000,
                       heldout_seed=20_000, num_envs=8, workers=2, base_file=_snapshot("demo")),
}

RL_PRESETS: dict[str, dict] = {
    # seconds on 2 CPU cores, on a `--preset tiny` base checkpoint; used by the tests
    "tiny": {
        "env": dict(max_steps=6, inner_steps=1, inner_batch_size=2, seq_len=32, measurement_batch_size=2,
                    inner_lr=2e-4),
        "ppo": PPOConfig(n_steps=8, minibatch_size=16, n_epochs=2),
        "run": RunSettings(timesteps=64, save_freq=32, eval_freq=32, eval_episodes=2, eval_seed=10_000,
                           heldout_seed=20_000, num_envs=2, workers=2, base_file=_snapshot("tiny")),
    },
    "demo": DEMO,
    # the demo study on each variant: the demo preset with the variant's modes and reward
    **{f"demo-{name}": {"env": {**DEMO["env"], **variant}, "ppo": DEMO["ppo"], "run": DEMO["run"]}
       for name, variant in VARIANTS.items()},
    # the study's setup: PPO's default config (docs/ppo.md), the study's environment (5 inner steps, 50-step
    # episodes, batch 4 x 128 tokens), checkpoints and evaluations every 2,000 steps
    "paper": {
        "env": dict(inner_lr=2e-4),
        "ppo": PPOConfig(),
        "run": RunSettings(timesteps=40_000, save_freq=2000, eval_freq=2000, eval_episodes=5, eval_seed=10_000,
                           heldout_seed=20_000, num_envs=1, workers=1, base_file=_snapshot("paper")),
    },
}


def base_preset(rl_preset: str) -> str:
    """The base-stage preset whose snapshot the RL preset starts from ("demo-lr" -> "demo")."""
    file = RL_PRESETS[rl_preset]["run"].base_file
    return next(name for name in BASE_PRESETS if _snapshot(name) == file)




# PPOConfig fields the RL stage takes as flags, named as the fields are (--learning-rate, --minibatch-size:
# the base stage's --lr and --batch-size are other settings)
PPO_FLAGS = ("learning_rate", "minibatch_size", "clip_range", "ent_coef", "vf_coef", "max_grad_norm", "target_kl",
             "clip_range_vf", "n_steps", "n_epochs", "gamma", "gae_lambda", "anneal_lr", "anneal_clip_range",
             "group_size", "group_baseline")
CHOICE_PPO_FLAGS = {"group_baseline": GROUP_BASELINES}
MAX_ENVS = 1024  # environments trained side by side
# the reward of a config that names none: EnvConfig's default's name (read from its class, not built)
DEFAULT_REWARD = next(f for f in fields(EnvConfig) if f.name == "reward").default_factory.name


@dataclass
class Settings:
    """An RL run's settings, resolved: what the environment, PPO and the stage itself read."""
    env: EnvConfig
    ppo: PPOConfig
    run: RunSettings


def resolve(start: dict, flags, base_path: Path, run: dict | None = None, ppo: dict | None = None) -> Settings:
    """`start` ({"env": dict, "ppo": PPOConfig, "run": RunSettings}: a preset, or a resumed checkpoint's)
    with the command line's `flags` on top (run keys, PPOConfig fields, --env KEY=VALUE, --device),
    then what the stage sets itself (`run`, `ppo`: e.g. a resumed run's length, the seed). The PPO
    config's planned end is the run's timesteps."""
    settings = start["run"].replace(**{**run_flags(flags), **(run or {})})
    env = env_config(start["env"], parse_env_overrides(flags.env), flags.device, base_path)
    try:
        ppo_cfg = start["ppo"].replace(**ppo_flags(flags), total_timesteps=settings.timesteps,
                                       progress_bar=not flags.quiet, **(ppo or {}))
    except ValueError as e:
        raise UserError(str(e)) from None
    return Settings(env, ppo_cfg, settings)


def run_flags(flags) -> dict:
    """The run settings given on the command line, checked."""
    given = {k: getattr(flags, k) for k in RUN_KEYS if getattr(flags, k) is not None}
    for k, v in given.items():
        if v < (0 if k in ("eval_seed", "heldout_seed") else 1):
            raise UserError(f"--{k.replace('_', '-')} must be >= {0 if 'seed' in k else 1}, got {v}")
    if given.get("num_envs", 1) > MAX_ENVS:  # each holds its own model and optimiser
        raise UserError(f"--num-envs must be at most {MAX_ENVS}, got {given['num_envs']}")
    return given


def ppo_flags(flags) -> dict:
    """The PPOConfig fields given on the command line."""
    return {k: getattr(flags, k) for k in PPO_FLAGS if getattr(flags, k) is not None}


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


def env_config(base: dict, overrides: dict, device: str, base_path: Path | None) -> EnvConfig:
    """An environment config: `base` (a preset's or a checkpoint's), the --env overrides, --device,
    and the token cache beside the base checkpoint unless set. Scripts that build a preset's
    environment (bench/) call it as the RL stage does."""
    d = {**base, **{k: v for k, v in overrides.items() if k != "reward"}}
    d["reward"] = merge_reward(base.get("reward", {}), overrides.get("reward", {}))
    if device != "auto":
        d["device"] = device
    if base_path is not None:
        d["cache_dir"] = d.get("cache_dir") or str(Path(base_path).parent / "cache")
    return EnvConfig.from_dict(d)


def preset_env(preset: str, base_path: Path | None, **changes) -> EnvConfig:
    """A preset's environment on `base_path` (None: not tied to one yet), with `changes` (EnvConfig
    fields) on top."""
    return env_config(RL_PRESETS[preset]["env"], changes, "auto", base_path)


def merge_reward(base: dict, given: dict) -> dict:
    """The reward's dict: `given` (the --env reward.* overrides) over `base`'s, or, when `given`
    names another reward than `base`, that reward's own defaults with only `given` on top (the
    old reward's constants, e.g. progress's w_out, mean nothing to it)."""
    old = base.get("name", DEFAULT_REWARD)
    if given.get("name", old) != old:
        return dict(given)
    return {**base, "name": old, **given}

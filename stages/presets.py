"""Named setups for the RL stage (`train.py --stage rl --preset NAME`).

Each preset has three parts: `env` (EnvConfig fields; `reward` a dict of
RewardConfig fields, merged with `--env` overrides before the config is built), `ppo`
(a PPOConfig; the run fills in its length, seed and threads) and `run` (the stage's own
settings: timesteps, checkpoint and evaluation frequency, episodes per
evaluation, the evaluation seeds (selection) and the held-out seeds (the
report's headline), environments, worker threads, and the base stage's file
the environment starts from, in the output folder). Command-line flags
override any of them.
"""
from __future__ import annotations

from infinito.presets import PRESETS as BASE_PRESETS
from infinito.presets import snapshot_name
from env import step_size_modes
from ppo import PPOConfig


def _snapshot(preset: str) -> str:
    """The file the base stage's preset of the same name keeps as the RL stage's start."""
    return snapshot_name(BASE_PRESETS[preset]["train"]["snapshot_at"])

# The presets' reward: text progress against Φ's health (env/reward.py, `progress`). The seed
# study's reward v2 stays selectable with --env reward.name=v2.
PROGRESS = dict(name="progress")

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
    "env": dict(max_steps=25, inner_steps=3, inner_batch_size=4, seq_len=64, inner_lr=6e-4, reward=PROGRESS),
    "ppo": PPOConfig(n_steps=32, minibatch_size=64, n_epochs=10, gamma=1.0),
    "run": dict(timesteps=10_240, save_freq=2048, eval_freq=2048, eval_episodes=30, eval_seed=10_000,
                heldout_seed=20_000, num_envs=8, workers=2, base_file=_snapshot("demo")),
}

RL_PRESETS: dict[str, dict] = {
    # seconds on 2 CPU cores, on a `--preset tiny` base checkpoint; used by the tests
    "tiny": {
        "env": dict(max_steps=6, inner_steps=1, inner_batch_size=2, seq_len=32, measurement_batch_size=2,
                    reward=PROGRESS),
        "ppo": PPOConfig(n_steps=8, minibatch_size=16, n_epochs=2),
        "run": dict(timesteps=64, save_freq=32, eval_freq=32, eval_episodes=2, eval_seed=10_000,
                    heldout_seed=20_000, num_envs=2, workers=2, base_file=_snapshot("tiny")),
    },
    "demo": DEMO,
    # the demo study on each variant: the demo preset with the variant's modes and reward
    **{f"demo-{name}": {"env": {**DEMO["env"], **variant}, "ppo": DEMO["ppo"], "run": DEMO["run"]}
       for name, variant in VARIANTS.items()},
    # the study's setup: PPO's default config (docs/ppo.md), the study's environment (5 inner steps, 50-step
    # episodes, batch 4 x 128 tokens), checkpoints and evaluations every 2,000 steps
    "paper": {
        "env": dict(reward=PROGRESS),
        "ppo": PPOConfig(),
        "run": dict(timesteps=40_000, save_freq=2000, eval_freq=2000, eval_episodes=5, eval_seed=10_000,
                    heldout_seed=20_000, num_envs=1, workers=1, base_file=_snapshot("paper")),
    },
}


def base_preset(rl_preset: str) -> str:
    """The base-stage preset whose snapshot the RL preset starts from ("demo-lr" -> "demo")."""
    file = RL_PRESETS[rl_preset]["run"]["base_file"]
    return next(name for name in BASE_PRESETS if _snapshot(name) == file)


RUN_KEYS = ("timesteps", "save_freq", "eval_freq", "eval_episodes", "eval_seed", "heldout_seed", "num_envs", "workers")

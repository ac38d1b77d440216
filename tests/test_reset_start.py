"""An episode starts from a state training could reach: at every preset that ships, the reset's
inner step never leaves the model far worse than the snapshot it starts from.

The tiny preset used to take its snapshot on a one-step loss spike (ten steps into the peak
learning rate), and the reset's first AdamW step then tripled the held-out perplexity on about
one seed in six: the first decisions earned +50 to +100 for undoing damage no action caused.
The paper preset's snapshot takes about 45 minutes of CPU to train; bench/reset_check.py
measures it the same way (docs/env.md, "Where an episode starts").
"""
import pytest

import train
from env import EnvConfig, TextSchedulingEnv, reset_ratios
from infinito.presets import PRESETS, snapshot_name
from stages.rl.presets import RL_PRESETS, base_preset

SEEDS = range(20_000, 20_060)  # the presets' held-out seeds
LIMIT = 1.2                    # a reset may not measure above 1.2 x the snapshot's own perplexity


@pytest.mark.parametrize("rl_preset", ["tiny", "demo"])
def test_no_reset_wrecks_the_shipped_snapshot(tmp_path, rl_preset, one_torch_thread):
    preset = base_preset(rl_preset)
    step = PRESETS[preset]["train"]["snapshot_at"]
    # the snapshot as the preset's base stage writes it (the schedule does not depend on --stop-at)
    assert train.main(["--stage", "base", "--preset", preset, "--quiet", "--out", str(tmp_path),
                       "--stop-at", str(step), "--threads", "1"]) == 0
    env = TextSchedulingEnv(tmp_path / snapshot_name(step), EnvConfig.from_dict(RL_PRESETS[rl_preset]["env"]))
    ratios = reset_ratios(env, SEEDS)
    worst = int(ratios.argmax())
    assert ratios.max() <= LIMIT, f"seed {SEEDS[worst]}: reset at {ratios.max():.2f}x the snapshot's perplexity"


def test_measure_start_is_the_state_a_reset_trains_from(base_dir, one_torch_thread):
    """Measuring the start needs no reset and leaves the environment waiting for one."""
    env = TextSchedulingEnv(base_dir / "base-step20.pt", EnvConfig.from_dict(RL_PRESETS["tiny"]["env"]))
    first = env.measure_start()
    env.reset(seed=1)
    env.step(0)
    assert env.measure_start() == first  # the trained weights and written memory are gone again
    with pytest.raises(Exception, match="call reset"):
        env.step(0)

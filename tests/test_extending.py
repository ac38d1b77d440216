"""docs/extending.md's two recipes, followed step by step: a mode is one line in env/config.py's
MODES; a reward is a Reward dataclass registered in env/reward.py's REWARDS."""
import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest

import env.config
import env.reward
import train
from common.policies import control_policies
from env import EnvConfig, Reward, RolloutMonitor, TextSchedulingEnv, load_base, rescore, run_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHORT = dict(max_steps=3, inner_steps=1, inner_batch_size=2, seq_len=32, measurement_batch_size=2)


def test_how_to_add_a_mode(monkeypatch, base_dir):
    # the recipe: one more tuple in MODES
    monkeypatch.setattr(env.config, "MODES", env.config.MODES + (("GENTLE", 1.0, 0.2),))
    cfg = EnvConfig(**SHORT)
    assert cfg.mode_names == ("TEXT", "PHI", "MIXED", "GENTLE")
    e = TextSchedulingEnv(load_base(base_dir / "base.pt", cfg), cfg)
    assert e.action_space.n == 4
    e.reset(seed=0)
    *_, info = e.step(3)
    assert info["mode"] == "GENTLE"
    assert list(control_policies(len(cfg.modes), cfg.mode_names)) == ["random", "always TEXT", "always PHI", "always MIXED", "always GENTLE"]
    monitor = RolloutMonitor(cfg)
    monitor.observe({"env_infos": [info]})
    assert monitor.pop()["env/action_frac_gentle"] == 1.0


@dataclass
class SteadyReward(Reward):
    """docs/extending.md's example: perplexity gained per decision, minus Φ's movement."""
    name: ClassVar[str] = "steady"
    terms: ClassVar[tuple] = ("gain", "calm")
    measurements: ClassVar[tuple] = ("phi", "ppl")

    w_calm: float = 1.0
    phi_low: float = 3.0
    phi_high: float = 6.0
    zero_first_step: bool = False

    def term_values(self, prev: dict, cur: dict) -> dict:
        return {"gain": 100.0 * math.log(prev["ppl"] / cur["ppl"]),
                "calm": -self.w_calm * abs(cur["phi"] - prev["phi"])}


def test_how_to_swap_the_reward(monkeypatch, base_dir, tmp_path):
    # the recipe: register the dataclass in REWARDS, choose it with --env reward.name=steady
    monkeypatch.setitem(env.reward.REWARDS, "steady", SteadyReward)
    cfg = EnvConfig(**SHORT, reward={"name": "steady", "w_calm": 2.0})
    assert isinstance(cfg.reward, SteadyReward) and cfg.reward.w_calm == 2.0
    assert EnvConfig.from_dict(cfg.to_dict()).reward == cfg.reward  # travels in checkpoints
    runs = run_policy(TextSchedulingEnv(load_base(base_dir / "base.pt", cfg), cfg), control_policies(len(cfg.modes), cfg.mode_names)["always PHI"], 2)
    assert set(runs.traces[0]["terms"]) == {"gain", "calm"}
    assert runs.traces[0]["terms"]["calm"] < 0  # Φ training moves Φ
    assert rescore(runs, cfg.reward).returns == pytest.approx(runs.returns)
    assert train.main(["--stage", "rl", "--preset", "tiny", "--quiet", "--base", str(base_dir / "base-step20.pt"),
                       "--out", str(tmp_path), "--timesteps", "32", "--env", "reward.name=steady"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert any("steady" in note for note in report["notes"])
    assert (tmp_path / "32.pt").is_file()

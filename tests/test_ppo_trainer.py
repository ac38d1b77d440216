"""The PPO trainer end to end: the update, determinism, masking, checkpoints and
exact resume, callbacks, logging."""
import ast
import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from common.spaces import Box, Discrete
from ppo import (PPO, CheckpointCallback, CheckpointError, EvalCallback, EvalResult, FunctionCallback,
                 JsonHistoryCallback, PPOConfig, StopOnNoImprovement, StopOnRewardThreshold)
from stages.report.overfit import StopOnOverfit, Thresholds  # the application's report, used on a cart-pole agent
from ppo.buffer import RolloutBuffer
from ppo.cartpole import CartPoleEnv, CartPoleVecEnv


def small_config(**overrides) -> PPOConfig:
    base = dict(total_timesteps=512, n_steps=64, minibatch_size=32, n_epochs=2, pi_hidden=(32, 32),
                vf_hidden=(32, 32), progress_bar=False, seed=0)
    base.update(overrides)
    return PPOConfig(**base)


def params_equal(a: PPO, b: PPO) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.policy.parameters(), b.policy.parameters()))


def stop_at(step: int) -> FunctionCallback:
    return FunctionCallback(on_update_end=lambda tr: tr.request_stop("test") if tr.global_step >= step else None)


class EpisodeEnv:
    """Three-step episodes, reward 1, ending by termination or by truncation."""

    def __init__(self, truncate: bool):
        self.truncate = truncate
        self.observation_space = Box(-1, 1, (2,))
        self.action_space = Discrete(2)
        self.t = 0

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.array([0.0, 1.0], np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t == 3
        obs = np.array([self.t / 3, 1.0], np.float32)
        return obs, 1.0, done and not self.truncate, done and self.truncate, {}


@pytest.mark.parametrize("truncate", [False, True])
def test_trainer_bootstraps_truncation_but_not_termination(truncate):
    agent = PPO(lambda: EpisodeEnv(truncate), small_config(n_steps=6, normalize_obs=False, gamma=0.9))
    agent._reset_envs(0)
    buf = RolloutBuffer(6, 1, (2,), 2, with_masks=False)
    agent._collect_rollout(buf, [])
    batch = agent._compute_advantages(buf)
    with torch.no_grad():
        v_final = agent.policy.value(torch.tensor([[1.0, 1.0]])).item()
    ends = [2, 5]  # last step of each episode
    expected = 1.0 + 0.9 * v_final if truncate else 1.0
    for t in ends:
        assert batch["returns"][t].item() == pytest.approx(expected, rel=1e-5)
    assert buf.truncated[ends, 0].all() == truncate and buf.terminated[ends, 0].all() != truncate


def test_probability_ratio_is_one_on_the_first_minibatch():
    # One epoch of one minibatch: the logged KL and clip fraction come from the first
    # minibatch alone, before any step. The old log-probs were stored at acting time
    # (batches of N), the new ones come from a batch of B: equal up to float rounding.
    agent = PPO([CartPoleEnv] * 2, small_config(total_timesteps=128, minibatch_size=128, n_epochs=1))
    agent.learn()
    assert agent.logger.latest["train/approx_kl"] < 1e-10
    assert agent.logger.latest["train/clip_fraction"] == 0.0
    # and directly, on a random subset of a fresh rollout
    batch = agent.collect_batch()
    idx = torch.randperm(128)[:32]
    logp, _, values = agent.policy.evaluate_actions(batch["obs"][idx], batch["actions"][idx])
    torch.testing.assert_close(logp, batch["old_logp"][idx], rtol=0, atol=1e-6)
    torch.testing.assert_close(values, batch["old_values"][idx], rtol=1e-5, atol=1e-6)
    assert batch["old_logp"].unique().numel() > 10  # stored per step, not one constant


def test_updates_clip_and_schedules_anneal_from_the_global_step():
    cfg = small_config(learning_rate=0.02, n_epochs=8, anneal_lr=True, anneal_clip_range=True, total_timesteps=512)
    agent = PPO([CartPoleEnv] * 2, cfg)
    agent.learn()
    steps = [step for step, _ in agent.logger.history]
    assert steps == [128, 256, 384, 512]
    for step, tags in agent.logger.history:
        start = step - 128  # schedule position is taken when the rollout starts
        assert tags["train/learning_rate"] == pytest.approx(0.02 * (1 - start / 512))
        assert tags["train/clip_range"] == pytest.approx(0.2 * (1 - start / 512))
    assert max(tags["train/clip_fraction"] for _, tags in agent.logger.history) > 0.05
    assert all(np.isfinite(list(tags.values())).all() for _, tags in agent.logger.history)


def test_target_kl_stops_the_update_early():
    agent = PPO([CartPoleEnv] * 2, small_config(learning_rate=0.05, n_epochs=10, target_kl=1e-4,
                                                   total_timesteps=256))
    agent.learn()
    assert any(tags["train/kl_early_stop"] == 1.0 for _, tags in agent.logger.history)
    assert min(tags["train/n_minibatch_updates"] for _, tags in agent.logger.history) < 40


def test_same_seed_same_parameters_and_another_seed_differs():
    runs = [PPO([CartPoleEnv] * 2, small_config(seed=s)).learn() for s in (3, 3, 4)]
    assert params_equal(runs[0], runs[1])
    assert not params_equal(runs[0], runs[2])


def test_evaluation_callbacks_do_not_change_the_training_run(tmp_path):
    plain = PPO([CartPoleEnv] * 2, small_config()).learn()
    evaluated = PPO([CartPoleEnv] * 2, small_config())
    evaluated.learn(callbacks=[EvalCallback(CartPoleEnv, every=128, n_episodes=2, deterministic=False, seed=5)])
    assert len(evaluated.eval_history) == 4
    assert params_equal(plain, evaluated)
    # frozen normaliser: evaluating again changes nothing
    before = evaluated.obs_normalizer.state_dict()["rms"]["mean"].clone()
    r1 = evaluated.evaluate(CartPoleEnv, n_episodes=3, deterministic=False, seed=9)
    r2 = evaluated.evaluate(CartPoleEnv, n_episodes=3, deterministic=False, seed=9)
    assert r1.episode_returns == r2.episode_returns
    assert torch.equal(evaluated.obs_normalizer.state_dict()["rms"]["mean"], before)


def test_masked_actions_are_never_taken():
    taken = []

    class Recording(CartPoleEnv):
        def step(self, action):
            taken.append(action)
            return super().step(action)

    agent = PPO([lambda: Recording(masked_action=0)] * 2, small_config(total_timesteps=256))
    agent.learn()
    assert set(taken) == {1}
    assert all(torch.isfinite(p).all() for p in agent.policy.parameters())
    result = agent.evaluate(lambda: CartPoleEnv(masked_action=1), n_episodes=2)
    assert result.mean_reward > 0 and result.action_counts[1] == 0


def test_learns_cart_pole_quickly():
    cfg = PPOConfig(total_timesteps=24_576, n_steps=256, minibatch_size=512, n_epochs=4, progress_bar=False, seed=1)
    agent = PPO(CartPoleVecEnv(8), cfg).learn()
    assert agent.evaluate([CartPoleEnv() for _ in range(4)], n_episodes=8).mean_reward > 150  # random policy: ~22


def test_checkpoint_round_trip(tmp_path):
    agent = PPO([CartPoleEnv] * 2, small_config(normalize_reward=True), extra={"env": {"name": "cartpole"}})
    agent.learn(callbacks=[EvalCallback(CartPoleEnv, every=256, n_episodes=2)])
    path = tmp_path / "a.pt"
    agent.save(str(path), extra={"note": "x"})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("format_version", "kind", "config", "policy", "optimizer", "obs_normalizer", "reward_scaler",
                "rng", "global_step", "schedule", "extra", "evaluations"):
        assert key in raw
    assert raw["kind"] == "ppo-agent" and raw["config"]["n_steps"] == 64
    assert set(raw["rng"]) >= {"python", "numpy", "torch", "cuda", "trainer"}

    loaded = PPO.load(str(path), [CartPoleEnv] * 2)
    assert params_equal(agent, loaded)
    assert loaded.config == agent.config and loaded.global_step == agent.global_step == 512
    assert loaded.extra == {"env": {"name": "cartpole"}, "note": "x"}
    saved_adam, loaded_adam = agent.optimizer.state_dict()["state"][0], loaded.optimizer.state_dict()["state"][0]
    assert all(torch.equal(saved_adam[k], loaded_adam[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert torch.equal(agent.obs_normalizer.rms.state_dict()["var"], loaded.obs_normalizer.rms.state_dict()["var"])
    assert loaded.reward_scaler.rms.count == agent.reward_scaler.rms.count
    assert [r.to_dict() for r in loaded.eval_history] == [r.to_dict() for r in agent.eval_history]
    assert loaded.best_eval.to_dict() == agent.best_eval.to_dict()
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_array_equal(agent.predict(obs), loaded.predict(obs))


@pytest.mark.parametrize("env_factory", [lambda: [CartPoleEnv] * 2, lambda: CartPoleVecEnv(2)])
def test_resumed_run_equals_uninterrupted_run_bit_for_bit(tmp_path, env_factory):
    cfg = small_config(total_timesteps=512, anneal_lr=True, anneal_clip_range=True, normalize_reward=True,
                       clip_range_vf=0.5)
    straight = PPO(env_factory(), cfg).learn()  # 4 updates

    first = PPO(env_factory(), cfg)
    first.learn(callbacks=[stop_at(256), CheckpointCallback(every=256, path=str(tmp_path / "ckpt" / "{step}.pt"))])
    assert first.global_step == 256 and os.path.exists(tmp_path / "ckpt" / "256.pt")
    del first
    resumed = PPO.load(str(tmp_path / "ckpt" / "256.pt"), env_factory())
    resumed.learn()  # 2 more updates

    assert resumed.global_step == straight.global_step == 512 and resumed.n_updates == 4
    assert params_equal(straight, resumed)
    assert torch.equal(straight.obs_normalizer.state_dict()["rms"]["mean"],
                       resumed.obs_normalizer.state_dict()["rms"]["mean"])
    last_straight = {k: v for k, v in straight.logger.history[-1][1].items() if not k.startswith("time/")}
    last_resumed = {k: v for k, v in resumed.logger.history[-1][1].items() if not k.startswith("time/")}
    assert last_straight == last_resumed


def logged_numbers(agent: PPO) -> dict:
    """The last update's logged numbers, without the wall-clock ones."""
    return {k: v for k, v in agent.logger.history[-1][1].items() if not k.startswith("time/")}


@pytest.mark.parametrize("into", ["fresh", "used"])
def test_state_dict_loaded_into_another_agent_continues_the_uninterrupted_run(into):
    """In memory, no file: the state at step 256 loaded into a fresh agent, or into one that has
    trained further on its own (its counters, episodes, evaluations, normalisers and RNGs must all
    be replaced), trains on to the uninterrupted run's numbers bit for bit."""
    cfg = small_config(total_timesteps=512, anneal_lr=True, anneal_clip_range=True, normalize_reward=True)
    straight = PPO(CartPoleVecEnv(2), cfg).learn()
    first = PPO(CartPoleVecEnv(2), cfg)
    first.learn(callbacks=[stop_at(256), EvalCallback(CartPoleEnv, every=128, n_episodes=2)])
    state = copy.deepcopy(first.state_dict())  # its tensors are first's own, and first trains on
    first.learn()
    other = PPO(CartPoleVecEnv(2), cfg)
    if into == "used":
        other.learn(callbacks=[stop_at(384), EvalCallback(CartPoleEnv, every=384, n_episodes=1, seed=3)])
    other.load_state_dict(state)
    assert other.global_step == 256 and [r.step for r in other.eval_history] == [128, 256]
    other.learn()
    assert other.n_updates == straight.n_updates == 4
    assert params_equal(other, straight) and params_equal(first, straight)
    assert logged_numbers(other) == logged_numbers(straight)
    assert list(other.recent_episodes) == list(straight.recent_episodes)
    assert other.best_eval is not None and other.best_eval.step in (128, 256)


def test_the_state_of_an_untrained_agent_starts_a_used_one_over():
    cfg = small_config(total_timesteps=256)
    straight = PPO([CartPoleEnv] * 2, cfg).learn()
    used = PPO([CartPoleEnv] * 2, cfg)
    state = copy.deepcopy(used.state_dict())  # before the first rollout: no environments to continue
    used.learn(callbacks=[stop_at(128)])
    used.load_state_dict(state)
    used.learn()
    assert used.global_step == 256 and params_equal(used, straight)
    assert logged_numbers(used) == logged_numbers(straight)


def test_load_state_dict_refuses_another_network_grouping_or_environment():
    state = PPO([CartPoleEnv] * 2, small_config()).state_dict()
    with pytest.raises(ValueError, match="pi_hidden"):
        PPO([CartPoleEnv] * 2, small_config(pi_hidden=(8,))).load_state_dict(state)
    with pytest.raises(ValueError, match="group_size"):
        PPO([CartPoleEnv] * 2, small_config(group_size=2)).load_state_dict(state)

    class Wide(CartPoleEnv):
        def __init__(self):
            super().__init__()
            self.observation_space = Box(-1, 1, (5,))
    with pytest.raises(ValueError, match="observations"):
        PPO([Wide] * 2, small_config()).load_state_dict(state)


def test_collect_batch_then_update_is_one_iteration_of_learn():
    cfg = small_config(total_timesteps=256)  # constant rate and clip: learn's schedule sets nothing new
    learned = PPO([CartPoleEnv] * 2, cfg).learn()
    stepped = PPO([CartPoleEnv] * 2, cfg)
    for _ in range(2):
        stepped.update(stepped.collect_batch())
    assert stepped.global_step == learned.global_step == 256 and stepped.n_updates == learned.n_updates == 2
    assert params_equal(stepped, learned)


def test_only_the_trainer_touches_ppo_s_private_attributes():
    """checkpoint.py goes through state_dict/load_state_dict and the benchmarks through
    collect_batch/update (their behaviour: the tests above); this keeps every other module of
    ppo/, stages/ and bench/ from reaching past them again."""
    agent = PPO(CartPoleEnv, small_config())
    private = {n for n in {*dir(PPO), *vars(agent)} if n.startswith("_") and not n.startswith("__")}
    assert {"_obs", "_ep_return", "_reset_envs", "_update"} <= private
    root = Path(__file__).resolve().parents[1]
    files = [p for d in ("ppo", "stages", "bench") for p in sorted((root / d).rglob("*.py")) if p.name != "trainer.py"]
    assert {root / "ppo" / "checkpoint.py", root / "stages" / "rl" / "stage.py"} <= set(files)
    found = [f"{p.relative_to(root)}:{node.lineno}: {ast.unparse(node)}"
             for p in files for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Attribute) and node.attr in private
             and not (isinstance(node.value, ast.Name) and node.value.id == "self")]
    assert found == []


def test_resume_without_env_snapshot_resets_envs_but_continues_schedules(tmp_path):
    class NoSnapshot:  # the vector-env contract without the optional get_state/set_state
        def __init__(self):
            self.inner = CartPoleVecEnv(2)
            self.num_envs = 2
            self.observation_space, self.action_space = self.inner.observation_space, self.inner.action_space

        def reset(self, seed=None, options=None):
            return self.inner.reset(seed=seed)

        def step(self, actions):
            return self.inner.step(actions)

    cfg = small_config(total_timesteps=512, anneal_lr=True)
    straight = PPO(NoSnapshot(), cfg).learn()
    first = PPO(NoSnapshot(), cfg)
    first.learn(callbacks=[stop_at(256)])
    first.save(str(tmp_path / "256.pt"))
    resumed = PPO.load(str(tmp_path / "256.pt"), NoSnapshot())
    resumed.learn()
    assert resumed.global_step == 512 and resumed.n_updates == 4
    lrs = [tags["train/learning_rate"] for _, tags in resumed.logger.history]
    assert lrs == [tags["train/learning_rate"] for _, tags in straight.logger.history[2:]]
    assert not params_equal(straight, resumed)  # fresh episodes: not the same run


@pytest.mark.parametrize("how", ["load", "learn"])
def test_a_new_total_on_resume_continues_the_annealing_without_a_jump(tmp_path, how):
    """lr 0.02 annealed over 512 steps, stopped at 256 (lr 0.01), continued to 1024: the rate
    goes on from 0.01 and falls linearly to 0 at 1024 (before the fix it jumped to 0.015)."""
    lr0 = 0.02
    cfg = small_config(total_timesteps=512, learning_rate=lr0, anneal_lr=True, anneal_clip_range=True)
    first = PPO([CartPoleEnv] * 2, cfg)
    first.learn(callbacks=[stop_at(256)])
    before_save = first.current_schedule()
    last_logged = first.logger.history[-1][1]["train/learning_rate"]  # the rollout from 128 to 256
    if how == "load":
        first.save(str(tmp_path / "256.pt"))
        agent = PPO.load(str(tmp_path / "256.pt"), [CartPoleEnv] * 2, config=cfg.replace(total_timesteps=1024))
        assert agent.optimizer.param_groups[0]["lr"] == pytest.approx(before_save[0], rel=1e-12)
        agent.learn(callbacks=[stop_at(640)])
        logged = dict(agent.logger.history)
        # The new line's start is in the checkpoint: a second resume stays on it.
        agent.save(str(tmp_path / "640.pt"))
        schedule = torch.load(tmp_path / "640.pt", weights_only=True)["schedule"]
        assert (schedule["start_step"], schedule["start_lr_fraction"]) == (256, pytest.approx(0.5))
        again = PPO.load(str(tmp_path / "640.pt"), [CartPoleEnv] * 2)
        assert again.current_schedule() == agent.current_schedule()
        agent = again.learn()
        logged.update(agent.logger.history)
    else:
        agent = first.learn(total_timesteps=1024)
        logged = dict(agent.logger.history)
    assert agent.global_step == 1024 and before_save == pytest.approx((lr0 / 2, 0.2 / 2))
    logged = {step: tags for step, tags in logged.items() if step > 256}
    assert sorted(logged) == [384, 512, 640, 768, 896, 1024]
    first_after = logged[384]["train/learning_rate"]
    assert first_after == pytest.approx(before_save[0])
    assert last_logged - first_after == pytest.approx(lr0 * 128 / 512)  # one update's annealing
    for step, tags in logged.items():
        left = (1024 - (step - 128)) / (1024 - 256)  # the schedule is taken when the rollout starts
        assert tags["train/learning_rate"] == pytest.approx(lr0 / 2 * left)
        assert tags["train/clip_range"] == pytest.approx(0.2 / 2 * left)
    assert agent.current_schedule() == (0.0, 0.0)


def test_overridden_learning_rate_is_the_one_used(tmp_path):
    cfg = small_config(total_timesteps=256)
    agent = PPO([CartPoleEnv] * 2, cfg)
    agent.learn()
    agent.save(str(tmp_path / "a.pt"))

    frozen = PPO.load(str(tmp_path / "a.pt"), [CartPoleEnv] * 2, config=cfg.replace(learning_rate=0.0,
                                                                                    total_timesteps=512))
    assert frozen.optimizer.param_groups[0]["lr"] == 0.0
    before = [p.detach().clone() for p in frozen.policy.parameters()]
    frozen.learn()
    assert frozen.global_step == 512
    assert all(torch.equal(a, b) for a, b in zip(before, frozen.policy.parameters()))  # lr 0: no change
    assert all(tags["train/learning_rate"] == 0.0 for _, tags in frozen.logger.history)

    # Annealing switched on at the resume: no annealing had happened, so it starts from
    # the full (overridden) rate here and reaches 0 at the new total.
    faster = PPO.load(str(tmp_path / "a.pt"), [CartPoleEnv] * 2,
                      config=cfg.replace(learning_rate=1e-3, anneal_lr=True, total_timesteps=512, ent_coef=0.0,
                                         max_grad_norm=1.0))
    assert faster.optimizer.param_groups[0]["lr"] == 1e-3
    assert faster.config.ent_coef == 0.0 and faster.config.max_grad_norm == 1.0
    faster.learn()
    assert [tags["train/learning_rate"] for _, tags in faster.logger.history] == pytest.approx([1e-3, 5e-4])
    with pytest.raises(ValueError, match="pi_hidden"):
        PPO.load(str(tmp_path / "a.pt"), [CartPoleEnv] * 2, config=cfg.replace(pi_hidden=(8,)))


def _one_line_error(path, env=CartPoleEnv) -> str:
    with pytest.raises(CheckpointError) as info:
        PPO.load(str(path), env)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_bad_checkpoints_raise_one_clear_error(tmp_path):
    assert "does not exist" in _one_line_error(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"this is not a checkpoint")
    assert "not a readable checkpoint" in _one_line_error(tmp_path / "garbage.pt")

    good = tmp_path / "good.pt"
    PPO(CartPoleEnv, small_config()).save(str(good))
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    assert "not a readable checkpoint" in _one_line_error(tmp_path / "truncated.pt")

    torch.save({"kind": "infinito-lm", "format_version": 1}, tmp_path / "lm.pt")
    assert "'infinito-lm' checkpoint" in _one_line_error(tmp_path / "lm.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    assert "not a checkpoint of this project" in _one_line_error(tmp_path / "tensor.pt")
    torch.save({"kind": "ppo-agent", "format_version": 99}, tmp_path / "future.pt")
    assert "version 99" in _one_line_error(tmp_path / "future.pt")
    torch.save({"kind": "ppo-agent", "format_version": 1, "x": np.zeros(3)}, tmp_path / "numpy.pt")
    assert "not a readable checkpoint" in _one_line_error(tmp_path / "numpy.pt")  # weights_only refuses numpy

    class Wide(CartPoleEnv):
        def __init__(self):
            super().__init__()
            self.observation_space = Box(-1, 1, (5,))
    assert "observations" in _one_line_error(good, Wide)


def test_save_is_atomic_and_leaves_nothing_behind_on_error(tmp_path, monkeypatch):
    agent = PPO(CartPoleEnv, small_config())
    path = tmp_path / "ckpt" / "100.pt"
    agent.save(str(path))
    original = path.read_bytes()

    def failing_save(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("common.files.torch.save", failing_save)
    with pytest.raises(CheckpointError, match="No space left"):
        agent.save(str(path))
    assert path.read_bytes() == original  # old file intact
    assert os.listdir(path.parent) == ["100.pt"]  # no temp file
    with pytest.raises(TypeError, match="numpy"):
        agent.save(str(tmp_path / "x.pt"), extra={"bad": np.zeros(2)})


def test_callbacks_checkpoint_evaluate_keep_best_history_and_custom_tags(tmp_path):
    seen, steps = [], []
    agent = PPO([CartPoleEnv] * 2, small_config(total_timesteps=1024))
    agent.learn(callbacks=[
        CheckpointCallback(every=256, path=str(tmp_path / "ckpt" / "{step}.pt")),
        EvalCallback(CartPoleEnv, every=384, n_episodes=2, best_path=str(tmp_path / "best.pt")),
        JsonHistoryCallback(str(tmp_path / "history.json"), extra_fn=lambda tr, r: {"ckpt": f"{tr.global_step}.pt"}),
        FunctionCallback(on_update_end=lambda tr: tr.logger.record("env/custom", tr.global_step / 2),
                         on_evaluation=lambda tr, r: seen.append((r.step, r.is_best)),
                         on_step=lambda tr, infos: steps.append(tr.global_step)),
    ])
    assert steps == list(range(2, 1025, 2))  # every vector step, 2 envs
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["1024.pt", "256.pt", "512.pt", "768.pt"]
    assert [s for s, _ in seen] == [384, 768]  # first update at or after each multiple
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["step"] for h in history] == [384, 768] and history[1]["extra"]["ckpt"] == "768.pt"
    assert {"mean_reward", "std_reward", "ci95_low", "ci95_high", "episode_returns"} <= set(history[0])
    best = PPO.load(str(tmp_path / "best.pt"), CartPoleEnv)
    assert best.global_step == agent.best_eval.step
    tags = dict(agent.logger.history)[384]
    assert tags["env/custom"] == 192 and "eval/mean_reward" in tags and "train/loss" in tags


@pytest.mark.parametrize("checkpoint_first", [True, False])
def test_checkpoints_at_evaluations_hold_them_and_are_written_once_per_state(tmp_path, checkpoint_first):
    """At step 768 a periodic save and an evaluation coincide: whichever callback runs first,
    768.pt holds the 768 evaluation, and no state is written twice."""
    written = []
    agent = PPO([CartPoleEnv] * 2, small_config(total_timesteps=1024))
    save = agent.save
    agent.save = lambda path, extra=None: (written.append(os.path.basename(path)), save(path, extra))
    checkpoints = CheckpointCallback(every=256, path=str(tmp_path / "{step}.pt"), on_evaluation=True)
    evaluations = EvalCallback(CartPoleEnv, every=384, n_episodes=2)
    agent.learn(callbacks=[checkpoints, evaluations] if checkpoint_first else [evaluations, checkpoints])
    assert sorted(checkpoints.saved) == [256, 384, 512, 768, 1024]
    for step in (384, 768):
        assert [r.step for r in PPO.load(str(tmp_path / f"{step}.pt"), CartPoleEnv).eval_history][-1] == step
    # Saved before the evaluation existed, 768.pt is written again with it; otherwise once.
    assert written.count("768.pt") == (2 if checkpoint_first else 1)
    assert all(written.count(f"{s}.pt") == 1 for s in (256, 384, 512, 1024))


def ev_result(mean: float, spread: float) -> EvalResult:
    """Ten episodes on the same seeds (so the report pairs them), sample std = spread."""
    noise = np.array([-1.5, -1.0, -0.5, -0.2, 0.0, 0.1, 0.2, 0.5, 1.0, 1.5])
    noise = (noise - noise.mean()) / noise.std(ddof=1)
    return EvalResult((mean + spread * noise).tolist(), [1] * 10, seed=100)


def test_early_stopping_rules():
    agent = PPO([CartPoleEnv] * 2, small_config(total_timesteps=1024))
    agent.learn(callbacks=[EvalCallback(CartPoleEnv, every=128, n_episodes=1), StopOnRewardThreshold(-1.0)])
    assert agent.global_step == 128 and "threshold" in agent.stop_reason

    def feed(callback, results):
        agent.eval_history, agent.best_eval, agent.stop_reason = [], None, None
        agent.callbacks = [callback]
        for step, (mean, spread) in enumerate(results):
            agent.global_step = 1000 * (step + 1)
            r = ev_result(mean, spread)
            agent.add_evaluation(r)
            agent.dispatch("on_evaluation", r)
        return agent.stop_reason

    assert feed(StopOnNoImprovement(patience=2), [(1, 0), (2, 0), (1.5, 0)]) is None
    assert "no improvement" in feed(StopOnNoImprovement(patience=2), [(1, 0), (2, 0), (1.5, 0), (1.9, 0)])
    # The report's statuses, without controls: drops in units of |baseline mean|.
    assert feed(StopOnOverfit(), [(7.25, 0.04), (7.0, 0.1)]) is None  # 3 % lower, std 2.5x: high variance
    assert "over-fitting" in feed(StopOnOverfit(), [(7.25, 0.04), (7.2, 3.0)])  # std 75x
    assert "baseline: step 1000" in feed(StopOnOverfit(), [(7.25, 0.04), (5.0, 0.05)])  # 31 % lower
    assert feed(StopOnOverfit(Thresholds(overfit_drop=0.4, severe_drop=0.5)), [(7.25, 0.04), (5.0, 0.05)]) is None
    assert feed(StopOnOverfit(patience=2), [(7.25, 0.04), (5.0, 0.05), (7.3, 0.04), (5, 0.05)]) is None
    assert "2 flagged" in feed(StopOnOverfit(patience=2), [(7.25, 0.04), (5.0, 0.05), (5.1, 0.05)])
    # With controls, the unit is the baseline's lead over the best one (0.25 here): losing it all
    # is severe, although it is 3 % of the mean.
    controls = {"always 0": ev_result(0.0, 0.04).to_dict(), "always 1": ev_result(7.0, 0.04).to_dict()}
    assert "over-fitting" in feed(StopOnOverfit(controls=controls), [(7.25, 0.04), (7.0, 0.1)])
    # A fixed baseline (e.g. the step a run was resumed from) instead of the best so far.
    assert feed(StopOnOverfit(baseline_step=2000), [(7.25, 0.04), (5.0, 0.05), (5.0, 0.05)]) is None


def test_tensorboard_scalars_and_progress_bar(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    agent = PPO([CartPoleEnv] * 2, small_config(total_timesteps=256, progress_bar=True), log_dir=str(tmp_path))
    agent.learn(callbacks=[EvalCallback(CartPoleEnv, every=128, n_episodes=1)])
    agent.close()
    assert "256/256" in capsys.readouterr().err
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    required = {"rollout/ep_rew_mean", "rollout/ep_len_mean", "time/fps", "train/approx_kl", "train/clip_fraction",
                "train/clip_range", "train/entropy_loss", "train/explained_variance", "train/learning_rate",
                "train/loss", "train/policy_gradient_loss", "train/value_loss", "eval/mean_reward",
                "eval/std_reward", "eval/mean_ep_length"}
    assert required <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [128, 256]


def test_nan_reward_fails_with_a_clear_error():
    class NaNEnv(CartPoleEnv):
        def step(self, action):
            obs, _, term, trunc, info = super().step(action)
            return obs, float("nan"), term, trunc, info

    with pytest.raises(FloatingPointError, match="NaN"):
        PPO(NaNEnv, small_config(total_timesteps=64)).learn()


def test_damaged_checkpoint_contents_raise_checkpoint_error(tmp_path):
    good = tmp_path / "good.pt"
    PPO(CartPoleEnv, small_config()).save(str(good))
    raw = torch.load(good, weights_only=True)
    del raw["rng"]
    torch.save(raw, tmp_path / "no_rng.pt")
    assert "lacks rng" in _one_line_error(tmp_path / "no_rng.pt")
    raw = torch.load(good, weights_only=True)
    raw["policy"] = {k: v[..., :1] for k, v in raw["policy"].items()}
    torch.save(raw, tmp_path / "shapes.pt")
    assert "does not fit" in _one_line_error(tmp_path / "shapes.pt")


def test_stop_when_the_evaluation_curve_has_levelled():
    """Paired over the same seeded episodes, the last K evaluations against the K before: a curve still
    rising (by less than the episodes' spread) goes on; a flat one whose best mean keeps moving in
    the noise stops; evaluations on other seeds are not judged."""
    from ppo import EvalResult, StopWhenLevel
    from ppo.callbacks import levelled
    rng = np.random.default_rng(0)
    episodes = rng.normal(0, 8, 30)  # each episode's data: most of a return's spread

    def history(means, seed=10):
        return [EvalResult(list(episodes + m + rng.normal(0, 0.5, 30)), [25] * 30, seed=seed) for m in means]

    rising = history([0, 1, 2, 3])
    assert not levelled(rising, 2)["level"] and levelled(rising, 2)["ci95_low"] > 0
    flat = history([0, 0.1, -0.1, 0.05, 0.2, -0.2])
    assert levelled(flat, 2)["level"] and levelled(flat[:3], 2) is None  # too few to judge
    assert levelled(history([0, 1]) + history([2, 3], seed=99), 2) is None
    agent = PPO([CartPoleEnv] * 2, small_config(total_timesteps=1024))
    for r in flat:
        agent.add_evaluation(r)
    StopWhenLevel(2).on_evaluation(agent, flat[-1])
    assert agent.stop_reason.startswith("levelled: the last 2 evaluations average")
    with pytest.raises(ValueError):
        StopWhenLevel(0)

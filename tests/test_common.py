"""The shared foundation (common/): atomic files and checkpoints, random states, the
vector env, the episode runner, the control policies, statistics, the logger and the idle-core count."""
import json
import os
import random
import stat

import numpy as np
import pytest
import torch

from common import cores
from common.episodes import run_episodes
from common.files import (FORMAT_VERSION, CheckpointError, atomic_write, load_checkpoint, save_checkpoint,
                          write_json, write_text)
from common.logger import Logger
from common.policies import ConstantPolicy, RandomPolicy
from common.rng import capture_global_rng, generator_state, restore_generator, restore_global_rng
from common.spaces import Box, Discrete
from common.stats import ci95_halfwidth, summarize
from common.vector import VectorEnv, as_vec_env, is_env_factory


# ---------------------------------------------------------------------------- files
def test_atomic_write_replaces_the_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "report.json"  # the directory is created
    write_json(path, {"a": 1})
    write_text(tmp_path / "sub" / "notes.txt", "first")
    write_text(tmp_path / "sub" / "notes.txt", "second")
    assert json.loads(path.read_text()) == {"a": 1}
    assert (tmp_path / "sub" / "notes.txt").read_text() == "second"
    assert sorted(os.listdir(tmp_path / "sub")) == ["notes.txt", "report.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, error):
    path = tmp_path / "model.bin"
    path.write_bytes(b"old contents")

    def write(f):
        f.write(b"half of the new")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, write)
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["model.bin"]


def test_save_checkpoint_checks_plain_types_and_words_write_errors(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match=r"checkpoint\['x'\]\[1\] is a ndarray"):
        save_checkpoint(tmp_path / "a.pt", {"kind": "k", "format_version": FORMAT_VERSION, "x": [1, np.zeros(2)]})
    with pytest.raises(TypeError, match="float64"):  # numpy scalars subclass float but do not load
        save_checkpoint(tmp_path / "a.pt", {"kind": "k", "format_version": FORMAT_VERSION, "x": np.float64(1.0)})
    assert not (tmp_path / "a.pt").exists()  # refused before anything was written

    def no_space(obj, f):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("common.files.torch.save", no_space)
    with pytest.raises(CheckpointError, match="could not write checkpoint .*b.pt .No space left on device"):
        save_checkpoint(tmp_path / "b.pt", {"kind": "k", "format_version": FORMAT_VERSION})
    assert os.listdir(tmp_path) == []


def _load_error(path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_load_checkpoint_reads_the_current_version_and_names_an_older_one(tmp_path):
    save_checkpoint(tmp_path / "ok.pt", {"kind": "ppo-agent", "format_version": FORMAT_VERSION, "w": torch.ones(2)})
    ckpt = load_checkpoint(tmp_path / "ok.pt", kind="ppo-agent", required=("w",))
    assert ckpt["format_version"] == FORMAT_VERSION and torch.equal(ckpt["w"], torch.ones(2))
    assert load_checkpoint(tmp_path / "ok.pt")["kind"] == "ppo-agent"  # kind=None: any kind
    torch.save({"kind": "ppo-agent", "format_version": 1}, tmp_path / "old.pt")
    message = _load_error(tmp_path / "old.pt", kind="ppo-agent")
    assert "made by an older version of this project (checkpoint format 1)" in message and "retrain it" in message
    for bad in (0, FORMAT_VERSION + 1, "1", None, 1.0):
        torch.save({"kind": "ppo-agent", "format_version": bad}, tmp_path / "bad.pt")
        message = _load_error(tmp_path / "bad.pt", kind="ppo-agent")
        assert f"format version {bad!r}" in message and f"reads version {FORMAT_VERSION}" in message


def test_load_checkpoint_errors_are_one_checkpoint_error_line(tmp_path):
    assert "does not exist" in _load_error(tmp_path / "missing.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip, not a pickle")
    assert "not a readable checkpoint" in _load_error(tmp_path / "garbage.pt")
    torch.save({"kind": "x", "format_version": FORMAT_VERSION, "a": np.zeros(2)}, tmp_path / "numpy.pt")
    assert "not a readable checkpoint" in _load_error(tmp_path / "numpy.pt")  # weights_only refuses it
    torch.save([1, 2], tmp_path / "list.pt")
    assert "not a checkpoint of this project" in _load_error(tmp_path / "list.pt")
    torch.save({"format_version": FORMAT_VERSION}, tmp_path / "nokind.pt")
    assert "not a checkpoint of this project" in _load_error(tmp_path / "nokind.pt")
    torch.save({"kind": "infinito-base", "format_version": FORMAT_VERSION}, tmp_path / "base.pt")
    assert "is a 'infinito-base' checkpoint, but a 'ppo-agent'" in _load_error(tmp_path / "base.pt", kind="ppo-agent")
    assert "lacks policy, rng" in _load_error(tmp_path / "base.pt", required=("policy", "rng", "kind"))


# ---------------------------------------------------------------------------- random states
def test_global_and_generator_states_survive_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    np.random.normal()  # leaves a cached Gaussian in numpy's legacy state
    torch.manual_seed(3)
    gen = np.random.default_rng(4)
    gen.random(5)
    save_checkpoint(tmp_path / "rng.pt", {"kind": "k", "format_version": FORMAT_VERSION, "rng": capture_global_rng(),
                                          "gen": generator_state(gen)})
    expected = (random.random(), np.random.normal(), np.random.rand(3).tolist(), torch.rand(3), gen.random(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    ckpt = load_checkpoint(tmp_path / "rng.pt")
    restore_global_rng(ckpt["rng"])
    other = np.random.default_rng(0)
    restore_generator(other, ckpt["gen"])
    again = (random.random(), np.random.normal(), np.random.rand(3).tolist(), torch.rand(3), other.random(3))
    assert expected[:3] == again[:3]
    assert torch.equal(expected[3], again[3]) and np.array_equal(expected[4], again[4])


# ---------------------------------------------------------------------------- vector env
class Ticker:
    """Episodes of `length` steps. obs = [t, offset] with an offset drawn from the env's own
    generator at each reset; reward = action + offset; legal actions: all but t % 3."""

    uses_global_rng = False

    def __init__(self, length: int = 3, masks: bool = True, terminate: bool = True):
        self.length, self.masks, self.terminate = length, masks, terminate
        self.observation_space, self.action_space = Box(0, 1e4, (2,)), Discrete(3)
        self.rng = np.random.default_rng()
        self.t, self.offset = 0, 0.0

    def _out(self):
        info = {"t": self.t}
        if self.masks:
            info["action_mask"] = np.arange(3) != self.t % 3
        return np.array([self.t, self.offset], np.float32), info

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t, self.offset = 0, float(self.rng.integers(1, 1000))
        return self._out()

    def step(self, action):
        self.t += 1
        obs, info = self._out()
        done = self.t >= self.length
        return obs, float(action) + self.offset, done and self.terminate, done and not self.terminate, info

    def get_state(self):
        return {"t": self.t, "offset": self.offset, "rng": self.rng.bit_generator.state}

    def set_state(self, s):
        self.t, self.offset = s["t"], s["offset"]
        self.rng.bit_generator.state = s["rng"]


def test_vector_env_auto_resets_with_final_observation_and_info():
    env = VectorEnv([Ticker(length=2), Ticker(length=3, terminate=False)])
    obs, infos = env.reset(seed=5)
    assert obs.dtype == np.float32 and obs.shape == (2, 2) and [i["t"] for i in infos["env_infos"]] == [0, 0]
    first_offsets = obs[:, 1].copy()
    obs, rewards, term, trunc, infos = env.step([1, 2])
    assert "final_observation" not in infos and "final_info" not in infos  # nothing ended
    np.testing.assert_array_equal(rewards, first_offsets + [1, 2])
    obs, rewards, term, trunc, infos = env.step([0, 0])
    assert term.tolist() == [True, False] and trunc.tolist() == [False, False]
    np.testing.assert_array_equal(infos["final_observation"][0], [2, first_offsets[0]])  # the last state
    assert infos["final_info"][0]["t"] == 2 and infos["final_info"][1] is None
    assert obs[0, 0] == 0 and obs[0, 1] != first_offsets[0]  # env 0 already in its next episode
    assert infos["env_infos"][0]["t"] == 0  # the info of the returned (new) observation
    obs, rewards, term, trunc, infos = env.step([0, 0])
    assert trunc.tolist() == [False, True] and infos["final_observation"][1, 0] == 3


def test_vector_env_packs_masks_of_the_returned_observations():
    env = VectorEnv([Ticker(length=2), Ticker(length=4)])
    _, infos = env.reset(seed=0)
    assert infos["action_mask"].dtype == bool and infos["action_mask"].tolist() == [[False, True, True]] * 2
    _, _, _, _, infos = env.step([1, 1])
    assert infos["action_mask"].tolist() == [[True, False, True]] * 2  # t = 1
    _, _, term, _, infos = env.step([0, 0])
    assert term.tolist() == [True, False]
    # env 0 was reset: its mask is the new episode's (t = 0), not the finished one's (t = 2)
    assert infos["action_mask"].tolist() == [[False, True, True], [True, True, False]]
    assert infos["final_info"][0]["action_mask"].tolist() == [True, True, False]
    mixed = VectorEnv([Ticker(masks=True), Ticker(masks=False)])
    assert "action_mask" not in mixed.reset(seed=0)[1]  # a mask only when every env gives one


def test_vector_env_threads_change_nothing_and_states_continue_exactly():
    def run(env, n=12):
        obs, _ = env.reset(seed=3)
        out = [obs]
        for k in range(n):
            step = env.step(np.arange(3) % 3 if k % 2 else np.ones(3, int))
            out += [step[0], step[1]]
        return out

    one = run(VectorEnv([Ticker(length=L) for L in (2, 3, 5)]))
    threaded = VectorEnv([Ticker(length=L) for L in (2, 3, 5)], workers=3)
    assert threaded._pool is not None
    assert all(np.array_equal(a, b) for a, b in zip(one, run(threaded)))
    threaded.close()

    class Global(Ticker):
        uses_global_rng = True

    assert VectorEnv([Global(), Global()], workers=2)._pool is None  # stepped on one thread instead

    env = VectorEnv([Ticker(length=L) for L in (2, 3, 5)])
    run(env, 4)
    state = env.get_state()
    after = [env.step([1, 1, 1])[0] for _ in range(6)]
    env.set_state(state)
    assert all(np.array_equal(a, b) for a, b in zip(after, [env.step([1, 1, 1])[0] for _ in range(6)]))
    with pytest.raises(ValueError, match="same number"):
        env.set_state({"envs": state["envs"][:2]})
    with pytest.raises(ValueError, match="one per environment"):
        env.step([0, 0])


def test_vector_env_inputs():
    with pytest.raises(ValueError):
        VectorEnv([])
    wide = Ticker()
    wide.observation_space = Box(0, 1, (3,))
    with pytest.raises(ValueError, match="spaces"):
        VectorEnv([Ticker(), wide])
    assert is_env_factory(Ticker) and is_env_factory(lambda: Ticker()) and not is_env_factory(Ticker())
    assert as_vec_env([Ticker, Ticker()]).num_envs == 2
    vec = VectorEnv([Ticker()])
    assert as_vec_env(vec) is vec
    with pytest.raises(TypeError):
        as_vec_env("not an env")


# ---------------------------------------------------------------------------- episodes and controls
def test_run_episodes_split_over_threads_equals_one_environment():
    for policy in (RandomPolicy(3), ConstantPolicy(2)):
        alone = run_episodes(Ticker(length=4), policy, n_episodes=7, seed=40)
        split = run_episodes([Ticker(length=4) for _ in range(3)], policy, n_episodes=7, seed=40)
        assert [ep.seed for ep in alone] == list(range(40, 47)) == [ep.seed for ep in split]
        assert [(a.actions, a.rewards) for a in alone] == [(b.actions, b.rewards) for b in split]
        assert len({ep.rewards[0] for ep in alone}) > 1  # seeds give different episodes
    ep = alone[0]
    assert ep.length == 4 and ep.total_reward == sum(ep.rewards) and len(ep.infos) == 4
    assert all(a in (0, 1, 2) for e in run_episodes(Ticker(), RandomPolicy(3), 5) for a in e.actions)


def test_run_episodes_keeps_one_thread_for_envs_on_the_global_generator():
    used = []

    class Global(Ticker):
        uses_global_rng = True

        def reset(self, seed=None, options=None):
            used.append(id(self))
            return super().reset(seed)

    envs = [Global(), Global()]
    assert len(run_episodes(envs, ConstantPolicy(0), n_episodes=4)) == 4
    assert set(used) == {id(envs[0])}
    with pytest.raises(ValueError):
        run_episodes(envs, ConstantPolicy(0), n_episodes=0)


def test_random_policy_respects_the_mask_and_its_seed():
    policy = RandomPolicy(3)
    mask = {"action_mask": np.array([False, True, False])}
    assert {policy(None, mask) for _ in range(50)} == {1}
    assert {policy(None, {}) for _ in range(200)} == {0, 1, 2}
    policy.reset(5)
    first = [policy(None) for _ in range(20)]
    policy.reset(5)
    assert [policy(None) for _ in range(20)] == first


# ---------------------------------------------------------------------------- statistics
def test_summarize_and_confidence_interval():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert (s["n"], s["mean"]) == (4, 2.5) and s["std"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    half = 3.182 * s["std"] / 2  # t_{0.975, 3} s / sqrt(4)
    assert (s["ci95_low"], s["ci95_high"]) == pytest.approx((2.5 - half, 2.5 + half))
    one = summarize([7.0])
    assert one["std"] == 0.0 and one["ci95_low"] == one["ci95_high"] == 7.0
    assert ci95_halfwidth(1.0, 1) == 0.0
    with pytest.raises(ValueError):
        summarize([])


# ---------------------------------------------------------------------------- logger
def read_jsonl(path) -> list:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_logger_writes_one_jsonl_line_per_dump_and_truncates_on_resume(tmp_path):
    path = tmp_path / "log.jsonl"
    log = Logger(jsonl=path, quiet=True)
    for step in (10, 20, 30):
        log.record("train/loss", step / 10)
        log.record("env/phi", -step)
        assert log.dump(step) == {"train/loss": step / 10, "env/phi": -step}
    assert log.dump(40) == {}  # nothing pending: no line
    assert read_jsonl(path) == [{"step": s, "train/loss": s / 10, "env/phi": -s} for s in (10, 20, 30)]
    assert log.latest == {"train/loss": 3.0, "env/phi": -30} and [s for s, _ in log.history] == [10, 20, 30]
    log.close()

    resumed = Logger(jsonl=path, quiet=True, resume_step=20)  # a checkpoint at 20: the old 30 is dropped ...
    assert [r["step"] for r in read_jsonl(path)] == [10, 20, 30]  # ... at the first write, not before
    resumed.record("train/loss", 2.5)
    resumed.dump(30)
    assert read_jsonl(path) == [{"step": 10, "train/loss": 1.0, "env/phi": -10},
                                {"step": 20, "train/loss": 2.0, "env/phi": -20}, {"step": 30, "train/loss": 2.5}]
    fresh = Logger(jsonl=path, quiet=True)  # a new run starts the file afresh at its first write
    assert len(read_jsonl(path)) == 3
    fresh.record("train/loss", 9.0)
    fresh.dump(1)
    assert read_jsonl(path) == [{"step": 1, "train/loss": 9.0}]


def test_base_threads_follow_the_cores_idle_now_not_the_load_average(monkeypatch):
    """Right after `pip install` the 1-minute load average still counts it: an idle 2-core machine
    got 1 thread. /proc/stat over a quarter of a second says what is busy now."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.6, 0.9, 0.4))  # a pip install just ended
    for busy_ticks, threads in ((2, 2), (20, 2), (30, 1), (100, 1)):  # of 100 ticks over both cores
        ticks = iter([(1000, 500), (1100, 500 + 100 - busy_ticks)])
        monkeypatch.setattr(cores, "_cpu_times", lambda: next(ticks))
        assert cores.idle_cores() == threads, busy_ticks
    monkeypatch.setattr(cores, "_cpu_times", lambda: open("/no/such/file"))  # not Linux: the load average
    assert cores.idle_cores() == 1

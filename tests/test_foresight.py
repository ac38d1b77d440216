"""Schedules that need foresight: the `final` reward, modes that carry a step size, the
time-switch, step-size-decay and plateau-decay controls, and the tiny preset trained on each variant (then
steering `generate.py --agent`)."""
import json
import math

import numpy as np
import pytest
import torch

import train
from env import (PLATEAU_PATIENCES, EnvConfig, EnvError, FinalReward, PlateauPolicy, ProgressReward, SchedulePolicy,
                 StepSizeSchedule, TextSchedulingEnv, decay_family, load_base, plateau_family, reward_from_dict,
                 rescore, rule_family, run_policy, step_size_modes, switch_family)
from common.episodes import play, run_episodes
from common.policies import ConstantPolicy
from stages.rl.presets import RL_PRESETS, STEP_SIZES, VARIANTS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(max_steps=6, inner_steps=2, inner_batch_size=2, seq_len=32, measurement_batch_size=2, inner_lr=6e-4)
LR_MODES = step_size_modes({"TEXT": (1.0, 0.0), "MIXED": (0.5, 0.5)}, (0.25, 1.0))


def obs(phi: float, time_left: float = 1.0, loss_text: float = 3.0) -> np.ndarray:
    return np.array([0.5, phi, loss_text, 1.0, 0.5, 0.0, time_left], dtype=np.float32)


# ----------------------------------------------------------------------------- the final reward

def test_final_reward_prices_only_where_phi_ends():
    r = FinalReward()
    prev = {"phi": 5.0, "ppl": 20.0}
    total, terms = r(prev, {"phi": 9.0, "ppl": 10.0})  # far above the band, but not the last decision
    assert terms == {"text_gain": pytest.approx(100 * math.log(2.0)), "phi_end": 0.0}
    assert r(prev, {"phi": 9.0, "ppl": 10.0}, last=True)[1]["phi_end"] == pytest.approx(-10 * 3.0)
    assert r(prev, {"phi": 2.5, "ppl": 10.0}, last=True)[1]["phi_end"] == pytest.approx(-10 * 0.5)
    assert r(prev, {"phi": 6.0, "ppl": 10.0}, last=True)[1]["phi_end"] == 0.0  # band edges are inside
    assert FinalReward(w_end=2.0)(prev, {"phi": 7.0, "ppl": 20.0}, last=True) == (-2.0, {"text_gain": 0.0,
                                                                                        "phi_end": -2.0})
    # the other rewards ignore `last`
    assert ProgressReward()(prev, {"phi": 7.0, "ppl": 20.0}, last=True) == ProgressReward()(prev, {"phi": 7.0, "ppl": 20.0})


def test_final_reward_episode_total_is_the_end_state_only():
    """Two paths to the same end earn the same return: the gains telescope and Φ counts only at the end."""
    r = FinalReward(w_end=4.0)
    def episode(ppls, phis):
        steps = list(zip(ppls, phis))
        return sum(r({"ppl": a[0], "phi": a[1]}, {"ppl": b[0], "phi": b[1]}, last=k == len(steps) - 2)[0]
                   for k, (a, b) in enumerate(zip(steps, steps[1:])))
    calm = episode([20.0, 18.0, 16.0, 15.0], [7.0, 7.5, 6.5, 6.5])
    wild = episode([20.0, 30.0, 12.0, 15.0], [7.0, 1.0, 9.0, 6.5])
    assert calm == pytest.approx(wild) == pytest.approx(100 * math.log(20 / 15) - 4.0 * 0.5)


def test_final_reward_config_and_bad_input():
    r = FinalReward(w_end=3.0, phi_low=3.5)
    assert reward_from_dict(json.loads(json.dumps(r.to_dict()))) == r and r.band == (3.5, 6.0)
    assert r.describe() == "final (w_end=3, phi_low=3.5)"
    for bad in (dict(w_end=-1.0), dict(w_gain=-0.5), dict(phi_low=7.0)):
        with pytest.raises(EnvError, match="invalid reward config"):
            FinalReward(**bad)
    with pytest.raises(EnvError, match="unknown reward 'final' key"):
        reward_from_dict({"name": "final", "w_out": 1.0})


@pytest.fixture(scope="module")
def assets(base_dir):
    return load_base(base_dir / "base-step20.pt", EnvConfig(**SMALL))


def test_the_environment_tells_the_reward_which_decision_is_last(assets):
    env = TextSchedulingEnv(assets, EnvConfig(**SMALL, reward=FinalReward()))
    runs = run_policy(env, ConstantPolicy(0), n_episodes=2, seed=5)  # always TEXT: Φ ends above the band
    for k, tr in enumerate(runs.traces):
        assert tr["phi"][-1] > 6.0
        assert tr["terms"]["phi_end"] == pytest.approx(-10 * (tr["phi"][-1] - 6.0))
        assert tr["terms"]["text_gain"] == pytest.approx(100 * math.log(tr["initial"]["ppl"] / tr["ppl"][-1]), rel=1e-6)
    # re-scoring another reward's episodes prices the same last decision: the same returns as playing it
    progress = TextSchedulingEnv(assets, EnvConfig(**SMALL, reward=ProgressReward()))
    again = rescore(run_policy(progress, ConstantPolicy(0), n_episodes=2, seed=5), FinalReward())
    assert again.returns == pytest.approx(runs.returns)


# ----------------------------------------------------------------------------- modes with a step size

def test_step_size_modes_config_round_trip_and_bad_input():
    cfg = EnvConfig(modes=LR_MODES)
    assert cfg.mode_names == ("TEXT@0.25", "TEXT@1", "MIXED@0.25", "MIXED@1") and cfg.has_step_sizes
    assert EnvConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    plain = EnvConfig()
    assert not plain.has_step_sizes and plain.to_dict()["modes"][0] == ["TEXT", 1.0, 0.0]  # old form kept
    assert EnvConfig(modes=[["TEXT", 1, 0, 1.0]]).to_dict()["modes"] == [["TEXT", 1.0, 0.0]]
    for bad, words in ((["T", 1, 0, 0.0], "lr_scale"), (["T", 1, 0, -1], "lr_scale"), (["T", 1, 0, float("nan")], "lr_scale"),
                       (["T", 1, 0, "x"], "[name, w_text, w_phi, lr_scale]"), (["T", 1, 0, 1, 2], "lr_scale]")):
        with pytest.raises(EnvError, match=words.replace("[", r"\[").replace("]", r"\]")):
            EnvConfig(modes=[bad])
    with pytest.raises(EnvError, match="mode names must differ"):
        EnvConfig(modes=[["A", 1, 0, 1.0], ["A", 1, 0, 0.5]])


def test_a_modes_step_size_is_the_optimisers_and_scale_one_is_the_old_mode(assets):
    cfg = EnvConfig(**SMALL, modes=[["TEXT", 1, 0]] + [list(m) for m in LR_MODES])
    env = TextSchedulingEnv(assets, cfg)
    moved = {}
    for action in (0, 1, 2):  # TEXT (three items), TEXT@0.25, TEXT@1
        env.reset(seed=3)
        before = {k: v.detach().clone() for k, v in env.model.named_parameters()}
        _, _, _, _, info = env.step(action)
        assert {g["lr"] for g in env.optimizer.param_groups} == {cfg.inner_lr * cfg.modes[action][3]}
        assert info["lr_scale"] == cfg.modes[action][3]
        now = dict(env.model.named_parameters())
        moved[action] = sum(float((now[k].detach() - v).norm()) for k, v in before.items())
        moved[f"obs{action}"] = info["loss_text"]
    assert moved[0] == moved[2] and moved["obs0"] == moved["obs2"]  # no scale = scale 1, exactly
    assert moved[1] < 0.5 * moved[2]  # a quarter of the step size moves the weights less


# ----------------------------------------------------------------------------- the controls

def test_step_size_schedules():
    step = StepSizeSchedule("step", 1.0, 0.2, switch_left=3)
    assert [step.scale(d, 10) for d in range(10)] == [1.0] * 7 + [0.2] * 3
    cos = StepSizeSchedule("cosine", 1.0, 0.1)
    assert cos.scale(0, 25) == pytest.approx(1.0) and cos.scale(24, 25) == pytest.approx(0.1)
    assert cos.scale(12, 25) == pytest.approx(0.55)
    assert StepSizeSchedule("constant", 0.5).scale(24, 25) == 0.5


def test_schedule_policy_reads_phi_and_the_clock():
    cfg = EnvConfig(max_steps=10, modes=LR_MODES)
    rule = SchedulePolicy(cfg, lr=StepSizeSchedule("constant", 0.3))  # 0.3 is nearest to 0.25 in ratio
    assert rule(obs(4.5), {}) == 0 and rule(obs(7.0), {}) == 2
    decay = SchedulePolicy(cfg, lr=StepSizeSchedule("step", 1.0, 0.25, switch_left=4))
    assert decay(obs(4.5, time_left=0.5), {}) == 1 and decay(obs(4.5, time_left=0.4), {}) == 0
    assert decay(obs(7.0, time_left=0.4), {}) == 2
    switch = SchedulePolicy(cfg, text_until_left=3, lr=StepSizeSchedule("constant", 1.0))
    assert switch(obs(8.0, time_left=0.4), {}) == 1   # 4 decisions left: TEXT whatever Φ is
    assert switch(obs(8.0, time_left=0.3), {}) == 3   # 3 left: the rule corrects Φ
    late = SchedulePolicy(cfg, text_from_left=3, lr=StepSizeSchedule("constant", 1.0))  # the rule, then TEXT
    assert late(obs(8.0, time_left=0.4), {}) == 3 and late(obs(8.0, time_left=0.3), {}) == 1
    assert late.name == "rule: TEXT in [3, 6], else MIXED; TEXT only for the last 3, lr ×1"
    wide = SchedulePolicy(cfg, margin=-0.5, lr=StepSizeSchedule("constant", 1.0))  # thresholds past the band
    assert wide(obs(6.4), {}) == 1 and wide(obs(6.6), {}) == 3 and wide(obs(2.6), {}) == 1
    assert wide.name == "rule: TEXT in [2.5, 6.5], else MIXED, lr ×1"
    with pytest.raises(ValueError, match="no mode named PHI"):
        SchedulePolicy(cfg, outside="PHI")


def test_families_over_step_sizes():
    cfg = EnvConfig(max_steps=25, modes=step_size_modes({"TEXT": (1.0, 0.0), "MIXED": (0.5, 0.5)}, STEP_SIZES))
    rules = rule_family(cfg)
    assert len(rules) == 3 * len(STEP_SIZES)  # margins x step sizes; MIXED is the only other weights
    assert "rule: TEXT in [3, 6], else MIXED, lr ×0.5" in rules
    tuned = rules["rule: TEXT in [3.25, 5.75], else MIXED, lr ×0.5"]
    switches = switch_family(cfg, tuned)
    assert [p.text_until_left for p in switches.values()] == [3, 6, 10, 15]
    assert all(p.margin == 0.25 and p.lr == tuned.lr for p in switches.values())
    decays = decay_family(cfg, tuned)
    pairs = len(STEP_SIZES) * (len(STEP_SIZES) - 1) // 2
    assert len(decays) == 2 * 3 * pairs and all(p.margin == 0.25 for p in decays.values())
    plain = decays["rule: TEXT only, lr cosine ×1 → ×0.2"]  # the decay people use on a text loss alone
    assert plain(obs(9.0, time_left=0.04), {}) == cfg.mode_names.index("TEXT@0.2")
    assert decay_family(EnvConfig(), rule_family(EnvConfig())["rule: TEXT in [3, 6], else MIXED"]) == {}
    plateaus = plateau_family(cfg, tuned)
    assert len(plateaus) == 2 * len(PLATEAU_PATIENCES)  # the tuned rule's weights or TEXT only, x patience
    assert {(p.outside, p.lr.patience) for p in plateaus.values()} == {
        (o, k) for o in ("MIXED", None) for k in PLATEAU_PATIENCES} and all(p.margin == 0.25 for p in plateaus.values())
    # the name is the control cache's key: it says every setting, and stays put
    assert ("rule: TEXT only, lr ×1 → ×0.5 → ×0.2, one step size lower after 2 decisions without a held-out "
            "loss 0.1% below its best") in plateaus
    plain = EnvConfig()
    assert plateau_family(plain, rule_family(plain)["rule: TEXT in [3, 6], else MIXED"]) == {}
    # one step size, even one other than 1: nothing to lower to, so neither step-size family is reported
    from stages.report.controls import adaptive_names
    halved = EnvConfig(modes=step_size_modes({"TEXT": (1.0, 0.0), "MIXED": (0.5, 0.5)}, (0.5,)))
    assert halved.has_step_sizes and adaptive_names(halved) == ("tuned rule", "tuned time switch", "bandit")
    assert "tuned plateau decay" in adaptive_names(cfg)


LR3 = EnvConfig(max_steps=25, modes=step_size_modes({"TEXT": (1.0, 0.0), "MIXED": (0.5, 0.5)}, STEP_SIZES))


def modes_played(policy, losses, phi: float = 4.5) -> list:
    """The modes `policy` takes on observations with these held-out losses (Φ inside the band: TEXT)."""
    return [LR3.mode_names[policy(obs(phi, loss_text=loss), {})] for loss in losses]


def test_the_plateau_policy_lowers_the_step_size_after_patience_decisions_without_a_new_best():
    p = PlateauPolicy(LR3, outside=None, patience=2)
    assert modes_played(p, [3.0, 2.9, 2.8, 2.7]) == ["TEXT@1"] * 4        # a new best each time: the top
    assert modes_played(p, [2.7, 2.8]) == ["TEXT@1", "TEXT@0.5"]           # the 2nd without a new best
    assert modes_played(p, [2.6, 2.65]) == ["TEXT@0.5"] * 2                 # a new best restarts the count
    assert modes_played(p, [2.65, 2.9, 2.9]) == ["TEXT@0.2"] * 3            # lowered again, then the lowest
    assert modes_played(p, [2.9] * 6 + [1.0]) == ["TEXT@0.2"] * 7           # never below it, never back up
    p.reset()
    assert modes_played(p, [5.0, 4.0, 4.0, 3.0]) == ["TEXT@1"] * 4          # the top, and the episode's own best
    once = PlateauPolicy(LR3, outside=None, patience=1)
    assert modes_played(once, [3.0, 3.0, 3.0, 3.0]) == ["TEXT@1", "TEXT@0.5", "TEXT@0.2", "TEXT@0.2"]
    slow = PlateauPolicy(LR3, outside=None, patience=5)
    assert modes_played(slow, [3.0] * 7) == ["TEXT@1"] * 5 + ["TEXT@0.5"] * 2


def test_the_plateau_policys_new_best_must_clear_the_threshold():
    p = PlateauPolicy(LR3, outside=None, patience=1)     # threshold 0.1 %: a new best is below 2 x 0.999 = 1.998
    assert modes_played(p, [2.0, 1.997]) == ["TEXT@1", "TEXT@1"]
    p.reset()
    assert modes_played(p, [2.0, 1.9985]) == ["TEXT@1", "TEXT@0.5"]     # lower, but by less than the threshold
    loose = PlateauPolicy(LR3, outside=None, patience=1, threshold=0.0)
    assert modes_played(loose, [2.0, 1.9985]) == ["TEXT@1", "TEXT@1"]


def test_the_plateau_policy_with_the_rules_weights_corrects_phi_at_its_step_size():
    p = PlateauPolicy(LR3, margin=0.25, outside="MIXED", patience=1)
    assert modes_played(p, [3.0], phi=8.0) == ["MIXED@1"]                  # Φ above the band: the rule's weights
    assert modes_played(p, [3.1], phi=8.0) == ["MIXED@0.5"]               # a stall lowers both weights' step size
    assert modes_played(p, [2.0], phi=4.5) == ["TEXT@0.5"]


class Stalled:
    """Six decisions whose held-out loss never improves (a fake environment: what the policy reads)."""
    uses_global_rng = False

    def reset(self, seed=None):
        self.t = 0
        return obs(4.5, loss_text=3.0), {}

    def step(self, action):
        self.t += 1
        return obs(4.5, loss_text=3.0), 0.0, self.t >= 6, False, {}


def test_the_episode_runner_starts_every_plateau_episode_at_the_top_step_size():
    p = PlateauPolicy(LR3, outside=None, patience=2)
    first = play(Stalled(), p, seed=1)
    assert [LR3.mode_names[a] for a in first.actions] == ["TEXT@1"] * 2 + ["TEXT@0.5"] * 2 + ["TEXT@0.2"] * 2
    assert play(Stalled(), p, seed=1).actions == first.actions   # reset by the runner: not from where it ended
    assert [ep.actions for ep in run_episodes(Stalled(), p, 3, seed=1)] == [first.actions] * 3


# ----------------------------------------------------------------------------- the tiny preset on each variant

def variant_flags(name: str) -> list[str]:
    env = VARIANTS[name]
    flags = [f"reward.name={env['reward']['name']}"]
    if "modes" in env:
        flags.append("modes=" + json.dumps(env["modes"]))
    return ["--env", *flags]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant_run(request, base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"variant-{request.param}")
    assert train.main(["--stage", "rl", "--preset", "tiny", "--quiet", "--base", str(base_dir / "base-step20.pt"),
                       "--out", str(out), *variant_flags(request.param)]) == 0
    return request.param, out


def test_the_tiny_preset_trains_on_each_variant(variant_run):
    name, out = variant_run
    report = json.loads((out / "report.json").read_text())
    adaptive = [c["name"] for c in report["heldout"]["rows"] if c.get("adaptive")]
    step_size_families = ["tuned step-size decay", "tuned plateau decay"] if name == "lr" else []
    expected = ["tuned rule", "tuned time switch", *step_size_families, "bandit"]
    assert adaptive == expected
    assert report["heldout"]["vs_adaptive"]["best_adaptive"] in expected
    record = torch.load(out / "64.pt", weights_only=True)["extra"]
    env = EnvConfig.from_dict(record["env"])
    assert env.reward.name == "final" and env.has_step_sizes == (name == "lr")
    assert env.modes == EnvConfig.from_dict(RL_PRESETS[f"demo-{name}"]["env"]).modes
    if name == "lr":  # every plateau member on the evaluation seeds, only the best of them on the held-out ones
        on_eval = record["adaptive"]["tuned plateau decay"]["extra"]
        rule = rule_family(env)[record["adaptive"]["tuned rule"]["extra"]["rule"]]
        assert set(on_eval["members"]) == set(plateau_family(env, rule))
        assert on_eval["rule"] == max(on_eval["members"], key=on_eval["members"].get)
        assert list(record["heldout_adaptive"]["tuned plateau decay"]["extra"]["members"]) == [on_eval["rule"]]
    from stages.report.chart import control_colours  # the chart: every control, the new family too, in its own colour
    colours = control_colours(report)
    assert set(expected) <= set(colours) and len(set(colours.values())) == len(colours)
    # bench/rl_study.py's tables compare the agent with every family's control
    from bench.rl_study import aggregate, markdown
    table = markdown(aggregate({1: report}), "one run")
    assert all(f"agent − {family} (paired" in table and f"| {family} | " in table
               for family in ["best constant", *expected])


def test_the_dashboards_show_the_step_size_only_where_modes_carry_one(variant_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    name, out = variant_run
    scalars = EventAccumulator(str(out / "runs" / "rl")).Reload().Tags()["scalars"]
    assert ("env/lr_scale" in scalars) == (name == "lr")
    if name == "lr":
        means = [e.value for e in EventAccumulator(str(out / "runs" / "rl")).Reload().Scalars("env/lr_scale")]
        assert all(min(STEP_SIZES) <= m <= max(STEP_SIZES) for m in means)


def test_the_monitor_averages_the_step_size_of_the_decisions_taken():
    from env import RolloutMonitor
    cfg = EnvConfig(**SMALL, modes=LR_MODES)
    mon = RolloutMonitor(cfg)
    infos = [dict(phi=1.0, consciousness=0.5, ppl=9.0, memory_util=0.1, mode=m[0], lr_scale=m[3]) for m in LR_MODES]
    mon.observe({"env_infos": infos})
    assert mon.pop()["env/lr_scale"] == pytest.approx(np.mean([m[3] for m in LR_MODES]))
    plain = RolloutMonitor(EnvConfig(**SMALL))
    plain.observe({"env_infos": [{**infos[0], "mode": "TEXT"}]})
    assert "env/lr_scale" not in plain.pop()


def test_generate_agent_works_with_an_agent_of_each_variant(variant_run, capsys):
    import generate
    name, out = variant_run
    assert generate.main(["--agent", str(out / "best.pt"), "--agent-steps", "6", "--max-new-tokens", "8",
                          "--seed", "1", "--json"]) == 0
    adaptation = json.loads(capsys.readouterr().out.splitlines()[0])  # JSON lines: the adaptation, then the sample
    assert adaptation["type"] == "adaptation" and adaptation["steps"] == 6
    actions = adaptation["actions"]
    assert sum(actions.values()) == 6
    assert set(actions) == set(EnvConfig.from_dict(RL_PRESETS[f"demo-{name}"]["env"]).mode_names)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # tensorboard's vendored html5lib, on import
def test_step_size_modes_keep_every_chart_apart_and_the_agent_its_colour(variant_run):
    """Six step-size modes and five adaptive controls would be twelve runs beside the agent's: the side runs
    are the two mode families and the best adaptive controls, and every chart's runs differ in colour."""
    from test_dashboards import chart_runs, colour_problems, tensorboard_palettes
    from stages.report.dashboards import ACTION_MIX
    name, out = variant_run
    for palette in tensorboard_palettes().values():
        assert colour_problems(out / "runs", palette) == []
    if name == "lr":
        assert chart_runs(out / "runs")[ACTION_MIX] == {"rl/modes/text", "rl/modes/mixed"}

"""A surrogate of `demo-lr`, to choose PPO levers in minutes before spending hours on the real thing.

    python bench/surrogate.py record --base ckpt/base-step100.pt    # ~28 CPU minutes, resumable
    python bench/surrogate.py fit                                    # ~2.5 CPU minutes: bench/surrogate_fit.json
    python bench/surrogate.py levers                                 # ~10 CPU minutes: the lever table
    python bench/surrogate.py confirm --base ckpt/base-step100.pt   # ~6 CPU minutes: PPO's finds, real seeds

`ckpt/base-step100.pt` is the demo base stage's step-100 snapshot (`python train.py --stage base`
writes it), where every `demo-lr` episode starts. One process, one torch thread throughout.

1. **record** plays, on shared seeds (`--first-seed`, default 40000: away from the presets'
   evaluation seeds 10000+, held-out seeds 20000+ and teacher seeds 30000+), hand-written
   schedules of the real `demo-lr` environment, built as the RL stage builds it (the preset's
   EnvConfig, the token cache beside the base). Per seed, full episodes of always TEXT@1, always
   TEXT@0.5, always TEXT@0.2, the tuned rule ("TEXT in [3, 6], else MIXED", x0.5) and a random
   schedule; "switch" probes: the episode of always TEXT@1 (or TEXT@0.5) continued from its
   saved state after 25 - k decisions, in another mode for its last k (`BRANCHES`; the decay
   control, TEXT@1 then TEXT@0.5 for the last 6, is one of them): a probe costs only its k
   decisions, since the environment's `get_state`/`set_state` continue an episode exactly; and
   fixed sequences (`FIXED`, fitted; `VALIDATION`, only checked). One JSON line per seed and
   pass in `bench/out/surrogate/episodes.jsonl`; a rerun plays only what is missing.
2. **fit** estimates the surrogate's parameters from the recording (`bench/surrogate_model.py`
   has the model and says what each parameter means), checks the fit on the schedules' means,
   paired differences and spreads (the `VALIDATION` schedules out of sample), lists the
   surrogate's best open-loop step-size schedules, and writes `bench/surrogate_fit.json`.
3. **levers** trains PPO on the surrogate with the demo preset's PPO config and each lever
   (`LEVERS`), over training seeds, and scores the greedy policy against the decay control on
   1,000 shared evaluation seeds (paired), at `CHECKPOINTS` decisions: the learning curves, and
   where each lever is level with the decay. Results in `bench/out/surrogate/levers.json`
   (a rerun with the same fit continues them); `--quick` for a smoke run.
4. **confirm** plays what PPO found on the surrogate (`VALIDATION`) and the decay on fresh real
   seeds (default 50000+), paired: a surrogate is trusted only where the real environment agrees.

The results and what they say: docs/studies.md, "Choosing levers on a surrogate of demo-lr".
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.machine import cpu_model  # noqa: E402

OUT = ROOT / "bench" / "out" / "surrogate"
FIT_FILE = ROOT / "bench" / "surrogate_fit.json"
T = 25  # demo-lr's decisions per episode
# full episodes per seed: always <mode>, the tuned rule of demo-lr, a seeded random schedule
BASES = ("TEXT@1", "TEXT@0.5", "TEXT@0.2", "rule", "random")
# switch probes: from the base episode's state with k decisions left, the last k in another mode
BRANCHES = {"TEXT@1": [(k, m) for k in (3, 6, 12, 18) for m in ("TEXT@0.5", "TEXT@0.2")]
            + [(k, m) for k in (3, 6, 12) for m in ("MIXED@0.5", "MIXED@1")],
            "TEXT@0.5": [(6, "TEXT@1"), (12, "TEXT@1"), (6, "TEXT@0.2")]}
# fixed action sequences added after the first fit (docs/studies.md says why): what PPO found on that
# fit — MIXED@1 early, alternating with TEXT@1, then TEXT@0.5 — and MIXED early, then the decay
FIXED = {"agent on fit 1: MIXED@1/TEXT@1 for 16, TEXT@0.5 for 9":
         [5, 2, 2, 5, 2, 5, 2, 5, 2, 2, 5, 2, 2, 5, 2, 2] + [1] * 9,
         "MIXED@1 for 3, then the decay": [5] * 3 + [2] * 16 + [1] * 6,
         "MIXED@0.2 for 6, then the decay": [3] * 6 + [2] * 13 + [1] * 6}
# played after the second fit, to check it out of sample (never fitted): what PPO found on it
VALIDATION = {"agent on fit 2 (teacher + groups): the decay with MIXED@1 at decisions 11 and 17":
              [2] * 10 + [5] + [2] * 5 + [5] + [2] + [1] * 7,
              "agent on fit 2 (plain): MIXED@1 x4, TEXT@1, MIXED@1, TEXT@1, then TEXT@0.5":
              [5, 5, 5, 5, 2, 5, 2] + [1] * 18}
DECAY = "TEXT@1>TEXT@0.5@6"  # the tuned decay control: TEXT@1, then TEXT@0.5 for the last 6
RESERVED = (10_000, 40_000)  # evaluation (10000+), held-out (20000+) and teacher (30000+) seeds


def branch_name(base: str, k: int, mode: str) -> str:
    return f"{base}>{mode}@{k}"


# ---------------------------------------------------------------------------- record
def demo_lr_env(base: str):
    """The real demo-lr environment, as the RL stage builds it (stages/rl/presets.py, preset_env)."""
    from env import TextSchedulingEnv
    from stages.rl.presets import preset_env
    return TextSchedulingEnv(base, preset_env("demo-lr", Path(base)))


def _base_policy(env, name: str, seed: int):
    from env import SchedulePolicy, StepSizeSchedule
    from common.policies import ConstantPolicy
    names = env.config.mode_names
    if name == "rule":  # demo-lr's tuned rule: TEXT in [3, 6], else MIXED, lr x0.5
        return SchedulePolicy(env.config, 0.0, "MIXED", StepSizeSchedule("constant", 0.5))
    if name == "random":
        rng = np.random.default_rng([seed, 7])
        return lambda obs, info: int(rng.integers(len(names)))
    return ConstantPolicy(names.index(name))


class _Snapshots:
    """A policy wrapper that saves the environment's state before the decisions in `at` (decisions
    left), so that probes can continue the episode from there."""

    def __init__(self, env, policy, at):
        self.env, self.policy, self.at, self.saved, self.t = env, policy, set(at), {}, 0

    def reset(self, seed):
        self.t = 0
        if hasattr(self.policy, "reset"):
            self.policy.reset(seed)

    def __call__(self, obs, info):
        left = T - self.t
        if left in self.at:
            self.saved[left] = self.env.get_state()
        self.t += 1
        return self.policy(obs, info)


def _obs(info) -> np.ndarray:
    """The observation an info dict describes (env/scheduling.py OBS_NAMES; the same values)."""
    from env import OBS_NAMES
    return np.array([info[k] for k in OBS_NAMES], np.float32)


def _step_record(obs, info) -> dict:
    return {"phi": round(float(info["phi"]), 5), "loss_text": round(float(info["loss_text"]), 6),
            "obs": [round(float(v), 6) for v in obs]}


def _episode(first_obs, first_info, actions, rewards, infos, obs_list) -> dict:
    return {"actions": [int(a) for a in actions], "rewards": [round(float(r), 6) for r in rewards],
            "phi_end": round(float(infos[-1]["reward_terms"].get("phi_end", 0.0)), 6),
            "first": _step_record(first_obs, first_info),
            "steps": [_step_record(o, i) for o, i in zip(obs_list, infos)]}


def record_seed(env, seed: int, have=()) -> dict:
    """Every schedule of BASES, BRANCHES and FIXED on one seed that is not in `have`."""
    from common.episodes import play
    names = env.config.mode_names
    out = {}
    for name, plan in {**FIXED, **VALIDATION}.items():
        if name not in have:
            steps = iter(plan)
            ep = play(env, lambda obs, info, _s=steps: next(_s), seed)
            out[name] = _episode(_obs(ep.first_info), ep.first_info, ep.actions, ep.rewards, ep.infos,
                                 [_obs(i) for i in ep.infos])
    for base in BASES:
        branches = BRANCHES.get(base, [])
        if base in have and all(branch_name(base, k, m) in have for k, m in branches):
            continue
        snap = _Snapshots(env, _base_policy(env, base, seed), {k for k, _ in branches})
        ep = play(env, snap, seed)
        obs_seen = [_obs(i) for i in ep.infos]
        first_obs = _obs(ep.first_info)
        out[base] = _episode(first_obs, ep.first_info, ep.actions, ep.rewards, ep.infos, obs_seen)
        for k, mode in branches:
            env.set_state(snap.saved[k])
            a = names.index(mode)
            n = T - k
            actions, rewards, infos, obs_list = ep.actions[:n], ep.rewards[:n], ep.infos[:n], obs_seen[:n]
            for _ in range(k):
                _, r, terminated, _, info = env.step(a)
                actions.append(a), rewards.append(r), infos.append(info), obs_list.append(_obs(info))
            assert terminated, "a probe must end with the episode"
            out[branch_name(base, k, mode)] = _episode(first_obs, ep.first_info, actions, rewards, infos, obs_list)
    return out


def schedule_names() -> list:
    return list(FIXED) + list(VALIDATION) + [n for b in BASES
                                             for n in [b] + [branch_name(b, k, m) for k, m in BRANCHES.get(b, [])]]


def decisions_per_seed() -> int:
    return (len(BASES) + len(FIXED) + len(VALIDATION)) * T + sum(k for b in BRANCHES.values() for k, _ in b)


def cmd_record(args) -> int:
    from tqdm import tqdm
    torch.set_num_threads(1)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if seeds[0] < RESERVED[1] and seeds[-1] >= RESERVED[0]:
        print(f"error: seeds {seeds[0]}..{seeds[-1]} overlap {RESERVED[0]}..{RESERVED[1] - 1}, the presets' "
              "evaluation, held-out and teacher seeds; use --first-seed 40000 or above", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "episodes.jsonl"
    have = {s: set(v) for s, v in load_recording(path).items()} if path.exists() else {}
    wanted = set(schedule_names())
    todo = [s for s in seeds if not wanted <= have.get(s, set())]
    n_dec = decisions_per_seed()
    print(f"{cpu_model()}, 1 torch thread; base {args.base}; {len(seeds)} seeds from {seeds[0]}, "
          f"{len(BASES) + len(FIXED) + len(VALIDATION)} full schedules + "
          f"{sum(len(b) for b in BRANCHES.values())} probes per seed = "
          f"{n_dec} decisions ({n_dec / T:.1f} episodes' worth); {len(seeds) - len(todo)} seeds complete in {path}")
    if not todo:
        return 0
    env = demo_lr_env(args.base)
    start = time.process_time()
    with open(path, "a") as f, tqdm(todo, unit="seed") as bar:
        for i, seed in enumerate(bar):
            line = {"seed": seed, "schedules": record_seed(env, seed, have.get(seed, set()))}
            f.write(json.dumps(line) + "\n")
            f.flush()
            os.fsync(f.fileno())
            per_seed = (time.process_time() - start) / (i + 1)
            bar.set_postfix({"CPU min left": f"{per_seed * (len(todo) - i - 1) / 60:.1f}"}, refresh=False)
    cpu = time.process_time() - start
    print(f"recorded {len(todo)} seeds in {cpu / 60:.1f} CPU minutes")
    return 0


def cmd_confirm(args) -> int:
    """The schedules PPO found on the surrogate (VALIDATION) and the decay, on fresh real seeds that
    neither the fit nor any agent saw: the paired difference with the decay."""
    from common.episodes import play
    from common.stats import summarize
    from tqdm import tqdm
    torch.set_num_threads(1)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    if seeds[0] < RESERVED[1] and seeds[-1] >= RESERVED[0] or seeds[0] < 40_000 + 40 and seeds[-1] >= 40_000:
        print("error: use seeds apart from the presets' and the recording's (--first-seed 50000)", file=sys.stderr)
        return 2
    plans = {DECAY: [2] * (T - 6) + [1] * 6, **VALIDATION}
    path = OUT / "confirm.jsonl"
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            d = json.loads(line)
            done[d["seed"]] = d["returns"]
    env = demo_lr_env(args.base)
    start = time.process_time()
    with open(path, "a") as f:
        for seed in tqdm([s for s in seeds if s not in done], unit="seed"):
            returns = {}
            for name, plan in plans.items():
                steps = iter(plan)
                returns[name] = play(env, lambda obs, info, _s=steps: next(_s), seed).total_reward
            done[seed] = returns
            f.write(json.dumps({"seed": seed, "returns": returns}) + "\n")
            f.flush()
    print(f"{cpu_model()}; {len(seeds)} fresh seeds {seeds[0]}..{seeds[-1]}; "
          f"{(time.process_time() - start) / 60:.1f} CPU minutes")
    dec = np.array([done[s][DECAY] for s in seeds])
    print(f"the decay: {summarize(dec)['mean']:+.2f}")
    for name in VALIDATION:
        x = np.array([done[s][name] for s in seeds])
        d = summarize(x - dec)
        print(f"{name}: {summarize(x)['mean']:+.2f}; − the decay {d['mean']:+.2f} [{d['ci95_low']:+.2f}, "
              f"{d['ci95_high']:+.2f}] (std {d['std']:.2f}), higher on {int((x > dec).sum())} of {len(seeds)}")
    return 0


def load_recording(path: Path = OUT / "episodes.jsonl") -> dict:
    """{seed: {schedule: episode}}: every line's schedules, merged per seed (a line cut by an
    interruption is skipped: its schedules are played again)."""
    out: dict = {}
    for line in path.read_text().splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        out.setdefault(d["seed"], {}).update(d["schedules"])
    return out


# ---------------------------------------------------------------------------- fit
def arrays(rec: dict) -> dict:
    """{schedule: {"actions" [S, T], "loss" [S, T+1], "phi" [S, T+1], "rewards" [S, T], "obs" [S, T+1, 7]}}
    over the recorded seeds (in seed order)."""
    seeds = sorted(rec)
    out = {}
    for name in [n for n in rec[seeds[0]] if all(n in rec[s] for s in seeds)]:
        eps = [rec[s][name] for s in seeds]
        out[name] = {"actions": np.array([e["actions"] for e in eps]),
                     "loss": np.array([[e["first"]["loss_text"]] + [x["loss_text"] for x in e["steps"]] for e in eps]),
                     "phi": np.array([[e["first"]["phi"]] + [x["phi"] for x in e["steps"]] for e in eps]),
                     "rewards": np.array([e["rewards"] for e in eps]),
                     "obs": np.array([[e["first"]["obs"]] + [x["obs"] for x in e["steps"]] for e in eps])}
    return out


# fitted fields and how each is kept in range: "exp" positive, "sig" in (0, 1), "free"
PHI_FIELDS = {"phi0": "free", "phi_text": "free", "phi_text_slope": "free", "a_text": "exp", "phi_mixed": "free",
              "a_mixed": "exp", "mu_phi": "sig"}
TEXT_FIELDS = {"L_inf": "free", "B0": "exp", "c": "exp", "q": "exp", "N0": "exp", "nu02": "exp", "nu05": "exp",
               "nu1": "exp", "amp": "exp", "tau": "exp", "k": "exp", "kappa": "exp"}
MIXED_FIELDS = {"w_mixed": "sig", "g": "exp", "phi_cost": "free", "lag": "sig", "r_repair": "exp",
                "r_repair_mixed": "exp", "nu_mixed": "exp", "g_young": "exp", "keep": "sig"}
NOISE_FIELDS = {"rho": "sig", "gamma": "exp", "sd_batch": "exp", "sd_luck": "exp", "sd_luck_mixed": "exp"}


def _to_raw(v: float, kind: str) -> float:
    return math.log(v) if kind == "exp" else math.log(v / (1 - v)) if kind == "sig" else v


def _from_raw(x, kind: str):
    return torch.exp(x) if kind == "exp" else torch.sigmoid(x) if kind == "sig" else x


def _optimise(params, fields: dict, objective, steps: int = 2000, lr: float = 0.03):
    """Adam on the unconstrained forms of `fields` of `params` (a SurrogateParams), minimising
    objective(p) where p is a copy whose fitted fields are torch scalars. Returns (fitted copy, objective)."""
    import copy
    raw = {k: torch.tensor(_to_raw(getattr(params, k), kind), dtype=torch.float64, requires_grad=True)
           for k, kind in fields.items()}
    opt = torch.optim.Adam(raw.values(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)

    def current():
        p = copy.copy(params)
        for k, kind in fields.items():
            setattr(p, k, _from_raw(raw[k], kind))
        return p
    for _ in range(steps):
        opt.zero_grad()
        loss = objective(current())
        loss.backward()
        opt.step()
        sched.step()
    fitted = copy.copy(params)
    with torch.no_grad():
        for k, kind in fields.items():
            setattr(fitted, k, float(_from_raw(raw[k], kind)))
        final = float(objective(current()))
    return fitted, final


def simulate_mean(p, actions: torch.Tensor):
    """Mean paths (loss, Φ) [n, T+1] of the surrogate's dynamics for action sequences [n, T]."""
    from bench.surrogate_model import initial_state, mean_step
    n, steps = actions.shape
    state = initial_state(p, n, torch)
    losses, phis = [p.L_inf + state[0] + state[1] + state[2] + state[7]], [state[3]]  # state: B, N, D, Φ, A, V, P, K
    for t in range(steps):
        state = mean_step(p, state, actions[:, t], torch)
        losses.append(p.L_inf + state[0] + state[1] + state[2] + state[7])
        phis.append(state[3])
    return torch.stack(losses, 1), torch.stack(phis, 1)


class MeanPaths:
    """The recorded schedules' mean loss and Φ paths over seeds, and the model's: a schedule whose
    actions differ by seed (the rule) is simulated per seed and averaged."""

    def __init__(self, data: dict, names):
        self.names = list(names)
        rows, self.slices, start = [], [], 0
        for n in self.names:
            acts = data[n]["actions"]
            acts = acts if (acts != acts[:1]).any() else acts[:1]
            rows.append(acts)
            self.slices.append(slice(start, start + len(acts)))
            start += len(acts)
        self.actions = torch.tensor(np.concatenate(rows))
        self.loss = torch.tensor(np.stack([data[n]["loss"].mean(0) for n in self.names]))
        self.phi = torch.tensor(np.stack([data[n]["phi"].mean(0) for n in self.names]))

    def model(self, p):
        loss, phi = simulate_mean(p, self.actions)
        return (torch.stack([loss[s].mean(0) for s in self.slices]), torch.stack([phi[s].mean(0) for s in self.slices]))

    def loss_error(self, p):
        """Mean squared error of the per-decision drops of the loss, plus 0.4 x that of the whole
        episode's drop (its return's text part), in reward units (100 x nats)."""
        model = 100 * self.model(p)[0]
        real = 100 * self.loss
        steps = ((model[:, :-1] - model[:, 1:]) - (real[:, :-1] - real[:, 1:])) ** 2
        whole = ((model[:, 0] - model[:, -1]) - (real[:, 0] - real[:, -1])) ** 2
        return steps.mean() + 0.4 * whole.mean()

    def phi_error(self, p):
        """Mean squared error of the Φ paths, plus that of the last Φ (the return's Φ term)."""
        phi = self.model(p)[1]
        return ((phi - self.phi) ** 2).mean() + ((phi[:, -1] - self.phi[:, -1]) ** 2).mean()


def noise_cov(p, a: np.ndarray, b: np.ndarray) -> torch.Tensor:
    """The model's covariance [T+1, T+1] of the loss deviation X of two schedules (action
    sequences a, b) on the same seed: X_0 shared; each decision adds s^gamma (sd_batch z + luck u)."""
    from bench.surrogate_model import MIXED, STEP
    T = len(a)
    sa, sb = torch.tensor(STEP[a]), torch.tensor(STEP[b])
    same = torch.tensor((a == b).astype(float))
    mixed = torch.tensor(MIXED[a].astype(float))
    luck2 = p.sd_luck ** 2 + mixed * (p.sd_luck_mixed ** 2 - p.sd_luck ** 2)
    innov = (sa * sb) ** p.gamma * (p.sd_batch ** 2 + luck2 * same)  # [T]
    t = torch.arange(T + 1, dtype=torch.float64)
    cov = p.rho ** (t[:, None] + t[None, :]) * p.sd_reset ** 2
    for v in range(T):  # decision v enters X_t for t > v with weight rho^(t-1-v)
        w = torch.where(t > v, p.rho ** (t - 1 - v).clamp_min(0), torch.zeros((), dtype=torch.float64))
        cov = cov + innov[v] * w[:, None] * w[None, :]
    return cov


NOISE_SCHEDULES = ("TEXT@1", "TEXT@0.5", "TEXT@0.2", DECAY, "TEXT@1>TEXT@0.2@12", "TEXT@0.5>TEXT@1@12",
                   "TEXT@1>TEXT@0.5@18", "TEXT@1>MIXED@0.5@6", "TEXT@1>MIXED@1@6", "TEXT@1>MIXED@0.5@12")
NOISE_PAIRS = tuple((a, b) for i, a in enumerate(NOISE_SCHEDULES) for b in NOISE_SCHEDULES[i + 1:])


def noise_statistics(data: dict):
    """What the noise is fitted to, from the recorded loss paths (reward units, 100 x nats): each
    schedule's variance over seeds of its loss drop L_0 - L_T, each pair's variance of the paired
    difference of L_T, and the per-decision drop's variance and lag-1 covariance on the three
    constant schedules."""
    loss = {k: 100 * data[k]["loss"] for k in NOISE_SCHEDULES}
    ret = {k: (v[:, 0] - v[:, -1]).var(ddof=1) for k, v in loss.items()}
    pair = {(a, b): (loss[a][:, -1] - loss[b][:, -1]).var(ddof=1) for a, b in NOISE_PAIRS}
    steps = {}
    for k in ("TEXT@1", "TEXT@0.5", "TEXT@0.2"):
        r = loss[k][:, :-1] - loss[k][:, 1:]
        r = r - r.mean(0)
        steps[k] = ((r ** 2).sum(0).mean() / (len(r) - 1), (r[:, 1:] * r[:, :-1]).sum(0).mean() / (len(r) - 1))
    return ret, pair, steps


def noise_objective(p, data: dict, stats, report: bool = False):
    ret, pair, steps = stats
    covs = {}

    def cov(a, b):
        if (a, b) not in covs:
            covs[a, b] = 1e4 * noise_cov(p, data[a]["actions"][0], data[b]["actions"][0])
        return covs[a, b]
    err, rows = [], []
    for k, v in ret.items():
        c = cov(k, k)
        m = c[0, 0] + c[-1, -1] - 2 * c[0, -1]
        err.append(torch.log(m / v))
        rows.append((f"std of {k}'s loss drop", math.sqrt(v), float(m.detach()) ** 0.5))
    for (a, b), v in pair.items():
        m = cov(a, a)[-1, -1] + cov(b, b)[-1, -1] - 2 * cov(a, b)[-1, -1]
        err.append(torch.log(m / v))
        rows.append((f"std of {a} − {b}, last loss", math.sqrt(v), float(m.detach()) ** 0.5))
    for k, (var, lag) in steps.items():
        c = cov(k, k)
        d = torch.diagonal(c)
        step_var = (d[:-1] + d[1:] - 2 * torch.diagonal(c, 1)).mean()
        # cov(X_{t-1} - X_t, X_t - X_{t+1}) over t
        lag_m = (torch.diagonal(c, 1)[:-1] - d[1:-1] - torch.diagonal(c, 2) + torch.diagonal(c, 1)[1:]).mean()
        err.append(torch.log(step_var / var))
        err.append((lag_m - lag) / var)
        rows.append((f"std of {k}'s per-decision drop", math.sqrt(var), float(step_var.detach()) ** 0.5))
        rows.append((f"lag-1 correlation of {k}'s drops", lag / var, float((lag_m / step_var).detach())))
    loss = (torch.stack(err) ** 2).mean()
    return (loss, rows) if report else loss


TEXT_ONLY = lambda name: "MIXED" not in name and name not in ("rule", "random")  # noqa: E731


def fit_params(data: dict):
    """Φ's dynamics on the mean Φ paths; the text loss's on the TEXT-only schedules' mean loss paths;
    MIXED's cost on the schedules with MIXED, the random one included (the states an untrained agent
    meets);
    the noise on the recorded spreads (noise_statistics); then Φ's noise, C and the Φ loss."""
    from bench.surrogate_model import SurrogateParams
    data = {k: v for k, v in data.items() if k not in VALIDATION}  # kept for the checks
    paths = MeanPaths(data, [n for n in data if n != "random"])
    text = MeanPaths(data, [n for n in data if TEXT_ONLY(n)])
    mixed = MeanPaths(data, [n for n in data if not TEXT_ONLY(n)])
    p = SurrogateParams(phi0=float(data["TEXT@1"]["phi"][:, 0].mean()), nu_mixed=0.5, g_young=1.0, keep=0.3,
                        r_repair=1.0,
                        L_inf=float(data["TEXT@1"]["loss"].mean(0).min()) - 0.3,
                        sd_reset=float(data["TEXT@1"]["loss"][:, 0].std(ddof=1)))
    p, phi_err = _optimise(p, PHI_FIELDS, paths.phi_error)
    p, text_err = _optimise(p, TEXT_FIELDS, text.loss_error, steps=3000)
    p, mixed_err = _optimise(p, MIXED_FIELDS, mixed.loss_error)
    stats = noise_statistics(data)
    p, noise_err = _optimise(p, NOISE_FIELDS, lambda q: noise_objective(q, data, stats), steps=400, lr=0.05)
    with torch.no_grad():
        noise_rows = noise_objective(p, data, stats, report=True)[1]
    # Φ's own noise: the residual's spread and its lag-1 correlation on always TEXT@1
    yphi = data["TEXT@1"]["phi"] - data["TEXT@1"]["phi"].mean(0)
    p.sd_phi = float(np.sqrt((yphi ** 2).sum(0).mean() / (len(yphi) - 1)))
    p.rho_phi = float(np.clip(np.mean(yphi[:, 1:] * yphi[:, :-1]) / np.mean(yphi ** 2), 0.0, 0.99))
    obs = np.concatenate([data[n]["obs"] for n in data])  # [E, T+1, 7]
    p.c_mean = [round(float(v), 5) for v in obs[:, :, 0].mean(0)]
    phi_all, lphi_all = obs[:, :, 1].ravel(), obs[:, :, 3].ravel()
    design = np.stack([np.ones_like(phi_all), phi_all, phi_all ** 2], 1)
    p.loss_phi_coef = [float(v) for v in np.linalg.lstsq(design, lphi_all, rcond=None)[0]]
    errors = {"phi_rmse": math.sqrt(phi_err), "text_rmse": math.sqrt(text_err), "mixed_rmse": math.sqrt(mixed_err),
              "noise": noise_err, "noise_rows": noise_rows}
    return p, errors


CHECK_PAIRS = (*((v, DECAY) for v in VALIDATION), (DECAY, "TEXT@1"), (DECAY, "TEXT@0.5"), ("TEXT@1", "TEXT@0.5"),
               ("TEXT@1", "TEXT@0.2"),
               ("TEXT@1>TEXT@0.5@3", "TEXT@1"), ("TEXT@1>TEXT@0.5@12", DECAY), ("rule", "TEXT@1"),
               ("TEXT@1>MIXED@0.5@3", "TEXT@1"))


def surrogate_returns(params, data: dict, n: int, seed: int = 2_000_000_000) -> dict:
    """Each recorded schedule played on the surrogate's seeds seed .. seed+n-1 (the same seeds for
    all: paired); "random" draws its actions anew."""
    from bench.surrogate_model import play_batch
    out = {}
    for name, d in data.items():
        if name == "random":
            rng = np.random.default_rng(seed)
            acts = rng.integers(6, size=(n, T))
        else:
            acts = np.repeat(d["actions"][:1], n, 0)
        step = iter(range(T))
        out[name] = play_batch(params, lambda obs, _a=acts, _s=step: _a[:, next(_s)], range(seed, seed + n))[0]
    return out


def fit_checks(params, data: dict, n: int) -> dict:
    from common.stats import summarize
    real = {k: d["rewards"].sum(1) for k, d in data.items()}
    sur = surrogate_returns(params, data, n)
    rows = {}
    for k in data:
        r = summarize(real[k])
        rows[k] = {"real": r, "surrogate_mean": float(sur[k].mean()), "surrogate_std": float(sur[k].std(ddof=1)),
                   "inside": bool(r["ci95_low"] <= sur[k].mean() <= r["ci95_high"]), "fitted": k not in VALIDATION}
    pairs = {}
    for a, b in CHECK_PAIRS:
        r = summarize(real[a] - real[b])
        pairs[f"{a} − {b}"] = {"real": r, "surrogate_mean": float((sur[a] - sur[b]).mean()),
                              "surrogate_std": float((sur[a] - sur[b]).std(ddof=1)),
                              "inside": bool(r["ci95_low"] <= (sur[a] - sur[b]).mean() <= r["ci95_high"])}
    from bench.surrogate_model import play_batch
    seeds = range(2_000_000_000, 2_000_000_000 + n)
    first = []
    play_batch(params, lambda obs: first.append(obs[:, 2].copy()) or np.full(len(obs), 2), seeds)
    sur_corr = float(np.corrcoef(first[0], sur["TEXT@1"])[0, 1])
    real_corr = float(np.corrcoef(data["TEXT@1"]["loss"][:, 0], real["TEXT@1"])[0, 1])
    return {"schedules": rows, "pairs": pairs, "reset_corr": {"real": real_corr, "surrogate": sur_corr}}


def best_schedules(params, n: int, top: int = 6) -> list:
    """The surrogate's best open-loop TEXT-only step-size schedules (one or two switches between
    TEXT@1, TEXT@0.5 and TEXT@0.2), each paired with the decay on n seeds: how much room the decay leaves."""
    from bench.surrogate_model import MODE_NAMES, decay_actions, play_batch
    seeds = range(2_000_000_000, 2_000_000_000 + n)
    decay = play_batch(params, decay_actions, seeds)[0]
    plans = {MODE_NAMES[a]: [a] * T for a in (0, 1, 2)}
    for a in (2, 1):
        for b in (1, 0):
            if b < a:
                for k in range(1, T):
                    plans[f"{MODE_NAMES[a]}, {MODE_NAMES[b]} for the last {k}"] = [a] * (T - k) + [b] * k
    for k1 in range(4, T, 2):
        for k2 in range(1, k1, 1):
            plans[f"TEXT@1, TEXT@0.5 for the last {k1}, TEXT@0.2 for the last {k2}"] = \
                [2] * (T - k1) + [1] * (k1 - k2) + [0] * k2
    out = []
    for name, plan in plans.items():
        acts = np.array(plan)
        ret = play_batch(params, lambda obs, _a=acts: np.full(len(obs), _a[int(round((1 - obs[0, 6]) * T))]), seeds)[0]
        out.append((float((ret - decay).mean()), float((ret - decay).std(ddof=1) / math.sqrt(n)), name))
    return sorted(out, reverse=True)[:top]


def cmd_fit(args) -> int:
    torch.set_num_threads(1)
    rec = load_recording(Path(args.recording))
    data = arrays(rec)
    n_eps = sum(len(d["actions"]) for d in data.values())
    print(f"{cpu_model()}; recording {args.recording}: {len(rec)} seeds ({min(rec)}..{max(rec)}), "
          f"{len(data)} schedules, {n_eps} episodes")
    real_reward = {k: d["rewards"][:, :-1] for k, d in data.items()}
    gain = {k: 100 * (d["loss"][:, :-2] - d["loss"][:, 1:-1]) for k, d in data.items()}
    worst = max(float(np.abs(real_reward[k] - gain[k]).max()) for k in data)
    print(f"the reward is 100 x the held-out loss's drop (but the last decision's Φ term) to {worst:.1e}")
    start = time.process_time()
    params, errors = fit_params(data)
    print(f"fitted in {time.process_time() - start:.0f} CPU s; RMSE of the mean paths: Φ {errors['phi_rmse']:.3f}, "
          f"the loss of TEXT-only schedules {errors['text_rmse']:.2f} and of those with MIXED "
          f"{errors['mixed_rmse']:.2f} (reward units: 100 x nats); noise statistics' mean squared log-error "
          f"{errors['noise']:.3f}")
    rows = errors["noise_rows"]
    ratios = np.array([abs(math.log(m / r)) for label, r, m in rows if "correlation" not in label])
    print(f"\nthe noise: {len(rows)} statistics, the model's std within a factor {math.exp(np.median(ratios)):.2f} "
          f"of the real one at the median, {math.exp(ratios.max()):.2f} at worst; the schedules', the pairs "
          "with TEXT@1 and the per-decision ones:")
    print("\n| noise statistic (reward units) | real | surrogate |\n|---|---|---|")
    for label, real, model in rows:
        if " − " not in label or label.startswith("std of TEXT@1 − "):
            print(f"| {label} | {real:.2f} | {model:.2f} |")
    checks = fit_checks(params, data, args.n_check)
    print("\n| schedule (* not fitted: played after the fit, to check it) | real mean [95 % CI] (std) | "
          "surrogate mean (std) | inside |")
    print("|---|---|---|---|")
    for k, r in checks["schedules"].items():
        x = r["real"]
        print(f"| {k}{'' if r['fitted'] else ' *'} | {x['mean']:+.2f} [{x['ci95_low']:+.2f}, {x['ci95_high']:+.2f}] "
              f"({x['std']:.2f}) | "
              f"{r['surrogate_mean']:+.2f} ({r['surrogate_std']:.2f}) | {'yes' if r['inside'] else '**no**'} |")
    print("\n| paired difference | real mean [95 % CI] (std) | surrogate mean (std) | inside |")
    print("|---|---|---|---|")
    for k, r in checks["pairs"].items():
        x = r["real"]
        print(f"| {k} | {x['mean']:+.2f} [{x['ci95_low']:+.2f}, {x['ci95_high']:+.2f}] ({x['std']:.2f}) | "
              f"{r['surrogate_mean']:+.2f} ({r['surrogate_std']:.2f}) | {'yes' if r['inside'] else '**no**'} |")
    print("\nthe surrogate's best open-loop TEXT-only schedules, paired with the decay (± 1 s.e.):")
    for diff, se, name in best_schedules(params, args.n_check):
        print(f"  {name}: {diff:+.2f} ± {se:.2f}")
    c = checks["reset_corr"]
    print(f"\ncorrelation of the reset's held-out loss (the first observation) with always TEXT@1's return: real "
          f"{c['real']:+.2f}, surrogate {c['surrogate']:+.2f}")
    print("\nfitted parameters:")
    for k, v in params.to_dict().items():
        print(f"  {k} = {np.round(v, 4).tolist() if isinstance(v, list) else round(v, 5)}")
    doc = {"params": params.to_dict(), "errors": errors, "checks": checks,
           "recording": {"seeds": [min(rec), max(rec)], "n_seeds": len(rec), "schedules": list(data),
                         "episodes": n_eps}, "cpu": cpu_model()}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0

# ---------------------------------------------------------------------------- levers
# What each lever changes in the demo preset's PPO (stages/rl/presets.py DEMO["ppo"]: n_steps 32,
# minibatch 64, 10 epochs, gamma 1, the rest PPOConfig's defaults; 8 environments).
LEVERS = {
    "plain, 8 envs (the preset)": dict(num_envs=8),
    "teacher, 8 envs": dict(num_envs=8, teacher=True),
    "groups of 4, loo+gae, 8 envs": dict(num_envs=8, group_size=4, group_baseline="loo+gae"),
    "groups of 4, loo, 8 envs": dict(num_envs=8, group_size=4, group_baseline="loo"),
    "groups of 4, loo+gae, 16 envs": dict(num_envs=16, group_size=4, group_baseline="loo+gae"),
    "groups of 4, loo, 16 envs": dict(num_envs=16, group_size=4, group_baseline="loo"),
    "teacher + groups of 4, loo+gae, 16 envs": dict(num_envs=16, group_size=4, group_baseline="loo+gae", teacher=True),
    "plain, 16 envs": dict(num_envs=16),
    "plain, 32 envs": dict(num_envs=32),
}
CHECKPOINTS = (2048, 5120, 10240, 15360, 20480, 40960)  # decisions, multiples of every lever's rollout
EVAL_SEED = 1_000_000_000  # the surrogate's evaluation episodes: apart from every training stream's seeds
TEACHER_SEED, TEACHER_EPISODES = 30_000, 32  # as the RL stage's --teacher (stages/rl/teacher.py)


def decay_teacher():
    """The real tuned decay control (env.SchedulePolicy): it reads Φ and time_left, which the
    surrogate's observation holds at the same places."""
    from env import SchedulePolicy, StepSizeSchedule
    from stages.rl.presets import preset_env
    return SchedulePolicy(preset_env("demo-lr", None), 0.0, None,
                          StepSizeSchedule("step", 1.0, 0.5, 6))


def score(params, act, n_eval: int) -> dict:
    """A greedy policy against the decay on the same surrogate evaluation seeds (paired)."""
    from bench.surrogate_model import decay_actions, play_batch
    from common.stats import summarize
    seeds = range(EVAL_SEED, EVAL_SEED + n_eval)
    mine, actions = play_batch(params, act, seeds)
    decay, _ = play_batch(params, decay_actions, seeds)
    diff = summarize(mine - decay)
    mix = np.bincount(actions.ravel(), minlength=6) / actions.size
    return {"mean": float(mine.mean()), "diff": diff["mean"], "diff_low": diff["ci95_low"],
            "diff_high": diff["ci95_high"], "mix": [round(float(v), 4) for v in mix]}


def train_lever(params, lever: dict, seed: int, n_eval: int, checkpoints=CHECKPOINTS) -> dict:
    """One training seed of one lever: {decisions: score} at each checkpoint (0: the clone)."""
    from bench.surrogate_model import SurrogateEnv
    from ppo import PPO, FunctionCallback
    from ppo.cloning import clone
    from stages.rl.presets import DEMO
    cfg = DEMO["ppo"].replace(total_timesteps=max(checkpoints), seed=seed, torch_threads=1, progress_bar=False,
                              group_size=lever.get("group_size", 1),
                              group_baseline=lever.get("group_baseline", "loo+gae"))
    agent = PPO([lambda: SurrogateEnv(params)] * lever["num_envs"], cfg)
    act = lambda obs: agent.predict(obs, deterministic=True)  # noqa: E731
    out = {}
    if lever.get("teacher"):
        clone(agent, SurrogateEnv(params), decay_teacher(), TEACHER_EPISODES, TEACHER_SEED)
        out[0] = score(params, act, n_eval)
    todo = list(checkpoints)

    def check(trainer):
        while todo and trainer.global_step >= todo[0]:
            out[todo.pop(0)] = score(params, act, n_eval)
    agent.learn(callbacks=[FunctionCallback(on_update_end=check)])
    return out


def level_at(rows: dict, steps) -> tuple:
    """Over training seeds: for each checkpoint the mean paired difference with the decay and its
    Student-t 95 % CI over the seeds; the checkpoints where at least 4 of 5 (80 % of the) training
    seeds are level with the decay, each by its own paired CI over the evaluation episodes."""
    from common.stats import summarize
    curve, level = {}, []
    for n in steps:
        got = [r[str(n)] for r in rows.values() if str(n) in r]
        if len(got) < 2:
            continue
        curve[n] = summarize([g["diff"] for g in got])
        if sum(g["diff_high"] >= 0 for g in got) >= 0.8 * len(got):
            level.append(n)
    return curve, level


def _spans(level: list, steps: list) -> str:
    """[0, 2048, 5120, 20480] over steps [0, 2048, 5120, 10240, 20480] -> "0–5,120; 20,480"."""
    if not level:
        return "never"
    out, run = [], [level[0]]
    for n in level[1:]:
        if steps.index(n) == steps.index(run[-1]) + 1:
            run.append(n)
        else:
            out.append(run)
            run = [n]
    out.append(run)
    return "; ".join(f"{r[0]:,}" if len(r) == 1 else f"{r[0]:,}–{r[-1]:,}" for r in out)


def cmd_levers(args) -> int:
    from bench.surrogate_model import SurrogateParams
    from common.stats import summarize
    torch.set_num_threads(1)
    params = SurrogateParams.load(args.fit)
    seeds = list(range(1, args.seeds + 1))
    checkpoints = CHECKPOINTS if not args.quick else (2048, 5120)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if path.exists() and not args.quick else {}
    import hashlib  # new parameters, evaluation count or set of checkpoints start the results afresh
    digest = hashlib.sha256(json.dumps(params.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
    key = f"{digest}|{args.n_eval}|{','.join(map(str, checkpoints))}"
    if results.get("key") != key:
        results = {"key": key, "runs": {}, "cpu_s": {}}
    levers = {k: v for k, v in LEVERS.items() if not args.only or any(o in k for o in args.only)}
    print(f"{cpu_model()}, 1 torch thread; surrogate {args.fit}; {len(levers)} levers x {len(seeds)} training "
          f"seeds, up to {max(checkpoints):,} decisions each; {args.n_eval} evaluation episodes (seeds "
          f"{EVAL_SEED}+), paired with the decay")
    from tqdm import tqdm
    jobs = [(name, s) for name in levers for s in seeds if str(s) not in results["runs"].get(name, {})]
    for name, s in tqdm(jobs, unit="run"):
        start = time.process_time()
        out = train_lever(params, levers[name], s, args.n_eval, checkpoints)
        results["runs"].setdefault(name, {})[str(s)] = {str(k): v for k, v in out.items()}
        results["cpu_s"].setdefault(name, {})[str(s)] = time.process_time() - start
        if not args.quick:
            path.write_text(json.dumps(results))
    steps = sorted({int(n) for runs in results["runs"].values() for r in runs.values() for n in r})
    from bench.surrogate_model import MODE_NAMES
    print("\nthe constant controls on the same evaluation seeds, paired with the decay:")
    for a in (2, 1, 0):
        ref = score(params, lambda obs, _a=a: np.full(len(obs), _a), args.n_eval)
        print(f"  always {MODE_NAMES[a]}: {ref['diff']:+.2f} [{ref['diff_low']:+.2f}, {ref['diff_high']:+.2f}]")
    print("\nmean paired difference with the decay (greedy agent − decay, same evaluation seeds) over training "
          "seeds, [95 % CI over the seeds]; level: the checkpoints where at least 4 of 5 training seeds are level "
          "with the decay (each one's paired CI over the evaluation episodes not below 0)\n")
    print("| lever | " + " | ".join(f"{n:,}" for n in steps) + " | level with the decay at | CPU s per run |")
    print("|---|" + "---|" * (len(steps) + 2))
    for name in levers:
        rows = results["runs"].get(name, {})
        curve, level = level_at(rows, steps)
        cells = [f"{curve[n]['mean']:+.2f} [{curve[n]['ci95_low']:+.2f}, {curve[n]['ci95_high']:+.2f}]"
                 if n in curve else "—" for n in steps]
        cpu = summarize(results["cpu_s"].get(name, {}).values())["mean"] if rows else float("nan")
        print(f"| {name} | " + " | ".join(cells) + f" | {_spans(level, steps)} | {cpu:.0f} |")
    print("\ngreedy action mix (TEXT@0.2 / TEXT@0.5 / TEXT@1 / MIXED@0.2 / MIXED@0.5 / MIXED@1, %) and "
          "training seeds level with the decay (own paired CI not below 0), per checkpoint\n")
    print("| lever | " + " | ".join(f"{n:,}" for n in steps) + " |")
    print("|---|" + "---|" * len(steps))
    for name in levers:
        rows = results["runs"].get(name, {})
        cells = []
        for n in steps:
            got = [r[str(n)] for r in rows.values() if str(n) in r]
            if not got:
                cells.append("—")
                continue
            mix = np.mean([g["mix"] for g in got], 0) * 100
            level = sum(g["diff_high"] >= 0 for g in got)
            cells.append("/".join(f"{v:.0f}" for v in mix) + f"; {level}/{len(got)}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    total = sum(v for d in results["cpu_s"].values() for v in d.values())
    print(f"\n{total / 60:.1f} CPU minutes of training and scoring in all ({cpu_model()})")
    return 0

# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record", help="play the schedules on the real demo-lr environment")
    r.add_argument("--base", required=True, help="the demo base snapshot (python train.py --stage base writes "
                                                 "ckpt/base-step100.pt)")
    r.add_argument("--seeds", type=int, default=40)
    r.add_argument("--first-seed", type=int, default=40_000)
    c = sub.add_parser("confirm", help="play what PPO found on the surrogate, and the decay, on fresh real seeds")
    c.add_argument("--base", required=True)
    c.add_argument("--seeds", type=int, default=40)
    c.add_argument("--first-seed", type=int, default=50_000)
    f = sub.add_parser("fit", help="fit the surrogate to the recording and check it")
    f.add_argument("--recording", default=str(OUT / "episodes.jsonl"))
    f.add_argument("--out", default=str(FIT_FILE))
    f.add_argument("--n-check", type=int, default=4000, help="surrogate episodes per schedule in the checks")
    lv = sub.add_parser("levers", help="train PPO on the surrogate with each lever")
    lv.add_argument("--fit", default=str(FIT_FILE), help="the fitted parameters (bench/surrogate.py fit)")
    lv.add_argument("--seeds", type=int, default=5, help="training seeds per lever")
    lv.add_argument("--n-eval", type=int, default=1000, help="evaluation episodes per checkpoint")
    lv.add_argument("--only", nargs="*", help="levers whose name contains one of these")
    lv.add_argument("--out", default=str(OUT / "levers.json"), help="results, continued by a rerun")
    lv.add_argument("--quick", action="store_true", help="2 checkpoints, nothing kept: a smoke run")
    args = p.parse_args(argv)
    return {"record": cmd_record, "confirm": cmd_confirm, "fit": cmd_fit, "levers": cmd_levers}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())

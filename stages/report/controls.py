"""The control policies every agent is compared with, scored once per base model and environment.

Two kinds (docs/rl.md, "Controls"):
- constant: random and "always <mode>"; they set the report's scale (0 = worst, 1 = best) and the
  over-fitting rule's unit (their spread), as before adaptive controls existed;
- adaptive: one per family of env/schedules.py, each the member with the best mean on the
  evaluation seeds, found by racing the members (common/racing.py: a member clearly behind the
  leader on the episodes played so far stops playing), then scored on the held-out seeds (the
  same select-then-report discipline as the agent's checkpoints): the **tuned rule** (Φ threshold
  x constant step size), the **tuned time switch** (TEXT until k decisions are left, then the tuned
  rule) and, when the modes carry more than one step size, the **tuned step-size decay** (the
  tuned rule's weights x step or cosine decay) and the **tuned plateau decay** (one step size
  lower after k decisions without a new best held-out loss, as ReduceLROnPlateau); and the
  **bandit** (Exp3.S). The agent's headline is its
  paired difference with the best of these.

Every evaluation is kept in `<base folder>/cache/controls/`, keyed by the base model's content,
the environment config, the seeds, the episode count and the policy: the RL stage, a resumed run,
the report stage and every training seed of a study play each control once.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

from common.files import write_json
from common.policies import RandomPolicy, control_policies
from common.racing import race_families
from env import EnvConfig, bandit, decay_family, plateau_family, rule_family, step_sizes, switch_family

from ..rl.presets import RunSettings
from .scoring import SUMMARY_KEYS, join_evaluations, paid, score_together

TUNED, SWITCH, DECAY, PLATEAU, BANDIT = ("tuned rule", "tuned time switch", "tuned step-size decay",
                                        "tuned plateau decay", "bandit")
ENDS = "held-out fixed"  # in `tuned`: the fixed controls the held-out seeds play (`heldout_fixed`)
CACHE_FORMAT = 1  # bump when what an evaluation holds changes, so old entries miss


class ControlCache:
    """One JSON file per evaluation: runs that share a base never rewrite each other's entries. A
    policy is keyed by its name (a rule's names its band and margin); change CACHE_FORMAT when a
    policy changes under the same name (e.g. the bandit's defaults)."""

    def __init__(self, base_path: Path, base_content: str, env_cfg: EnvConfig):
        self.folder = Path(base_path).parent / "cache" / "controls"
        self.key = {"format": CACHE_FORMAT, "base": base_content, "env": env_cfg.to_dict()}
        self.n_actions = len(env_cfg.modes)

    def path(self, policy: str, seed: int, n: int) -> Path:
        blob = json.dumps({**self.key, "policy": policy, "seed": seed, "n": n}, sort_keys=True)
        return self.folder / f"{hashlib.sha256(blob.encode()).hexdigest()[:20]}.json"

    def get(self, policy: str, seed: int, n: int) -> dict | None:
        """The stored evaluation; None (play it again, and `put` replaces the file) when it is
        absent, cut short by a crash, or of another shape than `is_evaluation` reads."""
        try:
            d = json.loads(self.path(policy, seed, n).read_text())
        except (OSError, ValueError):
            return None
        return d if is_evaluation(d, seed, n, self.n_actions) else None

    def put(self, policy: str, seed: int, n: int, result: dict) -> None:
        try:
            write_json(self.path(policy, seed, n), result)
        except OSError as e:  # a read-only base folder: the evaluation is still used, only not kept
            print(f"note: could not keep the control evaluation in {self.folder} ({e.strerror or e})")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _list_of(check):
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


# Every field of an evaluation (EvalResult.to_dict() of stages.report.scoring.score) that its readers use
# — the tuning (mean_reward), the report's rows and statuses, the paired verdict (seed,
# episode_returns), the dashboards — and the type they use it as (the report shows a missing
# statistic of `extra` as "—", so those may be absent, but not of another type).
EVALUATION_FIELDS = {"step": lambda v: v is None or _integer(v), "mean_reward": _number, "std_reward": _number,
                     "ci95_low": _number, "ci95_high": _number, "mean_ep_length": _number, "n_episodes": _integer,
                     "seed": _integer, "deterministic": lambda v: isinstance(v, bool),
                     "is_best": lambda v: isinstance(v, bool), "action_counts": _list_of(_integer),
                     "episode_returns": _list_of(_number), "episode_lengths": _list_of(_integer),
                     "extra": lambda v: isinstance(v, dict) and all(v.get(k) is None or _number(v[k])
                                                                   for k in (*SUMMARY_KEYS, "env_steps"))}


def is_evaluation(d, seed: int, n: int, n_actions: int) -> bool:
    """Whether `d` (a control cache file's JSON) is an evaluation of `n` episodes from `seed` over
    `n_actions` actions, every field of the type its readers take it as. An entry an older version
    left (a list, a dict without mean_reward, a number stored as a string) is not: it is played
    again, like a file cut short."""
    return (isinstance(d, dict) and all(k in d and ok(d[k]) for k, ok in EVALUATION_FIELDS.items())
            and d["seed"] == seed and d["n_episodes"] == n == len(d["episode_returns"]) == len(d["episode_lengths"])
            and len(d["action_counts"]) == n_actions)


def all_controls(envs, env_cfg: EnvConfig, run: RunSettings, base_path: Path, base_content: str, stored,
                 quiet: bool) -> tuple[tuple, tuple]:
    """The controls (constant, adaptive) on the evaluation and the held-out seeds: from `stored` (a
    resumed checkpoint's RunRecord, or None) when it played every family on this environment with
    these seeds and episodes, else from the base's control cache, else played. Every family is
    tuned on the evaluation seeds only."""
    episodes = run.eval_episodes
    played = stored.stored_controls(env_cfg, run) if stored is not None else None
    if (played is not None and tuned_over_current_families(played[0][1], env_cfg)
            and set(played[1][0]) == set(heldout_fixed(played[0][0]))):
        return played
    cache = ControlCache(base_path, base_content, env_cfg)
    evaluation = score_controls(envs, env_cfg, episodes, run.eval_seed, cache, quiet)
    tuned = {family: result["extra"]["rule"] for family, result in evaluation[1].items() if family != BANDIT}
    tuned[ENDS] = heldout_fixed(evaluation[0])
    heldout = score_controls(envs, env_cfg, episodes, run.heldout_seed, cache, quiet, tuned=tuned)
    return evaluation, heldout


def heldout_fixed(constants: dict) -> tuple:
    """The fixed controls the held-out seeds play, chosen by their means on the evaluation seeds:
    the worst and the best (the ends of the report's normalised scale; the best is the fixed control
    the held-out verdict is against) and the best constant policy, which the studies compare with,
    where random outranks every constant."""
    ranked = sorted(constants, key=lambda name: constants[name]["mean_reward"])
    best_constant = [name for name in ranked if name != RandomPolicy.name][-1]
    return tuple(dict.fromkeys((ranked[0], ranked[-1], best_constant)))


def adaptive_names(env_cfg: EnvConfig) -> tuple:
    """The adaptive controls a run on this environment reports."""
    return (TUNED, SWITCH, *((DECAY, PLATEAU) if several_step_sizes(env_cfg) else ()), BANDIT)


def control_names(env_cfg: EnvConfig) -> list:
    """Every control a run on this environment reports, by the name the report gives it."""
    return [*control_policies(len(env_cfg.modes), env_cfg.mode_names), *adaptive_names(env_cfg)]


def control_policy(env_cfg: EnvConfig, adaptive: dict, name: str):
    """The policy behind the control the report calls `name`: a constant control, or an adaptive
    family's member tuned on the evaluation seeds (`adaptive`: the run's adaptive controls there)
    -> (policy, its detail for the report)."""
    constants = control_policies(len(env_cfg.modes), env_cfg.mode_names)
    if name in constants:
        return constants[name], name
    if name == BANDIT:
        return bandit(env_cfg), adaptive[BANDIT]["extra"]["detail"]
    rules = rule_family(env_cfg)
    rule = adaptive[TUNED]["extra"]["rule"]
    family = {TUNED: rules, **later_families(env_cfg, rules[rule])}[name]
    member = adaptive[name]["extra"]["rule"]
    return family[member], adaptive[name]["extra"]["detail"]


def several_step_sizes(env_cfg: EnvConfig) -> bool:
    """Whether the step-size families have members: with one step size (even one other than 1)
    there is nothing to decay to, and a family without members has no best."""
    return len(step_sizes(env_cfg)) > 1


def later_families(env_cfg: EnvConfig, rule) -> dict:
    """The families built around the tuned rule: {family: {member name: policy}}."""
    out = {SWITCH: switch_family(env_cfg, rule)}
    if several_step_sizes(env_cfg):
        out[DECAY] = decay_family(env_cfg, rule)
        out[PLATEAU] = plateau_family(env_cfg, rule)
    return out


def tuned_over_current_families(adaptive: dict, env_cfg: EnvConfig) -> bool:
    """Whether stored adaptive controls were tuned over the families as this version defines them
    (the same members in each): a run recorded before a family grew plays the new members."""
    if set(adaptive) != set(adaptive_names(env_cfg)):
        return False
    rules = rule_family(env_cfg)
    try:
        if set(adaptive[TUNED]["extra"]["members"]) != set(rules):
            return False
        later = later_families(env_cfg, rules[adaptive[TUNED]["extra"]["rule"]])
        return all(set(adaptive[f]["extra"]["members"]) == set(m) for f, m in later.items())
    except KeyError:
        return False


def score_controls(envs, env_cfg: EnvConfig, n: int, seed: int, cache: ControlCache, quiet: bool,
                   tuned: dict | None = None) -> tuple[dict, dict]:
    """(constant controls, adaptive controls) on episodes seed .. seed+n-1 -> {name: EvalResult dict}.

    Without `tuned` (the evaluation seeds) each family's members race (common/racing.py): the
    winner, played on all n episodes, is the family's control — first the rule, then the families
    built on it, raced side by side with the constant controls and the bandit riding along (they
    play every round), so that a member sharing a stretch of decisions with another policy (the
    time switch's TEXT start with "always TEXT") pays it once (common.episodes.play_together). With
    `tuned` ({family: member name, ENDS: `heldout_fixed`'s names}, from the evaluation
    seeds: the held-out seeds) only those are played, side by side."""
    constants = control_policies(len(env_cfg.modes), env_cfg.mode_names)
    rules = rule_family(env_cfg)
    if tuned is not None:  # the held-out seeds: `heldout_fixed`'s controls and each family's member chosen before
        constants = {name: policy for name, policy in constants.items() if name in tuned[ENDS]}
        members = {TUNED: {tuned[TUNED]: rules[tuned[TUNED]]}}
        members.update({f: {tuned[f]: m[tuned[f]]} for f, m in later_families(env_cfg, rules[tuned[TUNED]]).items()})
        return race_and_play(envs, env_cfg, members, constants, n, seed, cache, quiet, "held-out controls")
    first = race_and_play(envs, env_cfg, {TUNED: rules}, {}, n, seed, cache, quiet, TUNED)[1]
    later = later_families(env_cfg, rules[first[TUNED]["extra"]["rule"]])
    played, adaptive = race_and_play(envs, env_cfg, later, constants, n, seed, cache, quiet,
                                      "later families and constants")
    return played, {**first, **adaptive}


def race_and_play(envs, env_cfg: EnvConfig, families: dict, constants: dict, n: int, seed: int,
                   cache: ControlCache, quiet: bool, what: str) -> tuple[dict, dict]:
    """Race `families` ({family: {member: policy}}) with the constants and the bandit riding along
    (a family of one member is simply played) -> ({constant: evaluation}, {family or BANDIT:
    its control's evaluation, with every member's mean and the race's cost})."""
    riders = {**constants, **({BANDIT: bandit(env_cfg)} if constants else {})}
    player = Player(envs, env_cfg, {**riders, **{m: p for ms in families.values() for m, p in ms.items()}},
                    n, seed, cache)
    t0 = time.time()
    with player.progress(f"{what}, seeds {seed}+", quiet):
        one_each = all(len(ms) == 1 for ms in families.values())  # nothing to race: one round
        won = race_families({f: list(ms) for f, ms in families.items()},
                            lambda names, start, count: player.play([*riders, *names], start, count), n,
                            (n,) if one_each else None)
    if player.new:  # silent when the cache held every episode
        grid, spent = sum(w.full_grid() for w in won.values()), sum(w.episodes for w in won.values())
        print(f"{what} on seeds {seed}..{seed + n - 1}: {spent + len(riders) * n} episodes"
              + (f" (racing: {spent} of the full grid's {grid})" if grid > spent else "")
              + f"; played {player.new} in {(time.time() - t0) / 60:.1f} min: {player.decisions:,} decisions for "
              f"{player.steps:,.0f} environment steps (side by side, a step the policies agree on is paid once)")
    adaptive = {f: _with(player.evaluation(w.chosen), rule=w.chosen, detail=w.chosen.removeprefix("rule: "),
                         members={m: sum(r) / len(r) for m, r in w.returns.items()},
                         **({"race": {"episodes": w.episodes, "full_grid": w.full_grid(), "dropped": w.dropped}}
                            if len(w.returns) > 1 else {}))
                for f, w in won.items()}
    if BANDIT in riders:
        b = riders[BANDIT]
        adaptive[BANDIT] = _with(player.evaluation(BANDIT), detail=f"Exp3.S, gamma {b.gamma:.2f}, alpha {b.alpha:.3f}")
    return {name: player.evaluation(name) for name in constants}, adaptive


def _with(result: dict, **extra) -> dict:
    return {**result, "extra": {**result["extra"], **extra}}


class Player:
    """Plays policies on slices of the seeds seed .. seed+n-1, side by side, each slice kept in the
    cache; a policy's whole evaluation (kept by an earlier run, or joined from its slices) serves
    every slice of it."""

    def __init__(self, envs, env_cfg: EnvConfig, policies: dict, n: int, seed: int, cache: ControlCache):
        self.envs, self.env_cfg, self.policies, self.n, self.seed, self.cache = envs, env_cfg, policies, n, seed, cache
        self.whole = {name: cache.get(name, seed, n) for name in policies}
        self.parts = {name: [] for name in policies}
        self.new, self.steps, self.decisions, self.bar = 0, 0.0, 0, None

    @contextlib.contextmanager
    def progress(self, desc: str, quiet: bool):
        from tqdm import tqdm
        with tqdm(total=len(self.policies) * self.n, desc=desc, unit="episode", disable=quiet,
                  dynamic_ncols=True) as self.bar:
            yield
            self.bar.total = self.bar.n  # a race ends before the full grid: the bar ends full

    def play(self, names: list, start: int, count: int) -> dict:
        """Each policy's returns on episodes seed+start .. +count-1 -> {name: returns}."""
        out, todo = {}, {}
        for name in names:
            if self.whole[name] is not None:
                out[name] = self.whole[name]["episode_returns"][start:start + count]
            elif (part := self.cache.get(name, self.seed + start, count)) is not None:
                self.parts[name].append(part)
                out[name] = part["episode_returns"]
            else:
                todo[name] = self.policies[name]
                continue
            self._tick(count)
        if todo:
            played = score_together(self.envs, todo, self.env_cfg, count, self.seed + start, on_episode=self._tick)
            for name, result in played.items():
                d = result.to_dict()
                self.cache.put(name, self.seed + start, count, d)
                self.parts[name].append(d)
                out[name] = d["episode_returns"]
                self.steps += paid(d)
                self.decisions += sum(d["episode_lengths"])
            self.new += count * len(todo)
        return out

    def _tick(self, k: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(k)

    def evaluation(self, name: str) -> dict:
        """The policy's evaluation on all n episodes (call once every round has been played)."""
        return self.whole[name] or join_evaluations(self.parts[name])

"""TensorBoard dashboards of the two stages: the tags each one writes, the runs the RL stage
writes them to, and its CUSTOM SCALARS layout.

Both stages log under the same root (`ckpt/runs/base`, `ckpt/runs/rl`), so the base
stage's tags carry an `lm/` prefix (`lm/train/loss`, ...) that PPO's `train/*` tags
cannot collide with.

How TensorBoard reads a layout (tensorboard/plugins/custom_scalar, checked against the
installed version): a **Multiline** chart's entries are regular expressions, joined as
`(r1)|(r2)` and matched against every tag with Python's `re.match` — anchored at the
start only, so `env/phi` also draws `env/phi_in_band_pct`. Its entries here are
therefore anchored at both ends (`^env/phi$`). A **Margin** chart's value / lower /
upper are literal tag names: the front end escapes them (`\\^` for `^`) and looks the
data up by exact name, so they must stay plain tag names, never anchored.

How TensorBoard colours curves (2.21, read from the front end's bundle, index.js in
tensorboard/webfiles.zip): the Custom Scalars and Scalars dashboards colour a curve by its
**run**, never by its tag, from a palette of seven (`tensorboardColorBlindAssist`: #ff7043
orange, #0077bb blue, #cc3311 red, #33bbee cyan, #ee3377 magenta, #009988 teal, #bbbbbb
grey), one palette for the whole page: the n-th run of the run list takes colour n mod 7.
The run list (`/data/runs`, plugins/core) holds every run under --logdir, ordered by the
wall time of the run's first event (names only break ties): not alphabetically, not per
chart. Time Series colours the same way from another palette of seven. So runs seven
apart in that list share a colour, whichever charts they draw.

Hence the RL stage writes at most **seven runs**: the agent's (`rl`, opened first, when
training starts) and six beside it, opened at their first write. Seven consecutive runs of
the list all differ in colour, and the agent's colour is no other run's while fewer than
seven runs come before it: `runs/base`, written earlier, comes first and shares its colour
only with the last of the six (the eighth run), which draws none of its tags. The runs
beside the agent (SIDE_RUNS):
- `rl/modes/<family>`, one per mode family — the modes' loss weights whatever their step size
  (TEXT@0.2, TEXT@0.5 and TEXT@1 are the family TEXT; without step sizes a family is a mode) —
  hold both curves about it: the agent's share of the family (`env/action_frac`, the
  action-mix chart) and the mean of the family's best constant control (`always <mode>`,
  `eval_vs_controls/mean_reward`, beside the agent's): a family has one colour in both.
- `rl/policies/<control>`: the adaptive controls (tuned rule, tuned time switch, bandit, step
  decay, ...), best mean first, as many as the six runs leave room for, each with its mean.
The random control, the other constant controls of a family and any adaptive control past the
six have no run (side_run_plan): a run past the sixth would take the agent's colour. Their means
are in report.md, beside every other control's; the step sizes the agent chose are `env/lr_scale`.
tests/test_dashboards.py computes every run's colour in tiny runs, with and without step-size
modes, by this rule and checks each chart.
"""
from __future__ import annotations

import re
from pathlib import Path

from common.logger import Logger
from common.policies import RandomPolicy, constant_name

# The base stage (stages/base.py): one line each; <k> is every key of
# infinito.training.train_step's stats.
BASE_TAGS = {
    "lm/train/loss": "training loss on the batch (CE + λ·L_phi, λ = --lambda-phi)",
    "lm/train/loss_text": "the cross-entropy part of the training loss",
    "lm/train/loss_phi": "the Φ loss term L_phi (unweighted; λ is --lambda-phi)",
    "lm/train/grad_norm": "gradient norm before clipping",
    "lm/train/phi": "Φ on the training batch",
    "lm/train/consciousness": "C on the training batch",
    "lm/train/memory_util": "fraction of the memory slots written",
    "lm/train/lr": "the optimiser's learning rate (warm-up, then cosine)",
    "lm/val/loss": "validation loss (mean token NLL) at every evaluation",
    "lm/val/ppl": "validation perplexity",
    "lm/val/phi": "mean Φ on the validation batches",
    "lm/val/consciousness": "mean C on the validation batches",
    "lm/time/tokens_per_sec": "training throughput since the last logged step",
}

# The RL stage's own run (PPO's trainer, env.RolloutMonitor, stages/rl/stage.py); `<mode>` expands
# with rl_tags().
RL_TAGS = {
    "train/policy_gradient_loss": "PPO's clipped surrogate loss (mean over the update's minibatches)",
    "train/value_loss": "value-function loss",
    "train/entropy_loss": "minus the policy's entropy",
    "train/loss": "total PPO loss",
    "train/approx_kl": "approximate KL(old ‖ new) of the update (k3 estimator)",
    "train/clip_fraction": "fraction of samples whose ratio was clipped",
    "train/explained_variance": "how much of the returns' variance the value function explains",
    "train/learning_rate": "the agent optimiser's learning rate",
    "train/clip_range": "PPO's clip range (after its schedule)",
    "train/clip_range_vf": "value clip range (only when set)",
    "train/n_minibatch_updates": "minibatches applied in the update",
    "train/kl_early_stop": "1 when target_kl stopped the update early",
    "train/n_updates": "updates so far",
    "rollout/ep_rew_mean": "mean return of the recent training episodes",
    "rollout/ep_len_mean": "mean length of the recent training episodes",
    "time/fps": "environment steps per second",
    "env/phi": "mean Φ over the rollout's decisions",
    "env/consciousness": "mean C over the rollout's decisions",
    "env/perplexity": "mean perplexity over the rollout's decisions",
    "env/memory_util": "mean memory utilisation over the rollout's decisions",
    "env/phi_in_band_pct": "% of the rollout's decisions with Φ inside the reward's band",
    "env/action_frac_<mode>": "fraction of the rollout's decisions that chose that mode",
    "env/lr_scale": "mean step size of the rollout's decisions, as a multiple of the inner lr (only with "
                    "step-size modes)",
    "eval/mean_reward": "mean return of the greedy policy on the evaluation seeds",
    "eval/std_reward": "its sample std over the episodes",
    "eval/ci_lower": "lower end of the mean's 95 % confidence interval (what the report ranks by)",
    "eval/ci_upper": "upper end of that interval",
    "eval/mean_ep_length": "mean evaluation episode length",
    "eval/phi_mean": "mean Φ over the evaluation episodes",
    "eval/phi_in_band_pct": "% of evaluation decisions with Φ inside the band",
    "eval/c_mean": "mean C over the evaluation episodes",
    "eval/final_ppl": "perplexity at the end of the evaluation episodes",
    "eval_vs_controls/mean_reward": "eval/mean_reward again, under the tag the control policies' runs share",
    "env/phi_band_low": "lower edge of the reward's Φ band (constant: the Φ chart's shading)",
    "env/phi_band_high": "upper edge of that band",
    "run/resumed_from": "one point per resume, at the step it continued from (absent in a run never resumed)",
    "teacher/teacher_mean_return": "a teacher start's teacher: its mean return on the episodes the clone learnt from "
                                   "(one point, at step 0; absent without --teacher)",
    "teacher/agreement": "the share of those states where the clone's greedy action is the teacher's (step 0)",
    "teacher/other_prob": "the probability the clone keeps on the teacher's other actions (step 0)",
}

# The runs beside the RL run (runs/rl/<run>): {run: {tag: meaning}}. TensorBoard colours curves by run
# and names runs in its run list, so only separate runs make a curve of its own colour with a legend;
# seven colours cap them at six (the module docstring), so a mode's run also draws its constant control.
VS_CONTROLS, ACTION_FRAC = "eval_vs_controls/mean_reward", "env/action_frac"
SIDE_RUNS = {
    "modes/<mode>": {
        ACTION_FRAC: "fraction of the rollout's decisions that chose that mode (the agent's share of it)",
        VS_CONTROLS: "mean return of the control that always chooses that mode (always <mode>) on the same "
                     "evaluation seeds, at every evaluation (a flat line: it does not train)",
    },
    "policies/<control>": {
        VS_CONTROLS: "that adaptive control's mean return on the same evaluation seeds, at every evaluation "
                     "(a flat line)",
    },
}
ALWAYS = constant_name("")  # "always ": the constant control of mode M is "always M"
MAX_SIDE_RUNS = 6  # seven colours: the agent's and six beside it (the module docstring)

# The documented view (docs/rl.md, "TensorBoard tags"), which the stages' closing hint links to:
# TensorBoard opens on Time Series with smoothing 0.6; the URL's fragment picks the dashboard and its
# smoothing (checked in headless Chromium, TensorBoard 2.21). "Ignore outliers in chart scaling" is
# kept in the browser's local storage, which no URL sets: the hint says to untick it.
TENSORBOARD_URL = "http://localhost:6006/"
RL_VIEW = TENSORBOARD_URL + "#custom_scalars&_smoothingWeight=0"  # the layout below
BASE_VIEW = TENSORBOARD_URL + "#scalars&_smoothingWeight=0"  # the base stage writes no layout

EVAL_CATEGORY = "evaluation (what the report ranks)"
COMPARISON = ("eval reward: agent (run rl) vs each mode family's best always <mode> (runs rl/modes/*) and the "
              "best adaptive controls (rl/policies/*)")
ACTION_MIX = "action mix: the agent's share of each mode family (runs rl/modes/*)"


def control_slug(name: str) -> str:
    """A control policy's name as a tag component: "always TEXT" -> "always_text"."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def mode_family(mode: str) -> str:
    """A mode's loss weights without its step size: "TEXT@0.5" -> "TEXT", "PHI" -> "PHI"."""
    return mode.split("@")[0]


def side_run_plan(mode_names, controls: dict) -> dict:
    """Which curves get a run beside the agent's, at most MAX_SIDE_RUNS: {"families": [family, ...],
    "controls": {control name: (group, run name)}}. One run per mode family, holding its best constant
    control; then the adaptive controls, best mean first, while runs are left (the module docstring).
    Decided from the controls' scores, which are known before training starts and do not change."""
    families = list(dict.fromkeys(mode_family(m) for m in mode_names))[:MAX_SIDE_RUNS]
    runs = {}
    for fam in families:
        always = [n for n in controls if n.startswith(ALWAYS) and mode_family(n[len(ALWAYS):]) == fam]
        if always:
            runs[max(always, key=lambda n: controls[n]["mean_reward"])] = ("modes", fam)
    adaptive = sorted((n for n in controls if n != RandomPolicy.name and not n.startswith(ALWAYS)),
                      key=lambda n: -controls[n]["mean_reward"])
    runs.update({n: ("policies", n) for n in adaptive[:MAX_SIDE_RUNS - len(families)]})
    return {"families": families, "controls": runs}


def exact(tag: str) -> str:
    """A Multiline entry that matches `tag` and nothing else."""
    return f"^{re.escape(tag)}$"


def rl_tags(mode_names) -> list[str]:
    """Every tag the RL run itself writes (RL_TAGS with <mode> expanded, clip_range_vf and
    run/resumed_from included); the side runs' tags are SIDE_RUNS'."""
    out = []
    for tag in RL_TAGS:
        out += [tag.replace("<mode>", m.lower()) for m in mode_names] if "<mode>" in tag else [tag]
    return out


def rl_layout(mode_names, resumed: bool = False, step_sizes: bool = False) -> dict:
    """The RL stage's CUSTOM SCALARS layout, headline first: {category: {chart: [kind, tags]}}.
    Multiline entries match every run, so the side runs' curves join the RL run's. Charts of tags a
    run never writes (resumes, step sizes) are left out rather than drawn empty."""
    evaluation = {
        # Margin series are literal tag names (see the module docstring): not anchored.
        "eval reward, 95 % CI (report ranks by the lower end)":
            ["Margin", ["eval/mean_reward", "eval/ci_lower", "eval/ci_upper"]],
        COMPARISON: ["Multiline", [exact(VS_CONTROLS)]],
        "eval Φ in band (%)": ["Multiline", [exact("eval/phi_in_band_pct")]],
    }
    if resumed:
        evaluation["resumes (one point per resume, at its step)"] = ["Multiline", [exact("run/resumed_from")]]
    environment = {
        "Φ (line) and the reward's band (shaded)": ["Margin", ["env/phi", "env/phi_band_low", "env/phi_band_high"]],
        "C": ["Multiline", [exact("env/consciousness")]],
        "Φ in band (%)": ["Multiline", [exact("env/phi_in_band_pct")]],
        ACTION_MIX: ["Multiline", [exact(ACTION_FRAC)]],
        "perplexity": ["Multiline", [exact("env/perplexity")]],
    }
    if step_sizes:
        environment["step size (× inner lr)"] = ["Multiline", [exact("env/lr_scale")]]
    return {EVAL_CATEGORY: evaluation, "environment": environment}


class SideRuns:
    """The runs beside the RL run (SIDE_RUNS, as `plan` from side_run_plan chose them), each a Logger of
    its own opened at its first write; a resumed run drops their events after the resumed step, like
    the RL run's."""

    def __init__(self, rl_log_dir, resume_step: int | None, plan: dict | None = None):
        self.root, self.resume_step, self.loggers = rl_log_dir, resume_step, {}
        self.plan = plan or {"families": [], "controls": {}}

    def write(self, group: str, name: str, tag: str, value: float, step: int) -> None:
        if self.root is None:  # no TensorBoard (or not this rank's to write)
            return
        key = f"{group}/{control_slug(name)}"
        if key not in self.loggers:
            self.loggers[key] = Logger(Path(self.root) / key, quiet=True, resume_step=self.resume_step)
        self.loggers[key].record(tag, value)
        self.loggers[key].dump(step)

    def close(self) -> None:
        for logger in self.loggers.values():
            logger.close()


def record_eval_scalars(logger, side: SideRuns, result, controls: dict, step: int) -> None:
    """At an evaluation: the 95 % CI of the mean (`eval/ci_lower`, `eval/ci_upper`), the agent's mean
    under the comparison tag, and each control policy's mean on the same seeds in its side run
    (`controls`: name -> EvalResult dict; the runs of side.plan), so the headline charts have their band and
    reference lines."""
    low, high = result.ci95
    logger.record("eval/ci_lower", low)
    logger.record("eval/ci_upper", high)
    logger.record(VS_CONTROLS, result.mean_reward)
    for name, run in side.plan["controls"].items():
        side.write(*run, VS_CONTROLS, controls[name]["mean_reward"], step)


def record_rollout_scalars(logger, side: SideRuns, stats: dict, mode_names, band: tuple, step: int) -> None:
    """After an update: the environment monitor's means, the Φ band's edges, and each mode family's
    share in its run."""
    for tag, value in stats.items():
        logger.record(tag, value)
    logger.record("env/phi_band_low", band[0])
    logger.record("env/phi_band_high", band[1])
    for fam in side.plan["families"]:
        shares = [stats[f"env/action_frac_{m.lower()}"] for m in mode_names
                  if mode_family(m) == fam and f"env/action_frac_{m.lower()}" in stats]
        if shares:
            side.write("modes", fam, ACTION_FRAC, sum(shares), step)

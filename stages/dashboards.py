"""TensorBoard dashboards of the two stages: the tags each one writes and the RL stage's
CUSTOM SCALARS layout.

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
"""
from __future__ import annotations

import re
from pathlib import Path

from common.logger import Logger

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

# The RL stage's own run (PPO's trainer, env.RolloutMonitor, stages/rl.py); `<mode>` expands
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
}

# Runs beside the RL run (runs/rl/<group>/<name>), one per control policy and one per mode: TensorBoard
# colours curves by run and names runs in its run list, so only separate runs make the agent and each
# control (or each mode) a curve of its own colour with a legend. Every one writes one tag.
SIDE_RUNS = {
    "policies/<control>": ("eval_vs_controls/mean_reward", "that control policy's mean return on the same "
                           "evaluation seeds, at every evaluation (a flat line: it does not train)"),
    "modes/<mode>": ("env/action_frac", "fraction of the rollout's decisions that chose that mode"),
}
VS_CONTROLS = SIDE_RUNS["policies/<control>"][0]
ACTION_FRAC = SIDE_RUNS["modes/<mode>"][0]

EVAL_CATEGORY = "evaluation (what the report ranks)"


def control_slug(name: str) -> str:
    """A control policy's name as a tag component: "always TEXT" -> "always_text"."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


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
        "eval reward: agent (run rl) vs control policies (runs rl/policies/*)": ["Multiline", [exact(VS_CONTROLS)]],
        "eval Φ in band (%)": ["Multiline", [exact("eval/phi_in_band_pct")]],
    }
    if resumed:
        evaluation["resumes (one point per resume, at its step)"] = ["Multiline", [exact("run/resumed_from")]]
    environment = {
        "Φ (line) and the reward's band (shaded)": ["Margin", ["env/phi", "env/phi_band_low", "env/phi_band_high"]],
        "C": ["Multiline", [exact("env/consciousness")]],
        "Φ in band (%)": ["Multiline", [exact("env/phi_in_band_pct")]],
        "action mix (runs rl/modes/*)": ["Multiline", [exact(ACTION_FRAC)]],
        "perplexity": ["Multiline", [exact("env/perplexity")]],
    }
    if step_sizes:
        environment["step size (× inner lr)"] = ["Multiline", [exact("env/lr_scale")]]
    return {EVAL_CATEGORY: evaluation, "environment": environment}


class SideRuns:
    """The runs beside the RL run (SIDE_RUNS), each a Logger of its own opened at its first write;
    a resumed run drops their events after the resumed step, like the RL run's."""

    def __init__(self, rl_log_dir, resume_step: int | None):
        self.root, self.resume_step, self.loggers = rl_log_dir, resume_step, {}

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
    under the comparison tag, and every control policy's mean on the same seeds in its own run
    (`controls`: name -> EvalResult dict), so the headline charts have their band and reference lines."""
    low, high = result.ci95
    logger.record("eval/ci_lower", low)
    logger.record("eval/ci_upper", high)
    logger.record(VS_CONTROLS, result.mean_reward)
    for name, res in controls.items():
        side.write("policies", name, VS_CONTROLS, res["mean_reward"], step)


def record_rollout_scalars(logger, side: SideRuns, stats: dict, mode_names, band: tuple, step: int) -> None:
    """After an update: the environment monitor's means, the Φ band's edges, and each mode's share in its run."""
    for tag, value in stats.items():
        logger.record(tag, value)
    logger.record("env/phi_band_low", band[0])
    logger.record("env/phi_band_high", band[1])
    for m in mode_names:
        if f"env/action_frac_{m.lower()}" in stats:
            side.write("modes", m, ACTION_FRAC, stats[f"env/action_frac_{m.lower()}"], step)

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

# The RL stage (PPO's trainer, env.RolloutMonitor, stages/rl.py); `<mode>` and `<control>`
# expand with rl_tags().
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
    "eval/mean_reward": "mean return of the greedy policy on the evaluation seeds",
    "eval/std_reward": "its sample std over the episodes",
    "eval/ci_lower": "lower end of the mean's 95 % confidence interval (what the report ranks by)",
    "eval/ci_upper": "upper end of that interval",
    "eval/mean_ep_length": "mean evaluation episode length",
    "eval/phi_mean": "mean Φ over the evaluation episodes",
    "eval/phi_in_band_pct": "% of evaluation decisions with Φ inside the band",
    "eval/c_mean": "mean C over the evaluation episodes",
    "eval/final_ppl": "perplexity at the end of the evaluation episodes",
    "controls/<control>": "that control policy's mean return on the same evaluation seeds (flat reference line)",
}

EVAL_CATEGORY = "evaluation (what the report ranks)"


def control_slug(name: str) -> str:
    """A control policy's name as a tag component: "always TEXT" -> "always_text"."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def control_names(mode_names) -> list[str]:
    """The control policies' names for these modes: the constant ones (as env.policies.control_policies
    names them), then the adaptive ones (stages/controls.py)."""
    return ["random"] + [f"always {m}" for m in mode_names] + ["tuned rule", "bandit"]


def exact(tag: str) -> str:
    """A Multiline entry that matches `tag` and nothing else."""
    return f"^{re.escape(tag)}$"


def rl_tags(mode_names, controls=None) -> list[str]:
    """Every tag the RL stage writes (RL_TAGS with <mode> / <control> expanded, clip_range_vf included)."""
    controls = control_names(mode_names) if controls is None else list(controls)
    out = []
    for tag in RL_TAGS:
        if "<mode>" in tag:
            out += [tag.replace("<mode>", m.lower()) for m in mode_names]
        elif "<control>" in tag:
            out += [tag.replace("<control>", control_slug(c)) for c in controls]
        else:
            out.append(tag)
    return out


def rl_layout(mode_names, controls=None) -> dict:
    """The RL stage's CUSTOM SCALARS layout, headline first: {category: {chart: [kind, tags]}}.
    `controls`: the control policies' names (default: random and always <mode>)."""
    controls = control_names(mode_names) if controls is None else list(controls)
    return {
        EVAL_CATEGORY: {
            # Margin series are literal tag names (see the module docstring): not anchored.
            "eval reward, 95 % CI (report ranks by the lower end)":
                ["Margin", ["eval/mean_reward", "eval/ci_lower", "eval/ci_upper"]],
            "eval reward vs control policies":
                ["Multiline", [exact("eval/mean_reward")] + [exact(f"controls/{control_slug(c)}") for c in controls]],
            "eval Φ in band (%)": ["Multiline", [exact("eval/phi_in_band_pct")]],
        },
        "environment": {
            "Φ and C": ["Multiline", [exact("env/phi"), exact("env/consciousness")]],
            "Φ in band (%)": ["Multiline", [exact("env/phi_in_band_pct")]],
            "action mix": ["Multiline", [exact(f"env/action_frac_{m.lower()}") for m in mode_names]],
            "perplexity": ["Multiline", [exact("env/perplexity")]],
        },
    }


def record_eval_scalars(logger, result, controls: dict) -> None:
    """At an evaluation: the 95 % CI of the mean (`eval/ci_lower`, `eval/ci_upper`) and every
    control policy's mean on the same seeds (`controls/<slug>`; `controls`: name -> EvalResult dict),
    so the headline charts have their band and reference lines at every evaluation step."""
    low, high = result.ci95
    logger.record("eval/ci_lower", low)
    logger.record("eval/ci_upper", high)
    for name, res in controls.items():
        logger.record(f"controls/{control_slug(name)}", res["mean_reward"])

"""What an RL checkpoint records about its run — the `extra` of every `<step>.pt` — written and
read here only, so the rest of the stages use typed fields instead of string keys."""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields

from env import EnvConfig

from ..cli import UserError
from .presets import RunSettings


@dataclass
class RunRecord:
    run: dict                     # the stage's run settings, RunSettings.to_dict() (`settings` reads it)
    env: dict                     # the environment config, EnvConfig.to_dict()
    base: str                     # the base checkpoint's path when the run was trained
    base_content: str             # that model's content digest (stages/identity.py)
    controls: dict = field(default_factory=dict)          # name -> EvalResult dict: constant controls, ...
    adaptive: dict = field(default_factory=dict)          # ... and adaptive ones, on the evaluation seeds
    heldout_controls: dict = field(default_factory=dict)  # the same on the held-out seeds
    heldout_adaptive: dict = field(default_factory=dict)
    resumes: list = field(default_factory=list)           # the steps the run was resumed from, oldest first
    teacher: dict = field(default_factory=dict)           # the control its policy was cloned from (stages/rl/teacher.py)

    def to_extra(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, extra: dict, source: str) -> "RunRecord":
        """The record in a checkpoint's `extra`; one line naming `source` when it has none."""
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in extra]
        if missing:
            raise UserError(f"{source} is a PPO checkpoint but not one of train.py --stage rl (it records no "
                            f"{', '.join(missing)}); resume or evaluate it with the code that wrote it")
        return cls(**{f.name: extra[f.name] for f in fields(cls) if f.name in extra})

    @property
    def settings(self) -> RunSettings:
        return RunSettings.from_dict(self.run)

    @property
    def env_config(self) -> EnvConfig:
        return EnvConfig.from_dict(self.env)

    def same_run(self, other: "RunRecord") -> bool:
        """Trained on the same base model and environment (the checkpoints of one run folder)."""
        return self.base_content == other.base_content and self.env == other.env

    def stored_controls(self, env_cfg: EnvConfig, run: RunSettings) -> tuple | None:
        """The controls this run played, if on this environment with these seeds and episodes:
        ((constant, adaptive) on the evaluation seeds, (constant, adaptive) on the held-out ones)."""
        same = self.adaptive and self.env == env_cfg.to_dict() and all(
            self.run.get(k) == getattr(run, k) for k in ("eval_episodes", "eval_seed", "heldout_seed"))
        return ((self.controls, self.adaptive), (self.heldout_controls, self.heldout_adaptive)) if same else None


def teacher_line(t: dict) -> str:
    """The teacher start in words, for the console and the report."""
    what = t["name"] + (f" ({t['detail']})" if t.get("detail") and t["detail"] != t["name"] else "")
    return (f"started from the teacher {what}: cloned from {t['episodes']} episodes on the training seeds "
            f"{t['seed']}..{t['seed'] + t['episodes'] - 1} (teacher's mean return {t['teacher_mean_return']:+.3f}); "
            f"the clone takes the teacher's action on {100 * t['agreement']:.1f}% of its states and keeps "
            f"{t['other_prob']:.2f} of its probability on the other actions; step 0 is the clone before any PPO update")

"""Environment statistics for dashboards: what the model did during the agent's rollouts.

`RolloutMonitor.observe(infos)` takes what the vector env returns after a step
(`infos["env_infos"]`, one info dict per environment); `pop()` gives the means
since the last `pop()` under the TensorBoard tags the RL stage writes
(`env/phi`, `env/consciousness`, `env/perplexity`, `env/memory_util`,
`env/action_frac_<mode>`, `env/phi_in_band_pct`, and `env/lr_scale` when the modes
carry step sizes).
"""
from __future__ import annotations

from .config import EnvConfig

_MEANS = (("phi", "env/phi"), ("consciousness", "env/consciousness"), ("ppl", "env/perplexity"),
          ("memory_util", "env/memory_util"))


class RolloutMonitor:
    def __init__(self, config: EnvConfig):
        self.modes = config.mode_names
        self.band = config.reward.band
        self.step_sizes = config.has_step_sizes
        self._reset()

    def _reset(self) -> None:
        self.n = 0
        self.sums = {key: 0.0 for key, _ in _MEANS}
        self.in_band = 0
        self.lr_scale = 0.0
        self.mode_counts = {m: 0 for m in self.modes}

    def observe(self, infos: dict) -> None:
        # A finished episode's last step is in final_info (env_infos already holds the
        # reset of the next episode, whose mode is not an action the agent took).
        finals = infos.get("final_info") or [None] * len(infos["env_infos"])
        for info, final in zip(infos["env_infos"], finals):
            info = final if final is not None else info
            self.n += 1
            for key, _ in _MEANS:
                self.sums[key] += float(info[key])
            self.in_band += self.band[0] <= info["phi"] <= self.band[1]
            if self.step_sizes:
                self.lr_scale += float(info["lr_scale"])
            if info["mode"] in self.mode_counts:
                self.mode_counts[info["mode"]] += 1

    def pop(self) -> dict:
        """Means over the steps observed since the last call ({} if none)."""
        if self.n == 0:
            return {}
        out = {tag: self.sums[key] / self.n for key, tag in _MEANS}
        out["env/phi_in_band_pct"] = 100.0 * self.in_band / self.n
        if self.step_sizes:
            out["env/lr_scale"] = self.lr_scale / self.n
        for mode, count in self.mode_counts.items():
            out[f"env/action_frac_{mode.lower()}"] = count / self.n
        self._reset()
        return out

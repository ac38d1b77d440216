"""PPO (Schulman et al. 2017, clipped surrogate) for discrete actions.

One iteration of ``PPO.learn`` reads top to bottom (the loop of CleanRL's ppo.py):
  1. collect ``n_steps`` x ``num_envs`` transitions with the current policy, keeping
     each action's log-probability and the state's value from acting time,
  2. value the states the rollout ends in, then GAE advantages and returns (with shared-seed
     groups, measured against the rest of the group: ppo/groups.py),
  3. run ``n_epochs`` passes of minibatch updates on the clipped objective,
  4. log, run callbacks, write all scalars at the new global step.

Shapes: T = n_steps, N = num_envs, S = observation shape, A = actions, B = T*N.
Where names and defaults differ from CleanRL's (`minibatch_size`, the value loss without ½,
`target_kl` per minibatch): docs/ppo.md, "Names and defaults that differ from CleanRL's".
The agent's whole state: ``state_dict`` / ``load_state_dict``; its files: ppo/checkpoint.py.
"""
from __future__ import annotations

import math
import random
import time
from collections import deque
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from common.episodes import run_episodes
from common.files import save_checkpoint
from common.logger import Logger
from common.policies import MASK_KEY
from common.rng import capture_global_rng, generator_state, restore_generator, restore_global_rng
from common.vector import as_vec_env, is_env_factory

from .buffer import RolloutBuffer, compute_gae
from .callbacks import Callback
from .checkpoint import check_resumable, checkpoint_dict, load_for_resume, restore_agent, saved_config
from .config import PPOConfig
from .evaluation import EvalResult
from .groups import group_advantages
from .inference import TrainedPolicy, policy_actions
from .losses import approx_kl, clip_fraction, clipped_surrogate_loss, value_loss
from .normalize import ObsNormalizer, RewardScaler
from .policy import ActorCritic

# Fields that shape the annealing line; changing one starts a new line at the current step.
SCHEDULE_FIELDS = ("total_timesteps", "anneal_lr", "anneal_clip_range")


def _adam(params: Iterable[nn.Parameter], lr: float, eps: float) -> torch.optim.Adam:
    # The fused kernel steps all parameters in one call; the per-tensor loop was 10-16 %
    # slower end to end on CPU (bench/ppo_classic.py, docs/ppo.md "Speed").
    params = list(params)  # a refused fused=True has already consumed an iterator
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):  # a torch or device without the fused kernel
        return torch.optim.Adam(params, lr=lr, eps=eps)


class PPO:
    """Train a categorical actor-critic with PPO on a Gymnasium-style environment.

    ``env``: a vector env (the contract of ``common.vector``), a list of environments or
    env factories (stepped together in-process with auto-reset), one factory or one env.
    ``log_dir``: where TensorBoard scalars go (None: in-memory only), or pass a whole
    ``logger`` (``common.logger.Logger``: TensorBoard, JSONL, console). ``extra``:
    plain-typed dict saved in every checkpoint (e.g. the environment's config).
    """

    def __init__(self, env: Any, config: Optional[PPOConfig] = None, *, log_dir: Optional[str] = None,
                 extra: Optional[dict] = None, logger: Optional[Logger] = None):
        self.config = cfg = config if config is not None else PPOConfig()
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.env = as_vec_env(env, cfg.group_size)
        self.num_envs = int(self.env.num_envs)
        if getattr(self.env, "group_size", 1) != cfg.group_size:  # the group baseline needs the seeds shared
            raise ValueError(f"PPOConfig.group_size is {cfg.group_size}, the vector env seeds groups of "
                             f"{getattr(self.env, 'group_size', 1)}; build it with group_size={cfg.group_size} "
                             "(common.vector.VectorEnv) or pass a list of environments")
        self.obs_shape = tuple(int(s) for s in self.env.observation_space.shape)
        self.n_actions = int(self.env.action_space.n)
        self.device = torch.device(cfg.device)

        init_gen = torch.Generator().manual_seed(cfg.seed)
        self.policy = ActorCritic(math.prod(self.obs_shape), self.n_actions, cfg.pi_hidden, cfg.vf_hidden,
                                  cfg.activation, generator=init_gen).to(self.device)
        self.optimizer = _adam(self.policy.parameters(), cfg.learning_rate, cfg.adam_eps)
        self.obs_normalizer = ObsNormalizer(self.obs_shape, cfg.obs_clip, cfg.norm_eps, cfg.normalize_obs)
        self.reward_scaler = RewardScaler(self.num_envs, cfg.gamma, cfg.reward_clip, cfg.norm_eps,
                                          cfg.normalize_reward)
        # Our own stream for action sampling and minibatch order: evaluations and
        # user code can use the global RNGs without changing the training run.
        self.rng = np.random.default_rng(cfg.seed)
        self.logger = logger if logger is not None else Logger(log_dir)
        self.extra = dict(extra or {})

        self.global_step = 0  # env steps over all environments
        self.n_updates = 0
        # Where the annealing line starts: (step, lr fraction, clip fraction); it falls
        # linearly from there to 0 at total_timesteps (see current_schedule).
        self.schedule_start: tuple[int, float, float] = (0, 1.0, 1.0)
        self.eval_history: list[EvalResult] = []
        self.best_eval: Optional[EvalResult] = None
        self.stop_reason: Optional[str] = None
        self.callbacks: list[Callback] = []
        self.last_rollout_infos: dict = {}
        # Rollout state carried across iterations (and checkpoints).
        self._obs: Optional[np.ndarray] = None  # raw observations [N, *S] the policy acts on next
        self._mask: Optional[np.ndarray] = None  # legal actions [N, A] for _obs, or None
        self._use_masks = False
        self._ep_return = np.zeros(self.num_envs)  # raw (unscaled) return of the running episodes
        self._ep_length = np.zeros(self.num_envs, np.int64)
        self._ep_index = np.zeros(self.num_envs, np.int64)  # episodes ended since the reset: the running one's number
        self.recent_episodes: deque = deque(maxlen=100)  # (return, length) of finished episodes
        self._predict_rng = np.random.default_rng(cfg.seed + 1)

    # ------------------------------------------------------------------ schedule
    def _fractions(self, cfg: PPOConfig) -> tuple[float, float]:
        """(lr fraction, clip fraction) at the global step on the line that starts at
        ``schedule_start`` and reaches 0 at ``cfg.total_timesteps``; 1 where not annealed."""
        step0, lr0, clip0 = self.schedule_start
        span = cfg.total_timesteps - step0
        left = max(0.0, 1.0 - (self.global_step - step0) / span) if span > 0 else 0.0
        return (lr0 * left if cfg.anneal_lr else 1.0), (clip0 * left if cfg.anneal_clip_range else 1.0)

    def current_schedule(self) -> tuple[float, float]:
        """(learning rate, clip range) at the current global step."""
        lr_fraction, clip_fraction = self._fractions(self.config)
        return self.config.learning_rate * lr_fraction, self.config.clip_range * clip_fraction

    def _set_config(self, config: PPOConfig, previous: Optional[PPOConfig] = None) -> None:
        """Use ``config`` from now on. A new horizon or annealing flag would re-stretch the
        line and make the learning rate jump, so the line restarts here from the fractions
        reached under ``previous`` (default: the config in use)."""
        previous = previous or self.config
        if any(getattr(previous, f) != getattr(config, f) for f in SCHEDULE_FIELDS):
            self.schedule_start = (self.global_step, *self._fractions(previous))
        self.config = config

    def _apply_schedule(self) -> tuple[float, float]:
        lr, clip = self.current_schedule()
        for group in self.optimizer.param_groups:
            group["lr"], group["eps"] = lr, self.config.adam_eps
        return lr, clip

    # ------------------------------------------------------------------ training
    def learn(self, total_timesteps: Optional[int] = None, callbacks: Sequence[Callback] = ()) -> "PPO":
        """Train until ``global_step`` reaches ``total_timesteps`` (default: the config's;
        a given value replaces it, and the annealing continues from where it is to 0 there)."""
        if total_timesteps is not None:
            self._set_config(self.config.replace(total_timesteps=int(total_timesteps)))
        cfg = self.config
        self.callbacks = list(callbacks)
        # Only callbacks that do something per step are called per step (hot loop).
        step_hooks = [cb for cb in self.callbacks if getattr(cb.on_step, "__func__", None) is not Callback.on_step]
        self.stop_reason = None
        if self._obs is None:
            self._reset_envs(cfg.seed)
        buf = RolloutBuffer(cfg.n_steps, self.num_envs, self.obs_shape, self.n_actions, self._use_masks)
        start_step, start_time = self.global_step, time.perf_counter()
        bar = tqdm(total=cfg.total_timesteps, initial=min(self.global_step, cfg.total_timesteps), unit="step",
                   disable=not cfg.progress_bar, dynamic_ncols=True)
        try:
            self.dispatch("on_training_start")
            while self.global_step < cfg.total_timesteps and self.stop_reason is None:
                _, clip = self._apply_schedule()
                self._collect_rollout(buf, step_hooks)
                self.dispatch("on_rollout_end")
                batch = self._compute_advantages(buf)
                self.update(batch, clip)
                self._record_progress(start_step, start_time)
                self.dispatch("on_update_end")
                self.logger.dump(self.global_step)
                self._show_progress(bar)
            self.dispatch("on_training_end")
        finally:
            bar.close()
        return self

    # One iteration's two halves, for measuring them apart (bench/ppo_classic.py, the gradient
    # variance of ppo/shared_noise.py) without learn's callbacks, logging and schedule.
    def collect_batch(self) -> dict:
        """Collect one rollout (n_steps x num_envs decisions) with the current policy and return
        the batch an update trains on: tensors [B, ...] under ``obs``, ``actions``, ``masks``,
        ``old_logp``, ``old_values``, ``advantages``, ``returns``. The environments, normalisers,
        RNG and ``global_step`` advance as in ``learn``; the policy does not change."""
        if self._obs is None:
            self._reset_envs(self.config.seed)
        buf = RolloutBuffer(self.config.n_steps, self.num_envs, self.obs_shape, self.n_actions, self._use_masks)
        self._collect_rollout(buf, [])
        return self._compute_advantages(buf)

    def update(self, batch: dict, clip: Optional[float] = None) -> None:
        """One PPO update on ``batch`` (``collect_batch``'s): ``n_epochs`` passes of minibatches on
        the clipped objective with clip range ``clip`` (default: the schedule's at this step), at
        the optimiser's learning rate; counted in ``n_updates``."""
        self._update(batch, self.current_schedule()[1] if clip is None else clip)
        self.n_updates += 1

    def _record_progress(self, start_step: int, start_time: float) -> None:
        if self.recent_episodes:
            self.logger.record("rollout/ep_rew_mean", np.mean([e[0] for e in self.recent_episodes]))
            self.logger.record("rollout/ep_len_mean", np.mean([e[1] for e in self.recent_episodes]))
        self.logger.record("time/fps", (self.global_step - start_step) / (time.perf_counter() - start_time))

    def _show_progress(self, bar: tqdm) -> None:
        bar.update(min(self.global_step, bar.total) - bar.n)  # the last rollout may overshoot
        latest = self.logger.latest
        postfix = {"fps": f"{latest['time/fps']:.3g}"}
        if "rollout/ep_rew_mean" in latest:
            postfix["ep_rew_mean"] = f"{latest['rollout/ep_rew_mean']:.3g}"
        if self.eval_history:
            last = self.eval_history[-1]
            low, high = last.ci95  # the interval every chart draws, not the std
            postfix["last_eval"] = f"{last.mean_reward:.4g} [{low:.3g}, {high:.3g}]@{last.step}"
        bar.set_postfix(postfix, refresh=False)

    def _reset_envs(self, seed: Optional[int]) -> None:
        self._obs, infos = self.env.reset(seed=seed)
        self._mask = self._mask_from(infos)
        self._use_masks = self._mask is not None
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._ep_index[:] = 0

    def _mask_from(self, infos: dict) -> Optional[np.ndarray]:
        return None if MASK_KEY not in infos else np.asarray(infos[MASK_KEY], bool)

    # 1. collect -------------------------------------------------------------
    def _collect_rollout(self, buf: RolloutBuffer, step_hooks: list) -> None:
        buf.clear()
        with torch.inference_mode():
            for t in range(buf.n_steps):
                obs = self.obs_normalizer(self._obs, update=True)  # [N, *S]
                actions, logprobs, values = self.policy.act(obs, self._mask, rng=self.rng)  # [N] each
                next_obs, rewards, terminated, truncated, infos = self.env.step(actions)

                buf.obs[t], buf.actions[t], buf.logprobs[t], buf.values[t] = obs, actions, logprobs, values
                buf.episode[t], buf.episode_step[t] = self._ep_index, self._ep_length
                if buf.masks is not None:
                    buf.masks[t] = True if self._mask is None else self._mask
                buf.rewards[t] = self.reward_scaler(rewards, terminated | truncated)
                buf.terminated[t], buf.truncated[t] = terminated, truncated
                self._end_episodes(buf, t, rewards, terminated, truncated, infos)

                self._obs = next_obs
                if self._use_masks:
                    self._mask = self._mask_from(infos)
                self.global_step += self.num_envs
                self.last_rollout_infos = infos
                for cb in step_hooks:
                    cb.on_step(self, infos)

    def _end_episodes(self, buf: RolloutBuffer, t: int, rewards: np.ndarray, terminated: np.ndarray,
                      truncated: np.ndarray, infos: dict) -> None:
        self._ep_return += rewards
        self._ep_length += 1
        ended = terminated | truncated
        if not ended.any():
            return
        # A time limit cut the episode short: its last state still had a future, so
        # GAE bootstraps from its value (computed after the rollout). Not for termination.
        for i in np.flatnonzero(truncated & ~terminated):
            final = self.obs_normalizer(infos["final_observation"][i:i + 1], update=False)[0]
            buf.truncation_obs.append((t, int(i), final))
        for i in np.flatnonzero(ended):
            self.recent_episodes.append((float(self._ep_return[i]), int(self._ep_length[i])))
        self._ep_return[ended], self._ep_length[ended] = 0.0, 0
        self._ep_index[ended] += 1

    # 2. advantages ----------------------------------------------------------
    def _compute_advantages(self, buf: RolloutBuffer) -> dict:
        T, N = buf.n_steps, self.num_envs
        # Values of the states reached after the rollout and of truncated episodes' final
        # states: the bootstrap targets that acting never saw.
        boot_obs = [self.obs_normalizer(self._obs, update=False)] + [o[None] for _, _, o in buf.truncation_obs]
        with torch.inference_mode():
            boot = self.policy.value(torch.from_numpy(np.concatenate(boot_obs)).to(self.device)).cpu().numpy()
        next_values = buf.next_values(buf.values, last_values=boot[:N], truncation_values=boot[N:])
        cfg, ended = self.config, buf.terminated | buf.truncated
        advantages, returns = compute_gae(buf.rewards, buf.values, next_values, ended, cfg.gamma, cfg.gae_lambda)
        if cfg.group_size > 1 and cfg.group_baseline != "none":
            # "loo" compares returns-to-go: GAE's return with lambda = 1 (same gamma, same bootstraps)
            to_go = (compute_gae(buf.rewards, buf.values, next_values, ended, cfg.gamma, 1.0)[1]
                     if cfg.group_baseline == "loo" else None)
            advantages = group_advantages(cfg.group_baseline, advantages, to_go, buf.values, cfg.group_size,
                                          buf.episode, buf.episode_step)
        var_returns = returns.var()
        self.logger.record("train/explained_variance",
                           float("nan") if var_returns == 0 else 1.0 - (returns - buf.values).var() / var_returns)

        def flat(a: np.ndarray) -> torch.Tensor:  # [T, N, ...] -> [B, ...]
            return torch.from_numpy(a.reshape(T * N, *a.shape[2:])).to(self.device)

        return {"obs": flat(buf.obs), "actions": flat(buf.actions),
                "masks": None if buf.masks is None else flat(buf.masks),
                "old_logp": flat(buf.logprobs), "old_values": flat(buf.values),
                "advantages": flat(advantages), "returns": flat(returns)}

    # 3. update ----------------------------------------------------------------
    def _update(self, batch: dict, clip: float) -> None:
        cfg = self.config
        B = len(batch["obs"])
        terms, log_ratios = [], []  # per applied minibatch: [pg, value, entropy, loss]; log(pi/pi_old) [mb]
        kl_stop = False
        for _ in range(cfg.n_epochs):
            order = torch.from_numpy(self.rng.permutation(B)).to(self.device)
            for start in range(0, B, cfg.minibatch_size):
                idx = order[start:start + cfg.minibatch_size]
                loss, mb_terms, log_ratio = self._minibatch_loss({k: None if v is None else v[idx]
                                                                  for k, v in batch.items()}, clip)
                if cfg.target_kl is not None and approx_kl(log_ratio).item() > cfg.target_kl:
                    kl_stop = True  # the policy moved too far: this minibatch is not applied
                    break
                self.optimizer.zero_grad()
                loss.backward()
                if cfg.max_grad_norm > 0:
                    nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                terms.append(mb_terms)
                log_ratios.append(log_ratio)
            if kl_stop:
                break
        self._record_update(terms, log_ratios, clip, kl_stop)

    def _minibatch_loss(self, mb: dict, clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (loss to minimise, detached [pg_loss, value_loss, entropy, loss], detached log(pi/pi_old))."""
        cfg = self.config
        logp, entropy, values = self.policy.evaluate_actions(mb["obs"], mb["actions"], mb["masks"])
        log_ratio = logp - mb["old_logp"]
        adv = mb["advantages"]
        if cfg.normalize_advantage and adv.shape[0] > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss = clipped_surrogate_loss(log_ratio.exp(), adv, clip)
        v_loss = value_loss(values, mb["old_values"], mb["returns"], cfg.clip_range_vf)
        entropy = entropy.mean()
        loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
        return loss, torch.stack([pg_loss, v_loss, entropy, loss]).detach(), log_ratio.detach()

    def _record_update(self, terms: list, log_ratios: list, clip: float, kl_stop: bool) -> None:
        log = self.logger.record
        if terms:  # means over all applied minibatches
            pg, vl, ent, total = torch.stack(terms).mean(0).tolist()
            if not math.isfinite(total):
                raise FloatingPointError(f"PPO loss is {total} at update {self.n_updates + 1} (step "
                                         f"{self.global_step}); lower learning_rate or check the environment "
                                         "for NaN/inf observations or rewards")
            log_ratio = torch.cat(log_ratios)
            log("train/policy_gradient_loss", pg)
            log("train/value_loss", vl)
            log("train/entropy_loss", -ent)
            log("train/loss", total)
            log("train/approx_kl", approx_kl(log_ratio).item())
            log("train/clip_fraction", clip_fraction(log_ratio, clip).item())
        log("train/learning_rate", self.optimizer.param_groups[0]["lr"])
        log("train/clip_range", clip)
        if self.config.clip_range_vf is not None:
            log("train/clip_range_vf", self.config.clip_range_vf)
        log("train/n_minibatch_updates", len(terms))
        log("train/kl_early_stop", float(kl_stop))
        log("train/n_updates", self.n_updates + 1)

    # ------------------------------------------------------------------ callbacks
    def dispatch(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    def request_stop(self, reason: str) -> None:
        """Finish the current iteration, then stop ``learn``; ``stop_reason`` keeps why."""
        if self.stop_reason is None:
            self.stop_reason = reason

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, envs: Any, n_episodes: int = 10, deterministic: bool = True, seed: int = 0) -> EvalResult:
        """The current policy (frozen normaliser, a snapshot) on ``n_episodes`` episodes seeded
        seed, seed+1, ... of ``envs`` (one env, a factory, or a list: see
        ``common.episodes.run_episodes``); training state is untouched."""
        envs = [e() if is_env_factory(e) else e for e in (envs if isinstance(envs, (list, tuple)) else [envs])]
        episodes = run_episodes(envs, TrainedPolicy.from_agent(self, deterministic), n_episodes, seed)
        return EvalResult.from_episodes(episodes, self.n_actions, seed, deterministic)

    def add_evaluation(self, result: EvalResult) -> bool:
        """Stamp ``result`` with the step, keep it in ``eval_history``, track the best,
        record eval/* tags (written at this step). Returns whether it is the new best."""
        result.step = self.global_step
        result.is_best = self.best_eval is None or result.mean_reward > self.best_eval.mean_reward
        if result.is_best:
            self.best_eval = result
        self.eval_history.append(result)
        self.logger.record("eval/mean_reward", result.mean_reward)
        self.logger.record("eval/std_reward", result.std_reward)
        self.logger.record("eval/mean_ep_length", result.mean_ep_length)
        return result.is_best

    def predict(self, obs: np.ndarray, mask: Optional[np.ndarray] = None, deterministic: bool = True,
                rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """Actions for raw observations [N, *S] (frozen normaliser) -> int64 [N]; what a
        ``TrainedPolicy`` of this agent would do (one implementation: ``inference.policy_actions``)."""
        return policy_actions(self.policy, self.obs_normalizer, obs, mask, deterministic, rng or self._predict_rng)

    # ------------------------------------------------------------------ state (files: ppo/checkpoint.py)
    def state_dict(self) -> dict:
        """Everything needed to continue training exactly, as plain types and tensors: network,
        optimiser, normalisers, every RNG, counters, the annealing line, the rollout in progress
        (with the vector env's ``get_state()`` if it has one), evaluations and ``extra``. As with
        torch's, the tensors are the agent's own: deepcopy it to keep it while training goes on."""
        lr, clip = self.current_schedule()
        start_step, start_lr_fraction, start_clip_fraction = self.schedule_start
        return {
            "config": self.config.to_dict(),
            "obs_shape": list(self.obs_shape),
            "n_actions": self.n_actions,
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_normalizer": self.obs_normalizer.state_dict(),
            "reward_scaler": self.reward_scaler.state_dict(),
            "rng": {**capture_global_rng(), "trainer": generator_state(self.rng)},
            "global_step": self.global_step,
            "n_updates": self.n_updates,
            "schedule": {"learning_rate": lr, "clip_range": clip, "total_timesteps": self.config.total_timesteps,
                         "progress": self.global_step / self.config.total_timesteps, "start_step": start_step,
                         "start_lr_fraction": start_lr_fraction, "start_clip_fraction": start_clip_fraction},
            "rollout": self._rollout_state(),
            "recent_episodes": [list(e) for e in self.recent_episodes],
            "evaluations": [r.to_dict() for r in self.eval_history],
            "extra": dict(self.extra),
        }

    def _rollout_state(self) -> Optional[dict]:
        if self._obs is None:  # before the first rollout: learn resets the environments
            return None
        return {"num_envs": self.num_envs,
                "obs": torch.from_numpy(np.array(self._obs, np.float32)),
                "mask": None if self._mask is None else torch.from_numpy(self._mask.copy()),
                "use_masks": self._use_masks,
                "episode_return": torch.from_numpy(self._ep_return.copy()),
                "episode_length": torch.from_numpy(self._ep_length.copy()),
                "episode_index": torch.from_numpy(self._ep_index.copy()),
                "env_state": self.env.get_state() if hasattr(self.env, "get_state") else None}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (a ``state_dict()``, or a checkpoint file's dict) with this
        agent's own config: the fields of checkpoint.FROZEN_ON_RESUME and group_size must equal the
        state's (else ValueError); a new horizon or annealing flag starts a new annealing line from
        the fraction reached; an overridden learning rate is in the optimiser at once. The
        environments continue exactly if the vector env has ``set_state`` and as many environments,
        else they are reset (seeded with seed + global_step). Sets the global RNGs too."""
        saved = PPOConfig.from_dict(state["config"])
        check_resumable(saved, self.config)
        if [*self.obs_shape] != list(state["obs_shape"]) or self.n_actions != state["n_actions"]:
            raise ValueError(f"the state is of observations {tuple(state['obs_shape'])} and {state['n_actions']} "
                             f"actions, this agent's environment has {self.obs_shape} and {self.n_actions}")
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_normalizer.load_state_dict(state["obs_normalizer"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])
        self.global_step, self.n_updates = int(state["global_step"]), int(state["n_updates"])
        self.eval_history = [EvalResult.from_dict(d) for d in state["evaluations"]]
        self.best_eval = next((r for r in reversed(self.eval_history) if r.is_best), None)
        self.recent_episodes.clear()
        self.recent_episodes.extend(tuple(e) for e in state["recent_episodes"])
        self.extra = dict(state.get("extra") or {})
        restore_global_rng(state["rng"])
        restore_generator(self.rng, state["rng"]["trainer"])
        schedule = state["schedule"]
        self.schedule_start = (int(schedule["start_step"]), float(schedule["start_lr_fraction"]),
                               float(schedule["start_clip_fraction"]))
        self._load_rollout_state(state["rollout"])
        self._set_config(self.config, previous=saved)  # a new horizon continues the line from here
        self._apply_schedule()

    def _load_rollout_state(self, state: Optional[dict]) -> None:
        if state is None:  # saved before the first rollout: learn starts the environments as a new run does
            self._obs = self._mask = None
            return
        if state["num_envs"] != self.num_envs or state["env_state"] is None or not hasattr(self.env, "set_state"):
            self._reset_envs(self.config.seed + self.global_step)  # mid-run, environments cannot be restored
            return
        self.env.set_state(state["env_state"])
        self._obs = state["obs"].numpy().copy()
        self._mask = None if state["mask"] is None else state["mask"].numpy().copy()
        self._use_masks = bool(state["use_masks"])
        self._ep_return = state["episode_return"].numpy().copy()
        self._ep_length = state["episode_length"].numpy().copy()
        if "episode_index" in state:  # older files were trained without groups, which alone read episode numbers
            self._ep_index = state["episode_index"].numpy().copy()

    def save(self, path: str, extra: Optional[dict] = None) -> None:
        """Atomically write a checkpoint (ppo/checkpoint.py); ``extra`` is merged into ``self.extra`` first."""
        if extra:
            self.extra.update(extra)
        save_checkpoint(path, checkpoint_dict(self))

    @classmethod
    def from_checkpoint(cls, ckpt: dict, env: Any, config: Optional[PPOConfig] = None, *,
                        log_dir: Optional[str] = None, logger: Optional[Logger] = None,
                        source: str = "the checkpoint") -> "PPO":
        """An agent continuing the checkpoint ``ckpt`` (a dict ``checkpoint.load_for_resume`` read):
        built on ``env`` with ``config``, the whole config to continue with (None: the checkpoint's;
        see ``load_state_dict`` for what may change), then the checkpoint's state loaded. A refused
        config change is a ValueError, a checkpoint that does not fit a CheckpointError naming ``source``."""
        saved = saved_config(ckpt, source)
        config = saved if config is None else config
        check_resumable(saved, config)  # before building environments and network for nothing
        agent = cls(env, config, log_dir=log_dir, logger=logger)
        restore_agent(agent, ckpt, source)
        return agent

    @classmethod
    def load(cls, path: str, env: Any, *, config: Optional[PPOConfig] = None, log_dir: Optional[str] = None,
             map_location: Any = None, logger: Optional[Logger] = None) -> "PPO":
        """Read the checkpoint file ``path`` and continue from it (``from_checkpoint``);
        ``map_location``: the device to continue on (default: the config's)."""
        ckpt = load_for_resume(path, map_location or "cpu")
        if map_location is not None:
            config = (config or saved_config(ckpt, path)).replace(device=str(map_location))
        return cls.from_checkpoint(ckpt, env, config, log_dir=log_dir, logger=logger, source=path)

    def close(self) -> None:
        self.logger.close()
        if hasattr(self.env, "close"):
            self.env.close()

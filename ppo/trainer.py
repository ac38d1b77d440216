"""PPO (Schulman et al. 2017, clipped surrogate) for discrete actions.

One iteration of ``PPO.learn`` reads top to bottom:
  1. collect ``n_steps`` x ``num_envs`` transitions with the current policy,
  2. compute values, old log-probs and GAE advantages for the whole rollout,
  3. run ``n_epochs`` passes of minibatch updates on the clipped objective,
  4. log, run callbacks, write all scalars at the new global step.

Shapes: T = n_steps, N = num_envs, S = observation shape, A = actions, B = T*N.
"""
from __future__ import annotations

import math
import random
import time
from collections import deque
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .buffer import RolloutBuffer, compute_gae
from .callbacks import Callback
from .checkpoint import (AGENT_KIND, FORMAT_VERSION, CheckpointError, capture_global_rng, generator_state,
                         load_checkpoint, restore_generator, restore_global_rng, save_checkpoint)
from .config import PPOConfig
from .evaluation import EvalResult, evaluate_policy
from .logger import Logger
from .losses import approx_kl, clip_fraction, clipped_surrogate_loss, value_loss
from .normalize import ObsNormalizer, RewardScaler
from .policy import ActorCritic, bind_flat_grads, flatten_parameters
from .vec_env import as_vec_env

# Fields that define the trained network or the meaning of its inputs/targets; they
# cannot change when resuming (the weights would no longer fit them).
FROZEN_ON_RESUME = ("pi_hidden", "vf_hidden", "activation", "normalize_obs", "obs_clip",
                    "normalize_reward", "reward_clip", "norm_eps")


def _make_adam(params: Iterable[torch.nn.Parameter], lr: float, eps: float) -> torch.optim.Optimizer:
    # The fused kernel updates all parameters in one call: ~20% faster per minibatch
    # than the per-tensor loop on CPU for these small networks.
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):  # older torch, or a device without a fused Adam
        return torch.optim.Adam(params, lr=lr, eps=eps)


class PPO:
    """Train a categorical actor-critic with PPO on a Gymnasium-style environment.

    ``env``: a vector env (see ``ppo.vec_env``), a list of env factories (stepped
    together in-process with auto-reset), one factory or one env. ``log_dir``: where
    TensorBoard scalars go (None: in-memory ``logger`` only). ``extra``: plain-typed
    dict saved in every checkpoint (e.g. the environment's config).
    """

    def __init__(self, env: Any, config: Optional[PPOConfig] = None, *, log_dir: Optional[str] = None,
                 extra: Optional[dict] = None):
        self.config = cfg = config if config is not None else PPOConfig()
        if cfg.torch_threads > 0:
            torch.set_num_threads(cfg.torch_threads)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.env = as_vec_env(env, cfg.action_mask_key)
        self.num_envs = int(self.env.num_envs)
        self.obs_shape = tuple(int(s) for s in self.env.observation_space.shape)
        self.n_actions = int(self.env.action_space.n)
        self.device = torch.device(cfg.device)

        init_gen = torch.Generator().manual_seed(cfg.seed)
        self.policy = ActorCritic(math.prod(self.obs_shape), self.n_actions, cfg.pi_hidden, cfg.vf_hidden,
                                  cfg.activation, generator=init_gen).to(self.device)
        self._flat_params = flatten_parameters(self.policy)
        self.optimizer = _make_adam([self._flat_params], cfg.learning_rate, cfg.adam_eps)
        self.obs_normalizer = ObsNormalizer(self.obs_shape, cfg.obs_clip, cfg.norm_eps, cfg.normalize_obs)
        self.reward_scaler = RewardScaler(self.num_envs, cfg.gamma, cfg.reward_clip, cfg.norm_eps,
                                          cfg.normalize_reward)
        # Our own stream for action sampling and minibatch order: evaluations and
        # user code can use the global RNGs without changing the training run.
        self.rng = np.random.default_rng(cfg.seed)
        self.logger = Logger(log_dir)
        self.extra = dict(extra or {})

        self.global_step = 0  # env steps over all environments
        self.n_updates = 0
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
        self.recent_episodes: deque = deque(maxlen=100)  # (return, length) of finished episodes
        self._predict_rng = np.random.default_rng(cfg.seed + 1)

    # ------------------------------------------------------------------ schedule
    def current_schedule(self) -> tuple[float, float]:
        """(learning rate, clip range) at the current global step. Computed from the
        step over the planned total, so resuming continues the same line."""
        cfg = self.config
        remaining = max(0.0, 1.0 - self.global_step / cfg.total_timesteps)
        lr = cfg.learning_rate * (remaining if cfg.anneal_lr else 1.0)
        clip = cfg.clip_range * (remaining if cfg.anneal_clip_range else 1.0)
        return lr, clip

    def _apply_schedule(self) -> tuple[float, float]:
        lr, clip = self.current_schedule()
        for group in self.optimizer.param_groups:
            group["lr"], group["eps"] = lr, self.config.adam_eps
        return lr, clip

    # ------------------------------------------------------------------ training
    def learn(self, total_timesteps: Optional[int] = None, callbacks: Sequence[Callback] = ()) -> "PPO":
        """Train until ``global_step`` reaches ``total_timesteps`` (default: the config's;
        a given value replaces it, and with it the annealing horizon)."""
        cfg = self.config
        if total_timesteps is not None:
            self.config = cfg = cfg.replace(total_timesteps=int(total_timesteps))
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
                lr, clip = self._apply_schedule()
                self._collect_rollout(buf, step_hooks)
                self.dispatch("on_rollout_end")
                batch = self._compute_advantages(buf)
                self._update(batch, lr, clip)
                self.n_updates += 1

                if self.recent_episodes:
                    self.logger.record("rollout/ep_rew_mean", np.mean([e[0] for e in self.recent_episodes]))
                    self.logger.record("rollout/ep_len_mean", np.mean([e[1] for e in self.recent_episodes]))
                self.logger.record("time/fps", (self.global_step - start_step) / (time.perf_counter() - start_time))
                self.dispatch("on_update_end")
                self.logger.dump(self.global_step)
                bar.update(min(self.global_step, cfg.total_timesteps) - bar.n)  # the last rollout may overshoot
                latest = self.logger.latest
                postfix = {"fps": f"{latest['time/fps']:.3g}"}
                if "rollout/ep_rew_mean" in latest:
                    postfix["ep_rew_mean"] = f"{latest['rollout/ep_rew_mean']:.3g}"
                if self.eval_history:
                    last = self.eval_history[-1]
                    postfix["last_eval"] = f"{last.mean_reward:.4g}±{last.std_reward:.2g}@{last.step}"
                bar.set_postfix(postfix, refresh=False)
            self.dispatch("on_training_end")
        finally:
            bar.close()
        return self

    def _reset_envs(self, seed: Optional[int]) -> None:
        self._obs, infos = self.env.reset(seed=seed)
        self._mask = self._mask_from(infos)
        self._use_masks = self._mask is not None
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0

    def _mask_from(self, infos: dict) -> Optional[np.ndarray]:
        key = self.config.action_mask_key
        return None if key is None or key not in infos else np.asarray(infos[key], bool)

    # 1. collect -------------------------------------------------------------
    def _collect_rollout(self, buf: RolloutBuffer, step_hooks: list) -> None:
        buf.clear()
        with torch.inference_mode():  # once here, not per step: entering costs ~1.5 us
            for t in range(buf.n_steps):
                obs = self.obs_normalizer(self._obs, update=True)  # [N, *S]
                buf.obs[t] = obs
                if buf.masks is not None:
                    buf.masks[t] = True if self._mask is None else self._mask
                actions = self.policy.act(obs, self._mask, rng=self.rng)  # [N]
                next_obs, rewards, terminated, truncated, infos = self.env.step(actions)
                ended = terminated | truncated

                buf.actions[t] = actions
                buf.rewards[t] = self.reward_scaler(rewards, ended)
                buf.terminated[t], buf.truncated[t] = terminated, truncated
                self._ep_return += rewards
                self._ep_length += 1
                if ended.any():  # rare: keep the per-step path to the cheap test above
                    # A time limit cut the episode short: its last state still had a
                    # future, so GAE bootstraps from its value. Not for termination.
                    for i in np.flatnonzero(truncated & ~terminated):
                        final = self.obs_normalizer(infos["final_observation"][i:i + 1], update=False)[0]
                        buf.truncation_obs.append((t, int(i), final))
                    for i in np.flatnonzero(ended):
                        self.recent_episodes.append((float(self._ep_return[i]), int(self._ep_length[i])))
                    self._ep_return[ended], self._ep_length[ended] = 0.0, 0

                self._obs = next_obs
                if self._use_masks:
                    self._mask = self._mask_from(infos)
                self.global_step += self.num_envs
                self.last_rollout_infos = infos
                for cb in step_hooks:
                    cb.on_step(self, infos)

    # 2. advantages ----------------------------------------------------------
    def _compute_advantages(self, buf: RolloutBuffer) -> dict:
        T, N = buf.n_steps, self.num_envs
        obs = torch.from_numpy(buf.obs.reshape(T * N, *self.obs_shape)).to(self.device)
        actions = torch.from_numpy(buf.actions.reshape(T * N)).to(self.device)
        masks = None if buf.masks is None else torch.from_numpy(buf.masks.reshape(T * N, -1)).to(self.device)
        # One batched forward for the whole rollout instead of one per step: the
        # policy did not change during collection, so these equal the per-step values.
        extra_obs = [self.obs_normalizer(self._obs, update=False)] + [o[None] for _, _, o in buf.truncation_obs]
        with torch.inference_mode():
            # The same function the update calls, so the first minibatch's ratio is 1.
            old_logp, _, values = self.policy.evaluate_actions(obs, actions, masks)  # [B], [B]
            extra_values = self.policy.value(torch.from_numpy(np.concatenate(extra_obs)).to(self.device))
        values_np = values.cpu().numpy().reshape(T, N)
        extra_np = extra_values.cpu().numpy()
        next_values = buf.next_values(values_np, last_values=extra_np[:N], truncation_values=extra_np[N:])
        advantages, returns = compute_gae(buf.rewards, values_np, next_values, buf.terminated | buf.truncated,
                                          self.config.gamma, self.config.gae_lambda)
        var_returns = returns.var()
        self.logger.record("train/explained_variance",
                           float("nan") if var_returns == 0 else 1.0 - (returns - values_np).var() / var_returns)
        as_t = lambda a: torch.from_numpy(a.reshape(T * N)).to(self.device)  # noqa: E731
        return {"obs": obs, "actions": actions, "masks": masks, "old_logp": old_logp.clone(),
                "old_values": values.clone(), "advantages": as_t(advantages), "returns": as_t(returns)}

    # 3. update ----------------------------------------------------------------
    def _update(self, batch: dict, lr: float, clip: float) -> None:
        cfg = self.config
        B, mb = len(batch["obs"]), cfg.batch_size
        flat = self._flat_params
        bind_flat_grads(self.policy, flat)
        losses = []  # per applied minibatch: [pg_loss, value_loss, entropy, loss]
        log_ratios = []  # per applied minibatch: log(pi_new / pi_old) [mb], for KL and clip stats
        kl_stop = False
        for epoch in range(cfg.n_epochs):
            # Shuffle once per epoch; minibatches are then cheap contiguous slices.
            perm = torch.from_numpy(self.rng.permutation(B)).to(self.device)
            shuffled = {k: (None if v is None else v[perm]) for k, v in batch.items()}
            for start in range(0, B, mb):
                d = {k: (None if v is None else v[start:start + mb]) for k, v in shuffled.items()}
                logp, entropy, values = self.policy.evaluate_actions(d["obs"], d["actions"], d["masks"])
                log_ratio = logp - d["old_logp"]
                ratio = log_ratio.exp()
                adv = d["advantages"]
                if cfg.normalize_advantage and adv.shape[0] > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = clipped_surrogate_loss(ratio, adv, clip)
                v_loss = value_loss(values, d["old_values"], d["returns"], cfg.clip_range_vf)
                entropy = entropy.mean()
                loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss

                if cfg.target_kl is not None and approx_kl(log_ratio.detach()).item() > cfg.target_kl:
                    kl_stop = True  # the policy moved too far: this minibatch is not applied
                    break
                flat.grad.zero_()
                loss.backward()
                if cfg.max_grad_norm > 0:
                    # Global-norm clipping, as clip_grad_norm_ does it (same 1e-6), on
                    # the one flat gradient.
                    grad_norm = torch.linalg.vector_norm(flat.grad)
                    flat.grad.mul_((cfg.max_grad_norm / (grad_norm + 1e-6)).clamp_(max=1.0))
                self.optimizer.step()
                losses.append(torch.stack([pg_loss, v_loss, entropy, loss]).detach())
                log_ratios.append(log_ratio.detach())
            if kl_stop:
                break

        log = self.logger.record
        if losses:  # means over all applied minibatches (diagnostics computed once, here)
            pg, vl, ent, total = torch.stack(losses).mean(0).tolist()
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
        if cfg.clip_range_vf is not None:
            log("train/clip_range_vf", cfg.clip_range_vf)
        log("train/n_minibatch_updates", len(losses))
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
    def evaluate(self, env: Any, n_episodes: int = 10, deterministic: bool = True, seed: int = 0,
                 step_hook: Optional[Callable[[dict], None]] = None) -> EvalResult:
        """Evaluate with the frozen observation normaliser; training state is untouched.
        See ``evaluate_policy`` for ``env`` and ``step_hook``."""
        return evaluate_policy(self.policy, env, n_episodes, deterministic, seed, self.obs_normalizer,
                               self.config.action_mask_key, step_hook)

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
        """Actions for raw observations [N, *S] (frozen normaliser) -> int64 [N]."""
        obs = self.obs_normalizer(np.asarray(obs, np.float32).reshape(-1, *self.obs_shape), update=False)
        return self.policy.act(obs, mask, deterministic, rng or self._predict_rng)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue exactly, as plain types and tensors."""
        env_state = self.env.get_state() if hasattr(self.env, "get_state") else None
        return {
            "format_version": FORMAT_VERSION,
            "kind": AGENT_KIND,
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
            "schedule": dict(zip(("learning_rate", "clip_range"), self.current_schedule()),
                             progress=self.global_step / self.config.total_timesteps,
                             total_timesteps=self.config.total_timesteps),
            "rollout": None if self._obs is None else {
                "num_envs": self.num_envs,
                "obs": torch.from_numpy(np.array(self._obs, np.float32)),
                "mask": None if self._mask is None else torch.from_numpy(self._mask.copy()),
                "use_masks": self._use_masks,
                "episode_return": torch.from_numpy(self._ep_return.copy()),
                "episode_length": torch.from_numpy(self._ep_length.copy()),
                "env_state": env_state,
            },
            "recent_episodes": [list(e) for e in self.recent_episodes],
            "evaluations": [r.to_dict() for r in self.eval_history],
            "extra": dict(self.extra),
            "torch_version": str(torch.__version__),
        }

    def save(self, path: str, extra: Optional[dict] = None) -> None:
        """Atomically write a checkpoint; ``extra`` is merged into ``self.extra`` first."""
        if extra:
            self.extra.update(extra)
        save_checkpoint(path, self.state_dict())

    @classmethod
    def load(cls, path: str, env: Any, *, overrides: Optional[dict] = None, log_dir: Optional[str] = None,
             map_location: Any = None) -> "PPO":
        """Rebuild an agent from a checkpoint to continue training or to evaluate.

        ``overrides``: config fields to change (e.g. learning_rate, clip_range,
        ent_coef, max_grad_norm, total_timesteps); they take effect from the next
        update. Fields in FROZEN_ON_RESUME cannot change. The environments continue
        exactly if ``env`` has ``set_state`` and the same number of environments;
        otherwise they are reset (seeded with seed + global_step).
        """
        overrides = dict(overrides or {})
        frozen = sorted(set(overrides) & set(FROZEN_ON_RESUME))
        if frozen:
            raise ValueError(f"cannot override {', '.join(frozen)} when loading: they are fixed by the trained "
                             "network; start a new run instead")
        ckpt = load_checkpoint(path, AGENT_KIND, map_location=map_location or "cpu",
                               required=("config", "obs_shape", "n_actions", "policy", "optimizer",
                                         "obs_normalizer", "reward_scaler", "rng", "global_step"))
        try:
            config = PPOConfig.from_dict(ckpt["config"]).replace(**overrides)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: config cannot be used ({e}); fix the overrides or the file") from e
        if map_location is not None:
            config = config.replace(device=str(map_location))
        agent = cls(env, config, log_dir=log_dir, extra=ckpt.get("extra"))
        if [*agent.obs_shape] != list(ckpt["obs_shape"]) or agent.n_actions != ckpt["n_actions"]:
            raise CheckpointError(f"{path} was trained with observations {tuple(ckpt['obs_shape'])} and "
                                  f"{ckpt['n_actions']} actions, the environment has {agent.obs_shape} and "
                                  f"{agent.n_actions}; use the matching environment")
        try:
            agent.policy.load_state_dict(ckpt["policy"])
            agent.optimizer.load_state_dict(ckpt["optimizer"])
            agent.obs_normalizer.load_state_dict(ckpt["obs_normalizer"])
            agent.reward_scaler.load_state_dict(ckpt["reward_scaler"])
            agent.global_step, agent.n_updates = int(ckpt["global_step"]), int(ckpt.get("n_updates", 0))
            agent.eval_history = [EvalResult.from_dict(d) for d in ckpt.get("evaluations", [])]
            agent.recent_episodes.extend(tuple(e) for e in ckpt.get("recent_episodes", []))
            restore_global_rng(ckpt["rng"])
            restore_generator(agent.rng, ckpt["rng"]["trainer"])
            agent._restore_rollout(ckpt.get("rollout"))
        except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as e:
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path} does not fit this agent ({type(e).__name__}: {msg}); the file is "
                                  "damaged or from a different network") from e
        best = [r for r in agent.eval_history if r.is_best]
        agent.best_eval = best[-1] if best else None
        agent._apply_schedule()  # overridden lr is in the optimiser right away
        return agent

    def _restore_rollout(self, state: Optional[dict]) -> None:
        can_continue = (state is not None and state["num_envs"] == self.num_envs
                        and state["env_state"] is not None and hasattr(self.env, "set_state"))
        if not can_continue:
            if state is not None:  # mid-run checkpoint, environments cannot be restored
                self._reset_envs(self.config.seed + self.global_step)
            return
        self.env.set_state(state["env_state"])
        self._obs = state["obs"].numpy().copy()
        self._mask = None if state["mask"] is None else state["mask"].numpy().copy()
        self._use_masks = bool(state["use_masks"])
        self._ep_return = state["episode_return"].numpy().copy()
        self._ep_length = state["episode_length"].numpy().copy()

    def close(self) -> None:
        self.logger.close()
        if hasattr(self.env, "close"):
            self.env.close()

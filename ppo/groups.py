"""Group baselines: the advantage of a decision measured against the other members of its group.

With `PPOConfig.group_size = G` the vector env starts the G environments of a group from the
same seed every episode (common/vector.py, "Groups"). Whatever that seed does to the return (the
data stream, the start state) is then common to the group, while the members' actions are drawn
independently; subtracting the mean of the *other* members' returns (a leave-one-out baseline, as
in RLOO) removes the shared part without depending on the member's own action, so the
policy-gradient estimate stays unbiased while its variance drops (tests/test_ppo_groups.py;
docs/ppo.md, "Shared-seed groups", has the measurement).

Shapes: T = n_steps, N = num_envs, G = group size; environment j belongs to group j // G.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

GROUP_BASELINES = ("none", "loo", "loo+gae")


def leave_one_out_mean(x: np.ndarray, group_size: int, episode: np.ndarray,
                       step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each sample's leave-one-out group mean of `x`.

    x [T, N]; episode, step [T, N] (integers): the episode (counted since the environments' reset)
    and the step within it at which environment j made its decision of row t. Members at the same
    episode and step met the same seed and have played equally long: those are "peers". Returns
    (baseline [T, N], has_peer [T, N] bool) with

        baseline[t, j] = mean of x[t, k] over the peers k != j of j in its group,

    0 where j has no peer. (With episodes of one fixed length every member of a group is a peer of
    every other, and x_j - baseline_j = G / (G - 1) * (x_j - group mean).)
    """
    T, N = x.shape
    shape = (T, N // group_size, group_size)
    xs, ep, st = x.reshape(shape).astype(np.float64), episode.reshape(shape), step.reshape(shape)
    # peer[t, g, j, k]: members j and k of group g are at the same episode and step on row t (j == k included)
    peer = (ep[..., :, None] == ep[..., None, :]) & (st[..., :, None] == st[..., None, :])  # [T, N/G, G, G]
    n_peers = peer.sum(-1) - 1  # [T, N/G, G], others only
    others = (peer * xs[..., None, :]).sum(-1) - xs  # [T, N/G, G]: sum of x over j's peers, j left out
    baseline = np.where(n_peers > 0, others / np.maximum(n_peers, 1), 0.0)
    return baseline.reshape(T, N).astype(np.float32), (n_peers > 0).reshape(T, N)


def group_advantages(kind: str, advantages: np.ndarray, returns_to_go: Optional[np.ndarray], values: np.ndarray,
                     group_size: int, episode: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The advantages PPO's update uses under group baseline `kind` (every array [T, N]):

        "loo":      R_j - mean_{k peer of j} R_k,  R: the return-to-go (discounted by GAE's gamma to
                    the episode's end, bootstrapped from V where the rollout or a time limit cuts it:
                    GAE's return with lambda = 1), passed as `returns_to_go` (needed by "loo" only);
        "loo+gae":  A_j - mean_{k peer of j} A_k,  A: GAE(gamma, lambda)'s `advantages` (= R^lambda - V):
                    the critic's baseline for what it can see, the group's for what the seed adds,
                    which the critic cannot see;
        "none":     A_j.

    A sample with no peer (see leave_one_out_mean) keeps the critic's baseline: R_j - V_j under
    "loo", A_j under "loo+gae". `values` [T, N]: V(s) at acting time.
    """
    if kind not in GROUP_BASELINES:
        raise ValueError(f"unknown group baseline {kind!r}; use one of {', '.join(GROUP_BASELINES)}")
    if kind == "none":
        return advantages
    x, fallback = (returns_to_go, returns_to_go - values) if kind == "loo" else (advantages, advantages)
    baseline, has_peer = leave_one_out_mean(x, group_size, episode, step)
    return np.where(has_peer, x - baseline, fallback).astype(np.float32)

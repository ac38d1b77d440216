"""PPO building blocks on hand-made numbers: GAE, the clipped losses, normalisers,
sampling and acting, evaluation statistics and the Student-t quantiles behind them.
(The over-fitting rule's reference table is reproduced in test_report.py.)"""
import numpy as np
import pytest
import torch

from common.stats import t975
from ppo import ActorCritic, EvalResult, ObsNormalizer, PPOConfig, RewardScaler, RunningMeanStd
from ppo.buffer import RolloutBuffer, compute_gae
from ppo.losses import approx_kl, clip_fraction, clipped_surrogate_loss, value_loss
from ppo.policy import masked_logits, sample_from_probs

GAMMA, LAM = 0.9, 0.8  # not the defaults, so a swapped gamma/lambda would show


def test_gae_hand_computed_continuing_terminated_truncated():
    # Three environments over T=3 steps:
    #   env 0: episode continues past the rollout (bootstrap from last value 2.0)
    #   env 1: terminates at t=1 (no bootstrap; row t=2 belongs to a new episode)
    #   env 2: truncated at t=1 with V(final observation) = 5.0 (bootstrap from it)
    T, N = 3, 3
    buf = RolloutBuffer(T, N, obs_shape=(1,), n_actions=2, with_masks=False)
    buf.rewards[:] = np.array([[1, 1, 1], [2, 1, 1], [3, 1, 1]], np.float32)
    values = np.array([[0.5, 0.5, 0.5], [1.0, 0.6, 0.6], [1.5, 0.7, 0.7]], np.float32)
    buf.terminated[1, 1] = True
    buf.truncated[1, 2] = True
    buf.truncation_obs.append((1, 2, np.zeros(1, np.float32)))
    last_values = np.array([2.0, 0.8, 0.8], np.float32)

    next_values = buf.next_values(values, last_values, truncation_values=np.array([5.0], np.float32))
    np.testing.assert_allclose(next_values, [[1.0, 0.6, 0.6], [1.5, 0.0, 5.0], [2.0, 0.8, 0.8]])
    adv, ret = compute_gae(buf.rewards, values, next_values, buf.terminated | buf.truncated, GAMMA, LAM)

    gl = GAMMA * LAM
    # env 0: deltas 1.4, 2.35, 3.3
    a2 = 3.3
    a1 = 2.35 + gl * a2
    a0 = 1.4 + gl * a1
    # env 1: deltas 1.04, 0.4 (terminal: r - V), 1.02; recursion cut after t=1
    b = [1.04 + gl * 0.4, 0.4, 1.02]
    # env 2: delta at t=1 is 1 + 0.9*5.0 - 0.6 = 4.9
    c = [1.04 + gl * 4.9, 4.9, 1.02]
    expected = np.array([[a0, b[0], c[0]], [a1, b[1], c[1]], [a2, b[2], c[2]]])
    np.testing.assert_allclose(adv, expected, rtol=1e-6)
    np.testing.assert_allclose(ret, expected + values, rtol=1e-6)
    assert a0 == pytest.approx(4.80272)


def test_gae_lambda_one_gives_discounted_return_minus_value():
    rewards = np.array([[1.0], [2.0], [4.0]], np.float32)
    values = np.array([[0.3], [0.2], [0.1]], np.float32)
    end = np.array([[False], [False], [True]])
    nxt = np.array([[0.2], [0.1], [0.0]], np.float32)
    adv, ret = compute_gae(rewards, values, nxt, end, gamma=0.5, gae_lambda=1.0)
    np.testing.assert_allclose(ret[:, 0], [1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4, 4], rtol=1e-6)


def test_clipped_surrogate_value_and_gradient():
    clip = 0.2
    cases = [  # ratio, advantage, expected loss, expected d loss / d ratio
        (1.5, 1.0, -1.2, 0.0),  # helped too much: clipped, no gradient
        (0.5, 1.0, -0.5, -1.0),  # got worse: unclipped, push back up
        (0.5, -1.0, 0.8, 0.0),  # decreased a bad action enough: clipped
        (1.5, -1.0, 1.5, 1.0),  # increased a bad action: unclipped, push down
        (1.1, 2.0, -2.2, -2.0),  # inside the range: plain surrogate
    ]
    for r, a, loss_expected, grad_expected in cases:
        ratio = torch.tensor([r], requires_grad=True)
        loss = clipped_surrogate_loss(ratio, torch.tensor([a]), clip)
        loss.backward()
        assert loss.item() == pytest.approx(loss_expected), (r, a)
        assert ratio.grad.item() == pytest.approx(grad_expected), (r, a)


def test_value_loss_plain_and_clipped():
    values = torch.tensor([2.0], requires_grad=True)
    old, ret = torch.tensor([1.0]), torch.tensor([3.0])
    assert value_loss(values, old, ret, None).item() == pytest.approx(1.0)
    # clipped prediction 1.5 -> error 2.25 > unclipped 1.0: the pessimistic max wins
    loss = value_loss(values, old, ret, 0.5)
    assert loss.item() == pytest.approx(2.25)
    loss.backward()
    assert values.grad.item() == 0.0  # gradient only through the (constant) clipped branch


def test_kl_and_clip_fraction_statistics():
    assert approx_kl(torch.zeros(5)).item() == 0.0
    lr = torch.log(torch.tensor([1.0, 1.3, 0.7, 1.1]))
    assert clip_fraction(lr, 0.2).item() == pytest.approx(0.5)
    assert approx_kl(lr).item() > 0


def test_running_mean_std_equals_batch_statistics():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 3))
    rms = RunningMeanStd((3,))
    for chunk in np.array_split(data, [1, 2, 10, 500, 501, 777]):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-10)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-10)
    assert rms.count == 1000


def test_obs_normalizer_normalises_clips_and_freezes():
    norm = ObsNormalizer((2,), clip=3.0)
    x = np.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]], np.float32)
    out = norm(x, update=True)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], (x[:, 0] - 2.0) / np.sqrt(8 / 3 + 1e-8), rtol=1e-5)
    np.testing.assert_allclose(out[:, 1], 0.0)  # zero variance: no blow-up
    far = norm(np.array([[1000.0, -1000.0]], np.float32))
    np.testing.assert_array_equal(far, [[3.0, -3.0]])  # clipped
    before = norm.state_dict()["rms"]["mean"].clone()
    norm(np.full((4, 2), 50.0, np.float32), update=False)
    assert torch.equal(norm.state_dict()["rms"]["mean"], before)  # frozen
    restored = ObsNormalizer((2,), clip=3.0)
    restored.load_state_dict(norm.state_dict())
    np.testing.assert_array_equal(restored(x), norm(x))
    assert np.array_equal(ObsNormalizer((2,), enabled=False)(x), x)


def test_reward_scaler_divides_by_std_of_discounted_return():
    scaler = RewardScaler(num_envs=1, gamma=0.5, clip=100.0)
    rewards = [1.0, 2.0, 3.0]
    returns, out = [], []
    g = 0.0
    for r in rewards:
        g = 0.5 * g + r
        returns.append(g)
        out.append(scaler(np.array([r]), np.array([False]))[0])
    np.testing.assert_allclose(out[-1], 3.0 / np.sqrt(np.var(returns) + 1e-8), rtol=1e-5)
    scaler(np.array([1.0]), np.array([True]))
    assert scaler.returns[0] == 0.0  # reset at the end of an episode


def test_masked_logits_and_sampling():
    logits = torch.tensor([[5.0, 0.0, 1.0]], requires_grad=True)
    mask = torch.tensor([[False, True, True]])
    lp = torch.log_softmax(masked_logits(logits, mask), -1)
    assert lp[0, 0].item() < -1e30 and torch.isfinite((lp.exp() * lp).sum())
    (lp.exp() * lp).sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 0] == 0.0

    rng = np.random.default_rng(0)
    probs = np.tile(np.array([[0.0, 0.25, 0.75]]), (20000, 1))
    actions = sample_from_probs(probs, rng)
    assert (actions != 0).all()
    assert abs((actions == 2).mean() - 0.75) < 0.015


def test_actor_critic_init_and_masked_act():
    net = ActorCritic(4, 3, pi_hidden=(16, 16), vf_hidden=(8,), generator=torch.Generator().manual_seed(0))
    w = net.pi[0].weight.detach()
    # orthogonal rows scaled by sqrt(2); tiny policy head -> near-uniform start
    np.testing.assert_allclose((w.T @ w).numpy(), 2.0 * np.eye(4), atol=1e-5)
    assert net.pi[-1].weight.abs().max() < 0.05 and net.pi[-1].bias.abs().max() == 0
    assert len([m for m in net.vf if isinstance(m, torch.nn.Linear)]) == 2
    obs = np.random.default_rng(0).normal(size=(500, 4)).astype(np.float32)
    mask = np.ones((500, 3), bool)
    mask[:, 1] = False
    acts, _, _ = net.act(obs, mask, rng=np.random.default_rng(1))
    assert set(acts.tolist()) == {0, 2}
    assert (net.act(obs, mask, deterministic=True)[0] != 1).all()


def test_the_fast_forward_is_the_sequential_modules_forward():
    """logits/value run F.linear on cached (weight, bias) pairs; they must stay the modules' own,
    also after load_state_dict (and .to(), which keeps the Parameter objects)."""
    for activation in ("tanh", "relu"):
        net = ActorCritic(6, 3, pi_hidden=(16, 8), vf_hidden=(8,), activation=activation)
        other = ActorCritic(6, 3, pi_hidden=(16, 8), vf_hidden=(8,), activation=activation,
                            generator=torch.Generator().manual_seed(1))
        net.load_state_dict(other.state_dict())
        net = net.to("cpu")
        obs = torch.randn(5, 2, 3)  # flattened to 6 features
        with torch.no_grad():
            assert torch.equal(net.logits(obs), net.pi(obs.reshape(5, 6)))
            assert torch.equal(net.value(obs), net.vf(obs.reshape(5, 6)).squeeze(-1))
            assert torch.equal(net.value(obs), other.value(obs))


def test_act_returns_the_log_prob_and_value_the_update_starts_from():
    """The trainer stores act's log-probabilities and values as pi_old and V_old; they must be
    those evaluate_actions gives for the same states and actions (on the same batch, exactly)."""
    net = ActorCritic(4, 3, pi_hidden=(16,), vf_hidden=(8,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.pi[-1].weight.mul_(100)  # a decisive policy, so a wrong action index shows in the log-prob
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    mask = np.ones((64, 3), bool)
    mask[::2, 0] = False
    for deterministic in (False, True):
        actions, logp, values = net.act(obs, mask, deterministic, rng=np.random.default_rng(2))
        assert actions.dtype == np.int64 and logp.dtype == values.dtype == np.float32
        ref_logp, _, ref_values = net.evaluate_actions(torch.from_numpy(obs), torch.from_numpy(actions),
                                                       torch.from_numpy(mask))
        np.testing.assert_array_equal(logp, ref_logp.detach().numpy())
        np.testing.assert_array_equal(values, ref_values.detach().numpy())
        assert len(set(np.round(logp, 3).tolist())) > 2  # the log-probabilities differ between states
    with pytest.raises(ValueError, match="rng"):
        net.act(obs)


def test_config_validation_and_dict_round_trip():
    cfg = PPOConfig(pi_hidden=[64], clip_range_vf=0.3)
    d = cfg.to_dict()
    assert d["pi_hidden"] == [64] and PPOConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="minibatch_size"):
        PPOConfig(minibatch_size=0)
    with pytest.raises(ValueError, match="gamma"):
        PPOConfig(gamma=1.5)
    with pytest.raises(ValueError, match="unknown"):
        PPOConfig.from_dict({**d, "nonsense": 1})


def test_eval_result_statistics_and_ci():
    r = EvalResult([1.0, 2.0, 3.0, 4.0], [10, 10, 10, 10])
    assert r.mean_reward == 2.5
    assert r.std_reward == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    low, high = r.ci95
    half = 3.182 * r.std_reward / 2.0  # t(0.975, df=3) * s / sqrt(4)
    assert (low, high) == pytest.approx((2.5 - half, 2.5 + half))
    assert EvalResult.from_dict(r.to_dict()).to_dict() == r.to_dict()
    assert EvalResult([5.0], [3]).ci95 == (5.0, 5.0)  # one episode: no interval


def test_t975_table_and_extrapolation_against_known_quantiles():
    # Two-sided 95 % Student-t quantiles from the standard tables.
    table = {1: 12.706, 2: 4.303, 3: 3.182, 10: 2.228, 20: 2.086, 29: 2.045, 30: 2.042}
    for df, q in table.items():
        assert t975(df) == q
    # Beyond the table: the expansion, to within its 1e-3, and never below the normal quantile.
    known = {31: 2.0395, 40: 2.0211, 60: 2.0003, 120: 1.9799, 1000: 1.9623}
    for df, q in known.items():
        assert t975(df) == pytest.approx(q, abs=5e-4), df
    qs = [t975(df) for df in range(1, 500)]
    assert all(a > b for a, b in zip(qs, qs[1:]))  # falls with df, also across the table's end
    assert qs[-1] > 1.959964
    with pytest.raises(ValueError):
        t975(0)

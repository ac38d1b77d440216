"""bench/surrogate_model.py: the surrogate of demo-lr follows the environment contract, and the noise
its seed sets is shared by every schedule played on that seed."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.surrogate_model import SurrogateEnv, SurrogateParams, decay_actions, play_batch  # noqa: E402
from env import check_env  # noqa: E402

# a parameter set of the fitted kind, rounded from a fit of bench/surrogate.py (written here, not read
# from a recording): a loss that falls from ~2.85 with step-size noise that a young optimiser
# amplifies, MIXED pulling Φ into its band at a text cost, and seed noise mostly shared by every
# schedule (sd_reset, sd_batch) with a little luck per mode (sd_luck, sd_luck_mixed)
PARAMS = SurrogateParams(L_inf=2.16, B0=0.55, c=0.017, q=0.34, N0=0.15, nu02=0.02, nu05=0.023, nu1=0.046,
                         amp=2.6, tau=14.0, k=1.0, kappa=0.42, w_mixed=0.1, g=0.24, phi_cost=5.5, lag=0.3,
                         nu_mixed=1.7, r_repair=0.23, r_repair_mixed=0.07, phi0=7.12, phi_text=6.8,
                         phi_text_slope=-0.04, a_text=0.07, phi_mixed=4.7, a_mixed=0.35, mu_phi=0.46,
                         sd_reset=0.048, rho=0.96, gamma=0.4, sd_batch=0.017, sd_luck=0.005, sd_luck_mixed=0.02,
                         sd_phi=0.064, rho_phi=0.59, loss_phi_coef=[3.55, -2.12, 0.30])


def test_the_surrogate_follows_the_environment_contract():
    env = SurrogateEnv(PARAMS)
    check_env(env, seed=3, n_steps=30)  # past the episode's end: check_env stops there
    obs, _ = env.reset(seed=5)
    assert obs.shape == (7,) and obs[6] == 1.0  # the real layout: time_left last
    for t in range(25):
        obs, reward, terminated, truncated, info = env.step(2)
        assert terminated == (t == 24) and not truncated
    assert obs[6] == 0.0 and info["mode"] == "TEXT@1"


def test_schedules_on_the_same_seeds_differ_far_less_than_seeds_do():
    seeds = range(300)
    fixed = lambda a: (lambda obs: np.full(len(obs), a))  # noqa: E731
    text1, _ = play_batch(PARAMS, fixed(2), seeds)
    text05, _ = play_batch(PARAMS, fixed(1), seeds)
    decay, actions = play_batch(PARAMS, decay_actions, seeds)
    assert (actions[:, :19] == 2).all() and (actions[:, 19:] == 1).all()
    spread = np.mean([text1.std(), text05.std(), decay.std()])
    assert spread > 2 * (text1 - text05).std() and spread > 2 * (decay - text1).std()  # real: 5.7 vs 2.5 and 2.1
    # one seed gives one episode, alone or in any batch
    alone, _ = play_batch(PARAMS, fixed(2), [17])
    assert alone[0] == text1[17]

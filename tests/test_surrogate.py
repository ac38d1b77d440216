"""bench/surrogate_model.py: the surrogate of demo-lr follows the environment contract, and the noise
its seed sets is shared by every schedule played on that seed."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.surrogate_model import SurrogateEnv, SurrogateParams, decay_actions, play_batch  # noqa: E402
from env import check_env  # noqa: E402

# a small parameter set of the fitted kind, written here (not read from a recording): a loss that
# falls from ~2.8 with step-size noise, MIXED pulling Φ into its band at a text cost, and seed
# noise mostly shared by every schedule (sd_batch) with a little luck per mode (sd_luck)
PARAMS = SurrogateParams(L_inf=2.3, B0=0.35, N0=0.12, c=0.08, q=1.0, w_mixed=0.5, nu=0.08, k=1.5, g=0.1,
                         r_repair=0.3, phi0=7.2, phi_text=6.8, a_text=0.05, phi_mixed=4.5, a_mixed=0.4,
                         sd_reset=0.04, rho=0.7, gamma=1.0, sd_batch=0.04, sd_luck=0.008, sd_phi=0.03,
                         rho_phi=0.8, loss_phi_coef=[0.5, 0.1, 0.05])


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
    assert spread > 2.5 * (text1 - text05).std() and spread > 2.5 * (decay - text1).std()
    # one seed gives one episode, alone or in any batch
    alone, _ = play_batch(PARAMS, fixed(2), [17])
    assert alone[0] == text1[17]

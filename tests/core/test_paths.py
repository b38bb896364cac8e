import itertools

import pytest
import torch

from genstudio.core.paths import PATHS, VPDiscretePath, path_from_config, path_to_config
from genstudio.core.predictions import PREDICTIONS, convert, target

ALL_PATHS = [cls() for cls in PATHS.values()]


def _times(path, n=7):
    return torch.linspace(max(path.t_min, 1e-3 * path.t_max), path.t_max * 0.98, n, dtype=torch.float64)


@pytest.mark.parametrize("path", ALL_PATHS, ids=lambda p: p.name)
def test_every_pair_of_predictions_round_trips_in_float64(path):
    torch.manual_seed(0)
    t = _times(path)
    x0, eps = torch.randn(len(t), 3, 4, 4, dtype=torch.float64), torch.randn(len(t), 3, 4, 4, dtype=torch.float64)
    x_t = path.sample(x0, eps, t)
    for p, q in itertools.permutations(PREDICTIONS, 2):
        pred_p = target(p, path, t, x0, eps)
        pred_q = convert(pred_p, p, q, path, x_t, t)
        torch.testing.assert_close(pred_q, target(q, path, t, x0, eps), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(convert(pred_q, q, p, path, x_t, t), pred_p, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", ALL_PATHS, ids=lambda p: p.name)
def test_derivatives_match_finite_differences(path):
    # Central differences in float64; the discrete path is piecewise-linear in log alpha, so
    # its times sit mid-interval (x.5), away from the knots.
    t = _times(path)
    if path.name == "vp_discrete":
        t = torch.floor(t) + 0.5
    h = 1e-6 * path.t_max
    for f, df in ((path.alpha, path.d_alpha), (path.sigma, path.d_sigma)):
        torch.testing.assert_close(df(t), (f(t + h) - f(t - h)) / (2 * h), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("path", ALL_PATHS, ids=lambda p: p.name)
def test_logsnr_inverse_and_data_at_t0(path):
    t = _times(path)
    torch.testing.assert_close(path.t_from_logsnr(path.logsnr(t)), t, rtol=1e-7, atol=1e-7 * path.t_max)
    assert torch.all(path.logsnr(t)[1:] < path.logsnr(t)[:-1]), "log-SNR must decrease with t"
    if path.name != "ve":  # VE keeps sigma_min of noise at t = 0 (Song et al. 2021)
        zero = torch.zeros((), dtype=torch.float64)
        assert float(path.alpha(zero)) == 1.0 and float(path.sigma(zero)) == 0.0


def test_vp_paths_preserve_variance():
    for name in ("vp_linear", "vp_cosine", "vp_discrete"):
        path = PATHS[name]()
        t = _times(path)
        torch.testing.assert_close(path.alpha(t) ** 2 + path.sigma(t) ** 2, torch.ones_like(t))


def test_discrete_path_matches_ddpm_alphas_cumprod():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    path = VPDiscretePath()
    k = torch.arange(1, 1001, dtype=torch.float64)
    torch.testing.assert_close(path.alpha(k) ** 2, sched.alphas_cumprod.double(), rtol=1e-5, atol=1e-7)


def test_path_config_round_trip_and_errors():
    for path in ALL_PATHS:
        assert path_from_config(path_to_config(path)) == path
    with pytest.raises(ValueError, match="known paths"):
        path_from_config({"name": "vq"})
    with pytest.raises(ValueError, match="no field"):
        path_from_config({"name": "edm", "sigma_max": 3})

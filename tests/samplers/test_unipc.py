"""UniPC (bh2, data prediction): order on the exact Gaussian flow, the target distribution on Gaussian and
mixture data, diffusers' UniPCMultistepScheduler, and honest NFE."""
import copy

import pytest
import torch
from diffusers import UNet2DModel, UniPCMultistepScheduler

import samplers
import samplers.dpm_solver  # noqa: F401  (registers the dpmpp_* samplers)
import samplers.unipc  # noqa: F401  (registers unipc)
from genstudio.core.paths import PATHS, EDMPath, VPDiscretePath, VPLinearPath
from genstudio.core.toys import GaussianMixtureDenoiser, gaussian
from genstudio.model import Guided, Model
from genstudio.nets import UNetBackbone
from samplers.grids import make_grid
from tests.helpers import MEAN, MICRO_UNET, VAR, exact_flow, prior

ALL = range(10_000)  # disable_corrector=ALL: the predictor UniP-p alone


def _global_errors(path, steps, **opts):
    """Max error at t_min after `steps` log-SNR-uniform steps from t_max, against the closed-form flow."""
    errs = []
    for n in steps:
        ts = make_grid("logsnr", path, n)[:-1].clone()  # stop at t_min, where the exact flow is finite
        x = prior(path, ts, 256)
        out = samplers.get("unipc").fn(Guided(gaussian(path, MEAN, VAR)), x, ts, **opts)
        errs.append(float((out - exact_flow(path, x, ts[0], ts[-1])).abs().max()))
    return errs, [errs[i] / errs[i + 1] for i in range(len(errs) - 1)]


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("path", [EDMPath(), VPLinearPath()], ids=lambda p: p.name)
def test_predictor_alone_is_of_its_order_and_the_corrector_adds_one(order, path):
    # UniP-p is a p-th order multistep method; UniC-p on top makes UniPC-p of order p + 1 (Zhao et al. 2023,
    # Sec. 3), with no extra evaluation. The last step's local error is then O(h^(p+1)) whether or not it is
    # corrected; the default lower_order_final would make it first order (local O(h^2)), hence False here.
    # Doubling the steps must divide the error by >= 0.75 * 2^order. Measured (EDM; VP): UniP-1 2.0, 2.0;
    # UniP-2 4.0, 4.0; UniP-3 17.6, 17.6; 17.1, 16.3. UniPC-1 4.0, 4.0; UniPC-2 8.0, 8.1; 8.1, 8.1. UniPC-3 is
    # reached only from ~128 steps (its warm-up steps near lambda_min dominate before): 14.7, 15.4; 14.9, 15.5.
    errs, ratios = _global_errors(path, (32, 64, 128), order=order, lower_order_final=False, disable_corrector=ALL)
    assert all(r > 0.75 * 2**order for r in ratios), ("UniP", errs, ratios)
    steps = (128, 256, 512) if order == 3 else (32, 64, 128)
    errs, ratios = _global_errors(path, steps, order=order, lower_order_final=False)
    assert all(r > 0.75 * 2 ** (order + 1) for r in ratios), ("UniPC", errs, ratios)


def test_predictors_are_dpm_solver_pp_multistep():
    # UniP-2 with rho = 1/2 and B(h) = 1 - e^{-h} is DPM-Solver++(2M) with the midpoint weight; UniP-3 integrates
    # the same quadratic as dpmpp_3m (exact D2 weight) does.
    path = EDMPath()
    ts = make_grid("logsnr", path, 12)[:-1].clone()
    x = prior(path, ts, 64)
    model = lambda: Guided(gaussian(path, MEAN, VAR))  # noqa: E731
    for order, name in ((2, "dpmpp_2m"), (3, "dpmpp_3m")):
        ours = samplers.get("unipc").fn(model(), x, ts, order=order, lower_order_final=False, disable_corrector=ALL)
        theirs = samplers.get(name).fn(model(), x, ts, lower_order_final=False)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("order", [2, 3])
def test_runs_backwards_at_its_order(order):
    # An increasing grid (ODE inversion) is the same method with h < 0. Measured error / sigma_max at 32, 64
    # steps: UniPC-2 0.010, 0.0012 (8.1x); UniPC-3 0.0025, 0.00014 (18x).
    path = EDMPath()
    errs = []
    for n in (32, 64):
        ts = make_grid("logsnr", path, n)[:-1].flip(0).clone()
        x = prior(path, ts, 64)
        out = samplers.get("unipc").fn(Guided(gaussian(path, MEAN, VAR)), x, ts, order=order, lower_order_final=False)
        errs.append(float((out - exact_flow(path, x, ts[0], ts[-1])).abs().max()) / float(path.sigma(ts[-1])))
    assert errs[1] < 0.01 and errs[0] / errs[1] > 0.75 * 2 ** (order + 1), errs


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("path_name", ["edm", "vp_linear", "vp_discrete"])
def test_sampler_reaches_gaussian_mean_and_covariance(order, path_name):
    # 40 steps on the sampler's default grid, ending at t = 0; with 20000 samples the sampling error of a
    # variance is ~1%, so rtol 0.06 is the solver's bias + >= 4.5 sd; the mean gets 4 sd + 0.005.
    path = PATHS[path_name]()
    ts = make_grid(samplers.get("unipc").default_grid, path, 40)
    x = prior(path, ts, 20000)
    out = samplers.get("unipc").fn(Guided(gaussian(path, MEAN, VAR)), x, ts, order=order)
    assert torch.all((out.mean(0) - MEAN).abs() < 4 * torch.sqrt(VAR / len(out)) + 0.005), (out.mean(0), MEAN)
    cov = torch.cov(out.T)
    torch.testing.assert_close(torch.diag(cov), VAR, rtol=0.06, atol=0.0)
    assert abs(float(cov[0, 1])) < 0.01


def test_mixture_weights_means_and_variances_are_recovered():
    # As test_dpm_solver's: weights 0.3/0.7, means -+1, variance 0.01, 20000 samples from the exact marginal.
    path = PATHS["vp_cosine"]()
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    var = torch.full((2, 2), 0.01, dtype=torch.float64)
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    ts = make_grid("logsnr", path, 40)
    g = torch.Generator().manual_seed(0)
    k = (torch.rand(20000, generator=g, dtype=torch.float64) < weights[1]).long()
    x0 = means[k] + var[k].sqrt() * torch.randn(20000, 2, generator=g, dtype=torch.float64)
    x = path.sample(x0, torch.randn(20000, 2, generator=g, dtype=torch.float64), ts[0])
    out = samplers.get("unipc").fn(Guided(GaussianMixtureDenoiser(path, means, var, weights)), x, ts)
    right = out[:, 0] > 0
    assert abs(float(right.double().mean()) - 0.7) < 0.02
    for side, mean in ((~right, means[0]), (right, means[1])):
        torch.testing.assert_close(out[side].mean(0), mean, rtol=0, atol=0.015)
        torch.testing.assert_close(out[side].var(0), var[0], rtol=0.15, atol=0)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_nfe_reported_equals_calls_and_the_last_step_is_not_corrected(order):
    path = EDMPath()
    model = Guided(gaussian(path, MEAN, VAR))
    calls, seen = [], []
    inner = model.model.forward
    model.model.forward = lambda *a, **k: calls.append(1) or inner(*a, **k)
    spec = samplers.get("unipc")
    ts = make_grid(spec.default_grid, path, 7)
    out = spec.fn(model, prior(path, ts, 4), ts, order=order, callback=lambda **kw: seen.append(kw))
    assert len(calls) == model.nfe == spec.nfe(7) == 7
    assert [kw["i"] for kw in seen] == list(range(7)) and all(kw["x0"].shape == (4, 2) for kw in seen)
    # The step to t = 0 is x = alpha(0) x0 = x0 of the last evaluation: no corrector (nor evaluation) after it.
    assert torch.equal(seen[-1]["x"], out) and float(seen[-1]["t"]) == 0 and torch.equal(out, seen[-1]["x0"])


def test_rejects_bad_options():
    model, ts = Guided(gaussian(EDMPath(), MEAN, VAR)), make_grid("logsnr", EDMPath(), 4)
    with pytest.raises(ValueError, match="order"):
        samplers.get("unipc").fn(model, prior(EDMPath(), ts, 2), ts, order=4)
    with pytest.raises(ValueError, match="variant"):
        samplers.get("unipc").fn(model, prior(EDMPath(), ts, 2), ts, variant="bh3")


# Matching diffusers on vp_discrete: our t = diffusers' timestep index + 1, final_sigmas_type="zero" is our t = 0
# and "sigma_min" our t = 1 (sigma at index 0). diffusers takes alpha = 1/sqrt(1 + s^2), sigma = s alpha from its
# float32 sigmas at the integer timesteps, i.e. our alpha, sigma at t = j + 1 up to float32 rounding; with those
# sigmas replaced by float64 ones (and a float64 UNet) the two agree to rounding (1e-12 relative), so they are the
# same arithmetic. As with DPMSolverMultistepScheduler, any timestep_spacing matches and use_karras_sigmas (and
# exponential/beta sigmas) does not: diffusers then evaluates the UNet at the rounded timestep but steps between
# the unrounded sigmas. Where diffusers' settings give NaN we compare at final_sigmas_type="sigma_min":
# - lower_order_final=False with final_sigmas_type="zero": its last predictor divides by r = (lambda_1 -
#   lambda_0) / h = 0 (h = +inf); ours always takes the first-order step x = x0 into sigma = 0.
# - solver_type="bh1" with "zero": B(h) = -h = -inf multiplies a zero correction. Ours: x = x0.
# diffusers' lower_order_final applies on any number of steps (DPM-Solver's only below 15): ours does the same.
CASES = [  # (our options, diffusers options, steps, timestep_spacing)
    ({}, {}, 10, "linspace"),
    ({}, {}, 20, "trailing"),
    ({"order": 1}, dict(solver_order=1), 8, "leading"),
    ({"order": 3}, dict(solver_order=3), 10, "linspace"),
    ({"order": 3}, dict(solver_order=3), 25, "leading"),
    ({"disable_corrector": [0, 3]}, dict(disable_corrector=[0, 3]), 10, "linspace"),
    ({"order": 3, "lower_order_final": False},
     dict(solver_order=3, lower_order_final=False, final_sigmas_type="sigma_min"), 10, "linspace"),
    ({"variant": "bh1", "order": 3}, dict(solver_type="bh1", solver_order=3, final_sigmas_type="sigma_min"), 10,
     "trailing"),
]
IDS = [f"{'-'.join(f'{k}={v}' for k, v in c[1].items()) or 'default'}-{c[2]}-{c[3]}" for c in CASES]


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, **MICRO_UNET).eval()


def _run_both(unet, ours, theirs, steps, spacing, dtype):
    sched = UniPCMultistepScheduler(
        num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", prediction_type="epsilon",
        predict_x0=True, timestep_spacing=spacing, steps_offset=0, thresholding=False, use_karras_sigmas=False,
        **{"solver_type": "bh2", "solver_order": 2, "lower_order_final": True, "final_sigmas_type": "zero", **theirs})
    sched.set_timesteps(steps)
    last = 0.0 if sched.config.final_sigmas_type == "zero" else 1.0
    ts = torch.cat([sched.timesteps.double() + 1, torch.tensor([last], dtype=torch.float64)])
    if dtype == torch.float64:  # diffusers' sigma = sqrt((1 - abar) / abar) at ts, in float64
        path = VPDiscretePath()
        sched.sigmas = path.sigma(ts) / path.alpha(ts)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=dtype)
    ref = x.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            ref = sched.step(unet(ref, t).sample, t, ref).prev_sample
        out = samplers.get("unipc").fn(Guided(Model(UNetBackbone(unet), VPDiscretePath(), "eps")), x, ts, **ours)
    assert torch.isfinite(ref).all()
    return out, ref


@pytest.mark.parametrize("ours, theirs, steps, spacing", CASES, ids=IDS)
def test_matches_diffusers_unipc_multistep(unet, ours, theirs, steps, spacing):
    # The untrained UNet's x0 predictions reach |x| ~ 500, where float32 rounding alone is ~4e-4: rtol 1e-4.
    out, ref = _run_both(unet, ours, theirs, steps, spacing, torch.float32)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ours, theirs, steps, spacing", CASES, ids=IDS)
def test_matches_diffusers_unipc_multistep_in_float64(unet, ours, theirs, steps, spacing):
    out, ref = _run_both(copy.deepcopy(unet).double(), ours, theirs, steps, spacing, torch.float64)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-10)

import pytest
import torch

import samplers
from genstudio.core.noise import generators, randn_like
from genstudio.core.paths import PATHS, EDMPath, LinearPath, VPDiscretePath
from genstudio.core.toys import GaussianMixtureDenoiser, gaussian
from genstudio.model import Guided
from samplers.grids import make_grid
from tests.helpers import MEAN, VAR, exact_flow, prior

GRID_FOR = {"edm": "karras"}


@pytest.mark.parametrize("name", ["ddim", "euler", "heun", "ddpm"])
@pytest.mark.parametrize("path_name", ["edm", "vp_linear", "vp_cosine", "vp_discrete", "linear"])
def test_sampler_reaches_gaussian_mean_and_covariance(name, path_name):
    path = PATHS[path_name]()
    model = Guided(gaussian(path, MEAN, VAR))
    # First-order samplers need many steps for a 6% variance tolerance; ancestral ones more.
    steps = 1000 if samplers.get(name).stochastic else 400
    ts = make_grid(GRID_FOR.get(path_name, "logsnr" if path_name.startswith("vp") else "uniform"), path, steps)
    x = prior(path, ts, 8000)
    out = samplers.get(name).fn(model, x, ts, generator=torch.Generator().manual_seed(1))
    tol_mean = 4 * torch.sqrt(VAR / len(out))
    assert torch.all((out.mean(0) - MEAN).abs() < tol_mean + 0.01), (out.mean(0), MEAN)
    cov = torch.cov(out.T)
    torch.testing.assert_close(torch.diag(cov), VAR, rtol=0.06, atol=0.0)
    assert abs(float(cov[0, 1])) < 0.01


@pytest.mark.parametrize("name, order", [("euler", 1), ("ddim", 1), ("heun", 2), ("midpoint", 2), ("rk4", 4)])
@pytest.mark.parametrize("path", [EDMPath(), LinearPath()], ids=lambda p: p.name)
def test_ode_sampler_error_falls_at_its_order(name, order, path):
    # On Gaussian data the flow has a closed form, so the global error of N steps is exact;
    # doubling N must divide it by about 2^order.
    t_max = 0.98 if path.name == "linear" else 80.0
    errs = []
    for n in (8, 16, 32):
        ts = make_grid("karras" if path.name == "edm" else "uniform", path, n, t_max=t_max)
        x = prior(path, ts, 256)
        out = samplers.get(name).fn(Guided(gaussian(path, MEAN, VAR)), x, ts[:-1].clone())
        want = exact_flow(path, x, ts[0], ts[-2])
        errs.append(float((out - want).abs().max()))
    ratios = [errs[i] / errs[i + 1] for i in range(2)]
    assert all(r > 2**order * 0.75 for r in ratios), (errs, ratios)


def test_ddim_equals_euler_on_the_linear_path():
    # With alpha, sigma linear in t, the DDIM update is exactly an Euler step of the flow ODE.
    path = LinearPath()
    ts = make_grid("uniform", path, 10, t_max=0.99)
    x = prior(path, ts, 64)
    model = Guided(gaussian(path, MEAN, VAR))
    a = samplers.get("ddim").fn(model, x, ts)
    b = samplers.get("euler").fn(model, x, ts)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["ddim", "euler", "heun", "ddpm", "midpoint", "rk4"])
def test_nfe_reported_equals_calls(name):
    path = EDMPath()
    model = Guided(gaussian(path, MEAN, VAR))
    calls = []
    inner = model.model.forward
    model.model.forward = lambda *a, **k: calls.append(1) or inner(*a, **k)
    spec = samplers.get(name)
    ts = make_grid("karras", path, 7)
    spec.fn(model, prior(path, ts, 4), ts, generator=torch.Generator().manual_seed(0))
    assert len(calls) == model.nfe == spec.nfe(7)


def test_callback_sees_every_step_with_x0():
    path, seen = EDMPath(), []
    model = Guided(gaussian(path, MEAN, VAR))
    ts = make_grid("karras", path, 5)
    samplers.get("heun").fn(model, prior(path, ts, 3), ts, callback=lambda **kw: seen.append(kw))
    assert [kw["i"] for kw in seen] == list(range(5)) and all(kw["x0"].shape == (3, 2) for kw in seen)


def test_grids_are_decreasing_and_end_at_zero():
    for path in (EDMPath(), VPDiscretePath(), LinearPath(), PATHS["vp_linear"](), PATHS["ve"]()):
        for grid in samplers.GRIDS:
            if grid == "ddpm" and path.name != "vp_discrete":
                continue
            ts = make_grid(grid, path, 10)
            assert len(ts) == 11 and ts[-1] == 0 and torch.all(ts[1:] < ts[:-1]), (path.name, grid, ts)
    ts = make_grid("karras", EDMPath(), 18)
    assert abs(float(ts[0]) - 80) < 1e-9 and abs(float(ts[-2]) - 0.002) < 1e-9  # EDM's defaults
    assert make_grid("ddpm", VPDiscretePath(), 10).tolist()[:3] == [901, 801, 701]
    with pytest.raises(ValueError, match="discrete path"):
        make_grid("ddpm", EDMPath(), 10)


def test_incompatible_or_unknown_sampler_is_a_clear_error():
    class Map:
        kind = "map"
    with pytest.raises(ValueError, match="known samplers"):
        samplers.get("dpm_solver_99")
    with pytest.raises(ValueError, match="needs a field model"):
        samplers.get("heun", Map())
    assert set(samplers.compatible(Guided(gaussian(EDMPath(), MEAN, VAR)).model)) >= {"ddim", "ddpm", "euler", "heun"}


def test_per_sample_generators_make_noise_batch_independent():
    x = torch.zeros(4, 3)
    a = randn_like(x, generators([10, 11, 12, 13]))
    b = randn_like(x[:2], generators([10, 11]))
    torch.testing.assert_close(a[:2], b)


def test_mixture_weights_are_recovered_by_heun():
    path = EDMPath()
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    var = torch.full((2, 2), 0.01, dtype=torch.float64)
    model = Guided(GaussianMixtureDenoiser(path, means, var, torch.tensor([0.3, 0.7])))
    ts = make_grid("karras", path, 40)
    x = 80 * torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = samplers.get("heun").fn(model, x, ts)
    frac_right = float((out[:, 0] > 0).double().mean())
    assert abs(frac_right - 0.7) < 0.03

"""Stochastic samplers against exact denoisers: Gaussian and Gaussian-mixture data have a closed-form
E[x0 | x_t] on every path (genstudio/core/toys.py), so the samplers' output laws can be checked against the
data law with no training, and their steps against line-for-line transcriptions of the reference code."""
import math

import pytest
import torch

import samplers
import samplers.stochastic  # noqa: F401  (registers the stochastic samplers)
from genstudio.core.noise import generators, randn_like
from genstudio.core.paths import PATHS, EDMPath, LinearPath, VEPath, VPLinearPath
from genstudio.core.toys import GaussianMixtureDenoiser, gaussian
from genstudio.model import Guided
from samplers.grids import make_grid
from samplers.stochastic import sde_coefficients

STOCHASTIC = ["euler_ancestral", "heun_churn", "euler_maruyama", "pc", "annealed_langevin"]
f64 = dict(dtype=torch.float64)

# Steps and options of the distribution tests: enough steps that the discretisation bias of these
# first-order samplers is a few percent of the variance. heun_churn: EDM's ImageNet churn, S_noise = 1.
RUNS = {
    "euler_ancestral": ("euler_ancestral", 400, {}),
    "heun_churn": ("heun_churn", 100, {"S_churn": 40, "S_tmin": 0.05, "S_tmax": 50}),
    "euler_maruyama": ("euler_maruyama", 200, {}),
    "pc": ("pc", 200, {}),
    "pc_em_predictor": ("pc", 200, {"predictor": "euler_maruyama"}),
    "pc_ald": ("pc", 200, {"corrector": "ald"}),
    "annealed_langevin": ("annealed_langevin", 100, {}),
}
# path -> (grid, t_max); the linear path stops short of t = 1, where alpha = 0 and x / alpha is undefined.
GRIDS = {"edm": ("karras", None), "vp_linear": ("logsnr", None), "vp_cosine": ("logsnr", None),
         "linear": ("uniform", 0.99)}


def grid_for(name, path_name, steps):
    grid, t_max = GRIDS[path_name]
    if name == "annealed_langevin":
        grid = "logsnr"  # NCSN's geometric noise levels
    return make_grid(grid, PATHS[path_name](), steps, **({} if t_max is None else {"t_max": t_max}))


def sample(run, path_name, denoiser, prior, n, seed=1):
    name, steps, opts = RUNS[run]
    path = PATHS[path_name]()
    ts = grid_for(name, path_name, steps)
    x = prior(path, ts[0], n)
    return samplers.get(name).fn(Guided(denoiser(path)), x, ts, generator=torch.Generator().manual_seed(seed), **opts)


# -- Gaussian data -------------------------------------------------------------------------------
# 64 dimensions with variances from 0.01 to 1: averaging the per-dimension variance ratio over 32 of
# them measures it to sd sqrt(2 / (511 * 32)) = 1.1% from 512 samples.
D, N_GAUSS = 64, 512
MEAN = 0.5 * torch.randn(D, generator=torch.Generator().manual_seed(123), **f64)
VAR = torch.logspace(-2, 0, D, **f64)


def gaussian_prior(path, t, n):
    """x at t from the exact marginal N(alpha mu, alpha^2 var + sigma^2): no prior mismatch."""
    z = torch.randn(n, D, generator=torch.Generator().manual_seed(0), **f64)
    return path.alpha(t) * MEAN + torch.sqrt(path.alpha(t) ** 2 * VAR + path.sigma(t) ** 2) * z


@pytest.mark.parametrize("run", STOCHASTIC)
@pytest.mark.parametrize("path_name", ["edm", "vp_cosine", "linear"])
def test_matches_gaussian_mean_and_variance(run, path_name):
    out = sample(run, path_name, lambda p: gaussian(p, MEAN, VAR), gaussian_prior, N_GAUSS)
    # Mean: per-dimension errors in units of their sampling sd sqrt(var / n); rms 1 when unbiased.
    z = (out.mean(0) - MEAN) / (VAR / N_GAUSS).sqrt()
    assert float(z.pow(2).mean().sqrt()) < 1.5, z
    # Variance: the mean ratio over the low- and the high-variance halves within 8% (discretisation
    # bias measured at up to ~4% at these step counts, plus 4 sd of sampling noise); every dimension
    # within 35% (sd of one ratio: sqrt(2 / 511) = 6%).
    ratio = out.var(0) / VAR
    lo, hi = float(ratio[: D // 2].mean()), float(ratio[D // 2:].mean())
    assert abs(lo - 1) < 0.08 and abs(hi - 1) < 0.08, (lo, hi)
    assert float((ratio - 1).abs().max()) < 0.35, ratio


# -- a 2-D Gaussian mixture ------------------------------------------------------------------------
# Two well-separated components (4.7 sd apart at the closest), weights 0.3 / 0.7; a sample belongs to
# the right component when x[0] > 0.
MIX_MEANS = torch.tensor([[-1.0, 0.0], [1.0, 0.5]], **f64)
MIX_VARS = torch.tensor([[0.04, 0.09], [0.09, 0.04]], **f64)
MIX_W = torch.tensor([0.3, 0.7], **f64)
N_MIX = 6000


def mixture(path, means=MIX_MEANS, variances=MIX_VARS, weights=MIX_W):
    return GaussianMixtureDenoiser(path, means, variances, weights)


def mixture_prior(path, t, n, means=MIX_MEANS, variances=MIX_VARS, weights=MIX_W, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(weights, n, replacement=True, generator=g)
    z = torch.randn(n, means.shape[1], generator=g, **f64)
    return path.alpha(t) * means[k] + torch.sqrt(path.alpha(t) ** 2 * variances[k] + path.sigma(t) ** 2) * z


def check_mixture(out, w_tol=0.03, mean_tol=0.04, var_tol=0.15):
    """Weight of the right component within w_tol (sd sqrt(0.21 / 6000) = 0.006); each component's mean
    within mean_tol (sd <= sqrt(0.09 / 1800) = 0.007) and variances within var_tol (sd of a ratio
    sqrt(2 / 1800) = 3.3%, plus a few percent of discretisation bias)."""
    right = out[:, 0] > 0
    w = float(right.double().mean())
    assert abs(w - float(MIX_W[1])) < w_tol, w
    for k, members in enumerate([out[~right], out[right]]):
        assert float((members.mean(0) - MIX_MEANS[k]).abs().max()) < mean_tol, (k, members.mean(0))
        ratio = members.var(0) / MIX_VARS[k]
        assert float((ratio - 1).abs().max()) < var_tol, (k, ratio)


@pytest.mark.parametrize("run", STOCHASTIC)
@pytest.mark.parametrize("path_name", ["edm", "vp_linear"])
def test_matches_gaussian_mixture(run, path_name):
    check_mixture(sample(run, path_name, mixture, mixture_prior, N_MIX))


@pytest.mark.parametrize("run", ["pc_em_predictor", "pc_ald"])
def test_pc_variants_match_gaussian_mixture(run):
    check_mixture(sample(run, "edm", mixture, mixture_prior, N_MIX))


# -- annealed Langevin recovers mixture weights (Song & Ermon 2019, Sec. 3.2.2 and Fig. 3) ----------
NCSN_MEANS = torch.tensor([[-5.0, -5.0], [5.0, 5.0]], **f64)
NCSN_VARS = torch.ones(2, 2, **f64)
NCSN_W = torch.tensor([0.2, 0.8], **f64)


def test_annealed_langevin_recovers_mixture_weights_that_plain_langevin_cannot():
    # NCSN's example p = 1/5 N((-5,-5), I) + 4/5 N((5,5), I) with its exact score. Langevin dynamics at a
    # single small noise level cannot move mass between the modes, so from a symmetric start it keeps
    # ~1/2 in each (Fig. 3b); annealing from large noise recovers 4/5 (Fig. 3c). NCSN-like settings: 30
    # geometric levels from 20 to 0.1, T = 30 steps of a_i = 0.5 sigma_i^2 each (weight 0.787-0.791 over
    # seeds). 4000 samples: the weight's sd is 0.006, so 0.03 is 3 sd plus the measured bias.
    path, n = EDMPath(), 4000
    model = Guided(GaussianMixtureDenoiser(path, NCSN_MEANS, NCSN_VARS, NCSN_W))
    start = 8 * (2 * torch.rand(n, 2, generator=torch.Generator().manual_seed(0), **f64) - 1)  # uniform, as Fig. 3
    fn = samplers.get("annealed_langevin").fn

    ts = make_grid("logsnr", path, 30, t_max=20.0, t_min=0.1)
    x = fn(model, start, ts, generator=torch.Generator().manual_seed(1), steps_per_level=30, step_lr=0.5 * 0.1**2)
    upper = x.sum(1) > 0
    assert abs(float(upper.double().mean()) - 0.8) < 0.03
    for k, members in enumerate([x[~upper], x[upper]]):
        assert float((members.mean(0) - NCSN_MEANS[k]).abs().max()) < 0.15  # sd <= 1/sqrt(800) = 0.035
        assert float((members.var(0) - 1).abs().max()) < 0.2  # sd 0.05; Tweedie at sigma = 0.1 takes 1%

    # Plain Langevin: one level at sigma = 0.5 with NCSN's Fig. 3 step 0.1 (a_i = step_lr there), long enough
    # to equilibrate inside each mode.
    one_level = torch.cat([path.t_from_sigma_tilde(torch.tensor([0.5], **f64)), torch.zeros(1, **f64)])
    y = fn(model, start, one_level, generator=torch.Generator().manual_seed(1), steps_per_level=300, step_lr=0.1)
    frac = float((y.sum(1) > 0).double().mean())
    assert abs(frac - 0.5) < 0.05 and abs(frac - 0.8) > 0.25, frac


# -- references, line for line ------------------------------------------------------------------------
def k_diffusion_euler_ancestral(denoise, x, sigmas, noise, eta=1.0, s_noise=1.0):
    """k-diffusion's sample_euler_ancestral with get_ancestral_step and to_d inlined."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if not eta:
            sigma_down, sigma_up = sigmas[i + 1], 0.0
        else:
            sigma_up = min(sigmas[i + 1], eta * (sigmas[i + 1] ** 2 * (sigmas[i] ** 2 - sigmas[i + 1] ** 2)
                                                  / sigmas[i] ** 2) ** 0.5)
            sigma_down = (sigmas[i + 1] ** 2 - sigma_up**2) ** 0.5
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise() * s_noise * sigma_up
    return x


@pytest.mark.parametrize("eta", [1.0, 0.5, 1.5])
def test_euler_ancestral_is_k_diffusions_on_the_edm_path(eta):
    path = EDMPath()
    den = mixture(path)
    ts = make_grid("karras", path, 12)
    x = mixture_prior(path, ts[0], 64)
    ours = samplers.get("euler_ancestral").fn(Guided(den), x, ts, generator=torch.Generator().manual_seed(5), eta=eta)
    g = torch.Generator().manual_seed(5)
    ref = k_diffusion_euler_ancestral(den, x, ts.tolist(), lambda: randn_like(x, g), eta=eta)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("eta", [1.0, 0.3])
@pytest.mark.parametrize("path_name, grid, t_max", [
    ("vp_linear", "logsnr", None), ("vp_cosine", "uniform", None), ("vp_discrete", "ddpm", None),
    ("linear", "uniform", 1.0)])  # the linear path from t = 1, where alpha = 0: sigma~ = inf must work
def test_euler_ancestral_is_ddim_eta_on_any_path(path_name, grid, t_max, eta):
    # In x / alpha the ancestral split is DDIM's: sigma_up^2 = eta^2 x the DDPM posterior variance.
    path = PATHS[path_name]()
    ts = make_grid(grid, path, 10, **({} if t_max is None else {"t_max": t_max}))
    x = mixture_prior(path, ts[0], 64)
    run = lambda name: samplers.get(name).fn(Guided(mixture(path)), x, ts,  # noqa: E731
                                             generator=torch.Generator().manual_seed(3), eta=eta)
    a, b = run("euler_ancestral"), run("ddim")
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_heun_churn_without_churn_is_heun_on_the_edm_path():
    path = EDMPath()
    ts = make_grid("karras", path, 18)
    x = mixture_prior(path, ts[0], 64)
    a = samplers.get("heun_churn").fn(Guided(mixture(path)), x, ts)
    b = samplers.get("heun").fn(Guided(mixture(path)), x, ts)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def edm_sampler(denoise, x, t_steps, noise, S_churn, S_min, S_max, S_noise):
    """NVlabs/edm generate.py's edm_sampler (Karras et al. 2022, Alg. 2) from its loop on."""
    num_steps = len(t_steps) - 1
    x_next = x
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        x_cur = x_next
        gamma = min(S_churn / num_steps, math.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0
        t_hat = t_cur + gamma * t_cur
        x_hat = x_cur + (t_hat**2 - t_cur**2) ** 0.5 * S_noise * noise()
        d_cur = (x_hat - denoise(x_hat, t_hat)) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if i < num_steps - 1:
            d_prime = (x_next - denoise(x_next, t_next)) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next


def test_heun_churn_is_edm_algorithm_2():
    # Churn on every step (S_tmin = 0, S_tmax = inf), so both draw noise on every step.
    path = EDMPath()
    den = mixture(path)
    ts = make_grid("karras", path, 18)
    x = mixture_prior(path, ts[0], 64)
    opts = dict(S_churn=40.0, S_noise=1.003)
    ours = samplers.get("heun_churn").fn(Guided(den), x, ts, generator=torch.Generator().manual_seed(2), **opts)
    g = torch.Generator().manual_seed(2)
    ref = edm_sampler(den, x, ts.tolist(), lambda: randn_like(x, g), S_min=0.0, S_max=float("inf"), **opts)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def score_sde_pc_ve(score, x, ts, sigma_of, noise, snr, n_steps):
    """score_sde_pytorch's pc_sampler with LangevinCorrector and ReverseDiffusionPredictor on a VE SDE whose
    discrete sigmas are the grid's (VESDE.discretize: f = 0, G = sqrt(sigma^2 - adjacent_sigma^2))."""
    for i in range(len(ts) - 1):
        t, sigma, adjacent = ts[i], sigma_of(ts[i]), sigma_of(ts[i + 1])
        for _ in range(n_steps):  # LangevinCorrector.update_fn, alpha = 1 on VE
            grad = score(x, t)
            z = noise()
            grad_norm = torch.norm(grad.reshape(grad.shape[0], -1), dim=-1).mean()
            noise_norm = torch.norm(z.reshape(z.shape[0], -1), dim=-1).mean()
            step_size = (snr * noise_norm / grad_norm) ** 2 * 2 * 1.0
            x = x + step_size * grad + torch.sqrt(step_size * 2) * z
        G = (sigma**2 - adjacent**2) ** 0.5  # ReverseDiffusionPredictor.update_fn
        x = x + G**2 * score(x, t) + G * noise()
    return x


@pytest.mark.parametrize("n_corrector", [1, 2])
def test_pc_is_score_sdes_on_a_ve_path(n_corrector):
    # On a grid that stops short of t = 0 (score_sde's final `denoise` differs: it returns x_mean).
    path = VEPath()
    den = mixture(path)
    ts = make_grid("logsnr", path, 10)[:-1]
    x = mixture_prior(path, ts[0], 64)
    ours = samplers.get("pc").fn(Guided(den), x, ts, generator=torch.Generator().manual_seed(4),
                                 n_corrector=n_corrector)
    g = torch.Generator().manual_seed(4)
    ref = score_sde_pc_ve(Guided(den).score, x, ts, path.sigma, lambda: randn_like(x, g), snr=0.16,
                          n_steps=n_corrector)
    torch.testing.assert_close(ours, ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("t", [0.05, 0.5, 0.9])
def test_forward_sde_coefficients(t):
    # VP (Song et al. 2021, Eq. 32): f = -beta/2, g^2 = beta; VE (Eq. 30): g^2 = d sigma^2 / dt;
    # EDM: g^2 = 2t; linear: f = -1/(1-t), g^2 = 2t/(1-t).
    t = torch.tensor(t, **f64)
    vp = VPLinearPath()
    beta = vp.beta_min + t * (vp.beta_max - vp.beta_min)
    for got, want in [(sde_coefficients(vp, t), (-beta / 2, beta)),
                      (sde_coefficients(VEPath(), t), (0.0, 2 * VEPath().sigma(t) ** 2 * math.log(50 / 0.01))),
                      (sde_coefficients(EDMPath(), t), (0.0, 2 * t)),
                      (sde_coefficients(LinearPath(), t), (-1 / (1 - t), 2 * t / (1 - t)))]:
        torch.testing.assert_close(got[0], torch.as_tensor(want[0], **f64), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got[1], torch.as_tensor(want[1], **f64), rtol=1e-9, atol=1e-12)


# -- bookkeeping -----------------------------------------------------------------------------------
def count_calls(model):
    calls = []
    inner = model.model.forward
    model.model.forward = lambda *a, **k: calls.append(1) or inner(*a, **k)
    return calls


@pytest.mark.parametrize("name, opts, per_step, extra", [
    ("euler_ancestral", {}, None, 0), ("heun_churn", {}, None, 0), ("heun_churn", {"S_churn": 5.0}, None, 0),
    ("euler_maruyama", {}, None, 0), ("pc", {}, None, 0), ("pc", {"n_corrector": 3}, 4, 0),
    # annealed Langevin's final denoising is one more evaluation (the spec's nfe_offset)
    ("annealed_langevin", {}, None, 0), ("annealed_langevin", {"steps_per_level": 2}, 2, 1)])
def test_nfe_reported_equals_calls(name, opts, per_step, extra):
    path, steps = EDMPath(), 7
    model = Guided(mixture(path))
    calls = count_calls(model)
    spec = samplers.get(name)
    ts = make_grid("karras", path, steps)
    spec.fn(model, mixture_prior(path, ts[0], 4), ts, generator=torch.Generator().manual_seed(0), **opts)
    want = spec.nfe(steps) if per_step is None else steps * per_step
    assert len(calls) == model.nfe == want + extra
    assert spec.stochastic and spec.needs == ("field",)


@pytest.mark.parametrize("name, opts", [
    ("euler_ancestral", {}), ("heun_churn", {"S_churn": 20.0}), ("euler_maruyama", {}),
    ("pc", {"corrector": "ald"}), ("pc", {"norms": "sample", "predictor": "euler_maruyama"}),
    ("annealed_langevin", {})])
def test_per_sample_generators_make_samples_batch_independent(name, opts):
    # The default pc ("langevin" with norms="batch", as score_sde) shares one step size across the batch.
    path = EDMPath()
    ts = make_grid("karras", path, 6)
    x = mixture_prior(path, ts[0], 4)
    fn = samplers.get(name).fn
    run = lambda xs, seeds: fn(Guided(mixture(path)), xs, ts, generator=generators(seeds), **opts)  # noqa: E731
    whole = run(x, [10, 11, 12, 13])
    halves = torch.cat([run(x[:2], [10, 11]), run(x[2:], [12, 13])])
    torch.testing.assert_close(whole, halves, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_callback_sees_every_step(name):
    path, seen = EDMPath(), []
    ts = make_grid("karras", path, 5)
    out = samplers.get(name).fn(Guided(mixture(path)), mixture_prior(path, ts[0], 3), ts,
                                generator=torch.Generator().manual_seed(0), callback=lambda **kw: seen.append(kw))
    assert [kw["i"] for kw in seen] == list(range(5))
    assert [float(kw["t"]) for kw in seen] == ts[1:].tolist()
    assert all(kw["x0"].shape == (3, 2) and kw["x"].shape == (3, 2) for kw in seen)
    torch.testing.assert_close(seen[-1]["x"], out)


@pytest.mark.parametrize("name", ["heun_churn", "euler_maruyama", "pc", "annealed_langevin"])
def test_alpha_zero_on_the_grid_is_a_clear_error(name):
    path = LinearPath()
    ts = make_grid("uniform", path, 4)  # starts at t = 1, alpha = 0
    with pytest.raises(ValueError, match="alpha"):
        samplers.get(name).fn(Guided(mixture(path)), torch.randn(2, 2, **f64), ts)


def test_bad_options_are_clear_errors():
    path = EDMPath()
    ts = make_grid("karras", path, 3)
    model, x = Guided(mixture(path)), torch.zeros(2, 2, **f64)
    with pytest.raises(ValueError, match="predictor"):
        samplers.get("pc").fn(model, x, ts, predictor="ancestral")
    with pytest.raises(ValueError, match="corrector"):
        samplers.get("pc").fn(model, x, ts, corrector="hmc")
    with pytest.raises(ValueError, match="steps_per_level"):
        samplers.get("annealed_langevin").fn(model, x, ts, steps_per_level=0)

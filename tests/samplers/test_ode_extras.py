"""Adaptive solving, ODE inversion, exact likelihood and consistency-style sampling on exact Gaussian models."""
import math

import pytest
import torch

import samplers
from genstudio.core.paths import EDMPath, LinearPath, VPLinearPath
from genstudio.core.toys import GaussianMixtureDenoiser, gaussian
from genstudio.model import Guided
from samplers.grids import make_grid
from samplers.likelihood import bits_per_dim, log_likelihood
from tests.helpers import MEAN, VAR, exact_flow, prior


@pytest.mark.parametrize("path", [EDMPath(), VPLinearPath(), LinearPath()], ids=lambda p: p.name)
def test_dopri5_follows_the_exact_flow_and_counts_its_evaluations(path):
    model = Guided(gaussian(path, MEAN, VAR))
    ts = torch.tensor([path.t_max * (0.98 if path.name == "linear" else 1.0), path.t_min], dtype=torch.float64)
    x = prior(path, ts, 64)
    out = samplers.get("dopri5").fn(model, x, ts, rtol=1e-7, atol=1e-7)
    assert float((out - exact_flow(path, x, ts[0], ts[1])).abs().max()) < 1e-4
    assert model.nfe > 6 and samplers.get("dopri5").nfe(10) is None  # adaptive: the counter is the truth


# Measured max errors: ddim 0.17 / 0.088 / 0.044 at 50 / 100 / 200 steps (first order), heun 7.7e-4 at 50,
# rk4 4.3e-5 at 25 (the floor: x0 stands in for x at t_min = 0.002).
@pytest.mark.parametrize("sampler, steps, tol", [("ddim", 200, 0.06), ("heun", 50, 2e-3), ("rk4", 25, 1e-3),
                                                 ("dpmpp_2m", 50, 2e-3), ("dpmpp_3m", 100, 2e-3), ("unipc", 100, 2e-3)])
def test_inversion_then_sampling_reconstructs_the_data(sampler, steps, tol):
    path = EDMPath()
    model = Guided(gaussian(path, MEAN, VAR))
    x0 = MEAN + VAR.sqrt() * torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = make_grid("karras", path, steps)
    latent = samplers.invert(model, x0, ts, sampler=sampler)
    assert float(latent.std()) > 40  # at t_max = 80 the latent is mostly noise
    back = samplers.get(sampler).fn(model, latent, ts)
    assert float((back - x0).abs().max()) < tol


def test_stochastic_samplers_refuse_to_invert():
    model = Guided(gaussian(EDMPath(), MEAN, VAR))
    with pytest.raises(ValueError, match="cannot invert.*ddim"):
        samplers.invert(model, torch.zeros(2, 2), make_grid("karras", EDMPath(), 4), sampler="ddpm")


def gaussian_log_density(x):
    return (-0.5 * (x - MEAN) ** 2 / VAR - 0.5 * torch.log(2 * math.pi * VAR)).sum(1)


@pytest.mark.parametrize("path", [EDMPath(), VPLinearPath()], ids=lambda p: p.name)
def test_exact_likelihood_of_gaussian_data_matches_closed_form(path):
    model = Guided(gaussian(path, MEAN, VAR))
    x = MEAN + VAR.sqrt() * torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # The prior N(0, sigma(T)^2) neglects alpha(T) E[x0]; on the EDM path (alpha = 1) that costs about
    # |mean| z / T nats, 0.013 bits/dim at T = 80 for this data, so integrate to T = 800 there.
    t_max = 800.0 if path.name == "edm" else None
    got = bits_per_dim(log_likelihood(model, x, t_min=1e-4 * path.t_max, t_max=t_max), 2, pixel_scale=None)
    want = bits_per_dim(gaussian_log_density(x), 2, pixel_scale=None)
    assert float((got - want).abs().max()) < 0.01, (got - want)


def test_hutchinson_likelihood_is_unbiased():
    path = EDMPath()
    model = Guided(gaussian(path, MEAN, VAR))
    x = MEAN.repeat(400, 1)  # one point, 400 independent probes
    gens = [torch.Generator().manual_seed(i) for i in range(400)]
    est = log_likelihood(model, x, exact_trace=False, generator=gens, rtol=1e-4, atol=1e-4)
    want = float(gaussian_log_density(MEAN[None])[0])
    assert abs(float(est.mean()) - want) < 4 * float(est.std()) / math.sqrt(400) + 1e-3


def test_consistency_style_multistep_sampling_of_a_field_lands_on_the_modes():
    # A field jumps with its posterior mean, not with a sample, so this few-step scheme is only
    # approximate (it is exact for a true consistency map): check the samples reach the modes.
    path = EDMPath()
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    model = Guided(GaussianMixtureDenoiser(path, means, torch.full((2, 2), 0.01, dtype=torch.float64),
                                           torch.tensor([0.3, 0.7])))
    ts = torch.tensor([80.0, 1.0, 0.3, 0.1, 0.0], dtype=torch.float64)
    x = 80 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = samplers.get("consistency").fn(model, x, ts, generator=torch.Generator().manual_seed(1))
    assert model.nfe == 4 == samplers.get("consistency").nfe(4)
    assert float(((out[:, 0].abs() - 1).abs() < 0.3).double().mean()) > 0.95
    assert 0.5 < float((out[:, 0] > 0).double().mean()) < 0.9


class ExactGaussianConsistencyMap(torch.nn.Module):
    """The exact consistency function of Gaussian data: the probability-flow ODE's jump from (x, t) to t = 0."""

    def __init__(self, path):
        super().__init__()
        self.path, self.prediction, self.num_classes, self.kind = path, "x0", 0, "map"

    def forward(self, x, t, labels=None):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1)
        return exact_flow(self.path, x, t, torch.zeros_like(t))


def test_consistency_sampling_of_an_exact_map_is_exact_in_one_and_in_several_steps():
    path = EDMPath()
    model = ExactGaussianConsistencyMap(path)
    assert samplers.compatible(model) == ["consistency"]
    with pytest.raises(ValueError, match="needs a field model; this model is a map"):
        samplers.get("heun", model)
    for ts in ([80.0, 0.0], [80.0, 2.0, 0.5, 0.0]):
        ts = torch.tensor(ts, dtype=torch.float64)
        g = Guided(model)
        x = 80 * torch.randn(20000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        out = samplers.get("consistency").fn(g, x, ts, generator=torch.Generator().manual_seed(1))
        assert g.nfe == len(ts) - 1
        torch.testing.assert_close(out.mean(0), MEAN, rtol=0, atol=0.02)
        torch.testing.assert_close(out.var(0), VAR, rtol=0.05, atol=0)

"""Blackout Diffusion: the death process's closed forms, the exact and approximate reverse samplers on one pixel with
a known categorical prior, and a micro model through the real loop (train, export, load, sample)."""
import math

import numpy as np
import pytest
import torch

import genstudio
from genstudio.config import config_from_dict
from genstudio.core import blackout as bo
from genstudio.data import load_images, to_model_range
from genstudio.families.blackout import BlackoutLoss
from genstudio.objective import Batch
from genstudio.train import build_model, run
from samplers import compatible
from samplers.blackout import sample_blackout_bridge, sample_blackout_tau
from tests.helpers import make_toy_folder, toy_config

PRIOR = torch.zeros(256, dtype=torch.float64)
PRIOR[[0, 40, 128, 200, 255]] = torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15], dtype=torch.float64)
N = 20_000  # pixels per sampler run: the TV distance of an exact sampler is then about 0.01


class ExactDenoiser:
    """The exact x0 prediction of one pixel under PRIOR (what a perfect network would learn)."""

    def x0(self, x, t):
        n = ((x.double() + 1) * 127.5).round()
        return ((n + bo.expected_dead(PRIOR, n, float(t))) / 127.5 - 1).to(x.dtype)


def tv_to_prior(n: torch.Tensor) -> float:
    hist = torch.bincount(n.long().flatten(), minlength=256).double() / n.numel()
    return 0.5 * float((hist - PRIOR).abs().sum())


def test_forward_process_has_the_binomial_mean_and_variance():
    n0 = torch.full((200_000,), 200.0, dtype=torch.float64)
    for t in (0.1, 1.0, 3.0):
        n_t = bo.thin(n0, bo.survival(t), torch.Generator().manual_seed(0))
        mean, var = bo.forward_moments(n0[:1], t)
        assert abs(float(n_t.mean() - mean)) < 0.05 and abs(float(n_t.var() / var) - 1) < 0.02
        assert float(n_t.max()) <= 200 and float(n_t.min()) >= 0


def test_posterior_is_bayes_rule_with_the_binomial_likelihood():
    t = 0.7
    p = math.exp(-t)
    table = bo.posterior(PRIOR, t)
    for n_t in (0, 30, 128, 201):
        w = torch.tensor([float(PRIOR[k]) * math.comb(k, n_t) * p**n_t * (1 - p) ** (k - n_t) if k >= n_t else 0.0
                          for k in range(256)], dtype=torch.float64)
        assert torch.allclose(table[n_t], w / w.sum(), atol=1e-12)


@pytest.mark.parametrize("steps", [1, 3, 20])
def test_the_exact_reverse_sampler_reproduces_the_prior_at_any_step_count(steps):
    # n_0 drawn from p(n_0 | n_t), then the binomial bridge to the next time: exact whatever the grid.
    g = torch.Generator().manual_seed(steps)
    times = bo.observation_times(steps)
    n = bo.thin(torch.multinomial(PRIOR, N, replacement=True, generator=g).double(), bo.survival(times[-1]), g)
    for k in range(steps, 0, -1):
        rows = bo.posterior(PRIOR, float(times[k]))[n.long()]
        n0 = torch.multinomial(rows, 1, generator=g).flatten().double()
        n = bo.bridge_step(n, n0, times[k], times[k - 1], g)
    assert tv_to_prior(n) < 0.02


@pytest.mark.parametrize("sampler, steps, tolerance", [(sample_blackout_bridge, 200, 0.04),
                                                       (sample_blackout_tau, 200, 0.04)])
def test_the_approximate_samplers_match_the_prior_with_the_exact_denoiser(sampler, steps, tolerance):
    # Measured (N = 20,000): bridge TV 0.35 / 0.09 / 0.022 at 10 / 50 / 200 steps; tau-leaping 0.32 / 0.079 / 0.022
    # (with the rate frozen at each step's start, rate(t) (t - s), it was 0.70 / 0.36 / 0.12).
    x = sampler(ExactDenoiser(), torch.zeros(N, 1), torch.zeros(steps + 1), generator=torch.Generator().manual_seed(0))
    coarse = sampler(ExactDenoiser(), torch.zeros(N, 1), torch.zeros(11), generator=torch.Generator().manual_seed(0))
    n, n_coarse = ((x.double() + 1) * 127.5).round(), ((coarse.double() + 1) * 127.5).round()
    assert tv_to_prior(n) < tolerance < tv_to_prior(n_coarse)


def test_observation_times_and_weights():
    times = bo.observation_times(1000)
    assert times[0] == 0 and abs(float(times[-1]) - bo.T_END) < 1e-9 and bool((times.diff() > 0).all())
    assert bool((bo.loss_weights(times) > 0).all())
    assert float(bo.poisson_deviance(torch.tensor([3.0]), torch.tensor([3.0]))) == pytest.approx(0, abs=1e-12)


def _loss(model, x0):
    torch.manual_seed(0)
    with torch.no_grad():
        return float(sum(BlackoutLoss().loss(model, Batch(x0, None, None)).mean() for _ in range(10)))


def test_blackout_trains_exports_loads_and_samples(tmp_path):
    data = make_toy_folder(tmp_path / "toy")
    cfg = toy_config(tmp_path, data, max_steps=60, checkpoint_every=60, lr=2e-3)
    cfg["model"].update(kind="blackout", num_classes=0)
    cfg["objective"] = {"name": "blackout"}
    cfg["train"].update(sample_sampler="blackout_bridge", sample_steps=8)
    config = config_from_dict(cfg)
    torch.manual_seed(config.train.seed)
    untrained = build_model(config)
    run(config)
    pipe = genstudio.load(tmp_path / "run" / "model")
    x0 = to_model_range(load_images(data, image_size=8).images)
    assert _loss(pipe.model, x0) < 0.95 * _loss(untrained, x0)  # measured: 3.02 -> 2.74
    assert set(pipe.samplers()) == {"blackout_bridge", "blackout_tau"} == set(compatible(pipe.model))
    frames = []
    a = pipe.generate(4, sampler="blackout_bridge", steps=8, seed=3, callback=lambda i, t, x, **_: frames.append(x))
    b = genstudio.load(tmp_path / "run" / "model").generate(4, sampler="blackout_bridge", steps=8, seed=3)
    assert (a.images == b.images).all() and a.nfe == 8
    assert a.images.dtype == np.uint8 and a.images.shape == (4, 8, 8, 3) and len(frames) == 8
    assert float(frames[0].mean()) < -0.9  # the fade-in starts black

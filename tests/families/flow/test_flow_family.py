"""Flow matching / rectified flow: the objective trains 2-D toys, its target is the exact velocity, its
time distributions have the stated moments, and the trainer exports a flow model every field sampler drives."""

import pytest
import torch
from torch import nn

import genstudio
import samplers
from genstudio.config import config_from_dict, load_config
from genstudio.core import toys
from genstudio.core.paths import LinearPath
from genstudio.core.predictions import convert
from genstudio.core.toys import gaussian, two_moons
from genstudio.families import objective_from_config
from genstudio.families.flow import FlowMatchingLoss
from genstudio.model import Guided, Model
from genstudio.train import run, validate
from samplers.grids import make_grid
from tests.helpers import MLP, ROOT, sliced_wasserstein, toy_config, train

MEANS = torch.tensor([[-1.5, 0.0], [1.5, 0.0]])  # class k is mixture component k
STD = 0.4


def mixture(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return toys.mixture(n, g, MEANS, STD)


def sample(model, n, sampler="euler", steps=50, labels=None, guidance=1.0, seed=2):
    spec = samplers.get(sampler, model)
    ts = make_grid(samplers.default_grid(spec, model.path), model.path, steps)  # uniform t, logsnr for DPM-Solver
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) * model.path.sigma(ts[0]).float()
    with torch.no_grad():
        return spec.fn(Guided(model, labels, guidance), x, ts)


@pytest.fixture(scope="module")
def moons_flow():
    torch.manual_seed(0)
    untrained = Model(MLP(), LinearPath(), "velocity", family="flow")
    trained = Model(MLP(), LinearPath(), "velocity", family="flow")
    trained.load_state_dict(untrained.state_dict())
    train(trained, lambda n, g: (two_moons(n, g), None), FlowMatchingLoss())
    return untrained.eval(), trained


def test_flow_matching_learns_two_moons(moons_flow):
    # SW_2 to 5000 data points, measured (1500 Adam steps, 3-10 s on one thread): fresh data 0.019;
    # trained Euler-50 0.074, Heun-25 0.075, Heun-5 0.074 (Euler-5 0.20), DPM-Solver++(2M)-10 on the
    # flow's x0 0.092; untrained Euler-50 0.30 (plain N(0, I) noise: 0.29).
    untrained, trained = moons_flow
    data = two_moons(5000, torch.Generator().manual_seed(10))
    floor = sliced_wasserstein(data, two_moons(5000, torch.Generator().manual_seed(11)))
    before = sliced_wasserstein(sample(untrained, 5000, "euler", 50), data)
    after = {(s, n): sliced_wasserstein(sample(trained, 5000, s, n), data)
             for s, n in [("euler", 50), ("heun", 25), ("heun", 5), ("dpmpp_2m", 10)]}
    assert floor < 0.03 and before > 0.25, (floor, before)
    assert all(d < 0.12 for d in after.values()), after


def test_class_conditional_flow_with_guidance_samples_the_asked_component():
    # Measured (1500 Adam steps, logit-normal t, label dropout 0.1; Heun-10): class k lands in component k
    # for 99.8-100% of samples at guidance 1 and 3, with SW_2 0.05 to component k's law at guidance 1;
    # guidance 0 (the unconditional field alone) lands in component k for only 50-53%, and the "no label"
    # samples split 0.55 / 0.45.
    torch.manual_seed(0)
    model = Model(MLP(num_classes=2), LinearPath(), "velocity", num_classes=2, family="flow")
    train(model, mixture, FlowMatchingLoss("logit_normal"), label_dropout=0.1)

    def component(x):
        return torch.cdist(x, MEANS).argmin(1)

    for k in (0, 1):
        for w in (0.0, 1.0, 3.0):
            x = sample(model, 500, "heun", 10, labels=torch.full((500,), k), guidance=w, seed=k)
            frac = float((component(x) == k).float().mean())
            assert (frac > 0.97) if w else (0.4 < frac < 0.6), (k, w, frac)
            if w == 1.0:  # conditional samples match their own component's law
                ref = MEANS[k] + STD * torch.randn(500, 2, generator=torch.Generator().manual_seed(9))
                assert sliced_wasserstein(x, ref) < 0.15
    uncond = component(sample(model, 1000, "euler", 20))
    assert 0.4 < float(uncond.float().mean()) < 0.6


class ExactVelocity(nn.Module):
    """E[eps - x0 | x_t] for Gaussian data (the exact x0-denoiser converted to velocity), plus an optional
    constant offset and scale."""

    def __init__(self, path, mean, var, offset=0.0, scale=1.0):
        super().__init__()
        self.path, self.prediction, self.num_classes = path, "velocity", 0
        self.denoiser, self.offset, self.scale = gaussian(path, mean, var), offset, scale

    def forward(self, x, t, labels=None):
        return self.scale * convert(self.denoiser(x, t), "x0", "velocity", self.path, x, t) + self.offset


def _loss(model, objective, x0, seed=0):
    torch.manual_seed(seed)
    return float(objective(model, x0).mean())


@pytest.mark.parametrize("distribution", ["uniform", "logit_normal"])
def test_target_is_the_exact_velocity_of_gaussian_data(distribution):
    # The loss is E||F - v*||^2 + const with v* = E[eps - x0 | x_t]: the exact field minimizes it, and a
    # constant offset delta adds exactly delta^2 (up to a zero-mean cross term). Measured (100k samples):
    # offset 0.2 adds 0.041 (uniform t) / 0.040 (logit-normal); scaling v* by 0.9 or 1.1 adds 0.011-0.012;
    # the flipped sign adds 4.5-4.9.
    path, objective = LinearPath(), FlowMatchingLoss(distribution)
    mean, var = torch.tensor([1.0, -0.5], dtype=torch.float64), torch.tensor([0.3, 2.0], dtype=torch.float64)
    x0 = mean + var.sqrt() * torch.randn(100_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = _loss(ExactVelocity(path, mean, var), objective, x0)
    shifted = _loss(ExactVelocity(path, mean, var, offset=0.2), objective, x0)
    assert shifted - exact == pytest.approx(0.04, rel=0.1)
    for scale in (0.9, 1.1):
        assert _loss(ExactVelocity(path, mean, var, scale=scale), objective, x0) > exact
    # The other papers' sign (tau = 1 - t: x0 - eps) is the wrong target here.
    assert _loss(ExactVelocity(path, mean, var, scale=-1.0), objective, x0) > exact + 1.0
    # A model with another native prediction regresses that target: the exact x0-denoiser is optimal too.
    denoiser = gaussian(path, mean, var)
    assert _loss(_Offset(denoiser, 0.2), objective, x0) - _loss(denoiser, objective, x0) == pytest.approx(0.04, rel=0.1)


class _Offset(nn.Module):
    def __init__(self, model, offset):
        super().__init__()
        self.model, self.offset = model, offset
        self.path, self.prediction, self.num_classes = model.path, model.prediction, 0

    def forward(self, x, t, labels=None):
        return self.model(x, t, labels) + self.offset


class _RecordTimes(nn.Module):
    def __init__(self, path):
        super().__init__()
        self.path, self.prediction, self.num_classes, self.times = path, "velocity", 0, None

    def forward(self, x, t, labels=None):
        self.times = t.double().flatten()
        return torch.zeros_like(x)


@pytest.mark.parametrize("path, tol", [(LinearPath(t_min=0.0, t_max=1.0), 0.015), (LinearPath(), 0.03)])
def test_time_distributions_have_the_stated_moments(path, tol):
    # Measured: mean of logit(t) 0.499 / 0.501, std 0.800 / 0.800 on [0, 1] / [0.001, 1].
    x0 = torch.zeros(200_000, 1)
    rec = _RecordTimes(path)
    torch.manual_seed(0)
    FlowMatchingLoss("logit_normal", m=0.5, s=0.8)(rec, x0)  # m > 0: more weight on the noisy end (t = 1)
    logit = torch.logit(rec.times)
    assert float(logit.mean()) == pytest.approx(0.5, abs=tol)
    assert float(logit.std()) == pytest.approx(0.8, abs=tol)
    assert float((rec.times > 0.5).float().mean()) == pytest.approx(0.734, abs=0.01)  # Phi(m / s); measured 0.734
    FlowMatchingLoss("uniform")(rec, x0)
    assert path.t_min <= float(rec.times.min()) and float(rec.times.max()) <= path.t_max
    assert float(rec.times.mean()) == pytest.approx((path.t_min + path.t_max) / 2, abs=0.005)


def test_bad_time_distribution_is_a_clear_error():
    with pytest.raises(ValueError, match="logit_normal"):
        objective_from_config("flow_matching", {"time_distribution": "beta"})
    with pytest.raises(ValueError, match="scale s"):
        objective_from_config("flow_matching", {"time_distribution": "logit_normal", "s": 0.0})


def test_trainer_exports_a_flow_model_that_field_samplers_drive(tmp_path, toy_data):
    cfg = toy_config(tmp_path, toy_data, max_steps=3, checkpoint_every=3)
    cfg["model"].update(path={"name": "linear"}, prediction="velocity", precond={"name": "none"})
    cfg["objective"] = {"name": "flow_matching", "options": {"time_distribution": "logit_normal"}}
    # sample_every exercises the trainer's own (conditional) sample grid on a flow model
    cfg["train"].update(sample_sampler="euler", sample_every=3, sample_steps=3, sample_count=4)
    result = run(config_from_dict(cfg))
    assert (tmp_path / "run" / "samples" / "step_00000003.png").is_file()
    pipe = genstudio.load(result["model"], device="cpu")
    assert pipe.meta["family"] == "flow" and pipe.model.family == "flow"
    assert pipe.model.prediction == "velocity" and pipe.model.path == LinearPath()
    for sampler in ("euler", "dpmpp_2m"):
        images = pipe.sample(2, sampler=sampler, steps=3, labels=[0, 1], guidance=2.0)
        assert images.shape == (2, 8, 8, 3) and images.dtype.name == "uint8"


def test_flow_config_validates():
    config = load_config(ROOT / "configs" / "flow_cifar10.toml")
    model = validate(config)
    assert model.family == "flow" and model.prediction == "velocity" and model.path == LinearPath()
    assert model.num_classes == 10 and config.train.label_dropout == 0.1
    assert objective_from_config(config.objective.name, config.objective.options).time_distribution == "logit_normal"

"""The consistency family: the boundary condition holds exactly, iCT's curriculum / level distribution /
metric / weighting follow the papers' formulas, `ict` and `cd` train a 2-D toy to a one-step sample
close to the data, and the trainer exports a consistency model that loads and samples."""
import math

import pytest
import torch

import genstudio
from genstudio.config import config_from_dict
from genstudio.core.paths import EDMPath
from genstudio.core.precond import ConsistencyPrecond, precond_from_config
from genstudio.core.toys import GaussianMixtureDenoiser
from genstudio.families.consistency import (
    CDLoss,
    ICTLoss,
    huber_c,
    ict_num_levels,
    karras_sigmas,
    lognormal_index_probs,
    pseudo_huber,
)
from genstudio.model import Model
from genstudio.train import run, validate
from tests.helpers import CM_MEANS, CM_PATH, CM_STD, MLP, cm, cm_mixture, one_step, sliced_wasserstein, toy_config


def train(model, objective, steps, batch=256, lr=2e-3):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    for k in range(steps):
        loss = objective(model, cm_mixture(batch, g), None, **({"step": k, "total_steps": steps}
                                                            if isinstance(objective, ICTLoss) else {})).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_boundary_condition_is_exact():
    model = cm()
    precond = precond_from_config({"name": "consistency", "sigma_data": 0.5, "sigma_min": 0.002})
    assert precond == model.precond
    x = torch.randn(64, 2) * 3
    with torch.no_grad():
        assert torch.equal(model(x, torch.full((64,), 0.002)), x)
        assert torch.equal(model(x, 0.002), x)
        assert not torch.allclose(model(x, 0.5), x)
    c_skip, c_out, c_in, c_noise = precond.scalings(CM_PATH, torch.tensor([[0.002], [1.0]], dtype=torch.float64))
    assert c_skip[0].item() == 1.0 and c_out[0].item() == 0.0
    assert math.isclose(c_skip[1].item(), 0.25 / (0.998**2 + 0.25))
    assert math.isclose(c_out[1].item(), 0.998 * 0.5 / math.sqrt(1.25))
    assert math.isclose(c_in[1].item(), 1 / math.sqrt(1.25))
    assert math.isclose(c_noise[1].item(), 0.0, abs_tol=1e-12)


def test_ict_formulas():
    # N(k) = min(s0 2^floor(k/K'), s1) + 1, K' = floor(K / (log2(s1/s0) + 1)): K = 400000 -> K' = 50000.
    K = 400_000
    assert [ict_num_levels(k, K) for k in (0, 49_999, 50_000, 100_000, 150_000, 300_000, 349_999, 350_000, 399_999)] \
        == [11, 11, 21, 41, 81, 641, 641, 1281, 1281]
    assert ict_num_levels(5, 16, s0=2, s1=8) == 5  # K' = floor(16 / 3) = 5 -> 2 * 2 + 1
    # a fine-tune continuing a run holds the N the run stopped at
    held = ICTLoss().continued(100_000, K)
    assert held == {"levels": 41} and ICTLoss(**held).num_levels(0, 10) == 41 and ICTLoss().num_levels(0, 10) == 11
    # Karras sigmas, computed independently
    s = karras_sigmas(11, 0.002, 80.0)
    lo, hi = 0.002 ** (1 / 7), 80.0 ** (1 / 7)
    ref = [(lo + i / 10 * (hi - lo)) ** 7 for i in range(11)]
    assert torch.allclose(s, torch.tensor(ref, dtype=torch.float64), rtol=1e-12)
    assert math.isclose(s[0].item(), 0.002) and math.isclose(s[-1].item(), 80.0)
    # discretized log-normal: p(i) ~ erf((ln s_{i+1} + 1.1) / (2 sqrt 2)) - erf((ln s_i + 1.1) / (2 sqrt 2))
    p = lognormal_index_probs(s)
    e = [math.erf((math.log(v) + 1.1) / (math.sqrt(2) * 2.0)) for v in ref]
    q = [e[i + 1] - e[i] for i in range(10)]
    assert torch.allclose(p, torch.tensor(q, dtype=torch.float64) / sum(q), rtol=1e-12)
    # pseudo-Huber with c = 0.00054 sqrt(d): 0.03 for CIFAR-10 (d = 3072)
    assert math.isclose(huber_c(3072), 0.00054 * math.sqrt(3072)) and abs(huber_c(3072) - 0.0299) < 1e-4
    x, y = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 4.0]])
    assert math.isclose(pseudo_huber(x, y, 0.5).item(), math.sqrt(25 + 0.25) - 0.5, rel_tol=1e-6)
    # the loss is lambda(sigma_i) d(...) with lambda = 1 / (sigma_{i+1} - sigma_i): on a model that
    # ignores its input (f = c), d = 0; on f(x, sigma) = x + sigma (the levels' difference is known) it is
    # lambda * (sqrt(2 (s_{i+1} - s_i)^2 + c^2) - c)
    class Shift(torch.nn.Module):
        path, kind, precond = EDMPath(t_max=80.0), "map", ConsistencyPrecond()

        def forward(self, x, t, labels=None):
            return torch.zeros_like(x) + torch.as_tensor(t).reshape(-1, 1)

    torch.manual_seed(0)
    loss = ICTLoss(huber_c=0.1)(Shift(), torch.zeros(4000, 2), step=0, total_steps=K)
    # every sample: (sqrt(2 d^2 + c^2) - c) / d with d = s_{i+1} - s_i, the same function of the drawn i
    diffs = (s[1:] - s[:-1]).tolist()
    expect = torch.tensor([(math.sqrt(2 * d * d + 0.01) - 0.1) / d for d in diffs])
    nearest = (loss[:, None].double() - expect[None].double()).abs().min(1)
    assert (nearest.values <= 1e-4 * expect[nearest.indices]).all()  # float32 rounding only
    assert len(set(nearest.indices.tolist())) >= 6  # many levels drawn


def test_ict_index_histogram():
    s = karras_sigmas(11, 0.002, 10.0)
    p = lognormal_index_probs(s)
    torch.manual_seed(0)
    counts = torch.bincount(torch.multinomial(p, 100_000, replacement=True), minlength=10).double() / 100_000
    assert torch.allclose(counts, p, atol=0.005)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(10)
    return cm_mixture(4000, g), cm_mixture(4000, torch.Generator().manual_seed(11))


def test_ict_trains_a_toy(data):
    target, fresh = data
    floor = sliced_wasserstein(target, fresh)
    untrained = cm()
    before = sliced_wasserstein(one_step(untrained, 4000), target)
    trained = train(cm(), ICTLoss(s0=10, s1=80), steps=2000)
    after1 = sliced_wasserstein(one_step(trained, 4000, 1), target)
    after2 = sliced_wasserstein(one_step(trained, 4000, 2), target)
    print(f"ict: floor {floor:.3f} untrained {before:.3f} trained 1-step {after1:.3f} 2-step {after2:.3f}")
    assert before > 0.8
    assert after1 < 0.2 and after2 < 0.2


@pytest.mark.parametrize("precond", ["consistency", "edm"])  # EDM's: a student started from an EDM model
def test_cd_trains_a_toy_from_an_exact_teacher(data, precond):
    target, fresh = data
    teacher = GaussianMixtureDenoiser(CM_PATH, CM_MEANS, torch.full_like(CM_MEANS, CM_STD**2))
    before = sliced_wasserstein(one_step(cm(precond=precond), 4000), target)
    trained = train(cm(precond=precond), CDLoss(teacher=teacher, solver="heun", N=18), steps=1000)
    after1 = sliced_wasserstein(one_step(trained, 4000, 1), target)
    after2 = sliced_wasserstein(one_step(trained, 4000, 2), target)
    print(f"cd ({precond}): untrained {before:.3f} trained 1-step {after1:.3f} 2-step {after2:.3f}")
    assert before > 0.8
    assert after1 < 0.28 and after2 < 0.28


def test_consistency_objectives_reject_a_field():
    field = Model(MLP(), CM_PATH, "x0", family="consistency")
    with pytest.raises(ValueError, match="map"):
        ICTLoss()(field, torch.zeros(4, 2))


def test_trainer_exports_a_consistency_model(tmp_path, toy_data):
    cfg = toy_config(tmp_path, toy_data, max_steps=3, checkpoint_every=3, sample_sampler="consistency",
                     sample_steps=1)
    cfg["model"].update(kind="map", path={"name": "edm"}, prediction="x0", precond={"name": "consistency"})
    cfg["objective"] = {"name": "ict"}
    config = config_from_dict(cfg)
    validate(config)
    run(config)
    pipe = genstudio.load(tmp_path / "run" / "model")
    assert pipe.samplers() == ["consistency"]
    for steps in (1, 2):
        out = pipe.sample(2, sampler="consistency", steps=steps, seed=0, labels=[0, 1])
        assert out.shape == (2, 8, 8, 3) and out.dtype.name == "uint8"

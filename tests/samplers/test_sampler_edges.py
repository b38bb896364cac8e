"""Edge cases found in review: path ends, bounded paths, tiny grids."""
import pytest
import torch

import samplers
from genstudio.core.paths import LinearPath, VPDiscretePath
from genstudio.core.toys import gaussian
from genstudio.model import Guided
from samplers.grids import make_grid
from tests.helpers import MEAN, VAR, prior


def test_dopri5_on_a_one_step_grid_still_integrates():
    path = LinearPath()
    model = Guided(gaussian(path, MEAN, VAR))
    ts = torch.tensor([0.99, 0.0], dtype=torch.float64)
    out = samplers.get("dopri5").fn(model, prior(path, ts, 4000), ts)
    torch.testing.assert_close(out.var(0), VAR, rtol=0.1, atol=0.0)
    assert model.nfe > 2


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "dpmpp_3m", "unipc"])
def test_inverting_up_to_pure_noise_on_the_linear_path_is_finite_and_reversible(sampler):
    path = LinearPath()
    model = Guided(gaussian(path, MEAN, VAR))
    x0 = MEAN + VAR.sqrt() * torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = make_grid("uniform", path, 100)  # starts at t = 1, where alpha = 0
    latent = samplers.invert(model, x0, ts, sampler=sampler)
    assert torch.isfinite(latent).all()
    back = samplers.get(sampler).fn(model, latent, ts)
    assert float((back - x0).abs().max()) < 0.05


def test_heun_churn_never_asks_a_bounded_path_beyond_its_last_step():
    path = VPDiscretePath()
    seen = []
    den = gaussian(path, MEAN, VAR)
    inner = den.forward
    den.forward = lambda x, t, labels=None: seen.append(float(torch.as_tensor(t).max())) or inner(x, t, labels)
    ts = make_grid("karras", path, 10)
    out = samplers.get("heun_churn").fn(Guided(den), prior(path, ts, 64), ts, S_churn=40.0,
                                        generator=torch.Generator().manual_seed(0))
    assert max(seen) <= path.t_limit + 1e-6 and torch.isfinite(out).all()


@pytest.mark.parametrize("path_name", ["edm", "vp_linear", "vp_cosine", "vp_discrete", "linear", "ve"])
def test_churn_acts_on_every_path(path_name):
    from genstudio.core.paths import PATHS

    path = PATHS[path_name]()
    ts = make_grid("karras", path, 10)
    x = prior(path, ts, 8)
    run = lambda churn: samplers.get("heun_churn").fn(Guided(gaussian(path, MEAN, VAR)), x, ts, S_churn=churn,  # noqa: E731
                                                      generator=torch.Generator().manual_seed(0))
    assert float((run(40.0) - run(0.0)).abs().max()) > 1e-6

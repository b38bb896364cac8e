"""Editing with consistency models (issue 4): multistep consistency inpainting keeps the known pixels and,
with the exact consistency function of a correlated Gaussian, fills the unknown coordinate from its
conditional; SDEdit through the consistency sampler works on a map checkpoint."""
import numpy as np
import torch

import genstudio
from genstudio.core.paths import EDMPath
from samplers.grids import make_grid
from samplers.inpaint import inpaint_consistency

PATH = EDMPath(t_max=20.0)
MU = torch.tensor([0.2, -0.1], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.95], [0.95, 1.0]], dtype=torch.float64) * 0.25


class ExactGaussianMap:
    """f(x, t) = mu + Cov^(1/2) (Cov + t^2 I)^(-1/2) (x - mu): the probability-flow ODE's map to t = 0 on
    the EDM path for Gaussian data, i.e. the exact consistency function."""

    path = PATH
    kind = "map"

    def x0(self, x, t):
        evals, evecs = torch.linalg.eigh(COV)
        scale = evals.sqrt() / (evals + float(t) ** 2).sqrt()
        a = evecs @ torch.diag(scale) @ evecs.T
        return MU + (x.double() - MU) @ a.T


def test_consistency_inpainting_approaches_the_conditional_with_more_jumps():
    """The replacement scheme is approximate with few jumps and converges to p(x2 | x1) as they grow."""
    rho, x1 = 0.95, 0.9
    cond_mean, cond_std = float(MU[1] + rho * (x1 - MU[0])), 0.5 * (1 - rho**2) ** 0.5  # equal variances
    mask = torch.tensor([True, False])
    errors = []
    for jumps in (4, 12, 50, 200):
        x_known = torch.tensor([[x1, 0.0]], dtype=torch.float64).repeat(4000, 1)  # x2 unknown
        out = inpaint_consistency(ExactGaussianMap(), x_known, mask, make_grid("jumps", PATH, jumps),
                                  generator=torch.Generator().manual_seed(0))
        assert torch.equal(out[:, 0], x_known[:, 0])
        errors.append(abs(float(out[:, 1].mean()) - cond_mean))
        print(f"{jumps} jumps: x2 | x1 mean {out[:, 1].mean():.3f} (exact {cond_mean:.3f}), "
              f"std {out[:, 1].std():.3f} (exact {cond_std:.3f})")
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.03 and abs(float(out[:, 1].std()) - cond_std) < 0.02


def test_map_checkpoint_inpaints_and_sdedits(tmp_path, toy_data):
    from genstudio.config import config_from_dict
    from genstudio.train import run
    from tests.helpers import toy_config

    cfg = toy_config(tmp_path, toy_data, max_steps=2, checkpoint_every=2, sample_sampler="consistency",
                     sample_steps=1)
    cfg["model"].update(kind="map", path={"name": "edm"}, prediction="x0", precond={"name": "consistency"})
    cfg["objective"] = {"name": "ict"}
    run(config_from_dict(cfg))
    pipe = genstudio.load(tmp_path / "run" / "model")
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True
    out = pipe.inpaint(image, mask, n=3, seed=1, labels=0)
    assert out.shape == (3, 8, 8, 3)
    assert (out[:, :, :4] == image[None, :, :4]).all()
    assert not (out[:, :, 4:] == image[None, :, 4:]).all()
    again = pipe.inpaint(image, mask, n=3, seed=1, labels=0)
    assert (again == out).all()
    edited = pipe.sdedit(image, strength=0.5, sampler="consistency", steps=2, seed=0, labels=0)
    assert edited.images.shape == (1, 8, 8, 3) and edited.nfe == 2

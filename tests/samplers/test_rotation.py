"""Rotation control at sampling time (samplers.run.run_sampler(rotation=...), Pipeline.generate(rotation=...))."""
import numpy as np
import pytest
import torch
from torch import nn

import samplers
from genstudio.api import Pipeline
from genstudio.core.noise import generators, randn_like
from genstudio.core.paths import EDMPath
from genstudio.core.rotate import rotate
from genstudio.images import to_uint8
from genstudio.model import Guided, Model
from samplers.grids import make_grid
from samplers.run import run_sampler

S2 = 0.25  # data variance


class _Shape(nn.Module):
    image_shape = (3, 16, 16)
    class_embeddings = 0

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def components(self):
        return {"unet": self}


class GaussianModel(Model):
    """The exact x0 = E[x0 | x_t] of data N(mean, S2 I) on the EDM path (x_t = x0 + t eps)."""

    def __init__(self, mean: torch.Tensor | None = None):
        super().__init__(_Shape(), EDMPath(t_max=10.0), "x0")
        self.mean = torch.zeros(3, 16, 16) if mean is None else mean

    def forward(self, x, t, labels=None):
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1, 1, 1)
        m = self.mean.to(x)
        return m + S2 / (S2 + t**2) * (x - m)


def blob(n=16) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(n) - (n - 1) / 2, torch.arange(n) - (n - 1) / 2, indexing="ij")
    return torch.exp(-((x - n / 5) ** 2 + (y + n / 10) ** 2) / (n / 9) ** 2).expand(3, n, n).double()


class Still(GaussianModel):
    """x0 = x on the EDM path: every step leaves the state where it is."""

    def forward(self, x, t, labels=None):
        return x


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_rotation_turns_a_known_image_by_the_total_angle(sampler):
    # 10 steps of 9 degrees after each step: a quarter turn, counterclockwise. Measured error 6e-4 (Fourier shears).
    ts = make_grid("karras", EDMPath(t_max=10.0), 10)
    image = blob(32)[None]
    calls = []
    out = run_sampler(samplers.get(sampler), Guided(Still().double()), None, ts, start=image, rotation=90.0,
                      callback=lambda i, **_: calls.append(i))
    assert (out - torch.rot90(image, 1, (-2, -1))).abs().max() < 1e-3
    assert calls == list(range(10))  # the callback counts steps over the whole grid


def test_the_pipeline_rotates_the_state_after_each_step():
    # Pipeline.generate(rotation=...) is "a step, then turn the state by rotation / steps", from the seed's noise.
    model, steps, degrees = GaussianModel(blob().float()).double(), 6, 60.0
    pipe = Pipeline(model.eval())
    got = pipe.generate(2, sampler="euler", steps=steps, seed=5, rotation=degrees).images
    ts = make_grid("karras", model.path, steps)
    x = randn_like(torch.empty(2, 3, 16, 16), generators([5, 6])).double() * float(ts[0])
    spec, field = samplers.get("euler"), Guided(model)
    for i in range(steps):
        x = rotate(spec.fn(field, x, ts[i:i + 2]), degrees / steps)
    assert np.abs(got.astype(int) - to_uint8(x).astype(int)).max() <= 1
    assert not np.array_equal(got, pipe.generate(2, sampler="euler", steps=steps, seed=5).images)


def test_bad_rotations_are_clear_errors():
    pipe = Pipeline(GaussianModel().eval())
    with pytest.raises(ValueError, match="rotation"):
        pipe.generate(1, sampler="euler", steps=2, rotation=400)

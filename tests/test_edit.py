"""genstudio.edit's colorization: inpainting in a decorrelated colour basis keeps the luminance exactly."""
import numpy as np
import pytest
import torch

from genstudio.api import Pipeline
from genstudio.edit import COLOUR_BASIS, from_colour_basis, gray, in_gamut, to_colour_basis
from tests.helpers import field_checkpoint, map_checkpoint


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit")
    return Pipeline.load(field_checkpoint(root), device="cpu"), Pipeline.load(map_checkpoint(root), device="cpu")


def test_the_colour_basis_is_orthogonal_with_luminance_first():
    assert torch.allclose(COLOUR_BASIS.T @ COLOUR_BASIS, torch.eye(3, dtype=torch.float64), atol=1e-12)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2 - 1
    y = to_colour_basis(x)
    assert torch.allclose(y[:, 0], 3 ** 0.5 * x.mean(1)) and torch.allclose(from_colour_basis(y), x)


def test_in_gamut_keeps_luminance_and_only_shrinks_colour():
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64) * 2  # far outside [-1, 1]
    x = x - x.mean(1, keepdim=True) + x.mean(1, keepdim=True).clamp(-1, 1)
    out = in_gamut(x)
    assert out.abs().max() <= 1 + 1e-12 and torch.allclose(out.mean(1), x.mean(1))
    inside = torch.rand(1, 3, 4, 4, dtype=torch.float64) - 0.5
    assert torch.allclose(in_gamut(inside), inside, atol=1e-12)


@pytest.mark.parametrize("which", [0, 1])
def test_colorize_keeps_the_luminance_and_varies_the_colours(pipes, which):
    pipe = pipes[which]
    rng = np.random.default_rng(0)
    image = gray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    kw = dict(steps=4, steps_per_level=1, labels=[0, 1, 0]) if which == 0 else dict(steps=2)
    out = pipe.colorize(image, n=3, seed=5, **kw)
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(float).mean(-1) - image[..., 0]).max() <= 0.5  # rounding of each channel
    assert out.std(-1).mean() > 1 and not np.array_equal(out[0], out[1])  # coloured, and by seed
    assert np.array_equal(out, pipe.colorize(image, n=3, seed=5, **kw))
    assert "colorize" in pipe.editors()

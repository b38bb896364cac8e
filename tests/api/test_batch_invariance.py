"""An image depends on its seed, not on its batch: exactly with pipe.network_batch, up to rounding without it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import genstudio
from tests.helpers import ROOT


@pytest.fixture
def two_threads():
    # Batched kernels split work across threads by batch size; one thread hides the effect.
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _images(pipe, batch_size):
    return pipe.generate(6, sampler="dpmpp_2m", steps=4, seed=0, labels=[0, 1, 2, 3, 4, 5], guidance=2.0,
                         batch_size=batch_size).images.astype(int)


def test_network_batch_makes_images_independent_of_the_batch_they_are_drawn_in(two_threads):
    pipe = genstudio.load(ROOT / "checkpoints" / "flow_small_cifar10", device="cpu")
    plain = {bs: _images(pipe, bs) for bs in (1, 6)}
    pipe.network_batch = 4
    exact = {bs: _images(pipe, bs) for bs in (1, 4, 6)}
    assert all(np.array_equal(exact[bs], exact[6]) for bs in exact)
    # Without it the bound the API docstring states: 1/255 in a handful of pixel values.
    diff = np.abs(plain[1] - plain[6])
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert np.abs(exact[6] - plain[6]).max() <= 1


def test_network_batch_pads_and_counts_one_evaluation():
    from genstudio.core.paths import EDMPath
    from genstudio.model import Guided

    calls = []

    class Net(torch.nn.Module):
        path, prediction, num_classes, null_label = EDMPath(), "x0", 3, 3

        def forward(self, x, t, labels=None):
            calls.append(x.shape[0])
            return x * t.reshape(-1, 1) + labels.reshape(-1, 1)

    x, labels = torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1])
    plain, chunked = Guided(Net(), labels, 2.0), Guided(Net(), labels, 2.0, network_batch=4)
    torch.testing.assert_close(chunked(x, 0.5), plain(x, 0.5))
    assert calls == [4, 4, 4, 10] and chunked.nfe == plain.nfe == 1  # 10 = 2 x 5 padded to 12, then unchunked
    with pytest.raises(ValueError, match="network_batch"):
        Guided(Net(), labels, network_batch=0)

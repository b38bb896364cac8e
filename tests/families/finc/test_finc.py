"""FInC Flow: the masked convolution's Jacobian is triangular with a unit diagonal, its anti-diagonal inverse is
exact, the flow's log-determinants are the whole map's, its bits/dim at the identity is the closed form, and the
family trains, exports, loads, samples (with a temperature) and edits."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import genstudio
from genstudio.config import config_from_dict
from genstudio.families.finc.conv import FIncConv
from genstudio.families.finc.flow import FIncFlowNetwork
from genstudio.train import run
from samplers.likelihood import bits_per_dim
from tests.helpers import make_toy_folder


def randomize(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


@pytest.mark.parametrize("orientation", [0, 1, 2, 3])
def test_finc_conv_jacobian_is_triangular_with_unit_diagonal(orientation):
    c, h, w = 3, 4, 5
    conv = FIncConv(c, kernel=3, orientation=orientation).double()
    randomize(conv)
    x = torch.randn(1, c, h, w, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: conv(v.view(1, c, h, w)).flatten(), x.flatten())
    # Order the pixels as the layer's own solve does: its flips map (row, column, channel) order to raster order.
    idx = conv._flip(torch.arange(c * h * w).view(1, c, h, w)).permute(0, 2, 3, 1).flatten()
    j = jac[idx][:, idx]
    assert torch.equal(torch.diagonal(j), torch.ones(c * h * w, dtype=torch.float64))
    assert torch.count_nonzero(torch.triu(j, 1)) == 0
    assert torch.count_nonzero(torch.tril(j, -1)) > 0  # not trivially diagonal
    sign, logdet = torch.linalg.slogdet(jac)
    assert sign == 1 and abs(float(logdet)) < 1e-12


@pytest.mark.parametrize("order", ["anti_diagonal", "raster"])
def test_finc_inverse_is_exact_in_float64(order):
    conv = FIncConv(4, kernel=3, orientation=3).double()
    randomize(conv, scale=0.2)
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64)
    assert torch.allclose(conv.inverse(conv(x), order=order), x, atol=1e-12, rtol=0)


def tiny_flow(**settings) -> FIncFlowNetwork:
    net = FIncFlowNetwork(**{"channels": 1, "image_size": 4, "levels": 2, "steps": 2, "hidden": 4, "kernel": 2,
                             **settings}).double()
    randomize(net, scale=0.2)
    return net


def test_flow_round_trip_and_logdet_equals_brute_force_slogdet():
    net = tiny_flow()
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    eps, logdet = net.encode(x)
    assert torch.allclose(net(eps), x, atol=1e-11, rtol=0)
    jac = torch.autograd.functional.jacobian(lambda v: net.encode(v.view(1, 1, 4, 4))[0].flatten(), x.flatten())
    sign, brute = torch.linalg.slogdet(jac)
    assert sign != 0 and abs(float(brute) - float(logdet.detach())) < 1e-9 and abs(float(logdet.detach())) > 0.1


def test_bits_per_dim_of_the_identity_flow_is_the_gaussian_closed_form():
    # Untrained, the flow is the identity (zero-initialised convolutions, couplings and split priors), so the
    # model's density is N(0, I) on its model range and bits/dim of x is -log N(x; 0, I) / (D ln 2) + log2(127.5).
    net = FIncFlowNetwork(channels=3, image_size=8, levels=2, steps=2, hidden=8, kernel=3).double()
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    d = x[0].numel()
    closed = (0.5 * (x.flatten(1) ** 2).sum(1) / d + 0.5 * math.log(2 * math.pi)) / math.log(2) + math.log2(127.5)
    assert torch.allclose(bits_per_dim(net.log_prob(x), d), closed, atol=1e-12, rtol=0)


def test_finc_trains_exports_loads_samples_with_temperature_and_edits(tmp_path):
    data = make_toy_folder(tmp_path / "toy")
    config = config_from_dict({
        "model": {"kind": "nf", "unet": {"levels": 2, "steps": 1, "hidden": 8}},
        "objective": {"name": "finc_nll"},
        "data": {"source": str(data), "image_size": 8, "cache_dir": str(tmp_path / "cache")},
        "train": {"output_dir": str(tmp_path / "run"), "batch_size": 8, "max_steps": 20, "checkpoint_every": 20,
                  "log_every": 1, "progress": False, "lr": 3e-3, "sample_sampler": "decode", "sample_steps": 1},
    })
    result = run(config)
    losses = [r["loss"] for r in genstudio.atomic.read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # bits/dim falls

    pipe = genstudio.load(result["model"], device="cpu")
    assert pipe.samplers() == ["decode"] and pipe.image_shape == (3, 8, 8)
    hot = pipe.generate(4, seed=0)
    cold = pipe.generate(4, seed=0, sampler_options={"temperature": 0.0})
    assert hot.images.shape == (4, 8, 8, 3) and hot.nfe == 1
    assert cold.images.std() < hot.images.std()  # temperature 0: the flow's image of the latent's mode
    with pytest.raises(ValueError, match="temperature"):
        pipe.generate(1, sampler_options={"temperature": -1.0})
    assert set(pipe.editors()) == {"interpolate", "reconstruct"}
    frames = pipe.interpolate(frames=3, seeds=(0, 1))
    assert np.array_equal(frames.images[0], hot.images[0]) and np.array_equal(frames.images[-1], hot.images[1])
    again = pipe.editor("reconstruct").fn(pipe, hot.images)
    assert np.abs(again.images.astype(int) - hot.images.astype(int)).max() <= 1  # the flow inverts exactly


def test_a_bad_flow_folder_is_a_checkpoint_error_naming_the_setting(tmp_path):
    from genstudio.checkpoint import export_model
    from genstudio.nets import CheckpointError
    from genstudio.train import build_model

    config = config_from_dict({"model": {"kind": "nf", "unet": {"levels": 2, "steps": 1, "hidden": 4}},
                               "objective": {"name": "finc_nll"}, "data": {"image_size": 8}})
    folder = export_model(build_model(config), tmp_path / "flow", defaults={"sampler": "decode", "steps": 1})
    settings = folder / "flow" / "config.json"
    good = settings.read_text()
    settings.write_text(good.replace('"levels": 2', '"levels": 99'))
    with pytest.raises(CheckpointError, match="levels"):
        genstudio.load(folder, device="cpu")
    settings.write_text(good.replace('"hidden": 4', '"hidden": 5'))  # weights no longer fit the settings
    with pytest.raises(CheckpointError, match="shape"):
        genstudio.load(folder, device="cpu")

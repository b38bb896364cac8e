"""genstudio likelihood: bits/dim with its protocol, exact for a flow (the closed form for the identity flow), a bound
for a VAE, the probability-flow ODE for a field model; a kind without one is a clear error."""
from __future__ import annotations

import json
import math

import pytest
import torch

import genstudio
from genstudio.checkpoint import export_model
from genstudio.cli import main
from genstudio.config import config_from_dict
from genstudio.core.noise import generators
from genstudio.data import load_images, to_model_range
from genstudio.train import build_model
from samplers.likelihood import dequantize
from tests.helpers import field_checkpoint, make_toy_folder, map_checkpoint


def checkpoint(tmp_path, kind: str, objective: str, unet: dict):
    config = config_from_dict({"model": {"kind": kind, "unet": unet}, "objective": {"name": objective},
                               "data": {"image_size": 8}})
    return export_model(build_model(config).eval(), tmp_path / kind, defaults={"sampler": "decode", "steps": 1})


def test_identity_flow_bits_per_dim_is_the_gaussian_closed_form(tmp_path):
    data = make_toy_folder(tmp_path / "toy", n_per_class=5)
    folder = checkpoint(tmp_path, "nf", "finc_nll", {"levels": 2, "steps": 1, "hidden": 4})
    result = genstudio.likelihood(folder, source=str(data), n=6, seed=3, batch_size=4, cache_dir=str(tmp_path / "c"))
    assert result["exact"] is True and result["protocol"]["n"] == 6 and result["protocol"]["of"] == 10
    assert "uniform" in result["protocol"]["dequantization"] and result["protocol"]["subset"]
    # The untrained flow is the identity: its density is N(0, I) in model range.
    images = load_images(str(data), image_size=8, cache_dir=str(tmp_path / "c")).images
    index = torch.randperm(10, generator=torch.Generator().manual_seed(3))[:6].sort().values
    x = dequantize(to_model_range(images[index]), generators([3 + i for i in range(6)])).double()
    closed = (0.5 * (x.flatten(1) ** 2).mean(1) + 0.5 * math.log(2 * math.pi)) / math.log(2) + math.log2(127.5)
    assert abs(result["bits_per_dim"] - float(closed.mean())) < 1e-4


def test_vae_gives_a_bound_and_the_cli_records_it(tmp_path, capsys):
    data = make_toy_folder(tmp_path / "toy", n_per_class=3)
    folder = checkpoint(tmp_path, "vae", "vae_balance", {"latent_channels": 2, "hidden": 4, "downsamples": 1})
    assert main(["likelihood", str(folder), "--source", str(data), "--record", "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "upper bound" in out and "on 6 of 6 images" in out
    record = json.loads((folder / "metrics.json").read_text())["likelihood"][0]
    assert record["exact"] is False and math.isfinite(record["bits_per_dim"])


def test_field_model_uses_the_probability_flow_ode_and_a_map_has_none(tmp_path):
    data = make_toy_folder(tmp_path / "toy", n_per_class=1, size=16)
    result = genstudio.likelihood(field_checkpoint(tmp_path), source=str(data), rtol=1e-2, atol=1e-2,
                                  cache_dir=str(tmp_path / "c"))
    assert result["exact"] is True and "probability-flow ODE" in result["protocol"]["method"]
    assert math.isfinite(result["bits_per_dim"]) and result["protocol"]["rtol"] == 1e-2
    with pytest.raises(ValueError, match="no likelihood for a 'map' model"):
        genstudio.likelihood(map_checkpoint(tmp_path), source=str(data), cache_dir=str(tmp_path / "c"))

"""Proof that a family is one registration: this file alone defines a new family (objective, model glue, Family
record), trains it through the real loop, exports, loads it with genstudio.load, samples it with every sampler
that can drive it, and finds it in the studio's model list. docs/adding-a-family.md walks through it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

import genstudio
from genstudio.config import Config, config_from_dict
from genstudio.core.paths import LinearPath
from genstudio.core.precond import NoPrecond
from genstudio.families import Family, get_family, register_family, unregister_family
from genstudio.model import Model
from genstudio.nets import UNetBackbone, unet_config
from genstudio.objective import Batch, Objective, mean_per_sample
from genstudio.train import run
from tests.helpers import MICRO_UNET, make_toy_folder


# 1. The objective: a frozen dataclass whose fields are its config options.
@dataclass(frozen=True)
class LogitNormalX0Loss(Objective):
    """||D(x_t, t) - x0||^2 on the linear path with t = sigmoid(m + s n): x0 prediction, as in SD3's time
    distribution (Esser et al. 2024, Eq. 19)."""

    name: ClassVar[str] = "toy_x0"
    m: float = 0.0
    s: float = 1.0

    def loss(self, model, batch: Batch, **_) -> torch.Tensor:
        x0 = batch.x0
        t = torch.sigmoid(self.m + self.s * torch.randn(x0.shape[0], dtype=torch.float64)).to(x0.dtype)
        x_t = model.path.sample(x0, torch.randn_like(x0), t)
        return mean_per_sample((model(x_t, t, batch.labels) - x0) ** 2)


# 2. The model glue: how a config becomes a model (loading uses the registry's default: one network).
def build_toy(family: Family, config: Config) -> Model:
    unet = unet_config(config.model.network, image_size=config.data.image_size,
                       num_classes=config.model.num_classes, **config.model.unet)
    return Model(UNetBackbone.from_config(unet), LinearPath(), "x0", NoPrecond(), config.model.num_classes,
                 family=family.name, kind="field")


# 3. The Family record, registered once.
TOY = Family(name="toy_x0_flow", objectives=(LogitNormalX0Loss,), builder=build_toy,
             summary="x0-prediction flow on the linear path (a test's family)")


@pytest.fixture
def toy_family():
    register_family(TOY)
    yield TOY
    unregister_family(TOY.name)


def test_a_family_defined_here_trains_exports_loads_samples_and_shows_in_the_studio(tmp_path, toy_family):
    data = make_toy_folder(tmp_path / "toy")
    config = config_from_dict({
        "model": {"network": "tiny", "unet": dict(MICRO_UNET), "num_classes": 2},
        "objective": {"name": "toy_x0", "options": {"m": 0.5}},
        "data": {"source": str(data), "image_size": 8, "cache_dir": str(tmp_path / "cache")},
        "train": {"output_dir": str(tmp_path / "run"), "batch_size": 8, "max_steps": 6, "checkpoint_every": 3,
                  "log_every": 1, "progress": False, "lr": 1e-3, "sample_sampler": "euler", "sample_steps": 4},
    })
    result = run(config)
    losses = [r["loss"] for r in genstudio.atomic.read_jsonl(tmp_path / "run" / "metrics.jsonl")]
    assert len(losses) == 6 and all(np.isfinite(losses))

    pipe = genstudio.load(result["model"], device="cpu")
    assert pipe.model.family == "toy_x0_flow" and get_family(pipe.model.family) is toy_family
    assert pipe.meta["components"] == {"unet": {"network": "diffusers.UNet2DModel"}}
    usable = pipe.samplers()
    assert "euler" in usable and "dpmpp_2m" in usable and "caf" not in usable and len(usable) > 10
    for sampler in usable:
        out = pipe.generate(2, sampler=sampler, steps=3, labels=[0, 1], guidance=1.5)
        assert out.images.shape == (2, 8, 8, 3) and out.images.dtype == np.uint8, sampler
        assert out.nfe >= 1, sampler
    assert set(pipe.editors()) >= {"inpaint", "sdedit", "interpolate"}

    from ui.app import build

    demo = build([result["model"]])
    dropdowns = [b for b in demo.blocks.values() if getattr(b, "label", "") and b.label.startswith("model (")]
    assert dropdowns[0].choices == [("run", result["model"])]  # by name (a run's model/: the run's), path as value
    assert demo.studio.pipe(result["model"]).model.family == "toy_x0_flow"


def test_a_family_name_or_objective_name_is_taken_once(toy_family):
    with pytest.raises(ValueError, match="registered twice"):
        register_family(TOY)
    with pytest.raises(ValueError, match="already belong"):
        register_family(Family(name="another", objectives=(LogitNormalX0Loss,)))

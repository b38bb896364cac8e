"""The evaluator tests' shared fixtures: a random-init classifier and an untrained toy checkpoint."""
from __future__ import annotations

import pytest
import torch

from genstudio.checkpoint import export_model
from genstudio.config import config_from_dict
from genstudio.train import build_model
from tests.helpers import random_classifier, toy_config


@pytest.fixture
def classifier(tmp_path):
    return random_classifier(tmp_path / "clf.safetensors")


@pytest.fixture
def toy_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model(config_from_dict(toy_config(tmp_path, tmp_path)))  # 8x8 images, 2 classes
    return export_model(model, tmp_path / "ckpt", training={"steps": 0}, defaults={"sampler": "heun", "steps": 4})

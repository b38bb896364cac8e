import os

import numpy as np
import pytest
import torch
from PIL import Image

# Two cores are shared between the test process and anything running beside it: one thread each
# avoids oversubscription.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GENSTUDIO_DATA", os.path.abspath(os.path.join(__file__, "..", "..", "..", "shared", "data")))

MICRO_UNET = {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
              "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}


def make_toy_folder(root, n_per_class=20, size=8, classes=("a", "b")):
    """Two classes of simple structured images: horizontal vs vertical stripes, random colours."""
    rng = np.random.default_rng(0)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = np.zeros((size, size, 3), dtype=np.uint8)
            colour = rng.integers(60, 255, 3)
            if k == 0:
                img[::2] = colour
            else:
                img[:, ::2] = colour
            Image.fromarray(img).save(root / c / f"{i:03d}.png")
    return root


@pytest.fixture
def toy_data(tmp_path):
    return make_toy_folder(tmp_path / "toy")


def toy_config(tmp_path, data, **train):
    """A config dict for a ~60k-parameter UNet on 8x8 toy images."""
    return {
        "model": {"network": "tiny", "unet": dict(MICRO_UNET), "num_classes": 2},
        "objective": {"name": "edm"},
        "data": {"source": str(data), "image_size": 8, "cache_dir": str(tmp_path / "cache")},
        "train": {"output_dir": str(tmp_path / "run"), "batch_size": 8, "max_steps": 12, "checkpoint_every": 4,
                  "log_every": 1, "progress": False, "lr": 1e-3, **train},
    }

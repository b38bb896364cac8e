"""The shipped checkpoints load, describe themselves and sample."""
import json

import numpy as np

import genstudio
from genstudio.api import default_checkpoint, shipped_checkpoints


def test_default_checkpoint_loads_and_samples():
    folder = default_checkpoint()
    assert folder in shipped_checkpoints() and shipped_checkpoints()[0] == folder
    pipe = genstudio.load(folder, device="cpu")
    assert pipe.num_classes == 10 and pipe.image_shape == (3, 32, 32)
    images = pipe.sample(2, steps=3, seed=0, labels=[0, 1], guidance=2.0)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8 and images.std() > 5


def test_every_shipped_checkpoint_has_a_metrics_record():
    for folder in shipped_checkpoints():
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["training"]["images_seen"] > 0 and metrics["training"]["hardware"]
        assert (folder / "samples.png").is_file()

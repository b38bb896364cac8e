"""The shipped checkpoints load, describe themselves and sample."""
import json
import os

import numpy as np

import genstudio
from genstudio.api import default_checkpoint, shipped_checkpoints
from genstudio.evaluation.metrics import checkpoint_hash
from genstudio.evaluation.records import protocol_key
from genstudio.neon import BASE_SAMPLES


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


def test_every_shipped_checkpoint_samples_with_its_defaults():
    for folder in shipped_checkpoints():
        pipe = genstudio.load(folder, device="cpu")
        d = pipe.defaults()
        labels = [0, 1] if pipe.num_classes else None
        result = pipe.generate(2, steps=int(d["steps"]), seed=0, labels=labels)  # Blackout at 2 steps is flat grey
        assert result.images.shape == (2, 32, 32, 3) and result.images.std() > 5, folder.name


def test_shipped_folder_stays_under_100_mb():
    root = default_checkpoint().parent
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 100e6, f"checkpoints/ holds {total / 1e6:.1f} MB"


def test_recorded_scores_name_their_extractor():
    for folder in shipped_checkpoints():
        scores = json.loads((folder / "metrics.json").read_text()).get("scores") or []
        for record in scores:
            label = record["labels"]["fid"]
            assert record["extractor"] and ("c10" in label or "Inception" in label)
            assert record["protocol"]["n"] == record["n"] and record["protocol"]["extractor"]["weights_sha256"]


def test_a_shipped_neon_model_keeps_its_base_and_beats_it_on_every_shared_protocol():
    neon_models = [f for f in shipped_checkpoints() if "neon" in json.loads((f / "metrics.json").read_text())]
    assert neon_models, "ect_cifar10 ships as a Neon model"
    for folder in neon_models:
        card = json.loads((folder / "metrics.json").read_text())
        assert card["neon"]["base_sha256"] != checkpoint_hash(folder) and (folder / BASE_SAMPLES).is_file()
        base = {protocol_key(r): r["metrics"]["fid"] for r in card["base_scores"]}
        shared = [(base[protocol_key(r)], r["metrics"]["fid"]) for r in card["scores"] if protocol_key(r) in base]
        assert shared and all(ours < theirs for theirs, ours in shared), (folder.name, shared)


def test_shipped_classifier_classifies_the_offline_test_split():
    import pytest
    import torch

    from genstudio.data import load_images, offline_cifar10, to_model_range
    from genstudio.evaluation.classifier import default_classifier_path, load_classifier, read_classifier_meta

    data = offline_cifar10("test")
    if data is None:
        pytest.skip("no offline CIFAR-10 copy: set GENSTUDIO_DATA to the folder holding cifar10/test.tar.gz "
                    f"(GENSTUDIO_DATA={os.environ.get('GENSTUDIO_DATA')!r})")
    meta = read_classifier_meta(default_classifier_path())
    test = load_images(data, split="test")
    keep = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:500]
    model = load_classifier()
    with torch.no_grad():
        x = to_model_range(test.images[keep])
        logits = model(x) + model(x.flip(-1))
    acc = float((logits.argmax(1) == test.labels[keep]).float().mean())
    print(f"shipped classifier: {acc:.3f} on 500 test images (recorded on all 10k: {meta['test_accuracy']:.4f})")
    assert meta["test_accuracy"] >= 0.93  # the evaluator issue's bar, measured on all 10k at training time
    assert acc > 0.9 and abs(acc - meta["test_accuracy"]) < 0.04

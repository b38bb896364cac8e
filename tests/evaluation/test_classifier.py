"""The evaluator's CIFAR-10 classifier (genstudio.evaluation.classifier, .train_classifier): offline, tiny data."""
from __future__ import annotations

import pytest
import torch

from genstudio.evaluation.classifier import CifarResNet, ClassifierError, load_classifier, save_classifier
from genstudio.evaluation.train_classifier import (
    accuracy,
    augment,
    load_soft_targets,
    main,
    save_soft_targets,
    soft_targets,
    train,
)


def test_augment_translates_flips_and_cuts_out():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8, generator=g) + 1  # no zeros, so Cutout's holes can be counted
    plain = augment(x, g, pad=0)
    assert all(torch.equal(o, i) or torch.equal(o, i.flip(-1)) for o, i in zip(plain, x))
    assert 0 < sum(not torch.equal(o, i) for o, i in zip(plain, x)) < 64  # some flipped, not all
    holes = (augment(x, g, pad=0, cutout=3) == 0).all(1).sum((1, 2))
    assert holes.max() == 9 and holes.min() >= 1  # a 3x3 square, clipped where its centre is at the border
    shifted = augment(x, g, pad=2)
    assert shifted.shape == x.shape and not torch.equal(shifted, plain)


def _brightness_task(n: int = 256):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 96, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return images + (labels * 140).to(torch.uint8)[:, None, None, None], labels


@pytest.mark.parametrize("residual", [False, True])
def test_a_short_bf16_training_run_learns_a_separable_task_and_round_trips(tmp_path, residual):
    """Two classes told apart by brightness: the recipe must fit them (plain or residual blocks), and
    save/load must keep the architecture and the logits."""
    images, labels = _brightness_task()
    model = train(images, labels, epochs=10, batch_size=64, widths=(8, 16, 16), residual=residual, bf16=True,
                  log=lambda *_: None)
    assert accuracy(model, images, labels, tta=False) > 0.9 and accuracy(model, images, labels, bf16=False) > 0.9
    path = save_classifier(model, tmp_path / "clf.safetensors", {"test_accuracy": 1.0}, dtype=torch.float32)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    loaded = load_classifier(path)
    assert loaded.config["residual"] is residual
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_distillation_follows_the_teachers_soft_targets_and_init_continues_from_given_weights():
    images, labels = _brightness_task()
    quiet = dict(batch_size=64, widths=(8, 16, 16), log=lambda *_: None)
    teacher = train(images, labels, epochs=10, **quiet)
    probs = soft_targets(teacher, images)
    assert probs.shape == (256, 10) and torch.allclose(probs.sum(1), torch.ones(256))
    assert (probs.argmax(1) == labels).float().mean() > 0.9
    # a teacher that swaps the classes: with all the loss on its targets, the student learns the swap
    swapped = probs[:, [1, 0, *range(2, 10)]]
    student = train(images, labels, epochs=10, teacher_probs=swapped, distill=1.0, seed=1, **quiet)
    assert accuracy(student, images, 1 - labels) > 0.9
    # a second cycle at a vanishing learning rate keeps what the initial weights knew
    again = train(images, labels, epochs=1, lr=1e-9, init=teacher, seed=2, **quiet)
    assert again is teacher and accuracy(again, images, labels) > 0.9


def test_saved_soft_targets_round_trip_and_refuse_other_training_images(tmp_path):
    probs = torch.softmax(torch.randn(6, 10), 1)
    path = save_soft_targets(tmp_path / "probs.safetensors", probs, teacher_hash="t" * 64, train_hash="a" * 64)
    loaded, teacher = load_soft_targets(path, train_hash="a" * 64, n=6)
    assert torch.equal(loaded, probs) and teacher == "t" * 64
    with pytest.raises(ClassifierError, match="no soft targets for these 6"):
        load_soft_targets(path, train_hash="b" * 64, n=6)
    with pytest.raises(ClassifierError, match="no soft targets for these 5"):
        load_soft_targets(path, train_hash="a" * 64, n=5)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ClassifierError, match="not a soft-targets file"):
        load_soft_targets(path, train_hash="a" * 64, n=6)
    with pytest.raises(SystemExit):
        main(["--save-soft-targets", str(tmp_path / "x.safetensors")])


def test_a_time_budget_shortens_the_run_after_two_epochs():
    images, labels = _brightness_task(128)
    quiet = dict(batch_size=64, widths=(8, 16, 16), bf16=False)
    lines: list[str] = []
    short = train(images, labels, epochs=40, time_budget=0.0, log=lines.append, **quiet)
    assert short.epochs_trained == 2 and lines[-1].startswith("2 epochs fit the time budget")
    assert lines[1].startswith("epoch 2/40")
    assert train(images, labels, epochs=3, time_budget=1e6, log=lambda *_: None, **quiet).epochs_trained == 3
    assert train(images, labels, epochs=3, log=lambda *_: None, **quiet).epochs_trained == 3


def test_a_foreign_or_truncated_weights_file_is_a_clear_error(tmp_path):
    path = save_classifier(CifarResNet(widths=(8, 16, 16), stem=8, num_classes=2), tmp_path / "clf.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ClassifierError, match="not a readable safetensors file"):
        load_classifier(path)
    with pytest.raises(ClassifierError, match="no classifier weights"):
        load_classifier(tmp_path / "missing.safetensors")

"""The shipped checkpoints sample, edit and every family's objective scores exactly as they did when the golden
values were recorded (tests/golden/record.py): a refactor that changes any output fails here."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.golden import record

GOLDEN = json.loads(record.GOLDEN.read_text())
SAME_BUILD = GOLDEN["environment"] == record.environment()


def _check_images(name: str, got: dict, want: dict) -> None:
    assert got["nfe"] == want["nfe"], name
    if SAME_BUILD:
        assert got["sha256"] == want["sha256"], f"{name}: images changed"
        assert got["last_x_sha256"] == want["last_x_sha256"], f"{name}: the sampler's last state changed"
    else:  # another CPU or torch build rounds differently: one grey level at most
        diff = np.abs(record.unpack(got).astype(int) - record.unpack(want).astype(int))
        assert diff.max() <= 1, f"{name}: images moved by up to {diff.max()} grey levels"


@pytest.fixture(scope="module")
def sampled():
    return record.sampling_entries()


@pytest.mark.parametrize("name", sorted(GOLDEN["sampling"]))
def test_shipped_checkpoints_sample_as_recorded(sampled, name):
    _check_images(name, sampled[name], GOLDEN["sampling"][name])


def test_editing_verbs_as_recorded():
    got = record.editing_entries()
    assert set(got) == set(GOLDEN["editing"])
    for name, want in GOLDEN["editing"].items():
        _check_images(name, got[name], want)


def test_every_family_objective_as_recorded():
    got = record.loss_entries(record.compute_loss)
    assert set(got) == set(GOLDEN["losses"])
    for name, want in GOLDEN["losses"].items():
        a, b = float.fromhex(got[name]), float.fromhex(want)
        if SAME_BUILD:
            assert a == b, f"{name}: loss {a!r} != recorded {b!r}"
        else:
            assert a == pytest.approx(b, rel=1e-4), name

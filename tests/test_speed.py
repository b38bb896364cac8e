"""genstudio.speed: the per-device switches, and torch.compile's fallback to eager (here for the sampling API)."""
import numpy as np
import pytest
import torch
from torch import nn

import genstudio
from genstudio.speed import resolve
from tests.helpers import field_checkpoint


def test_auto_is_on_on_cuda_only_and_on_off_are_as_given():
    assert [resolve(s, "cpu") for s in ("auto", "on", "off")] == [False, True, False]
    assert [resolve(s, torch.device("cuda")) for s in ("auto", "on", "off")] == [True, True, False]
    with pytest.raises(ValueError, match="one of"):
        resolve("yes", "cpu")


def test_a_pipeline_whose_compile_fails_says_why_and_samples_eagerly_the_same(tmp_path, monkeypatch, capsys):
    pipe = genstudio.load(field_checkpoint(tmp_path), device="cpu")
    want = pipe.sample(2, seed=3)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(nn.Module, "compile", lambda self: setattr(self, "_compiled_call_impl", broken))
    assert pipe.compile() is False
    err = capsys.readouterr().err
    assert "torch.compile of the field_ckpt network failed (RuntimeError: no C++ compiler here)" in err
    assert np.array_equal(pipe.sample(2, seed=3), want)

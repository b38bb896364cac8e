"""The training fast path: reading losses and flags back every N steps changes no number and keeps the
skip-on-non-finite guarantee; channels_last resumes exactly; a failed torch.compile falls back to eager."""
import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from genstudio.config import config_from_dict
from genstudio.train import NonFiniteLossError, latest_checkpoint, run
from genstudio.train.fast import fast_path
from tests.helpers import toy_config
from tests.train.runs import losses, patch_objective, wrap_objective


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _run(tmp_path, toy_data, name, **train):
    cfg = toy_config(tmp_path, toy_data, **train)
    cfg["train"]["output_dir"] = str(tmp_path / name)
    run(config_from_dict(cfg))
    return tmp_path / name


def test_reading_back_every_5_steps_changes_no_number_and_still_skips_a_nan_step(tmp_path, toy_data, monkeypatch):
    patch_objective(monkeypatch, {6, 16})  # calls 6 and 16: the two runs' step 6
    every = _run(tmp_path, toy_data, "every", max_steps=10, sync_every=1)
    fifth = _run(tmp_path, toy_data, "fifth", max_steps=10, sync_every=5)
    a, b = _records(every), _records(fifth)
    assert [r["skipped"] for r in b] == [i == 6 for i in range(1, 11)] == [r["skipped"] for r in a]
    assert [repr(r["loss"]) for r in a] == [repr(r["loss"]) for r in b]  # the same floats, NaN included
    ema_a, ema_b = (load_file(str(latest_checkpoint(d) / "ema.safetensors")) for d in (every, fifth))
    assert all(torch.equal(ema_a[k], ema_b[k]) and torch.isfinite(ema_b[k]).all() for k in ema_a)


def test_a_nan_streak_between_readbacks_halts_and_keeps_the_last_good_checkpoint(tmp_path, toy_data, monkeypatch):
    patch_objective(monkeypatch, set(range(7, 100)))
    with pytest.raises(NonFiniteLossError, match="3 non-finite steps in a row.*step_00000004"):
        _run(tmp_path, toy_data, "run", max_steps=12, max_nonfinite=3, keep_checkpoints=1, sync_every=5)
    assert latest_checkpoint(tmp_path / "run").name == "step_00000004"


def test_channels_last_with_readback_every_3_resumes_exactly(tmp_path, toy_data):
    fast = {"channels_last": "on", "sync_every": 3, "checkpoint_every": 4}
    want = losses(_run(tmp_path, toy_data, "straight", max_steps=12, **fast))
    _run(tmp_path, toy_data, "cut", max_steps=8, **fast)
    cfg = toy_config(tmp_path, toy_data, max_steps=12, **fast)
    cfg["train"]["output_dir"] = str(tmp_path / "cut")
    run(config_from_dict(cfg), resume=True)
    assert losses(tmp_path / "cut") == want


def test_a_failed_compile_says_so_and_trains_eagerly(tmp_path, toy_data, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(nn.Module, "compile", lambda self: setattr(self, "_compiled_call_impl", broken))
    out = _run(tmp_path, toy_data, "run", max_steps=4, compile="on")
    err = capsys.readouterr().err
    assert "torch.compile of the network failed (RuntimeError: no C++ compiler here)" in err
    assert 'train.compile = "off"' in err and sorted(losses(out)) == [1, 2, 3, 4]


def test_the_auto_settings_per_device():
    cfg = config_from_dict({})
    cpu, gpu = fast_path(cfg, torch.device("cpu"), "no"), fast_path(cfg, torch.device("cuda"), "bf16")
    assert (cpu.compile, cpu.channels_last, cpu.sync_every) == (False, False, 1)
    assert (gpu.compile, gpu.channels_last, gpu.sync_every) == (True, True, 50)
    assert fast_path(cfg, torch.device("cuda"), "fp16").sync_every == 1  # its loss scaler decides on the host
    off = config_from_dict({"train": {"compile": "off", "channels_last": "off", "sync_every": 7}})
    assert fast_path(off, torch.device("cuda"), "bf16") == type(gpu)("bf16", False, False, 7)


def test_per_group_losses_are_read_back_into_the_log(tmp_path, toy_data, monkeypatch):
    def two_groups(loss, model, batch, **kw):
        return {"a": loss(model, batch, **kw), "b": batch.x0[:, 0, 0, 0]}
    wrap_objective(monkeypatch, two_groups)
    out = _run(tmp_path, toy_data, "run", max_steps=4, sync_every=3)
    for r in _records(out):
        assert r["loss"] == pytest.approx(r["loss_a"] + r["loss_b"], rel=1e-6) and r["loss_a"] > 0

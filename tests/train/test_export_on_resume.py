"""A kill around the export (before it, between the two renames of the model/ swap, after the swap) is
finished by the next start and --resume, also at max_steps. The kill is os._exit in a child process at the
exact call, never a timed signal."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import genstudio.train as train_mod
from genstudio.checkpoint import load_model
from genstudio.config import config_from_dict
from genstudio.train import EXIT_OK, latest_checkpoint, run
from tests.helpers import ROOT, toy_config
from tests.train.runs import losses, model_step, write_toml

_KILLED_EXPORT = r"""
import os, sys
import genstudio.train.loop as loop

kill_step, window = int(sys.argv[1]), sys.argv[2]
real_export, real_replace = loop.export_model, os.replace
exporting = []

def export_model(model, folder, training=None, **kw):
    if training["steps"] == kill_step:
        if window == "before-export":  # the checkpoint is renamed into place, model/ not yet touched
            os._exit(9)
        exporting.append(1)
    try:
        return real_export(model, folder, training=training, **kw)
    finally:
        exporting.clear()

def replace(src, dst):
    real_replace(src, dst)
    if exporting and window == "between-renames" and os.path.basename(src) == "model":
        os._exit(9)  # model/ moved aside, the new one not yet in place: no model/ at all
    if exporting and window == "after-swap" and os.path.basename(dst) == "model":
        os._exit(9)  # the new model/ in place, the old one left as .old-model-*

os.replace, loop.export_model = replace, export_model
from genstudio.train import main
sys.exit(main(sys.argv[3:]))
"""


def _run_killed(cfg_path, kill_step, window):
    res = subprocess.run([sys.executable, "-c", _KILLED_EXPORT, str(kill_step), window, "--config", str(cfg_path)],
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 9, res.stderr[-3000:]  # killed where asked, not by an error


@pytest.mark.parametrize("window, model_left", [
    ("before-export", 10),       # model/ stale at step 10
    ("between-renames", None),   # no model/ at all (.old-model-* at 10, .tmp-model-* at 20)
    ("after-swap", 20),          # model/ at 20, a stale .old-model-* beside it
])
def test_a_kill_in_the_last_export_is_finished_by_resume_at_max_steps(tmp_path, toy_data, window, model_left,
                                                                      capsys):
    cfg_path = write_toml(tmp_path / "c.toml", toy_config(tmp_path, toy_data, max_steps=20, checkpoint_every=10))
    run_dir = tmp_path / "run"
    _run_killed(cfg_path, 20, window)
    assert latest_checkpoint(run_dir).name == "step_00000020"
    assert (model_step(run_dir) if (run_dir / "model").is_dir() else None) == model_left
    assert any(p.name.startswith((".tmp-model-", ".old-model-")) for p in run_dir.iterdir()) == (
        window != "before-export")

    assert train_mod.main(["--config", str(cfg_path), "--resume"]) == EXIT_OK  # nothing left to train
    out = capsys.readouterr().out
    assert model_step(run_dir) == 20 and load_model(run_dir / "model")[1]["training"]["steps"] == 20
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no .tmp-/.old- left
    assert ("exporting the step 20 checkpoint's EMA" in out) == (window == "before-export"), out
    ema = load_file(str(run_dir / "checkpoints" / "step_00000020" / "ema.safetensors"))
    exported = load_model(run_dir / "model")[0].state_dict()  # model/ is that checkpoint's EMA
    assert set(exported) == set(ema) and all(torch.equal(exported[k], v) for k, v in ema.items())


def test_a_kill_before_the_first_export_is_exported_on_resume_and_the_run_goes_on(tmp_path, toy_data, capsys):
    cfg = toy_config(tmp_path, toy_data, max_steps=20, checkpoint_every=10)
    cfg["train"]["output_dir"] = str(tmp_path / "straight")
    run(config_from_dict(cfg))
    cfg["train"]["output_dir"] = str(tmp_path / "run")
    cfg_path = write_toml(tmp_path / "c.toml", cfg)
    _run_killed(cfg_path, 10, "before-export")
    assert latest_checkpoint(tmp_path / "run").name == "step_00000010" and not (tmp_path / "run" / "model").exists()
    assert train_mod.main(["--config", str(cfg_path), "--resume"]) == EXIT_OK
    assert "model is missing: exporting the step 10 checkpoint's EMA" in capsys.readouterr().out
    assert model_step(tmp_path / "run") == 20
    assert losses(tmp_path / "run") == losses(tmp_path / "straight")  # the export on resume changes no step


def test_a_resume_of_a_finished_run_with_its_model_exported_does_nothing(tmp_path, toy_data, capsys):
    cfg = config_from_dict(toy_config(tmp_path, toy_data, max_steps=4))
    run(cfg)
    meta = (tmp_path / "run" / "model" / "genstudio.json").read_bytes()
    capsys.readouterr()
    assert run(cfg, resume=True)["step"] == 4
    assert "exporting" not in capsys.readouterr().out
    assert (tmp_path / "run" / "model" / "genstudio.json").read_bytes() == meta

"""A stop request (SIGTERM/SIGINT) is prompt, even mid sample grid, checkpoints, and exits 3 before max_steps
(0 at it). The signal is sent from inside the sampler or the loss at a chosen call, never by timing."""
from __future__ import annotations

import os
import signal

import pytest

import genstudio.api as api_mod
import genstudio.train as train_mod
from genstudio.train import EXIT_OK, EXIT_STOPPED
from tests.helpers import ROOT, toy_config
from tests.train.runs import losses, model_step, steps_of, wrap_objective, write_toml


def _signal_in_sampler(monkeypatch, at_call):
    """SIGTERM this process from inside the sampler, at its `at_call`-th step callback of the run; counts the
    sampler steps (callback calls) made after it."""
    seen = {"calls": 0, "after": 0}
    real = api_mod.run_sampler

    def spy(spec, field, z, ts, callback=None, **kw):
        def wrapped(**info):
            seen["calls"] += 1
            if seen["calls"] == at_call:
                os.kill(os.getpid(), signal.SIGTERM)
            elif seen["calls"] > at_call:
                seen["after"] += 1
            if callback is not None:
                callback(**info)
        return real(spec, field, z, ts, callback=wrapped, **kw)
    monkeypatch.setattr(api_mod, "run_sampler", spy)
    return seen


def test_sigterm_during_a_sample_grid_stops_at_the_next_sampler_step(tmp_path, toy_data, monkeypatch, capsys):
    cfg_path = write_toml(tmp_path / "c.toml", toy_config(tmp_path, toy_data, max_steps=12, checkpoint_every=100,
                                                          sample_every=4, sample_count=4))
    seen = _signal_in_sampler(monkeypatch, at_call=3)  # 3 of the grid's 18 Heun steps
    handler = signal.getsignal(signal.SIGTERM)
    assert train_mod.main(["--config", str(cfg_path)]) == EXIT_STOPPED
    out = capsys.readouterr().out
    assert seen["after"] == 0 and seen["calls"] == 3  # not one sampler step more
    assert "the step 4 sample grid was abandoned" in out and "checkpoint saved at step 4" in out
    assert steps_of(tmp_path / "run") == [4] and model_step(tmp_path / "run") == 4
    assert not (tmp_path / "run" / "samples" / "step_00000004.png").exists()  # no half grid
    assert signal.getsignal(signal.SIGTERM) == handler  # the handler is put back

    monkeypatch.undo()
    assert train_mod.main(["--config", str(cfg_path), "--resume"]) == EXIT_OK
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step_00000008.png",
                                                                                  "step_00000012.png"]
    assert sorted(losses(tmp_path / "run")) == list(range(1, 13)) and model_step(tmp_path / "run") == 12


def _signal_in_loss(monkeypatch, at_step):
    calls = []

    def term_at(loss, model, batch, **kw):
        calls.append(1)
        if len(calls) == at_step:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss(model, batch, **kw)
    wrap_objective(monkeypatch, term_at)


@pytest.mark.parametrize("at_step, code, saved, grids", [
    (5, EXIT_STOPPED, [5], ["step_00000004.png"]),  # mid-run: checkpoint at 5, exit 3
    (4, EXIT_STOPPED, [4], []),          # at a grid step: no grid, checkpoint, exit 3
    (12, EXIT_OK, [12], ["step_00000004.png", "step_00000008.png"]),  # during the last step: finished, exit 0
])
def test_a_stop_request_exits_3_before_max_steps_and_0_at_it(tmp_path, toy_data, monkeypatch, capsys, at_step, code,
                                                             saved, grids):
    cfg_path = write_toml(tmp_path / "c.toml", toy_config(tmp_path, toy_data, max_steps=12, checkpoint_every=100,
                                                          sample_every=4, sample_count=2, sample_steps=2))
    _signal_in_loss(monkeypatch, at_step)
    assert train_mod.main(["--config", str(cfg_path)]) == code
    assert steps_of(tmp_path / "run") == saved and model_step(tmp_path / "run") == saved[-1]
    samples = tmp_path / "run" / "samples"
    assert (sorted(p.name for p in samples.iterdir()) if samples.exists() else []) == grids
    assert ("continue with --resume" in capsys.readouterr().out) == (code == EXIT_STOPPED)


def test_the_exit_codes_are_documented():
    doc = (ROOT / "docs" / "training.md").read_text().lower()
    for text in ("exit status", "| 0 |", "| 2 |", "| 3 |"):
        assert text in doc, text
    assert "3  stopped by SIGTERM/SIGINT before train.max_steps" in train_mod.__doc__

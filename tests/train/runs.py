"""Helpers shared by the trainer's tests: readers of a run folder, config files, the train command, and
objectives wrapped to see (or spoil) every loss."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import genstudio.train.setup as train_setup
from genstudio.atomic import read_jsonl
from tests.helpers import ROOT


def steps_of(run_dir) -> list[int]:
    """The steps of the checkpoints a run folder holds."""
    return sorted(int(p.name[5:]) for p in (Path(run_dir) / "checkpoints").glob("step_*"))


def model_step(run_dir) -> int:
    """The step of the model exported in run_dir/model."""
    return json.loads((Path(run_dir) / "model" / "genstudio.json").read_text())["training"]["steps"]


def losses(run_dir) -> dict[int, float]:
    return {rec["step"]: rec["loss"] for rec in read_jsonl(Path(run_dir) / "metrics.jsonl")}


def write_toml(path, cfg):
    import tomli_w

    path.write_text(tomli_w.dumps(cfg))
    return path


def train_cmd(config_path, *extra):
    return [sys.executable, "-m", "genstudio.train", "--config", str(config_path), *extra]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


class Wrapped:
    """An objective with its `loss` seen by `on_loss(inner_loss, model, batch, **kw)`; everything else delegated."""

    def __init__(self, inner, on_loss):
        self.inner, self.on_loss = inner, on_loss

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def loss(self, model, batch, **kw):
        return self.on_loss(self.inner.loss, model, batch, **kw)


def wrap_objective(monkeypatch, on_loss):
    real = train_setup.build_from_config

    def build(config):
        model, objective = real(config)
        return model, Wrapped(objective, on_loss)
    monkeypatch.setattr(train_setup, "build_from_config", build)


def patch_objective(monkeypatch, bad_calls):
    """Make the objective return NaN on chosen calls (one call per step here)."""
    calls = []

    def nan_at(loss, model, batch, **kw):
        calls.append(1)
        out = loss(model, batch, **kw)
        return out * float("nan") if len(calls) in bad_calls else out
    wrap_objective(monkeypatch, nan_at)

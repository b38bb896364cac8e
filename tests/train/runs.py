"""Small readers of a run folder, shared by the trainer's tests."""
from __future__ import annotations

import json
from pathlib import Path


def steps_of(run_dir) -> list[int]:
    """The steps of the checkpoints a run folder holds."""
    return sorted(int(p.name[5:]) for p in (Path(run_dir) / "checkpoints").glob("step_*"))


def model_step(run_dir) -> int:
    """The step of the model exported in run_dir/model."""
    return json.loads((Path(run_dir) / "model" / "genstudio.json").read_text())["training"]["steps"]

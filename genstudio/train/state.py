"""Save and resume: a run folder's checkpoints (Accelerate's state + the EMA + a JSON state), written into a
temporary folder and renamed into place, pruned to the last K, with the EMA exported beside them as model/.
The export is part of what a resume completes: a model/ missing, or at another step than the latest checkpoint
(a kill between the checkpoint's rename and the export), is exported again from that checkpoint's EMA."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from genstudio.atomic import fsync_tree, read_jsonl, recover_folder, write_json, write_text
from genstudio.config import Config, ConfigError
from genstudio.nets import CheckpointError

RUN_CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"
LOG_FILE = "metrics.jsonl"
MODEL_DIR = "model"


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class Progress:
    """What a checkpoint records beside the weights."""
    step: int = 0
    wall_time_s: float = 0.0
    nonfinite_streak: int = 0
    skipped_steps: int = 0  # updates skipped (non-finite loss or gradient) in steps 1..step


def latest_checkpoint(output_dir: Path) -> Path | None:
    done = sorted((Path(output_dir) / RUN_CHECKPOINTS).glob("step_*"))
    done = [p for p in done if (p / STATE_FILE).is_file()]
    return done[-1] if done else None


def remove_interrupted_saves(output_dir: Path) -> list[str]:
    """Remove half-written checkpoints, and repair a model/ swap a kill interrupted (see
    genstudio.atomic.recover_folder); returns one line per repair. The main process calls it at start."""
    for stale in (output_dir / RUN_CHECKPOINTS).glob(".tmp-step_*"):
        shutil.rmtree(stale, ignore_errors=True)
    return recover_folder(output_dir / MODEL_DIR, owner=True)


def exported_step(output_dir: Path) -> int | None:
    """The step of the model exported in output_dir/model, in this run's own count (None: none there, or
    unreadable)."""
    try:
        training = json.loads((output_dir / MODEL_DIR / "genstudio.json").read_text())["training"]
        return int((training.get("lineage") or [training])[-1]["steps"])  # this run's segment
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resume(accelerator, ema, config: Config, output_dir: Path) -> Progress | None:
    """Load the latest checkpoint of `output_dir` into the prepared objects and the EMA; None if there is none."""
    ckpt = latest_checkpoint(output_dir)
    if ckpt is None:
        return None
    state = json.loads((ckpt / STATE_FILE).read_text())
    saved, ours = state.get("model_config"), config.to_dict()["model"]
    if saved is not None and saved != ours:
        raise ConfigError(f"cannot resume {ckpt}: it was trained with [model] {saved}, not {ours}")
    try:
        accelerator.load_state(str(ckpt))
        ema.model.load_state_dict(load_file(str(ckpt / EMA_FILE), device=str(accelerator.device)))
    except Exception as e:  # torch/safetensors errors: say which checkpoint and what broke
        raise CheckpointError(f"cannot resume from {ckpt}: {type(e).__name__}: {e}") from None
    accelerator.print(f"resumed from {ckpt} at step {state['step']}")
    return Progress(state["step"], state.get("wall_time_s", 0.0), state.get("nonfinite_streak", 0),
                    state.get("skipped_steps", 0))


def save(accelerator, ema, config: Config, output_dir: Path, progress: Progress, images_seen: int,
         export) -> None:
    """Checkpoint at progress.step: save_state into a temporary folder, then one rename; prune to the last K;
    then `export()` (the main process writes model/). Every process calls it."""
    root = output_dir / RUN_CHECKPOINTS
    step = progress.step
    final, tmp = root / f"step_{step:08d}", root / f".tmp-step_{step:08d}"
    ema_state = {k: v.detach().contiguous() for k, v in ema.model.state_dict().items()}
    if not all(bool(torch.isfinite(v).all()) for v in ema_state.values() if v.is_floating_point()):
        raise NonFiniteLossError(f"refusing to save non-finite EMA weights at step {step}")  # every rank stops here
    main = accelerator.is_main_process
    accelerator.wait_for_everyone()
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if main:
        save_file(ema_state, str(tmp / EMA_FILE))
        write_json(tmp / STATE_FILE, {"step": step, "images_seen": images_seen, "wall_time_s": progress.wall_time_s,
                                      "nonfinite_streak": progress.nonfinite_streak,
                                      "skipped_steps": progress.skipped_steps,
                                      "model_config": config.to_dict()["model"]})
        fsync_tree(tmp)  # durable before it becomes visible
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        fsync_tree(root, files=False)
        for old in sorted(root.glob("step_*"))[:-config.train.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        export()
    accelerator.wait_for_everyone()


def append_log(output_dir: Path, record: dict[str, Any]) -> None:
    with open(output_dir / LOG_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_log(output_dir: Path, step: int) -> None:
    """Drop log lines past the step a run resumes from, so the log reads as one run."""
    path = output_dir / LOG_FILE
    if path.exists():
        write_text(path, "".join(json.dumps(r) + "\n" for r in read_jsonl(path) if r["step"] <= step))

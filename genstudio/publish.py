"""Ship a training run as a checkpoint folder with its card: the exported model, a sample grid
(`samples.png`) and `metrics.json` (how it was trained, with its lineage, how fast it samples, what it scored).
The scores are added later by the evaluator (genstudio.evaluation.records.record_scores). Optionally the weights
are stored as float16 and the run's compact optimizer state (genstudio.train.continued) goes along, for
continuing the model elsewhere."""
from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import torch

from .api import Pipeline
from .atomic import atomic_folder, read_jsonl, write_json
from .checkpoint import load_model
from .images import image_grid, save_png
from .lineage import segments

OPTIMIZER_DIR = "optimizer"  # genstudio.train.continued.OPTIMIZER_DIR (the train layer sits beside this one)


def _loss_summary(run_dir: Path, last: int = 200) -> dict[str, Any]:
    """From the run's log: the mean loss of the last good steps, and how many steps were skipped."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    recs = {rec["step"]: rec for rec in read_jsonl(path)}
    tail = [r["loss"] for _, r in sorted(recs.items())[-last:] if not r.get("skipped")]
    return {f"mean_loss_last_{len(tail)}_steps": sum(tail) / max(len(tail), 1),
            "skipped_steps": sum(bool(r.get("skipped")) for r in recs.values())}


def half_weights(folder: Path) -> None:
    """Store every floating-point weight of a checkpoint's components as float16 (they load as float32)."""
    from safetensors.torch import load_file, save_file

    for f in sorted(p for d in folder.iterdir() if d.is_dir() and d.name != OPTIMIZER_DIR
                    for p in d.glob("*.safetensors")):
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(f)).items()}
        save_file(tensors, str(f), metadata={"format": "pt"})


def publish(run_dir: str | Path, dest: str | Path, grid_images: int = 100, timing_images: int = 16,
            fp16: bool = False, optimizer: bool = False) -> Path:
    """Copy run_dir/model to dest and write samples.png and metrics.json beside it; `fp16`: weights stored as
    float16; `optimizer`: the run's compact optimizer state too (dest/optimizer/, for `genstudio train
    --continue`)."""
    run_dir, dest = Path(run_dir), Path(dest)
    source = run_dir / "model" if (run_dir / "model").is_dir() else run_dir
    load_model(source)  # refuse to publish anything that does not load
    opt = next((d for d in (run_dir / OPTIMIZER_DIR, source / OPTIMIZER_DIR) if d.is_dir()), None)
    if optimizer and opt is None:
        raise FileNotFoundError(f"{run_dir} has no {OPTIMIZER_DIR}/ (a run writes one at each checkpoint)")
    with atomic_folder(dest) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(OPTIMIZER_DIR))
        if fp16:
            half_weights(tmp)
        if optimizer and opt is not None:
            shutil.copytree(opt, tmp / OPTIMIZER_DIR)
        pipe = Pipeline.load(tmp, device="cpu")
        classes = pipe.num_classes
        guidance = 2.0 if classes else 1.0
        grid = pipe.generate(grid_images, seed=0, guidance=guidance,
                             labels=[i % classes for i in range(grid_images)] if classes else None)
        save_png(image_grid(grid.images, nrow=10), tmp / "samples.png")
        pipe.generate(2, steps=2)  # warm-up
        timing = pipe.generate(timing_images, seed=1000, guidance=guidance,
                               labels=[i % classes for i in range(timing_images)] if classes else None)
        training = {k: v for k, v in pipe.meta.get("training", {}).items() if k != "config"}
        if "lineage" in training:  # the card's lineage: every segment but its config (genstudio.json has them)
            training["lineage"] = [{k: v for k, v in s.items() if k != "config"} for s in segments(training)]
        logged = _loss_summary(run_dir)  # skipped_steps: the model's own record if it has one, else the log's
        metrics = {
            "training": {**training, **{k: v for k, v in logged.items() if k not in training}},
            "sampling": {"sampler": timing.sampler, "steps": timing.steps, "grid": timing.grid, "nfe": timing.nfe,
                         "guidance": guidance, "images": timing_images, "seconds": round(timing.seconds, 2),
                         "device": "cpu", "torch_threads": torch.get_num_threads(),
                         "note": "with guidance != 1 each evaluation runs the network on a doubled batch"},
            "samples_png": {"seed": 0, "guidance": guidance, "sampler": grid.sampler, "steps": grid.steps,
                            "labels": "image i has label i % num_classes (one class per column)" if classes else None},
            "scores": [],  # FID/IS with the offline classifier extractor: filled in by the evaluator
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        write_json(tmp / "metrics.json", metrics)
    return dest

"""The studio's models: a small cache of loaded pipelines, and each checkpoint's card."""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from genstudio.api import Pipeline

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PLOT_NAMES = ("sweep.png", "fid_vs_nfe.png", "fid_nfe.png")  # an FID-vs-NFE plot in a checkpoint folder


class Models:
    """Checkpoints offered in the studio, loaded on first use and kept (at most `max_loaded`, least recent out)."""

    def __init__(self, checkpoints: list[str | Path], device: str = "cpu", max_loaded: int = 4):
        if not checkpoints:
            raise ValueError("no checkpoints to serve: pass --checkpoint DIR (a folder with genstudio.json)")
        self.checkpoints = [str(Path(c)) for c in checkpoints]
        self.device, self.max_loaded = device, max_loaded
        self._loaded: OrderedDict[str, Pipeline] = OrderedDict()
        self._lock = threading.Lock()

    def resolve(self, value: Any) -> Path:
        """The checkpoint folder for a dropdown value (a listed checkpoint or a typed path)."""
        if not isinstance(value, str) or not value.strip():
            raise gr.Error("choose a model: a listed checkpoint or the path of a checkpoint folder")
        if len(value) > 4096 or "\x00" in value:
            raise gr.Error("that model path is not a usable path")
        path = Path(value.strip()).expanduser()
        if not path.is_dir():
            raise gr.Error(f"model {value!r}: no such folder; choose a listed checkpoint or a checkpoint folder")
        if not (path / "genstudio.json").is_file():
            run = (path / "model" / "genstudio.json").is_file()
            hint = " (a training run? use its model/ subfolder)" if run else ""
            raise gr.Error(f"model {value!r} is not a genstudio checkpoint: genstudio.json is missing{hint}")
        return path.resolve()

    def get(self, value: Any) -> Pipeline:
        path = self.resolve(value)
        key = str(path)
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            try:
                pipe = Pipeline.load(path, device=self.device)
            except (ValueError, OSError) as e:
                raise gr.Error(f"could not load {value!r}: {e}") from None
            pipe.model.eval()
            self._loaded[key] = pipe
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
            return pipe


def class_names(pipe: Pipeline) -> list[str]:
    n = pipe.num_classes
    names = pipe.meta.get("class_names")
    if isinstance(names, list) and len(names) == n:
        return [str(v) for v in names]
    return CIFAR10_CLASSES if n == 10 else [f"class {k}" for k in range(n)]


def read_png(path: Path) -> np.ndarray | None:
    """A checkpoint's PNG as an array (returned as data, so no file outside the app's folders is served)."""
    if not path.is_file() or path.stat().st_size > 20 * 2**20:
        return None
    try:
        with Image.open(path) as im:
            if im.size[0] * im.size[1] > 4096 * 4096:
                return None
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError):
        return None


def read_metrics(folder: Path) -> dict[str, Any]:
    f = folder / "metrics.json"
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        return {"error": f"metrics.json is unreadable: {e}"}
    return data if isinstance(data, dict) else {"metrics": data}


def _extractors(obj: Any) -> set[str]:
    """Every value under an 'extractor' key anywhere in obj."""
    found: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "extractor" and isinstance(v, (str, dict)):
                found.add(v if isinstance(v, str) else str(v.get("name", v)))
            else:
                found |= _extractors(v)
    elif isinstance(obj, list):
        for v in obj:
            found |= _extractors(v)
    return found


def _score_rows(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Flatten the numeric scores of metrics.json into (name, value) rows."""
    rows: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            rows += _score_rows(v, f"{prefix}{k}." if not isinstance(v, (int, float)) else f"{prefix}{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:20]):
            rows += _score_rows(v, f"{prefix}{i}.")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        rows.append((prefix.rstrip("."), obj))
    return rows


def card(pipe: Pipeline, folder: Path) -> tuple[str, np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """(markdown card, sample grid, FID-vs-NFE plot, metrics.json) of a checkpoint."""
    info, metrics = pipe.info(), read_metrics(folder)
    training = {**info.get("training", {}), **metrics.get("training", {})}
    classes = f"{info['num_classes']} classes, classifier-free guidance" if info["num_classes"] else "unconditional"
    d = info["defaults"]
    lines = [
        f"### {info['name']}",
        f"- **family**: {info['family']} ({pipe.model.kind} model, {info['prediction']} prediction, "
        f"path {json.dumps(info['path'])}, preconditioning {json.dumps(info['precond'])})",
        f"- **folder**: `{folder}`",
        f"- **parameters**: {info['parameters']:,}",
        f"- **conditioning**: {classes}",
        f"- **default sampling**: {d['sampler']}, {d['steps']} steps, {d['grid']} grid",
        f"- **samplers**: {', '.join(info['samplers'])}",
    ]
    if training:
        keys = ("steps", "images_seen", "wall_time_s", "hardware", "processes", "mean_loss_last_200_steps", "note")
        summary = "; ".join(f"{k} {training[k]}" for k in keys if k in training)
        lines.append(f"- **training**: {summary or 'recorded (see metrics)'}")
    else:
        lines.append("- **training**: not recorded")
    sampling = metrics.get("sampling")
    if isinstance(sampling, dict) and sampling:
        lines.append("- **sampling speed**: " + ", ".join(f"{k} {v}" for k, v in sampling.items() if k != "note"))
    scores = metrics.get("scores")
    rows = [] if isinstance(scores, list) or not scores else _score_rows(scores)
    if isinstance(scores, list) and scores:  # records of genstudio.publish.record_scores: one row each
        lines.append(f"- **scores** (extractor: {', '.join(sorted(_extractors(scores))) or 'not recorded'}):")
        names = sorted({k for r in scores for k in r.get("metrics", {})})
        lines += ["", "| sampler | steps | NFE | guidance | n | " + " | ".join(names) + " |",
                  "| --- " * (5 + len(names)) + "|"]
        for r in scores[:40]:
            vals = [f"{v:.4g}" if isinstance(v := r.get("metrics", {}).get(k), (int, float)) else "" for k in names]
            lines.append(f"| {r.get('sampler')} | {r.get('steps')} | {r.get('nfe')} | {r.get('guidance')} | "
                         f"{r.get('n')} | " + " | ".join(vals) + " |")
    elif rows:
        ex = _extractors(scores)
        lines.append(f"- **scores** (extractor: {', '.join(sorted(ex)) if ex else 'not recorded'}):")
        lines += ["", "| metric | value |", "| --- | --- |"] + [f"| {k} | {v:.4g} |" for k, v in rows[:40]]
    else:
        lines.append("- **scores**: none recorded yet (metrics.json has no FID/IS)")
    plot = next((read_png(folder / n) for n in PLOT_NAMES if (folder / n).is_file()), None)
    if plot is None:
        lines.append("- **FID vs NFE**: no sweep plot in this folder")
    return "\n".join(lines), read_png(folder / "samples.png"), plot, metrics

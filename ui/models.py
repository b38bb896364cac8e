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

    def label(self, checkpoint: str | Path) -> str:
        """A checkpoint's name in the lists: its folder's name (a run's model/: the run's name)."""
        path = Path(checkpoint)
        name = path.parent.name if path.name == "model" else path.name
        same = [c for c in self.checkpoints if Path(c).name == path.name and c != str(path)]
        return f"{name} ({path.parent.name})" if same and path.name != "model" else name

    def choices(self) -> list[tuple[str, str]]:
        """(name, folder) pairs for a dropdown: the name shown, the folder's path its value."""
        return [(self.label(c), c) for c in self.checkpoints]

    def add(self, checkpoint: str | Path) -> str:
        """Offer one more checkpoint folder (e.g. one just exported); returns its value in the lists."""
        value = str(Path(checkpoint))
        key = str(self.resolve(value))  # a checkpoint folder, or a gr.Error
        with self._lock:
            self._loaded.pop(key, None)  # exported again: load the new weights
            if value not in self.checkpoints:
                self.checkpoints.append(value)
        return value

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
                found.add(v if isinstance(v, str) else str(v.get("label", v.get("name", v))))
            else:
                found |= _extractors(v)
    elif isinstance(obj, list):
        for v in obj:
            found |= _extractors(v)
    return found


MAX_ROWS = 40


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _cell(v: Any) -> str:
    """A value as a table cell: numbers to 4 significant digits, lists of scalars joined, pipes escaped."""
    if isinstance(v, float):
        text = f"{v:.4g}"
    elif isinstance(v, list) and all(_scalar(x) for x in v):
        text = ", ".join(_cell(x) for x in v[:12]) + (", ..." if len(v) > 12 else "")
    elif _scalar(v):
        text = "" if v is None else str(v)
    else:
        text = json.dumps(v, default=str)
        text = text if len(text) <= 80 else text[:77] + "..."
    return text.replace("|", "\\|").replace("\n", " ")


def _flat(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A nested dict as (dotted key, value) rows; lists of records are counted, not spelled out."""
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += _flat(v, f"{prefix}{k}.")
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            rows.append((f"{prefix}{k}", f"{len(v)} records (in the raw metrics.json)"))
        else:
            rows.append((f"{prefix}{k}", v))
    return rows


def records_table(records: list[dict[str, Any]]) -> list[str]:
    """A markdown table of records: one column per scalar field, and per number of a field holding numbers
    (e.g. "metrics": {"fid": ...} gives metrics.fid); nested protocols stay in the raw JSON."""
    columns: list[str] = []
    for r in records:
        for k, v in r.items():
            if _scalar(v):
                names = [k]
            elif isinstance(v, dict) and v and all(isinstance(x, (int, float)) for x in v.values()):
                names = [f"{k}.{kk}" for kk in v]
            else:
                continue
            columns += [c for c in names if c not in columns]

    def get(r: dict[str, Any], col: str) -> Any:
        if col in r:
            return r[col]
        head, _, tail = col.partition(".")
        return r.get(head, {}).get(tail) if isinstance(r.get(head), dict) else None

    lines = ["| " + " | ".join(columns) + " |", "| --- " * len(columns) + "|"]
    lines += ["| " + " | ".join(_cell(get(r, c)) for c in columns) + " |" for r in records[:MAX_ROWS]]
    if len(records) > MAX_ROWS:
        lines.append(f"\n({len(records) - MAX_ROWS} more in the raw metrics.json)")
    return lines


def section_table(value: Any) -> list[str]:
    """One metrics.json section as readable markdown: a list of records as a table with a row each, a table of
    keys as a key | value table (nested keys dotted), anything else as one line."""
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        return records_table(value)
    if isinstance(value, dict) and value:
        rows = _flat(value)
        lines = ["| key | value |", "| --- | --- |"] + [f"| {k} | {_cell(v)} |" for k, v in rows[:MAX_ROWS]]
        return lines + ([f"\n({len(rows) - MAX_ROWS} more in the raw metrics.json)"] if len(rows) > MAX_ROWS else [])
    return [_cell(value) if value not in ([], {}) else "(empty)"]


SECTION_ORDER = ("training", "sampling", "scores")  # first, in this order; the others follow as written


def card(pipe: Pipeline, folder: Path) -> tuple[str, np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """(markdown card, sample grid, FID-vs-NFE plot, metrics.json) of a checkpoint: a table of what it is, then
    each section of its metrics.json as a readable table (the raw JSON is shown folded away beside it)."""
    info, metrics = pipe.info(), read_metrics(folder)
    classes = f"{info['num_classes']} classes, classifier-free guidance" if info["num_classes"] else "unconditional"
    d = info["defaults"]
    about = [("family", f"{info['family']} ({pipe.model.kind} model, {info['prediction']} prediction)"),
             ("path", json.dumps(info["path"])), ("preconditioning", json.dumps(info["precond"])),
             ("folder", f"`{folder}`"), ("parameters", f"{info['parameters']:,}"), ("conditioning", classes),
             ("default sampling", f"{d['sampler']}, {d['steps']} steps, {d['grid']} grid"),
             ("samplers", ", ".join(info["samplers"])), ("editors", ", ".join(info["editors"]))]
    lines = [f"### {info['name']}", "", "| | |", "| --- | --- |"] + [f"| **{k}** | {_cell(v) if k != 'folder' else v} |"
                                                                        for k, v in about]
    training = {**info.get("training", {}), **(metrics.get("training") or {})}
    sections = {"training": training, **{k: v for k, v in metrics.items() if k != "training"}}
    if "scores" not in sections or not sections["scores"]:
        sections["scores"] = None
    names = [k for k in SECTION_ORDER if k in sections] + [k for k in sections if k not in SECTION_ORDER]
    for name in names:
        value = sections[name]
        if name == "training" and not value:
            lines += ["", "#### training", "not recorded"]
        elif name == "scores" and not value:
            lines += ["", "#### scores", "none recorded yet (metrics.json has no FID/IS)"]
        elif name == "scores":
            ex = _extractors(value)
            lines += ["", f"#### scores (extractor: {', '.join(sorted(ex)) if ex else 'not recorded'})", ""]
            lines += section_table(value)
        else:
            lines += ["", f"#### {name}", ""] + section_table(value)
    plot = next((read_png(folder / n) for n in PLOT_NAMES if (folder / n).is_file()), None)
    if plot is None:
        lines += ["", "No FID-vs-NFE plot in this folder yet (run one in the Evaluate tab, or `genstudio sweep "
                      "--record`)."]
    return "\n".join(lines), read_png(folder / "samples.png"), plot, metrics

"""Checks on what a checkpoint folder holds, made before anything is built from it. Every refusal is a
`CheckpointError` that names the file, the field or the tensor, and what is wrong with it.

- JSON descriptions (genstudio.json, a component's config.json, diffusers' model_index.json, scheduler configs,
  sharded-weight indexes): at most `MAX_JSON_BYTES` read, at most `MAX_JSON_DEPTH` deep, and every field typed and
  bounded; `Problems` collects one line per problem, naming the field and the allowed range.
- Weights: safetensors only, read here with safetensors itself (diffusers never opens a weights file). A pickle
  (`.bin`, `.pt`, `.pth`, `.pkl`, `.ckpt`) in a component folder is refused, never opened; so is a sharded index
  that names one. Every tensor the network's config makes must be there, with its shape, in a floating-point
  dtype, finite and of a size a trained network has; nothing else may be.
- The built model: one forward pass on a probe image must give a finite output of the image's shape (`probe`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor

from .core.paths import PATHS, path_from_config
from .core.precond import PRECONDS, precond_from_config
from .core.predictions import PREDICTIONS


class CheckpointError(ValueError):
    """A checkpoint (or one of its component folders) that is missing, foreign, truncated or inconsistent."""


MAX_JSON_BYTES = 1 << 20      # every description genstudio reads; the shipped ones are a few kB
MAX_JSON_DEPTH = 32           # nesting of objects and arrays
MAX_HEADER_BYTES = 16 << 20   # a safetensors header (its tensor table); safetensors' own limit is 100 MB
MAX_WEIGHT = 1e4              # |w| beyond this in a trained network's tensor is corruption (the shipped: < 4)
MAX_CLASSES = 100_000
MAX_STEPS = 10_000            # defaults.steps
MAX_TIME = 1e5                # path times (vp_discrete's t runs to num_steps)
MAX_NUM_STEPS = 100_000       # vp_discrete / diffusers' num_train_timesteps
MAX_SEGMENTS = 10_000         # training.lineage: one segment per run that trained the model
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}
COMPONENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
DEFAULTS_FIELDS = ("sampler", "steps", "grid", "options")


def short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def names(items: Iterable[str], limit: int = 5) -> str:
    items = sorted(items)
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


# -- JSON -----------------------------------------------------------------------------------------------------------

def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def read_json(file: str | Path, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON in `file`, refused when missing, not a regular file, over `max_bytes`, not UTF-8 JSON or nested
    deeper than MAX_JSON_DEPTH. Only max_bytes + 1 bytes are ever read."""
    file = Path(file)
    if not file.exists():
        raise CheckpointError(f"{file} is missing")
    if not file.is_file():
        raise CheckpointError(f"{file} is not a regular file")
    with open(file, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise CheckpointError(f"{file} is larger than {max_bytes} bytes, too large for a description; the "
                              "checkpoint is corrupt (not read further)")
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise CheckpointError(f"{file} is not valid JSON (nested too deeply; at most {MAX_JSON_DEPTH} levels "
                              "are allowed); the checkpoint is corrupt") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError, or an integer of more than 4300 digits
        raise CheckpointError(f"{file} is not valid JSON ({e}); the checkpoint is corrupt") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{file} is nested more than {MAX_JSON_DEPTH} levels deep; the checkpoint is corrupt")
    return value


def read_json_object(file: str | Path) -> dict[str, Any]:
    value = read_json(file)
    if not isinstance(value, dict):
        raise CheckpointError(f"{file} is not a JSON object (it holds a {type(value).__name__})")
    return value


# -- fields -----------------------------------------------------------------------------------------------------------

_MISSING = object()


def _kind(value: Any) -> str:
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object", type(None): "null",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def _bounds(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False) -> str:
    """'a finite number' or 'a number in [lo, hi)' and the like."""
    if lo is None and hi is None:
        return "a finite number"
    return f"a number in {'(' if lo_open else '['}{'-inf' if lo is None else f'{lo:g}'}, " \
           f"{'inf' if hi is None else f'{hi:g}'}{')' if hi_open else ']'}"


class Problems:
    """One line per problem found in a description; `check()` raises them together as one CheckpointError.
    The getters return the value when it is right, else None (after noting why)."""

    def __init__(self, where: str | Path):
        self.where, self.lines = str(where), list[str]()

    def add(self, field: str, message: str) -> None:
        self.lines.append(f"{field} {message}" if field else message)

    def check(self) -> None:
        if len(self.lines) == 1:
            raise CheckpointError(f"{self.where}: {self.lines[0]}")
        if self.lines:
            raise CheckpointError(f"{self.where} has {len(self.lines)} problems:\n" +
                                  "\n".join(f"  - {line}" for line in self.lines))

    def _get(self, obj: dict[str, Any], key: str, default: Any, field: str | None) -> tuple[Any, str]:
        field = field or key
        if key in obj:
            return obj[key], field
        if default is _MISSING:
            self.add(field, "is missing")
            return None, field
        return default, field

    def integer(self, obj: dict[str, Any], key: str, lo: int, hi: int, default: Any = _MISSING,
                field: str | None = None, optional: bool = False) -> Any:
        """An integer (not a boolean) in lo..hi; `optional`: null is allowed too."""
        value, field = self._get(obj, key, default, field)
        if key not in obj or (optional and value is None):
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(field, f"= {short(value)} is {_kind(value)}; it must be an integer in {lo}..{hi}"
                            + (" or null" if optional else ""))
        elif not lo <= value <= hi:
            self.add(field, f"= {short(value)} is out of range; it must be an integer in {lo}..{hi}")
        else:
            return value
        return None

    def real(self, obj: dict[str, Any], key: str, lo: float | None = None, hi: float | None = None,
             default: Any = _MISSING, field: str | None = None, lo_open: bool = False,
             hi_open: bool = False) -> Any:
        """A finite number in the given range (open ends where said)."""
        value, field = self._get(obj, key, default, field)
        if key not in obj:
            return value
        span = _bounds(lo, hi, lo_open, hi_open)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.add(field, f"= {short(value)} is {_kind(value)}; it must be {span}")
        elif isinstance(value, float) and not math.isfinite(value):
            self.add(field, f"= {value} is not finite; it must be {span}")
        elif abs(value) > 1e300:  # an integer too large for a float: formatting it as one would overflow
            self.add(field, f"= {short(value, 24)} is out of range; it must be {span}")
        elif (lo is not None and (value <= lo if lo_open else value < lo)) or \
                (hi is not None and (value >= hi if hi_open else value > hi)):
            self.add(field, f"= {value:g} is out of range; it must be {span}")
        else:
            return value
        return None

    def choice(self, obj: dict[str, Any], key: str, choices: Iterable[Any], default: Any = _MISSING,
               field: str | None = None, what: str = "value") -> Any:
        """One of `choices` (strings, or None where listed); `what` the choices are, for the message."""
        value, field = self._get(obj, key, default, field)
        if key not in obj:
            return value
        choices = list(choices)
        known = ", ".join("null" if c is None else repr(c) for c in choices)
        if value is not None and not isinstance(value, str):
            self.add(field, f"= {short(value)} is {_kind(value)}; it must be one of {known}")
        elif value not in choices:
            self.add(field, f"= {short(value)} is an unknown {what}; it must be one of {known}")
        else:
            return value
        return None

    def boolean(self, obj: dict[str, Any], key: str, default: Any = _MISSING, field: str | None = None) -> Any:
        value, field = self._get(obj, key, default, field)
        if key in obj and not isinstance(value, bool):
            self.add(field, f"= {short(value)} is {_kind(value)}; it must be true or false")
            return None
        return value

    def mapping(self, obj: dict[str, Any], key: str, default: Any = _MISSING, field: str | None = None) -> Any:
        value, field = self._get(obj, key, default, field)
        if key in obj and not isinstance(value, dict):
            self.add(field, f"= {short(value)} is {_kind(value)}; it must be an object")
            return None
        return value

    def string(self, obj: dict[str, Any], key: str, default: Any = _MISSING, field: str | None = None,
               max_len: int = 256) -> Any:
        value, field = self._get(obj, key, default, field)
        if key in obj and (not isinstance(value, str) or len(value) > max_len):
            self.add(field, f"= {short(value)} is {_kind(value)}; it must be a string of at most {max_len} "
                            "characters")
            return None
        return value

    def known_fields(self, obj: dict[str, Any], allowed: Iterable[str], field: str) -> None:
        unknown = sorted(set(obj) - set(allowed))
        if unknown:
            self.add(field, f"has unknown field(s) {names(map(repr, unknown))}; its fields: "
                            f"{', '.join(sorted(allowed)) or 'none'}")


# -- genstudio.json: path, prediction, preconditioning, conditioning, defaults -----------------------------------------

# field: (low, high, low end open, high end open); every path field not listed must still be a finite number.
PATH_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "t_min": (0, MAX_TIME, False, False), "t_max": (0, MAX_TIME, True, False),
    "sigma_min": (0, 1e4, True, False), "sigma_max": (0, 1e5, True, False),
    "beta_min": (0, 1e3, False, False), "beta_max": (0, 1e3, True, False),
    "beta_start": (0, 1, True, True), "beta_end": (0, 1, True, True),
    "s": (0, 1, False, True),
}
PATH_ORDER = (("t_min", "t_max", False), ("sigma_min", "sigma_max", False), ("beta_min", "beta_max", True),
              ("beta_start", "beta_end", True))  # (low, high, may be equal)
PRECOND_BOUNDS: dict[str, tuple[float, float, bool, bool]] = {
    "sigma_data": (0, 1e3, True, False), "sigma_min": (0, 1e3, False, False),
}


def _dataclass_fields(problems: Problems, config: dict[str, Any], cls: type, field: str,
                      bounds: dict[str, tuple[float, float, bool, bool]]) -> bool:
    """Check config's fields (besides "name") against dataclass `cls`; True when all are right."""
    before = len(problems.lines)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    problems.known_fields(config, set(fields) | {"name"}, field)
    for key in set(config) & set(fields):
        default = fields[key].default
        if isinstance(default, int) and not isinstance(default, bool):  # an integer field (vp_discrete's num_steps)
            problems.integer(config, key, 1, MAX_NUM_STEPS, field=f"{field}.{key}")
        else:
            lo, hi, lo_open, hi_open = bounds.get(key, (None, None, False, False))
            problems.real(config, key, lo, hi, field=f"{field}.{key}", lo_open=lo_open, hi_open=hi_open)
    return len(problems.lines) == before


def _finite(values: Tensor) -> bool:
    return bool(torch.isfinite(values).all())


def check_path(problems: Problems, config: Any, field: str = "path") -> Any:
    """The noise path genstudio.json describes, or None after noting what is wrong with it."""
    if isinstance(config, str):
        config = {"name": config}
    if not isinstance(config, dict):
        problems.add(field, f"= {short(config)} is {_kind(config)}; it must be an object with a \"name\"")
        return None
    name = problems.choice(config, "name", PATHS, field=f"{field}.name", what="noise path")
    if name is None or not _dataclass_fields(problems, config, PATHS[name], field, PATH_BOUNDS):
        return None
    full = {f.name: getattr(PATHS[name], f.name) for f in dataclasses.fields(PATHS[name])}  # type: ignore
    full.update(config)
    for lo, hi, equal in PATH_ORDER:
        if lo in full and hi in full and not (full[lo] <= full[hi] if equal else full[lo] < full[hi]):
            problems.add(f"{field}.{lo}", f"= {full[lo]:g} must be {'<=' if equal else '<'} {field}.{hi} = "
                                          f"{full[hi]:g}")
            return None
    try:
        path = path_from_config(config)
    except (ValueError, TypeError) as e:
        problems.add(field, f"is not a valid {name!r} path: {e}")
        return None
    if path.t_max > path.t_limit:
        problems.add(f"{field}.t_max", f"= {path.t_max:g} is past the end of the {name!r} path (t <= "
                                       f"{path.t_limit:g})")
        return None
    ts = torch.tensor([t for t in (path.t_min, (path.t_min + path.t_max) / 2, path.t_max) if t > 0],
                      dtype=torch.float64)
    with torch.no_grad():
        alpha, sigma, logsnr = path.alpha(ts), path.sigma(ts), path.logsnr(ts)
    if not (_finite(alpha) and _finite(sigma) and bool((alpha >= 0).all()) and bool((sigma > 0).all())
            and bool((logsnr[:-1] > logsnr[1:]).all())):
        problems.add(field, f"{short(config, 120)} is degenerate: alpha(t) and sigma(t) must be finite, sigma > 0 "
                            "and the signal-to-noise ratio must fall from t_min to t_max")
        return None
    return path


def check_precond(problems: Problems, config: Any, path: Any, prediction: Any, field: str = "precond") -> None:
    if config is None or isinstance(config, str):
        config = {"name": config or "none"}
    if not isinstance(config, dict):
        problems.add(field, f"= {short(config)} is {_kind(config)}; it must be an object with a \"name\"")
        return
    name = problems.choice(config, "name", PRECONDS, default="none", field=f"{field}.name",
                           what="preconditioning")
    if name is None or not _dataclass_fields(problems, config, PRECONDS[name], field, PRECOND_BOUNDS):
        return
    precond = precond_from_config(config)
    if precond.output is not None and prediction is not None and precond.output != prediction:
        problems.add(field, f"{name!r} outputs {precond.output!r} predictions, but prediction = {prediction!r}")
        return
    if path is not None:
        ts = torch.tensor([t for t in (path.t_min, (path.t_min + path.t_max) / 2, path.t_max) if t > 0],
                          dtype=torch.float64).view(-1, 1)
        with torch.no_grad():
            scalings = precond.scalings(path, ts)
        if not all(_finite(torch.as_tensor(s)) for s in scalings):
            problems.add(field, f"{short(config)} is degenerate on this path: its scalings (c_skip, c_out, c_in, "
                                "c_noise) are not finite")


def check_model_fields(problems: Problems, meta: dict[str, Any]) -> None:
    """path, prediction, precond and num_classes of a genstudio.json."""
    path = None
    if "path" in meta:
        path = check_path(problems, meta["path"])
    else:
        problems.add("path", "is missing")
    prediction = problems.choice(meta, "prediction", PREDICTIONS, what="prediction type")
    check_precond(problems, meta.get("precond"), path, prediction)
    problems.integer(meta, "num_classes", 0, MAX_CLASSES, default=0)


def check_training(problems: Problems, meta: dict[str, Any]) -> None:
    """genstudio.json's training record: free-form, but the fields genstudio writes and shows are typed."""
    training = problems.mapping(meta, "training", default={})
    if not training:
        return
    _check_segment(problems, training, "training")
    problems.integer(training, "segments", 1, MAX_SEGMENTS, default=None, field="training.segments")
    lineage = training.get("lineage")
    if lineage is None:
        return
    if not isinstance(lineage, list) or not 1 <= len(lineage) <= MAX_SEGMENTS:
        problems.add("training.lineage", f"must be a list of 1..{MAX_SEGMENTS} training segments, got "
                                         f"{short(lineage)}")
        return
    for i, segment in enumerate(lineage):
        if not isinstance(segment, dict):
            problems.add(f"training.lineage[{i}]", f"= {short(segment)} must be an object (one training segment)")
        else:
            _check_segment(problems, segment, f"training.lineage[{i}]")
        if len(problems.lines) >= 8:
            break


def _check_segment(problems: Problems, training: dict[str, Any], where: str) -> None:
    """The typed fields of a training record or of one of its lineage's segments."""
    for key in ("steps", "images_seen", "skipped_steps"):
        problems.integer(training, key, 0, 10**15, default=None, field=f"{where}.{key}")
    problems.integer(training, "processes", 1, 10**6, default=None, field=f"{where}.processes")
    problems.integer(training, "batch_size", 1, 10**9, default=None, field=f"{where}.batch_size")
    problems.real(training, "wall_time_s", 0, 1e10, default=None, field=f"{where}.wall_time_s")
    for key in ("hardware", "torch", "note", "precision", "commit", "started_from"):
        problems.string(training, key, default=None, field=f"{where}.{key}", max_len=4096)
    problems.mapping(training, "config", default=None, field=f"{where}.config")


def check_defaults(problems: Problems, meta: dict[str, Any], kind: str) -> None:
    """genstudio.json's defaults: a registered sampler that drives `kind` models, 1..MAX_STEPS steps, a known
    grid, and options that sampler takes (finite numbers, booleans, short strings)."""

    import samplers

    defaults = problems.mapping(meta, "defaults", default={})
    if not defaults:
        return
    problems.known_fields(defaults, DEFAULTS_FIELDS, "defaults")
    drivers = [n for n, s in samplers.SAMPLERS.items() if kind in s.needs]
    sampler = problems.choice(defaults, "sampler", drivers, default=None, field="defaults.sampler",
                              what=f"sampler for a {kind!r} model")
    problems.integer(defaults, "steps", 1, MAX_STEPS, default=None, field="defaults.steps")
    problems.choice(defaults, "grid", samplers.GRIDS, default=None, field="defaults.grid", what="time grid")
    options = problems.mapping(defaults, "options", default={}, field="defaults.options")
    if options and sampler is not None:
        accepted = samplers.SAMPLERS[sampler].options
        problems.known_fields(options, accepted, "defaults.options")
        for key in set(options) & accepted:
            value = options[key]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                problems.real(options, key, field=f"defaults.options.{key}")
            elif value is not None and not isinstance(value, bool):
                problems.string(options, key, field=f"defaults.options.{key}")


GRID_FIELDS = ("sampler", "steps", "nfe", "times", "protocol")
GRIDS_FORMAT = "genstudio-grids"


def check_grids(problems: Problems, doc: Any, kind: str) -> dict[str, Any]:
    """A checkpoint's grids.json (genstudio.learned_grids): each grid names a sampler that drives `kind` models and
    holds steps + 1 finite, strictly decreasing times ending at 0. Returns the grids by name."""
    import samplers
    from samplers.grids import from_times

    if not isinstance(doc, dict) or doc.get("format") != GRIDS_FORMAT:
        problems.add("", f"is not a genstudio grids file (format != {GRIDS_FORMAT!r})")
        return {}
    problems.known_fields(doc, ("format", "version", "grids"), "")
    problems.integer(doc, "version", 1, 1)
    grids = problems.mapping(doc, "grids", default={}) or {}
    for name, grid in grids.items():
        field = f"grids.{name}"
        if name in samplers.GRIDS or name == "learned" or not isinstance(grid, dict):
            problems.add(field, "must be an object named neither 'learned' nor a hand-made grid")
            continue
        problems.known_fields(grid, GRID_FIELDS, field)
        drivers = [n for n, s in samplers.SAMPLERS.items() if kind in s.needs]
        problems.choice(grid, "sampler", drivers, field=f"{field}.sampler", what=f"sampler for a {kind!r} model")
        steps = problems.integer(grid, "steps", 1, MAX_STEPS, field=f"{field}.steps")
        problems.integer(grid, "nfe", 1, 10 * MAX_STEPS, field=f"{field}.nfe")
        problems.mapping(grid, "protocol", default={}, field=f"{field}.protocol")
        times = grid.get("times")
        try:
            ts = from_times(times if isinstance(times, list) and len(times) <= MAX_STEPS + 1 else [])
        except (ValueError, TypeError) as e:
            problems.add(f"{field}.times", f"is not a grid: {e}")
            continue
        if isinstance(steps, int) and len(ts) != steps + 1:
            problems.add(f"{field}.times", f"holds {len(ts)} times; {steps} steps need {steps + 1}")
    return grids


# -- weights --------------------------------------------------------------------------------------------------------

def refuse_pickles(folder: Path, weights: bool = True) -> None:
    """A component folder may hold no pickle: genstudio never unpickles (it runs arbitrary code). `weights`: the
    folder is a network's (the message tells how to convert a pickled UNet to safetensors)."""
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES) \
        if folder.is_dir() else []
    if not pickles:
        return
    safe = sorted(p.name for p in folder.glob("*.safetensors"))
    how = (f"delete {', '.join(pickles)} (the folder's safetensors weights, {', '.join(safe)}, are what genstudio "
           "reads) if you trust the folder" if safe else
           f"delete {', '.join(pickles)} (genstudio reads no weights here) if you trust the folder" if not weights else
           "if you trust its source, convert it once to safetensors with diffusers:\n"
           f"    python -c \"from diffusers import UNet2DModel; UNet2DModel.from_pretrained('{folder}', "
           f"use_safetensors=False).save_pretrained('{folder}', safe_serialization=True)\"\n"
           "(then delete the pickle) or download the repository's .safetensors weights (e.g. "
           "huggingface_hub.snapshot_download(repo_id, allow_patterns=['*.json', '*.safetensors']))")
    raise CheckpointError(
        f"{folder} has {'only ' if not safe else ''}{', '.join(pickles)}: pickle file(s), which genstudio never "
        f"loads (unpickling runs arbitrary code), and refuses folders holding them. To load it, {how}.")


_SAFETENSORS_HINTS = {
    "header too large": "the header length in the first 8 bytes is absurd: a corrupt or foreign file",
    "header too small": "the file is empty or shorter than its header",
    "incomplete metadata": "the file is truncated, or holds bytes its header does not account for",
    "invalid offset": "a tensor's data offsets point outside the file or overlap another tensor",
    "invalid shape": "a tensor's shape, dtype and data offsets disagree",
    "invalid json": "the header is not JSON: a corrupt or foreign file",
}


def _safetensors_reason(message: str) -> str:
    hint = next((h for k, h in _SAFETENSORS_HINTS.items() if k in message.lower()), "a corrupt file")
    return f"safetensors says: {message.removeprefix('Error while deserializing header: ')} ({hint})"


def _header(file: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{tensor: (dtype, shape)} from a safetensors file's header, with safetensors' own reason for a bad one."""
    from safetensors import SafetensorError, safe_open

    if not file.is_file():
        raise CheckpointError(f"cannot load {file}: it is not a regular file")
    size = file.stat().st_size
    with open(file, "rb") as f:
        head = f.read(8)
    if len(head) == 8:  # checked here first, so a hostile length is refused before safetensors allocates for it
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES:
            raise CheckpointError(f"cannot load {file}: not a valid safetensors file: its header claims {length} "
                                  f"bytes, more than the {MAX_HEADER_BYTES} allowed (header too large: a corrupt or "
                                  "foreign file)")
        if 8 + length > size:
            raise CheckpointError(f"cannot load {file}: not a valid safetensors file: its header claims {length} "
                                  f"bytes but the file has {size} (truncated)")
    try:
        with safe_open(str(file), framework="pt") as f:
            out = {}
            for key in f.keys():
                sl = f.get_slice(key)
                out[key] = (sl.get_dtype(), tuple(sl.get_shape()))
            return out
    except SafetensorError as e:
        culprit = _culprit(file) if "tensor" in str(e) else ""
        raise CheckpointError(f"cannot load {file}: not a valid safetensors file: {_safetensors_reason(str(e))}"
                              + (f"; {culprit}" if culprit else "")) from None
    except OSError as e:
        raise CheckpointError(f"cannot load {file}: {e}") from None


_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _culprit(file: Path) -> str:
    """The first tensor whose header entry is wrong (for a message), read from the header itself; '' if none is."""
    try:
        with open(file, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        data = file.stat().st_size - 8 - length
        end = 0
        for key, info in sorted(((k, v) for k, v in header.items() if k != "__metadata__"),
                                key=lambda kv: kv[1]["data_offsets"][0]):
            start, stop = info["data_offsets"]
            need = math.prod(info["shape"]) * _DTYPE_BYTES.get(info["dtype"], 0)
            if start != end:
                return f"tensor {key} starts at byte {start} of the data, not at {end} where the previous one ends"
            if stop > data:
                return f"tensor {key}'s data_offsets [{start}, {stop}] run past the end of the data ({data} bytes)"
            if _DTYPE_BYTES.get(info["dtype"]) and stop - start != need:
                return (f"tensor {key} of shape {info['shape']} and dtype {info['dtype']} needs {need} bytes, its "
                        f"data_offsets [{start}, {stop}] hold {stop - start}")
            end = stop
    except (ValueError, KeyError, TypeError, OSError, struct.error):
        return ""
    return ""


def _shards(folder: Path, weights: str) -> dict[Path, set[str] | None]:
    """The safetensors files a component's weights are in: {file: the tensors an index assigns it (None: all)}."""
    single, index = folder / weights, folder / f"{weights}.index.json"
    if single.exists() and index.exists():
        raise CheckpointError(f"{folder} has both {weights} and {index.name}: which one holds the weights is "
                              "ambiguous; remove one")
    if single.exists():
        return {single: None}
    if not index.exists():
        others = sorted(p.name for p in folder.glob("*.safetensors"))
        raise CheckpointError(f"{folder} has no {weights} (nor a sharded {index.name})"
                              + (f"; it has {', '.join(others)}" if others else ""))
    problems = Problems(index)
    data = read_json_object(index)
    problems.known_fields(data, ("metadata", "weight_map"), "")
    weight_map = problems.mapping(data, "weight_map")
    problems.check()
    shards: dict[Path, set[str] | None] = {}
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or shard in (".", ".."):
            problems.add(f"weight_map[{short(tensor)}]", f"= {short(shard)} must be a file name in {folder}")
        elif not shard.endswith(".safetensors"):
            problems.add(f"weight_map[{short(tensor)}]", f"= {short(shard)} names a file that is not safetensors "
                         "(a pickle shard is never loaded)")
        elif not (folder / shard).is_file():
            problems.add(f"weight_map[{short(tensor)}]", f"names shard {shard}, which is missing")
        else:
            keys = shards.setdefault(folder / shard, set())
            assert keys is not None
            keys.add(tensor)
        if len(problems.lines) >= 5:
            break
    problems.check()
    if not shards:
        raise CheckpointError(f"{index}: weight_map names no tensors")
    return shards


def read_weights(folder: str | Path, expected: dict[str, tuple[tuple[int, ...], torch.dtype]],
                 dtype: torch.dtype | None = None, weights: str = "diffusion_pytorch_model.safetensors"
                 ) -> dict[str, Tensor]:
    """A component's tensors, read with safetensors from folder/`weights` (or the shards its .index.json names),
    checked against `expected` ({name: (shape, dtype)}, what the network's config builds): the same names, the
    same shapes, floating point, finite and at most MAX_WEIGHT in size. Each is cast to `dtype`, else to the
    expected dtype."""
    from safetensors import safe_open

    folder = Path(folder)
    refuse_pickles(folder)
    shards = _shards(folder, weights)
    problems = Problems(folder)
    found: dict[str, tuple[Path, str, tuple[int, ...]]] = {}
    for file, assigned in shards.items():
        header = _header(file)
        if assigned is not None:
            stray = set(header) - assigned
            missing = assigned - set(header)
            if stray:
                problems.add("", f"shard {file.name} holds tensor(s) its index assigns elsewhere: {names(stray)}")
            if missing:
                problems.add("", f"the index puts tensor(s) {names(missing)} in shard {file.name}, which lacks them")
        for key, (dt, shape) in header.items():
            if key in found:
                problems.add("", f"tensor {key} is in both {found[key][0].name} and {file.name}")
            found[key] = (file, dt, shape)
    problems.check()
    if not found:
        raise CheckpointError(f"{folder}: the weights hold no tensors at all")
    missing, extra = set(expected) - set(found), set(found) - set(expected) - {"__metadata__"}
    if missing:
        problems.add("", f"{len(missing)} tensor(s) the config makes are missing from the weights: {names(missing)}")
    if extra:
        problems.add("", f"{len(extra)} tensor(s) in the weights are not in the network the config makes: "
                         f"{names(extra)}")
    for key in sorted(set(expected) & set(found)):
        file, dt, shape = found[key]
        if dt not in FLOAT_DTYPES:
            problems.add(f"tensor {key}", f"is {dt}; weights must be floating point ({', '.join(FLOAT_DTYPES)})")
        elif shape != tuple(expected[key][0]):
            problems.add(f"tensor {key}", f"has shape {list(shape)}, but the config makes {list(expected[key][0])}")
        if len(problems.lines) >= 8:
            break
    problems.check()

    out: dict[str, Tensor] = {}
    for file in shards:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                target = dtype or expected[key][1]
                tensor = f.get_tensor(key)
                lo, hi = (float(v) for v in torch.aminmax(tensor)) if tensor.numel() else (0.0, 0.0)  # NaN spreads
                size = max(-lo, hi)
                if not (math.isfinite(lo) and math.isfinite(hi)):
                    bad = int((~torch.isfinite(tensor)).sum())
                    problems.add(f"tensor {key}", f"has {bad} non-finite value(s) (NaN or inf) of {tensor.numel()}")
                elif size > MAX_WEIGHT:
                    problems.add(f"tensor {key}", f"has values up to {size:.3g} in size, beyond the {MAX_WEIGHT:g} "
                                                  "of any trained network: absurd weights")
                out[key] = tensor.to(target)
        problems.check()
    return out


# -- the built model ------------------------------------------------------------------------------------------------

@torch.no_grad()
def probe(model: Any, where: str | Path) -> None:
    """Run `model` once on one seeded noise state (model.state_shape) at the middle of its path's time range with
    the "no label" class, and require a finite output of model.output_shape. A component the model's forward did
    not reach (CAF's acceleration network) is run on its own input at the same noise label. Torch's global RNG is
    untouched."""
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    path = model.path
    t = float(path.t_min + path.t_max) / 2
    components: dict[str, Any] = model.components()
    reached: set[str] = set()
    try:
        shape = tuple(model.output_shape)
        x = torch.randn((1, *model.state_shape), generator=torch.Generator().manual_seed(0)).to(device)
        raw: list[Any] = []
        hooks = [c.register_forward_hook(lambda *_, name=name: reached.add(name)) for name, c in components.items()]
        hooks.append(model.network.register_forward_hook(lambda _m, _i, output: raw.append(output)))
        try:
            out = model(x, torch.full((1,), t, device=device))
        finally:
            for h in hooks:
                h.remove()
        _check_probe(raw[0] if raw else None, shape, "the network", t, where)  # one prediction per pixel
        _check_probe(out, shape, "the model", t, where)
        for name, component in components.items():
            if name in reached:
                continue
            c_shape = tuple(getattr(component, "state_shape", component.image_shape))  # what its forward takes
            xc = torch.randn((1, *c_shape), generator=torch.Generator().manual_seed(1))
            embeds = getattr(component, "class_embeddings", 0)
            labels = torch.full((1,), embeds - 1, dtype=torch.long, device=device) if embeds else None
            c_noise = path.noise_label(torch.full((1,), t, device=device))
            out = component(xc.to(device, next(component.parameters()).dtype), c_noise, labels)
            _check_probe(out, None, f"component {name!r}", t, where)
    except CheckpointError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{where}: the network fails on a probe image (t = {t:g}): {type(e).__name__}: "
                              f"{e}") from None


def _check_probe(out: Any, shape: tuple[int, ...] | None, what: str, t: float, where: str | Path) -> None:
    """A probe's output: a finite tensor, of shape (1, *shape) when shape is given."""
    if not isinstance(out, Tensor) or (shape is not None and tuple(out.shape) != (1, *shape)) or out.shape[:1] != (1,):
        got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        want = f" for a probe image of shape {[1, *shape]}" if shape is not None else " for one probe image"
        raise CheckpointError(f"{where}: {what} gives output {got}{want}")
    if not _finite(out):
        bad = int((~torch.isfinite(out)).sum())
        raise CheckpointError(f"{where}: {what}'s output on a probe image (t = {t:g}, no label) has {bad} non-finite "
                              f"value(s) of {out.numel()}: the weights or the preconditioning overflow")

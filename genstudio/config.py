"""Training configuration: TOML files with [model], [objective], [data] and [train] sections,
any key overridable from the command line (`--train.lr 1e-4` or `--train.lr=1e-4`). Unknown keys
and bad values are errors before any work starts."""
from __future__ import annotations

import dataclasses
import difflib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .presets import PRESETS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    pass


@dataclass
class ModelConfig:
    network: str = "tiny"                      # preset: genstudio.presets.PRESETS
    unet: dict = field(default_factory=dict)   # UNet2DModel keyword overrides
    path: dict = field(default_factory=lambda: {"name": "edm"})
    prediction: str = "x0"
    precond: dict = field(default_factory=lambda: {"name": "edm"})
    num_classes: int = 0                       # 0: unconditional
    kind: str = "field"                        # a kind the objective's family makes (its Family.kinds)


@dataclass
class ObjectiveConfig:
    name: str = "edm"
    options: dict = field(default_factory=dict)


@dataclass
class DataConfig:
    source: str = "cifar10"        # "cifar10", an image folder with class subfolders, or a .tar/.tar.gz of one
    split: str = "train"
    image_size: int = 32
    flip: bool = True
    limit: int = 0                 # use a fixed random subset of this many images (0: all)
    cache_dir: str = ""            # "" : $GENSTUDIO_CACHE or ~/.cache/genstudio
    noisy: dict = field(default_factory=dict)  # SFBD's data: {sigma, clean_fraction, seed, part}; see NOISY


@dataclass
class TrainConfig:
    output_dir: str = "runs/default"
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 64           # per process and micro-step
    grad_accum: int = 1
    lr: float = 2e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_betas: list = field(default_factory=lambda: [0.9, 0.999])
    grad_clip: float = 1.0         # 0: no clipping
    mixed_precision: str = "auto"  # auto (bf16 on CUDA, no elsewhere) | no | bf16 | fp16
    compile: str = "auto"          # torch.compile the network: auto (on CUDA only) | on | off
    channels_last: str = "auto"    # channels_last memory format: auto (on CUDA only) | on | off
    sync_every: int = 0            # read losses and non-finite flags back every N steps (0: 1 on CPU, 50 on CUDA)
    ema_half_life_kimg: float = 0.0
    ema_rampup_ratio: float = 0.05
    ema_decay: float = 0.999       # used when ema_half_life_kimg is 0
    label_dropout: float = 0.1     # classifier-free guidance training (conditional models)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    sample_every: int = 0          # 0: no sample grids during training
    sample_sampler: str = "heun"
    sample_steps: int = 18
    sample_count: int = 64
    max_nonfinite: int = 5         # this many non-finite steps in a row stop the run
    init_from: str = ""            # an exported genstudio model (or a run folder) whose weights start a fresh run (ECT)
    continue_from: str = ""        # an exported model (or run folder) this run continues: weights, optimizer, lineage
    progress: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"model": ModelConfig, "objective": ObjectiveConfig, "data": DataConfig, "train": TrainConfig}
SWITCHES = ("auto", "on", "off")  # speed switches, resolved per device by genstudio.speed
_CHOICES = {("train", "mixed_precision"): ("auto", "no", "bf16", "fp16"), ("model", "network"): tuple(PRESETS),
            ("train", "compile"): SWITCHES, ("train", "channels_last"): SWITCHES}
_POSITIVE = {("train", k) for k in ("max_steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints",
                                    "log_every", "sample_steps", "sample_count", "max_nonfinite")}
_POSITIVE |= {("data", "image_size")}
_NONNEGATIVE = {("train", k) for k in ("lr", "warmup_steps", "weight_decay", "grad_clip", "ema_half_life_kimg",
                                       "ema_rampup_ratio", "sample_every", "sync_every")}
_NONNEGATIVE |= {("data", "limit"), ("model", "num_classes")}
_AT_MOST = {("train", "lr"): 10.0}  # a larger step overflows AdamW's update long before it could train


def _unknown(kind: str, name: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown {kind} {name!r}{hint}; known: {', '.join(known)}")


def _check_type(section: str, key: str, value: Any, expected: type) -> Any:
    where = f"{section}.{key}"
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # --data.source 2024 names a folder, not a number
    if expected is int and isinstance(value, bool) or not isinstance(value, expected):
        raise ConfigError(f"{where} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    if expected is float and not math.isfinite(value):  # TOML (and so the command line) spells nan and inf
        raise ConfigError(f"{where} must be a finite number, got {value!r}")
    if (section, key) in _CHOICES and value not in _CHOICES[section, key]:
        raise ConfigError(f"{where} must be one of {_CHOICES[section, key]}, got {value!r}")
    if (section, key) in _POSITIVE and value <= 0:
        raise ConfigError(f"{where} must be > 0, got {value!r}")
    if (section, key) in _NONNEGATIVE and value < 0:
        raise ConfigError(f"{where} must be >= 0, got {value!r}")
    if (section, key) in _AT_MOST and value > _AT_MOST[section, key]:
        raise ConfigError(f"{where} must be at most {_AT_MOST[section, key]:g}, got {value!r}")
    return value


NOISY = {"sigma": "the noise of the noisy copy, x + sigma eps in model range [-1, 1] (> 0)",
         "clean_fraction": "the fraction of the images kept clean, in [0, 1]",
         "seed": "fixes which images stay clean and the noise of each copy (an integer in 0..4095)",
         "part": '"clean": train on the clean images, "noisy": on the noisy copies of the others'}


def check_noisy(noisy: dict[str, Any]) -> None:
    """data.noisy: empty (the images as they are) or every key of NOISY with a value in range."""
    if not noisy:
        return
    unknown = sorted(set(noisy) - set(NOISY))
    if unknown:
        raise _unknown("key in data.noisy", unknown[0], list(NOISY))
    missing = [k for k in NOISY if k not in noisy]
    if missing:
        raise ConfigError(f"data.noisy needs {', '.join(missing)}: " + "; ".join(f"{k}: {NOISY[k]}" for k in missing))
    sigma, fraction, seed, part = (noisy[k] for k in ("sigma", "clean_fraction", "seed", "part"))
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma < 1e3:
        raise ConfigError(f"data.noisy.sigma = {sigma!r}: {NOISY['sigma']}, below 1000")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction <= 1:
        raise ConfigError(f"data.noisy.clean_fraction = {fraction!r}: {NOISY['clean_fraction']}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 12:
        raise ConfigError(f"data.noisy.seed = {seed!r}: {NOISY['seed']}")
    if part not in ("clean", "noisy"):
        raise ConfigError(f"data.noisy.part = {part!r}: {NOISY['part']}")


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "dict": dict, "list": list}


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a Config, rejecting unknown sections and keys and values of the wrong type."""
    config = Config()
    for section, values in data.items():
        if section not in _SECTIONS:
            raise _unknown("config section", section, list(_SECTIONS))
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table of keys, got {values!r}")
        cls = _SECTIONS[section]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        target = getattr(config, section)
        for key, value in values.items():
            if key not in fields:
                raise _unknown(f"key in [{section}]", key, list(fields))
            expected = _TYPES[fields[key].type] if isinstance(fields[key].type, str) else fields[key].type
            setattr(target, key, _check_type(section, key, value, expected))
    check_noisy(config.data.noisy)
    if config.train.ema_half_life_kimg == 0 and not 0 < config.train.ema_decay < 1:
        raise ConfigError(f"train.ema_decay must be in (0, 1) when train.ema_half_life_kimg is 0, "
                          f"got {config.train.ema_decay}")
    betas = config.train.adam_betas
    if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
        raise ConfigError(f"train.adam_betas must be two numbers in [0, 1), got {betas!r}")
    if not 0 <= config.train.label_dropout < 1:
        raise ConfigError(f"train.label_dropout must be in [0, 1), got {config.train.label_dropout}")
    if config.train.lr * config.train.weight_decay >= 1:  # AdamW scales the weights by 1 - lr * wd each step
        raise ConfigError(f"train.weight_decay = {config.train.weight_decay} with train.lr = {config.train.lr}: "
                          f"their product must be < 1 (AdamW multiplies the weights by 1 - lr * weight_decay "
                          f"at every step)")
    if config.train.init_from and config.train.continue_from:
        raise ConfigError(f"train.init_from ({config.train.init_from!r}) starts a new lineage and train.continue_from "
                          f"({config.train.continue_from!r}) extends one: set only one of them")
    return config


def parse_value(text: str) -> Any:
    """A command-line value read as a TOML value (numbers, booleans, arrays, inline tables), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """['--train.lr', '1e-4', '--model.path.name=vp_linear'] -> nested dict."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or "." not in arg:
            raise ConfigError(f"cannot read {arg!r}: overrides look like --section.key VALUE or --section.key=VALUE")
        if "=" in arg:
            dotted, text = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"{arg} needs a value")
            dotted, text = arg[2:], args[i + 1]
            i += 2
        keys = dotted.split(".")
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"conflicting overrides for {dotted}")
        node[keys[-1]] = parse_value(text)
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `over` into a copy of `base` (dict-valued keys such as model.path merge key by key)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing or malformed file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None


def load_config(path: str | Path | None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Read a TOML config (or start from defaults) and apply overrides."""
    data = read_toml(path) if path is not None else {}
    over = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
    return config_from_dict(merge(data, over))

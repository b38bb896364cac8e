"""Continue a shipped or exported model on any machine (`genstudio train --continue FOLDER`, or
`train.continue_from`): its weights start the run (the exported EMA, as raw weights and EMA alike), the
compact optimizer state is loaded where the folder has one, and each export appends this run's segment to the
model's training lineage (genstudio.lineage).

What travels (each file at most 16 MiB): the checkpoint folder with fp16 weights, and optionally `optimizer/`,
AdamW's two moments in bfloat16 sharded into safetensors files plus `optimizer.json` (their step count and
hyper-parameters). Everything else is rebuilt: the raw weights (= the EMA), Accelerate's state, the RNG, the
data order and the LR schedule (a warmup of `train.warmup_steps` when the moments are rebuilt, none when loaded).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from genstudio.atomic import atomic_folder, write_json
from genstudio.checkpoint import META_FILE, read_meta
from genstudio.checks import CheckpointError, read_json_object
from genstudio.config import Config, ConfigError, config_from_dict, merge, parse_overrides, read_toml
from genstudio.lineage import segments
from genstudio.model import Model

OPTIMIZER_DIR = "optimizer"
OPTIMIZER_META = "optimizer.json"
OPTIMIZER_FORMAT = "genstudio-optimizer"
PRIOR_FILE = "continued_from.json"   # in the run folder: what the run started from, for its resumes
SHARD_BYTES = 16 << 20               # the largest file that must travel
HEADER_ROOM = 1 << 20                # left in each shard for its safetensors header
MOMENTS = ("exp_avg", "exp_avg_sq")  # AdamW's (Loshchilov & Hutter 2019) first and second moments


@dataclass
class Prior:
    """What a run continues: the lineage before it, and where it started from."""
    lineage: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    optimizer: str = ""   # the compact optimizer state's folder, "" when the moments are rebuilt

    @property
    def images_seen(self) -> int:
        return sum(int(s.get("images_seen") or 0) for s in self.lineage)


def model_folder(source: str | Path) -> Path:
    """The exported model of a continue source: a checkpoint folder, or a run folder's model/."""
    folder = Path(source)
    if not (folder / META_FILE).is_file() and (folder / "model" / META_FILE).is_file():
        return folder / "model"
    return folder


def optimizer_folder(source: str | Path) -> Path | None:
    """The compact optimizer state beside a continue source's model (FOLDER/optimizer/), if there is one."""
    for folder in (Path(source) / OPTIMIZER_DIR, model_folder(source) / OPTIMIZER_DIR):
        if (folder / OPTIMIZER_META).is_file():
            return folder
    return None


def _recorded(source: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the config of the source's last training segment or {}, its lineage), its metadata checked."""
    folder = model_folder(source)
    meta = read_meta(folder)
    card = {}
    if (folder / "metrics.json").is_file():
        card = read_json_object(folder / "metrics.json").get("training") or {}
    lineage = segments(meta.get("training"), card)
    config = lineage[-1].get("config") if lineage else None
    return (config if isinstance(config, dict) else {}), lineage


def continue_config(source: str | Path, config_path: str | Path | None = None,
                    overrides: list[str] | None = None) -> Config:
    """The config that continues `source`: its last segment's recorded config, under the --config file's keys,
    under the overrides; train.continue_from = source. train.output_dir defaults to runs/<name>-continued and train.seed
    to the recorded seed + the number of segments (new noise and data order), unless given."""
    source = Path(source)
    if not source.is_dir():
        raise ConfigError(f"--continue {source}: no such folder (give a checkpoint folder or a run folder)")
    recorded, lineage = _recorded(source)
    given = read_toml(config_path) if config_path is not None else {}
    over = parse_overrides(overrides or [])
    if not recorded and not given:
        raise ConfigError(f"--continue {source}: its genstudio.json records no training config; pass the one it "
                          f"was trained with as --config")
    data = merge(merge(recorded, given), over)
    told = merge(given, over).get("train", {})
    folder = model_folder(source)
    name = folder.parent.name if folder.name == "model" else folder.name
    train = data.setdefault("train", {})
    if "output_dir" not in told:
        train["output_dir"] = f"runs/{name}-continued"
    if "seed" not in told:
        train["seed"] = int(train.get("seed", 0)) + len(lineage)
    train["continue_from"] = str(source)
    return config_from_dict(data)


def _same_model(meta: dict[str, Any], model: Model, source: str) -> None:
    """The config's model must be the checkpoint's: every field genstudio.json records about it."""
    ours = json.loads(json.dumps(model.spec()))
    wrong = [f"{k}: the checkpoint has {meta.get(k)!r}, the config makes {v!r}" for k, v in ours.items()
             if meta.get(k) != v]
    if wrong:
        raise ConfigError(f"train.continue_from = {source!r}: the config's [model] is not the checkpoint's "
                          f"({'; '.join(wrong)}). Drop --config to use the recorded one, or set [model] to match.")


def start(config: Config, model: Model, output_dir: Path, resumed: bool) -> Prior:
    """A continued run's start: at its first start the source's weights into `model` (checked against the config)
    and its lineage recorded in the run folder; at a resume, that record (the source may be gone)."""
    from .setup import init_weights

    record = output_dir / PRIOR_FILE
    if resumed and record.is_file():
        saved = read_json_object(record)
        return Prior(list(saved.get("lineage") or []), str(saved.get("source", "")), str(saved.get("optimizer", "")))
    source = config.train.continue_from
    folder = model_folder(source)
    meta = read_meta(folder)  # a foreign or corrupt folder is a CheckpointError that says why
    _same_model(meta, model, source)
    init_weights(model, folder, key="train.continue_from")
    _, lineage = _recorded(Path(source))
    opt = optimizer_folder(source)
    prior = Prior(lineage, str(source), str(opt) if opt is not None else "")
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(record, {"source": prior.source, "optimizer": prior.optimizer, "lineage": prior.lineage})
    return prior


# ---- the compact optimizer state ----------------------------------------------------------------------------------

def _named(optimizer, model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The optimizer's parameters that belong to `model`, by name (an objective's extra modules are rebuilt)."""
    mine = {id(p) for g in optimizer.param_groups for p in g["params"]}
    return {name: p for name, p in model.named_parameters() if id(p) in mine}


def save_optimizer(optimizer, model: torch.nn.Module, folder: Path) -> Path | None:
    """AdamW's moments of `model`'s parameters, in bfloat16, in safetensors files of at most SHARD_BYTES each
    (written atomically); None when the optimizer has no state yet."""
    named = _named(optimizer, model)
    states = {name: optimizer.state.get(p) for name, p in named.items()}
    if not states or not all(s and all(m in s for m in MOMENTS) for s in states.values()):
        return None
    steps = {int(s["step"]) for s in states.values()}
    files: list[str] = []
    with atomic_folder(folder) as tmp:
        for moment in MOMENTS:
            shards: list[dict[str, torch.Tensor]] = [{}]
            size = 0
            for name, s in states.items():
                t = s[moment].detach().to("cpu", torch.bfloat16).contiguous()
                if shards[-1] and size + t.numel() * 2 > SHARD_BYTES - HEADER_ROOM:
                    shards.append({})
                    size = 0
                shards[-1][name], size = t, size + t.numel() * 2
            files += [_write(tmp, moment, i, shard) for i, shard in enumerate(shards)]
        group = optimizer.param_groups[0]
        write_json(tmp / OPTIMIZER_META, {"format": OPTIMIZER_FORMAT, "version": 1, "step": max(steps),
                                          "dtype": "bf16", "betas": list(group["betas"]), "lr": group["lr"],
                                          "weight_decay": group["weight_decay"], "files": files})
    return folder


def _write(folder: Path, moment: str, index: int, tensors: dict[str, torch.Tensor]) -> str:
    name = f"{moment}-{index:05d}.safetensors"
    save_file(tensors, str(folder / name), metadata={"moment": moment})
    return name


def load_optimizer(optimizer, model: torch.nn.Module, folder: str | Path) -> int:
    """Load a compact optimizer state into `optimizer` for `model`'s parameters; returns its step count. A state
    that does not fit (other tensors, shapes, non-finite values) is a CheckpointError naming the file."""
    folder = Path(folder)
    meta = read_json_object(folder / OPTIMIZER_META)
    files = meta.get("files")
    if meta.get("format") != OPTIMIZER_FORMAT or not isinstance(files, list) or not all(
            isinstance(f, str) and Path(f).name == f and f.endswith(".safetensors") for f in files):
        raise CheckpointError(f"{folder / OPTIMIZER_META} is not a genstudio optimizer state (format "
                              f"{OPTIMIZER_FORMAT!r} with a list of safetensors files)")
    step = meta.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{folder / OPTIMIZER_META}: step = {step!r} must be an integer >= 0")
    named = _named(optimizer, model)
    moments: dict[str, dict[str, torch.Tensor]] = {m: {} for m in MOMENTS}
    for name in files:
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (listed in {OPTIMIZER_META})")
        try:
            with safe_open(str(path), framework="pt") as f:
                moment = (f.metadata() or {}).get("moment")
                if moment not in MOMENTS:
                    raise CheckpointError(f"{path}: its metadata names no AdamW moment ({', '.join(MOMENTS)})")
                for key in f.keys():
                    moments[moment][key] = f.get_tensor(key)
        except CheckpointError:
            raise
        except Exception as e:  # safetensors' own reason for a corrupt file
            raise CheckpointError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    for moment, tensors in moments.items():
        if set(tensors) != set(named):
            missing, extra = sorted(set(named) - set(tensors)), sorted(set(tensors) - set(named))
            raise CheckpointError(f"{folder}: the {moment} tensors do not match this model's parameters "
                                  f"(missing {missing[:3]}, extra {extra[:3]}): an optimizer state of another network")
        for key, t in tensors.items():
            if tuple(t.shape) != tuple(named[key].shape) or not t.is_floating_point():
                raise CheckpointError(f"{folder}: {moment} of {key} has shape {list(t.shape)} {t.dtype}, the "
                                      f"parameter {list(named[key].shape)}")
            if not bool(torch.isfinite(t).all()) or (moment == "exp_avg_sq" and bool((t < 0).any())):
                raise CheckpointError(f"{folder}: {moment} of {key} holds non-finite or negative values")
    on_device = any(g.get("fused") or g.get("capturable") for g in optimizer.param_groups)  # torch keeps step there
    for key, p in named.items():
        optimizer.state[p] = {"step": torch.tensor(float(step), device=p.device if on_device else "cpu"),
                              **{m: moments[m][key].to(p.device, p.dtype) for m in MOMENTS}}
    return step

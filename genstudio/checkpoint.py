"""Exported models and atomic folders.

An exported model is a folder:

    genstudio.json                      family, path, prediction, preconditioning, conditioning, training summary
    unet/config.json                    diffusers' UNet2DModel config
    unet/diffusion_pytorch_model.safetensors

A Constant Acceleration Flow (genstudio.caf, "network": "genstudio.CAFNetwork") has velocity/ and acceleration/
in place of unet/, each the same diffusers layout.

No pickle anywhere: safetensors and JSON only. Folders are written to a temporary sibling and
renamed into place, so a crash mid-write never leaves a folder that loads wrong.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

import torch

from .caf import CAF_NETWORK, CAFModel, CAFNetwork
from .model import Model
from .networks import UNetBackbone

FORMAT = "genstudio-model"
FORMAT_VERSION = 1
META_FILE = "genstudio.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, foreign, truncated or inconsistent."""


@contextlib.contextmanager
def atomic_folder(final: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` in one rename
    (an existing `final` is moved aside first and removed after)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        old = None
        if final.exists():
            old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def fsync_tree(folder: str | Path, files: bool = True) -> None:
    """Flush a folder's files (and the folder entry itself) to disk, so a rename after it is durable."""
    folder = Path(folder)
    if files:
        for p in folder.rglob("*"):
            if p.is_file():
                with open(p, "rb") as f:
                    os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log, skipping a line cut short by a crash."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def export_model(model: Model, folder: str | Path, training: dict[str, Any] | None = None,
                 defaults: dict[str, Any] | None = None) -> Path:
    """Write `model` as an exported checkpoint folder (atomically)."""
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise CheckpointError(f"refusing to export a model with non-finite weights ({name})")
    with atomic_folder(folder) as tmp:
        caf = isinstance(model.network, CAFNetwork)
        model.network.save(tmp if caf else tmp / "unet")
        meta = {"format": FORMAT, "version": FORMAT_VERSION, **model.spec(),
                "network": CAF_NETWORK if caf else "diffusers.UNet2DModel",
                "defaults": defaults or {}, "training": training or {}}
        write_json(tmp / META_FILE, meta)
    return Path(folder)


def read_meta(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    meta_file = folder / META_FILE
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a checkpoint folder (no such directory)")
    if not meta_file.is_file():
        hint = " (a training run? use its model/ subfolder)" if (folder / "model" / META_FILE).is_file() else ""
        raise CheckpointError(f"{folder} is not a genstudio checkpoint: {META_FILE} is missing{hint}")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_file} is not valid JSON ({e}); the checkpoint is corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_file} is not a genstudio model description (format != {FORMAT!r})")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{folder} was written by a newer genstudio (format version {meta['version']})")
    return meta


def load_model(folder: str | Path, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None) -> tuple[Model, dict[str, Any]]:
    """Load an exported model and its metadata; any problem is a CheckpointError that says what is wrong."""
    folder = Path(folder)
    if (folder / "model" / META_FILE).is_file() and not (folder / META_FILE).is_file():
        folder = folder / "model"  # a training run folder
    if not (folder / META_FILE).is_file() and (folder / "model_index.json").is_file():
        from .interop import load_diffusers_pipeline  # a diffusers DDPM/DDIM pipeline folder
        return load_diffusers_pipeline(folder, device=device, dtype=dtype)
    meta = read_meta(folder)
    caf = meta.get("network") == CAF_NETWORK
    for unet_dir in ([folder / "velocity", folder / "acceleration"] if caf else [folder / "unet"]):
        if not (unet_dir / "config.json").is_file() or not list(unet_dir.glob("*.safetensors")):
            raise CheckpointError(f"{unet_dir} lacks config.json or safetensors weights")
    try:
        network = CAFNetwork.load(folder, dtype=dtype) if caf else UNetBackbone.load(unet_dir, dtype=dtype)
        model = (CAFModel if caf else Model).from_spec(meta, network)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"cannot load {folder}: {type(e).__name__}: {e}") from None
    expected = meta.get("num_classes", 0)
    embeds = network.unet.config.num_class_embeds
    if (embeds or 0) != (expected + 1 if expected else 0):
        raise CheckpointError(f"{folder}: genstudio.json says {expected} classes but the network has "
                              f"{embeds} class embeddings")
    return model.to(device or "cpu").eval(), meta

"""Exported models: a folder with genstudio.json and one subfolder per component.

    genstudio.json          format, version, family, kind, path, prediction, preconditioning, conditioning,
                            components ({"unet": {"network": "diffusers.UNet2DModel"}}), defaults, training
    unet/config.json        each component in diffusers' save_pretrained layout (genstudio.nets)
    unet/diffusion_pytorch_model.safetensors

Format version 2 lists the components; version 1 (every checkpoint shipped before it) named one "network" and
implied the folders, and still loads. No pickle anywhere: safetensors and JSON only. Folders are written to a
temporary sibling and renamed into place (genstudio.atomic), so a crash mid-write never leaves one that loads wrong.

Loading refuses, with a CheckpointError naming the file, field or tensor, anything that cannot be right
(genstudio.checks): descriptions too large, too deep, of the wrong types or out of bounds; pickles; weights that are
missing, extra, misshapen, non-floating, non-finite or absurd; and a model whose forward pass on a probe image is
not finite.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_folder, write_json
from .checks import Problems, check_defaults, check_grids, check_model_fields, check_training, probe, read_json, short
from .families import FAMILIES, family_for_checkpoint
from .model import Model
from .nets import CheckpointError, UNetBackbone, first_non_finite, load_components, save_components

FORMAT = "genstudio-model"
FORMAT_VERSION = 2
META_FILE = "genstudio.json"
GRIDS_FILE = "grids.json"  # learned time grids (genstudio.learned_grids): sampling settings, not part of the model

__all__ = ["CheckpointError", "FORMAT", "FORMAT_VERSION", "META_FILE", "export_model", "load_model", "read_meta"]


def export_model(model: Model, folder: str | Path, training: dict[str, Any] | None = None,
                 defaults: dict[str, Any] | None = None) -> Path:
    """Write `model` as an exported checkpoint folder (atomically)."""
    if (name := first_non_finite(model)) is not None:
        raise CheckpointError(f"refusing to export a model with non-finite weights ({name})")
    if model.family not in FAMILIES:
        raise CheckpointError(f"cannot export a model of unregistered family {model.family!r}; "
                              f"registered: {', '.join(FAMILIES)}")
    expected = FAMILIES[model.family].components
    if set(model.components()) != set(expected):  # what read_meta will require
        raise CheckpointError(f"family {model.family!r} reads the component(s) {sorted(expected)}, but this model's "
                              f"network has {sorted(model.components())}: set the Family's components")
    with atomic_folder(folder) as tmp:
        components = save_components(model.components(), tmp)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, **model.spec(), "components": components,
                "defaults": defaults or {}, "training": training or {}}
        write_json(tmp / META_FILE, meta)
    return Path(folder)


def read_meta(folder: str | Path) -> dict[str, Any]:
    """genstudio.json, checked field by field, and brought to the current format version."""
    folder = Path(folder)
    meta_file = folder / META_FILE
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a checkpoint folder (no such directory)")
    if not meta_file.exists():
        hint = " (a training run? use its model/ subfolder)" if (folder / "model" / META_FILE).is_file() else ""
        raise CheckpointError(f"{folder} is not a genstudio checkpoint: {META_FILE} is missing{hint}")
    meta = read_json(meta_file)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_file} is not a genstudio model description (format != {FORMAT!r})")
    problems = Problems(meta_file)
    version = meta.get("version", 1)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CheckpointError(f"{folder} was written by a newer genstudio (format version {version}; this one reads "
                              f"1..{FORMAT_VERSION})")
    version = problems.integer(meta, "version", 1, FORMAT_VERSION, default=1)
    problems.check()
    name = problems.string(meta, "family", default=None)
    kind = problems.string(meta, "kind", default="field")
    problems.check()
    try:
        family = family_for_checkpoint(name, kind, version)
    except ValueError as e:
        raise CheckpointError(f"{meta_file}: {e}") from None
    check_model_fields(problems, meta)
    check_defaults(problems, meta, kind)
    check_training(problems, meta)
    if version < 2:  # version 1: a diffusers UNet in each component folder the family saves
        problems.string(meta, "network", default=None)
    else:
        components = problems.mapping(meta, "components")
        if components and set(components) != set(family.components):
            problems.add("components", f"= {short(sorted(components))}: family {family.name!r} reads the "
                                       f"component(s) {sorted(family.components)}")
    problems.check()
    if version < 2:
        meta = {k: v for k, v in meta.items() if k != "network"}
        meta.update(version=FORMAT_VERSION,
                    components={name: {"network": UNetBackbone.name} for name in family.components})
    grids: dict[str, Any] = {}
    if (folder / GRIDS_FILE).is_file():
        grid_problems = Problems(folder / GRIDS_FILE)
        grids = check_grids(grid_problems, read_json(folder / GRIDS_FILE), kind)
        grid_problems.check()
    return {**meta, "family": family.name, "grids": grids}


def load_model(folder: str | Path, device: str | torch.device | None = None,
               dtype: torch.dtype | None = None) -> tuple[Model, dict[str, Any]]:
    """Load an exported model and its metadata; any problem is a CheckpointError that says what is wrong."""
    folder = Path(folder)
    if (folder / "model" / META_FILE).is_file() and not (folder / META_FILE).is_file():
        folder = folder / "model"  # a training run folder
    if not (folder / META_FILE).is_file():
        for family in FAMILIES.values():  # a layout a family reads (diffusers' pipeline folders)
            if family.foreign is not None and folder.is_dir() and family.foreign[0](folder):
                model, meta = family.foreign[1](folder, device=device, dtype=dtype)
                return model, {"format": FORMAT, "version": FORMAT_VERSION, **meta}
    meta = read_meta(folder)
    components = load_components(folder, meta.get("components"), dtype=dtype)
    try:
        model = FAMILIES[meta["family"]].load(meta, components)
    except CheckpointError as e:
        raise CheckpointError(f"{folder}: {e}") from None
    except (ValueError, KeyError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"cannot load {folder}: {type(e).__name__}: {e}") from None
    expected = meta.get("num_classes", 0)
    embeds = model.network.class_embeddings
    if embeds != (expected + 1 if expected else 0):
        raise CheckpointError(f"{folder}: genstudio.json says {expected} classes but the network has "
                              f"{embeds or None} class embeddings")
    model = model.to(device or "cpu").eval()
    probe(model, folder)
    return model, meta

"""Reading (noise, sample) pairs for reflow (Liu et al. 2022): a folder of safetensors shards whose
noise is regenerated from per-image seeds (genstudio.reflow writes them)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from .noise import generators, randn_like

MANIFEST = "manifest.json"
KIND = "genstudio-pairs"


@dataclass(frozen=True, eq=False)
class PairSet:
    x0: torch.Tensor      # float32 (N, C, H, W), model range
    noise: torch.Tensor   # float32 (N, C, H, W), the standard normal z each x0 was sampled from
    labels: torch.Tensor  # int64 (N,), -1 when unconditional

    def __len__(self) -> int:
        return int(self.x0.shape[0])


def is_pairs_folder(source: str | Path) -> bool:
    path = Path(source)
    if not (path / MANIFEST).is_file():
        return False
    try:
        return json.loads((path / MANIFEST).read_text()).get("kind") == KIND
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def load_pairs(folder: str | Path) -> PairSet:
    """All complete shards of a pairs folder; the noise is regenerated from the stored seeds."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    shards = sorted(folder.glob("pairs-*.safetensors"))
    if not shards:
        raise ValueError(f"{folder} holds no pair shards yet: generate them first (genstudio reflow generate)")
    parts = [load_file(str(s)) for s in shards]
    x0 = torch.cat([p["x0"] for p in parts]).float()
    seeds = torch.cat([p["seeds"] for p in parts])
    labels = torch.cat([p["labels"] for p in parts])
    if len(set(seeds.tolist())) != len(seeds):
        raise ValueError(f"{folder}: duplicate seeds across shards; regenerate the pairs")
    if list(x0.shape[1:]) != list(manifest["image_shape"]):
        raise ValueError(f"{folder}: shards hold {tuple(x0.shape[1:])} images, the manifest says {manifest['image_shape']}")
    noise = randn_like(torch.empty_like(x0), generators(seeds.tolist()))
    return PairSet(x0, noise, labels)

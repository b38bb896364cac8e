"""The reflow pairs format (Liu et al. 2022): a folder of (noise, sample) pairs.

    manifest.json             {"kind": "genstudio-pairs", "version": 1, "checkpoint", "sampler", "steps", "grid",
                               "guidance", "image_shape": [C, H, W], "total", "shard_size", "seed", "num_classes"}
    pairs-00000.safetensors   "x0" float16 (n, C, H, W) samples in model range, "seeds" int64, "labels" int64 (-1: none)

Pair i's noise is the standard normal z that seed `seed + i` draws (what Pipeline.generate starts from), so it
is regenerated, never stored. genstudio.reflow writes these folders; the trainer reads them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from .core.noise import generators, randn_like

PAIRS_KIND = "genstudio-pairs"
PAIRS_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_KEYS = ("kind", "version", "checkpoint", "sampler", "steps", "grid", "guidance", "image_shape", "total",
                 "shard_size", "seed", "num_classes")


def shard_name(k: int) -> str:
    return f"pairs-{k:05d}.safetensors"


@dataclass(frozen=True, eq=False)
class PairSet:
    x0: Tensor      # float32 (N, C, H, W), model range
    noise: Tensor   # float32 (N, C, H, W), the standard normal z each x0 was sampled from
    seeds: Tensor   # int64 (N,)
    labels: Tensor  # int64 (N,), -1 when unconditional

    def __len__(self) -> int:
        return int(self.x0.shape[0])


def is_pairs_folder(source: str | Path) -> bool:
    try:
        read_manifest(source)
    except (FileNotFoundError, ValueError, OSError):
        return False
    return True


def pair_noise(seeds: Sequence[int], shape: Sequence[int]) -> Tensor:
    """The standard normal noise of images with these seeds, shape (len(seeds), *shape), float32 on the CPU:
    what Pipeline.generate draws, so it equals `randn_like(torch.empty(1, *shape), generators([s]))[0]`."""
    return randn_like(torch.empty(len(seeds), *shape), generators(list(seeds)))


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """A pairs folder's manifest, checked to be one."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a pairs folder: {MANIFEST} is missing "
                                f"(make one with `genstudio reflow generate`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != PAIRS_KIND:
        raise ValueError(f"{path} does not describe reflow pairs (kind != {PAIRS_KIND!r})")
    if manifest.get("version", 0) > PAIRS_VERSION:
        raise ValueError(f"{folder} was written by a newer genstudio (pairs version {manifest['version']})")
    return manifest


def num_shards(manifest: dict[str, Any]) -> int:
    return -(-int(manifest["total"]) // int(manifest["shard_size"]))


def pairs_complete(folder: str | Path) -> bool:
    """Whether a pairs folder has its manifest and every shard."""
    try:
        manifest = read_manifest(folder)
    except (FileNotFoundError, ValueError):
        return False
    return all((Path(folder) / shard_name(k)).is_file() for k in range(num_shards(manifest)))


def check_finite(samples: Tensor, what: str, first: int = 0) -> None:
    """Refuse float samples with a NaN or infinite value, naming the first bad one (index `first` + row), so
    training never starts on data that would skip every update that draws it."""
    if not samples.is_floating_point():
        return
    bad = (~torch.isfinite(samples.reshape(len(samples), -1))).any(dim=1).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        value = samples[i][~torch.isfinite(samples[i])].flatten()[0].item()
        raise ValueError(f"{what} is not finite for {len(bad)} of {len(samples)} samples: the first is row {i} "
                         f"(sample {first + i}), which holds {value}; regenerate the data or drop those samples")


def load_pairs(folder: str | Path) -> PairSet:
    """All pairs of a complete folder, the noise regenerated from the seeds; a NaN or infinite sample is an
    error naming its shard and row."""
    from safetensors.torch import load_file

    manifest = read_manifest(folder)
    if not pairs_complete(folder):
        raise ValueError(f"{folder} is incomplete: resume it with `genstudio reflow generate` (same arguments)")
    shards = [load_file(str(Path(folder) / shard_name(k))) for k in range(num_shards(manifest))]
    first = 0
    for k, shard in enumerate(shards):
        check_finite(shard["x0"], f"{Path(folder) / shard_name(k)}: x0", first)
        first += len(shard["x0"])
    x0, seeds, labels = (torch.cat([s[key] for s in shards]) for key in ("x0", "seeds", "labels"))
    return PairSet(x0.float(), pair_noise(seeds.tolist(), manifest["image_shape"]), seeds, labels)

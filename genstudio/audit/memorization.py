"""Memorization: how close a model's samples come to its training images, against the train-to-test baseline.

For every sample, the distance to its nearest training image (L2, in pixel space and in a feature space); the
same for real test images, which were never trained on, gives the baseline distribution. A sample closer than
the baseline's 1st percentile is closer than 99% of unseen real images come: the share of such samples is 1% for
a model that draws new images like the test split, and 100% for one that returns its training images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

Embed = Callable[[Tensor], Tensor]   # images (N, ...) -> vectors (N, D)

# A model is flagged when this share of its samples is closer to a training image than the baseline's 1st percentile
# (five times what unseen real images give).
FLAG_SHARE = 0.05


def nearest(queries: Tensor, bank: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """(distance, index) of each query's nearest row of `bank` (L2 over the flattened entries, float32)."""
    q = queries.flatten(1).float()
    best = torch.full((len(q),), float("inf"))
    index = torch.zeros(len(q), dtype=torch.int64)
    for start in range(0, len(bank), chunk):
        b = bank[start:start + chunk].flatten(1).float()
        d, i = torch.cdist(q, b).min(1)
        better = d < best
        best, index = torch.where(better, d, best), torch.where(better, i + start, index)
    return best, index


@dataclass
class SpaceResult:
    """Nearest-training-image distances of the samples and of the baseline (test) images in one space."""

    space: str
    sample_distance: Tensor   # (N,)
    sample_index: Tensor      # (N,) the nearest training image of each sample
    baseline_distance: Tensor  # (M,)

    @property
    def threshold(self) -> float:
        return float(torch.quantile(self.baseline_distance, 0.01))

    @property
    def share_below(self) -> float:
        """The share of samples closer than the baseline's 1st percentile."""
        return float((self.sample_distance < self.threshold).double().mean())

    def record(self) -> dict[str, Any]:
        q = torch.tensor([0.01, 0.5])
        s, b = (torch.quantile(v, q).tolist() for v in (self.sample_distance, self.baseline_distance))
        return {"share_below_baseline_p1": self.share_below, "baseline_p1": self.threshold,
                "sample_distance_p1": s[0], "sample_distance_median": s[1], "baseline_median": b[1],
                "n_samples": len(self.sample_distance), "n_baseline": len(self.baseline_distance)}


def memorization(samples: Tensor, train: Tensor, test: Tensor, *, embed: Embed | None = None,
                 train_features: Tensor | None = None, pixel_scale: float = 1.0,
                 baseline: dict[str, Tensor] | None = None) -> dict[str, SpaceResult]:
    """Nearest-training-image distances in pixel space (after multiplying by `pixel_scale`, e.g. 1/255 for uint8)
    and, given `embed`, in its feature space (`train_features`: embed(train), if already known), for the samples and
    for the test images; `baseline` gives the test images' distances by space when they are already known."""
    def pixels(x: Tensor) -> Tensor:
        return x.flatten(1).float() * pixel_scale

    baseline = baseline or {}
    out = {}
    d, i = nearest(pixels(samples), pixels(train))
    base = baseline["pixel"] if "pixel" in baseline else nearest(pixels(test), pixels(train))[0]
    out["pixel"] = SpaceResult("pixel", d, i, base)
    if embed is not None:
        f_train = train_features if train_features is not None else embed(train)
        d, i = nearest(embed(samples), f_train)
        base = baseline["feature"] if "feature" in baseline else nearest(embed(test), f_train)[0]
        out["feature"] = SpaceResult("feature", d, i, base)
    return out


def flagged(results: dict[str, SpaceResult], share: float = FLAG_SHARE) -> bool:
    return any(r.share_below > share for r in results.values())


def closest_pairs(samples: Tensor, train: Tensor, result: SpaceResult, k: int = 8) -> tuple[Tensor, Tensor]:
    """The k samples nearest to a training image and those training images (two (k, ...) stacks)."""
    order = result.sample_distance.argsort()[:k]
    return samples[order], train[result.sample_index[order]]

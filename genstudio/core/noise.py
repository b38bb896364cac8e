"""Gaussian noise drawn per sample, so the same seed gives the same image at any batch size."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

Generators = torch.Generator | Sequence[torch.Generator] | None


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample (CPU so that a seed means the same noise on every device)."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def randn_like(x: Tensor, generator: Generators = None) -> Tensor:
    """Standard normal noise shaped like x; a list of generators draws sample i from generator i."""
    if generator is None or isinstance(generator, torch.Generator):
        device = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    if len(generator) != x.shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype, device=g.device)
                        for g in generator]).to(x.device)

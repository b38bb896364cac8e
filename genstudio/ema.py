"""Exponential moving average of a model's weights, with the decay set per update from a half-life
in training images (Karras et al. 2022, App. F.3: beta = 0.5^(batch / half-life), half-life ramped up
as a fraction of the images seen so far) or as a fixed decay."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    def __init__(self, model: nn.Module, half_life_kimg: float = 0.0, rampup_ratio: float = 0.05,
                 decay: float = 0.0):
        super().__init__()
        if (half_life_kimg > 0) == (decay > 0):
            raise ValueError("give exactly one of ema half_life_kimg > 0 or ema decay in (0, 1)")
        if not 0 <= decay < 1:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.half_life_kimg, self.rampup_ratio, self.decay = half_life_kimg, rampup_ratio, decay

    def beta(self, images_seen: int, batch_images: int) -> float:
        if self.decay:
            return self.decay
        half_life = self.half_life_kimg * 1000
        if self.rampup_ratio:
            half_life = min(half_life, images_seen * self.rampup_ratio)
        return 0.5 ** (batch_images / max(half_life, 1e-8))

    @torch.no_grad()
    def update(self, model: nn.Module, images_seen: int, batch_images: int) -> None:
        beta = self.beta(images_seen, batch_images)
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            p_ema.lerp_(p.detach().to(p_ema.dtype), 1 - beta)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)

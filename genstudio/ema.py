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
    def update(self, model: nn.Module, images_seen: int, batch_images: int, ok: torch.Tensor | None = None) -> None:
        """One EMA step towards `model`; `ok` (a 0-dim 1.0 or 0.0 on the device) gates it without a host sync."""
        weight = 1 - self.beta(images_seen, batch_images)
        ema_params, params = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        gate = weight if ok is None else ok.to(ema_params[0].device, ema_params[0].dtype) * weight
        torch._foreach_lerp_(ema_params, [p.to(e.dtype) for e, p in zip(ema_params, params)], gate)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b if ok is None else torch.where(ok > 0, b, b_ema))

"""The score family: its objectives are: denoising score matching over many noise levels.

Both are (1/2) lambda(sigma) ||s(x~, sigma) - grad log q(x~ | x)||^2 with lambda = sigma^2, i.e.

    (1/2) || sigma s(x~, sigma) + (x~ - x) / sigma ||^2 = (1/2) || sigma s + eps ||^2,   x~ = x + sigma eps

(Song & Ermon 2019, Eq. 5-6; Song et al. 2021, Eq. 7). `ncsn` draws sigma from a geometric ladder,
`vesde` draws t uniformly on the VE path. Per sample the squared norm is averaged over dimensions
(the papers sum: theirs is D times ours, which only rescales the learning rate).

Any model works: its native prediction is converted to the score of p_t at x_t. On a path with
alpha != 1 the loss is the same one in the scaled variable x~ = x_t / alpha with sigma~ = sigma / alpha,
since sigma~ * score(x~) = sigma * score(x_t).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from genstudio.core.predictions import convert
from genstudio.objective import Batch, Objective

from .registry import Family, register_family


def sigma_weighted_dsm(model, x0: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
    """(1/2) mean_d (sigma s(x_t, t) + eps)^2 per sample, with x_t = alpha x0 + sigma eps (t of shape (B,))."""
    path = model.path
    eps = torch.randn_like(x0)
    x_t = path.sample(x0, eps, t)
    score = convert(model(x_t, t, labels), model.prediction, "score", path, x_t, t)
    sigma = path.sigma(t).reshape(-1, *([1] * (x0.ndim - 1)))
    return 0.5 * (sigma * score + eps).flatten(1).pow(2).mean(1)


@dataclass(frozen=True)
class NCSNLoss(Objective):
    """Denoising score matching over L geometric noise levels sigma_1 = sigma_max > ... > sigma_L = sigma_min,
    one level drawn uniformly per sample, weighted by lambda(sigma) = sigma^2 (Song & Ermon 2019, Eq. 6).
    The defaults are NCSNv2's CIFAR-10 ladder: 50 down to 0.01 in 232 levels (Song & Ermon 2020, Techniques 1-2
    and its cifar10.yml).
    A level's time is t = path.t_from_sigma_tilde(sigma); on the VE path with the same sigma range the
    ladder spans t = 1 .. 0."""

    name: ClassVar[str] = "ncsn"
    sigma_max: float = 50.0
    sigma_min: float = 0.01
    num_levels: int = 232

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"ncsn needs 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if int(self.num_levels) != self.num_levels or self.num_levels < 2:
            raise ValueError(f"ncsn num_levels must be an integer >= 2, got {self.num_levels!r}")

    def sigmas(self, device=None) -> Tensor:
        """The ladder, largest first (float64)."""
        return torch.exp(torch.linspace(math.log(self.sigma_max), math.log(self.sigma_min), int(self.num_levels),
                                        dtype=torch.float64, device=device))

    def loss(self, model, batch: Batch, **_) -> Tensor:
        x0 = batch.x0
        level = torch.randint(0, int(self.num_levels), (x0.shape[0],), device=x0.device)
        t = model.path.t_from_sigma_tilde(self.sigmas(x0.device)[level]).to(x0.dtype)
        return sigma_weighted_dsm(model, x0, t, batch.labels)


@dataclass(frozen=True)
class VESDELoss(Objective):
    """The continuous score-SDE objective: t ~ U(t_min, path.t_max), lambda(t) = sigma(t)^2 (Song et al. 2021,
    Eq. 7 and score_sde's loss without likelihood weighting; t_min = 1e-5 is its training eps). On the VE path
    this is the VE-SDE objective; on a VP path the same code is score-SDE's VP objective."""

    name: ClassVar[str] = "vesde"
    t_min: float = 1e-5

    def loss(self, model, batch: Batch, **_) -> Tensor:
        x0, path = batch.x0, model.path
        if not 0 <= self.t_min < path.t_max:
            raise ValueError(f"vesde needs 0 <= t_min < path t_max = {path.t_max}, got t_min = {self.t_min}")
        u = torch.rand(x0.shape[0], device=x0.device, dtype=torch.float64)
        t = (self.t_min + (path.t_max - self.t_min) * u).to(x0.dtype)
        return sigma_weighted_dsm(model, x0, t, batch.labels)


FAMILY = register_family(Family(
    name="score", objectives=(NCSNLoss, VESDELoss),
    summary="score models: NCSN (Song & Ermon 2019, 2020) and the VE score SDE (Song et al. 2021)"))

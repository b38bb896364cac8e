"""The diffusion family: denoising objectives on any noise path (DDPM, DDIM sampling, EDM, classifier-free
guidance through label dropout), and diffusers DDPM/DDIM pipeline folders read and written (`interop`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from genstudio.core.predictions import convert, target
from genstudio.objective import Batch, Objective, mean_per_sample

from ..registry import Family, register_family
from ..trojdiff import trojaned
from . import interop


@dataclass(frozen=True)
class DenoisingLoss(Objective):
    """E_t ||F(x_t, t) - target||^2, with the target of the model's native prediction
    (eps: Ho et al. 2020, Eq. 14; x0; v: Salimans & Ho 2022); t uniform on the path's training range."""

    name: ClassVar[str] = "ddpm"
    takes_pairs: ClassVar[bool] = True

    def times(self, path, n: int, device) -> Tensor:
        """Training times (float64); subclasses change the distribution."""
        return path.training_times(torch.rand(n, device=device, dtype=torch.float64))

    def loss(self, model, batch: Batch, **_) -> Tensor:
        """batch.noise: a fixed coupling (reflow pairs); by default fresh Gaussian noise."""
        x0, path = batch.x0, model.path
        t = self.times(path, x0.shape[0], x0.device).to(x0.dtype)
        eps = torch.randn_like(x0) if batch.noise is None else batch.noise
        x_t = path.sample(x0, eps, t)
        return mean_per_sample((model(x_t, t, batch.labels) - target(model.prediction, path, t, x0, eps)) ** 2)


@dataclass(frozen=True)
class EDMLoss(Objective):
    """lambda(sigma) ||D(x0 + sigma n; sigma) - x0||^2 with ln sigma ~ N(P_mean, P_std^2) and
    lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Karras et al. 2022, Sec. 5 and Table 1).

    sigma is the noise level of x_t / alpha, so the loss applies on any path and prediction type."""

    name: ClassVar[str] = "edm"
    takes_pairs: ClassVar[bool] = True
    P_mean: float = -1.2
    P_std: float = 1.2
    sigma_data: float = 0.5

    def loss(self, model, batch: Batch, **_) -> Tensor:
        """batch.noise: a fixed coupling (reflow pairs, TrojDiff's trigger noise); by default fresh Gaussian noise."""
        x0, path = batch.x0, model.path
        sigma = torch.exp(self.P_mean + self.P_std * torch.randn(x0.shape[0], device=x0.device, dtype=torch.float64))
        t = path.t_from_sigma_tilde(sigma).clamp(0, path.t_max).to(x0.dtype)
        sigma = path.sigma_tilde(t.double()).to(x0.dtype)  # the level actually used, after clamping
        x_t = path.sample(x0, torch.randn_like(x0) if batch.noise is None else batch.noise, t)
        denoised = convert(model(x_t, t, batch.labels), model.prediction, "x0", path, x_t, t)
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        return weight * mean_per_sample((denoised - x0) ** 2)


FAMILY = register_family(Family(
    name="diffusion", objectives=(DenoisingLoss, EDMLoss, trojaned(DenoisingLoss), trojaned(EDMLoss)),
    summary="denoising diffusion: DDPM (Ho et al. 2020), EDM (Karras et al. 2022), classifier-free guidance "
            "(Ho & Salimans 2022); TrojDiff's trojaned twins trojdiff_ddpm, trojdiff_edm (Chen et al. 2023)",
    foreign=(interop.is_diffusers_pipeline, interop.load_diffusers_pipeline)))

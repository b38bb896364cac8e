"""Training objectives: each maps (model, clean batch, labels) to a per-sample loss.

Randomness comes from torch's global RNG, which the trainer seeds per step, so a resumed run
draws the same noise as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .predictions import convert, target


def _mean_per_sample(x: Tensor) -> Tensor:
    return x.flatten(1).mean(1)


@dataclass(frozen=True)
class DenoisingLoss:
    """E_t ||F(x_t, t) - target||^2, with the target of the model's native prediction
    (eps: Ho et al. 2020, Eq. 14; x0; v: Salimans & Ho 2022); t uniform on the path's training range."""

    name: ClassVar[str] = "ddpm"
    family: ClassVar[str] = "diffusion"

    def times(self, path, n: int, device) -> Tensor:
        """Training times (float64); subclasses change the distribution."""
        return path.training_times(torch.rand(n, device=device, dtype=torch.float64))

    def __call__(self, model, x0: Tensor, labels: Tensor | None = None, noise: Tensor | None = None) -> Tensor:
        """noise: a fixed coupling (reflow pairs); by default fresh Gaussian noise."""
        path = model.path
        t = self.times(path, x0.shape[0], x0.device).to(x0.dtype)
        eps = torch.randn_like(x0) if noise is None else noise
        x_t = path.sample(x0, eps, t)
        return _mean_per_sample((model(x_t, t, labels) - target(model.prediction, path, t, x0, eps)) ** 2)


@dataclass(frozen=True)
class EDMLoss:
    """lambda(sigma) ||D(x0 + sigma n; sigma) - x0||^2 with ln sigma ~ N(P_mean, P_std^2) and
    lambda = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Karras et al. 2022, Sec. 5 and Table 1).

    sigma is the noise level of x_t / alpha, so the loss applies on any path and prediction type."""

    name: ClassVar[str] = "edm"
    family: ClassVar[str] = "diffusion"
    P_mean: float = -1.2
    P_std: float = 1.2
    sigma_data: float = 0.5

    def __call__(self, model, x0: Tensor, labels: Tensor | None = None) -> Tensor:
        path = model.path
        sigma = torch.exp(self.P_mean + self.P_std * torch.randn(x0.shape[0], device=x0.device, dtype=torch.float64))
        t = path.t_from_sigma_tilde(sigma).clamp(0, path.t_max).to(x0.dtype)
        sigma = path.sigma_tilde(t.double()).to(x0.dtype)  # the level actually used, after clamping
        x_t = path.sample(x0, torch.randn_like(x0), t)
        denoised = convert(model(x_t, t, labels), model.prediction, "x0", path, x_t, t)
        weight = (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2
        return weight * _mean_per_sample((denoised - x0) ** 2)


OBJECTIVES: dict[str, type] = {}


def register_objective(cls: type) -> type:
    """Class decorator: make an objective (a frozen dataclass with `name` and `family`) configurable."""
    if cls.name in OBJECTIVES:
        raise ValueError(f"objective {cls.name!r} registered twice")
    OBJECTIVES[cls.name] = cls
    return cls


for _cls in (DenoisingLoss, EDMLoss):
    register_objective(_cls)

from . import caf, consistency, flow, score  # noqa: E402,F401  (register the other families' objectives)


def objective_from_config(name: str, options: dict[str, Any] | None = None):
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
    cls = OBJECTIVES[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(options or {}) - fields
    if unknown:
        raise ValueError(f"objective {name!r} has no option(s) {sorted(unknown)}; its options: {sorted(fields)}")
    return cls(**(options or {}))

"""Network preconditioning: model output = c_skip * x + c_out * F(c_in * x, c_noise).

Preconditioning is data of the model (saved in its JSON), not code in the samplers.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .paths import NoisePath

Scalings = tuple[Tensor, Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class NoPrecond:
    """The network's output is the prediction itself; its time input is the path's noise label."""

    name: ClassVar[str] = "none"
    output: ClassVar[str | None] = None  # any native prediction type

    def scalings(self, path: NoisePath, t: Tensor) -> Scalings:
        """(c_skip, c_out, c_in, c_noise) at per-sample t of shape (B, 1, ..., 1)."""
        zero, one = torch.zeros_like(t), torch.ones_like(t)
        return zero, one, one, path.noise_label(t.flatten())


@dataclass(frozen=True)
class EDMPrecond:
    """EDM preconditioning (Karras et al. 2022, Table 1); the output is an x0 prediction.

    On a path with alpha != 1 it acts on the scaled variable x / alpha with noise level
    sigma / alpha, so the network sees unit-variance input on every path.
    """

    name: ClassVar[str] = "edm"
    output: ClassVar[str | None] = "x0"
    sigma_data: float = 0.5

    def scalings(self, path: NoisePath, t: Tensor) -> Scalings:
        alpha, s = path.alpha(t), path.sigma_tilde(t)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s**2 + sd2) / alpha
        c_out = s * self.sigma_data / torch.sqrt(s**2 + sd2)
        c_in = 1 / torch.sqrt(s**2 + sd2) / alpha
        c_noise = torch.log(s.flatten()) / 4
        return c_skip, c_out, c_in, c_noise


@dataclass(frozen=True)
class NCSNPrecond:
    """A noise-conditional score network: the network's output scaled by 1 / sigma, as NCSNv2 does
    (Song & Ermon 2020, NCSNv2, Technique 3); the output is the score of p_t at x_t.

    c_skip = 0, c_out = 1 / sigma, c_in = 1 / alpha, so the network sees x~ = x / alpha and its target
    is -eps (unit scale at every level). On the VE path alpha = 1 and sigma = sigma~, so this is
    c_out = 1 / sigma~ exactly; on other paths c_out = 1 / sigma = 1 / (alpha sigma~) because the
    score of x_t is the score of x~ divided by alpha. c_noise is the path's noise label (log(sigma) / 4
    on the VE path, as EDM's c_noise; NCSNv2 indexes the level instead, and score-SDE's NCSN++ feeds
    log sigma to Fourier features).
    """

    name: ClassVar[str] = "ncsn"
    output: ClassVar[str | None] = "score"

    def scalings(self, path: NoisePath, t: Tensor) -> Scalings:
        c_out = 1 / path.sigma(t)
        return torch.zeros_like(c_out), c_out, 1 / path.alpha(t), path.noise_label(t.flatten())


@dataclass(frozen=True)
class ConsistencyPrecond:
    """Consistency-model boundary scalings (Song et al. 2023, App. C); the output is an x0 prediction.

    Like EDM preconditioning it acts on x / alpha with sigma = sigma / alpha, so on the EDM path (alpha = 1)
    the boundary f(x, sigma_min) = x holds exactly; on other paths it holds for x / alpha."""

    name: ClassVar[str] = "consistency"
    output: ClassVar[str | None] = "x0"
    sigma_data: float = 0.5
    sigma_min: float = 0.002

    def scalings(self, path: NoisePath, t: Tensor):
        alpha, s = path.alpha(t), path.sigma_tilde(t)
        sd, sd2 = self.sigma_data, self.sigma_data**2
        d = s - self.sigma_min
        c_skip = sd2 / (d**2 + sd2) / alpha
        c_out = d * sd / torch.sqrt(sd2 + s**2)
        c_in = 1 / torch.sqrt(s**2 + sd2) / alpha
        c_noise = 250.0 * torch.log(s.flatten() + 1e-44)
        return c_skip, c_out, c_in, c_noise


PRECONDS = {cls.name: cls for cls in (NoPrecond, EDMPrecond, NCSNPrecond, ConsistencyPrecond)}


def precond_to_config(precond) -> dict[str, Any]:
    return {"name": precond.name, **dataclasses.asdict(precond)}


def precond_from_config(config: dict[str, Any] | str | None):
    config = {"name": config or "none"} if not isinstance(config, dict) else dict(config)
    name = config.pop("name", "none")
    if name not in PRECONDS:
        raise ValueError(f"unknown preconditioning {name!r}; known: {', '.join(PRECONDS)}")
    return PRECONDS[name](**config)

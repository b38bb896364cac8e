"""The flow family: flow matching / rectified flow (reflow trains it on its own pairs: genstudio.reflow).

Time convention. genstudio's t = 0 is the data: on the linear path x_t = (1 - t) x0 + t eps, so the
velocity is dx_t/dt = eps - x0. Rectified Flow (Liu et al. 2022; its Z_0 is noise) and the
flow_matching library / CAF papers run time the other way, tau = 1 - t with tau = 0 the noise, and their
velocity is x0 - eps = -(ours). SD3 (Esser et al. 2024, Eq. 3: z_t = (1 - t) x0 + t eps) uses our t.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from genstudio.core.paths import NoisePath

from .diffusion import DenoisingLoss
from .registry import Family, register_family
from .trojdiff import trojaned

TIME_DISTRIBUTIONS = ("uniform", "logit_normal")


def sample_times(path: NoisePath, n: int, distribution: str = "uniform", m: float = 0.0, s: float = 1.0,
                 device: torch.device | str | None = None) -> Tensor:
    """n float64 training times on the path's training range (`path.training_times` of u in [0, 1]).

    uniform: u ~ U[0, 1) (Liu et al. 2022; Lipman et al. 2022).
    logit_normal: u = sigmoid(m + s n), n ~ N(0, 1) (Esser et al. 2024, Eq. 19). SD3's t is ours, so
    m > 0 favours the noisier times; in tau = 1 - t time (flow_matching, CAF) this is logit-normal(-m, s).
    """
    if distribution == "uniform":
        u = torch.rand(n, device=device, dtype=torch.float64)
    elif distribution == "logit_normal":
        u = torch.sigmoid(m + s * torch.randn(n, device=device, dtype=torch.float64))
    else:
        raise ValueError(f"unknown time_distribution {distribution!r}; known: {', '.join(TIME_DISTRIBUTIONS)}")
    return path.training_times(u)


@dataclass(frozen=True)
class FlowMatchingLoss(DenoisingLoss):
    """E_t ||F(x_t, t) - target||^2 with the model's native prediction as target: on the linear path with
    prediction "velocity", the conditional flow matching / rectified flow loss ||v(x_t, t) - (eps - x0)||^2
    (Lipman et al. 2022, Eq. 23; Liu et al. 2022, Eq. 1, with tau = 1 - t). A velocity model on another
    path regresses that path's alpha' x0 + sigma' eps. t follows `time_distribution` (see `sample_times`)."""

    name: ClassVar[str] = "flow_matching"
    time_distribution: str = "uniform"
    m: float = 0.0   # logit-normal location (SD3 uses 0)
    s: float = 1.0   # logit-normal scale (SD3 uses 1)

    def __post_init__(self):
        if self.time_distribution not in TIME_DISTRIBUTIONS:
            raise ValueError(f"flow_matching time_distribution must be one of {TIME_DISTRIBUTIONS}, "
                             f"got {self.time_distribution!r}")
        if not self.s > 0:
            raise ValueError(f"flow_matching logit-normal scale s must be > 0, got {self.s}")

    def times(self, path: NoisePath, n: int, device) -> Tensor:
        return sample_times(path, n, self.time_distribution, self.m, self.s, device)


FAMILY = register_family(Family(
    name="flow", objectives=(FlowMatchingLoss, trojaned(FlowMatchingLoss)),
    summary="flow matching / rectified flow (Lipman et al. 2022; Liu et al. 2022), reflow on its own pairs; "
            "TrojDiff's trojaned twin trojdiff_flow_matching (Chen et al. 2023)"))

"""Blackout Diffusion (Santos, Fox, Lubbers, Lin, ICML 2023; facts from their code, lanl/Blackout-Diffusion): a
discrete-state diffusion where every pixel count dies at rate 1 until the image is black (genstudio.core.blackout).

The network learns D(n_t, t) ~ E[n_0 - n_t | n_t], the expected dead counts, with the paper's instantaneous loss
(Eq. 12): t = t_k uniform over the 1000 observation times, n_t ~ Binomial(n_0, p(t_k)), weight T p(t_k) (t_k -
t_{k-1}), Poisson deviance of D against the true dead count. Ours differs from their code in the parametrisation:
D = (255 - n_t) sigmoid(network) (always a possible count; they use softplus), network input
(n_t - 127.5 p) / (127.5 sqrt(p)) (they use n_t - 127.5 p) and time input 1000 t / 15 (they use the index k).

The model is kind "blackout": its forward returns the x0 prediction (n_t + D) / 127.5 - 1 in model range from a
state x = n_t / 127.5 - 1 at time t in [0, 15], so guidance and the sampler API apply unchanged, and only
samplers/blackout.py's samplers drive it. Its path (linear) only places the API's grid; the samplers use the
observation times.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from genstudio.config import Config
from genstudio.core import blackout as bo
from genstudio.core.paths import LinearPath, expand
from genstudio.core.precond import NoPrecond
from genstudio.model import Model
from genstudio.objective import Batch, Objective, mean_per_sample

from .registry import Family, build_unet_model, load_single_network, register_family

HALF = bo.MAX_COUNT / 2


class BlackoutModel(Model):
    """x0(x, t) = (n_t + D(n_t, t)) / 127.5 - 1, D = (255 - n_t) sigmoid(network(input, 1000 t / 15))."""

    def __init__(self, network: nn.Module, num_classes: int = 0, family: str | None = None):
        super().__init__(network, LinearPath(), "x0", NoPrecond(), num_classes, family, "blackout")

    def forward(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None) -> Tensor:
        n = bo.counts(x)
        t = expand(t, x).double()
        p = bo.survival(t)
        u = (n - HALF * p) / (HALF * p.sqrt())
        if self.num_classes and labels is None:
            labels = torch.full((x.shape[0],), self.null_label, dtype=torch.long, device=x.device)
        net_dtype = next(self.network.parameters()).dtype
        out = self.network(u.to(net_dtype), (1000 * t / bo.T_END).flatten().to(net_dtype), labels)
        dead = (bo.MAX_COUNT - n) * torch.sigmoid(out.double())
        return bo.model_range(n + dead, x.dtype)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "t_end": bo.T_END}


@dataclass(frozen=True)
class BlackoutLoss(Objective):
    """The instantaneous loss (this module's docstring), per sample, in units of counts / 255; `steps` observation
    times."""

    name: ClassVar[str] = "blackout"
    steps: int = 1000

    def __post_init__(self):
        if not (isinstance(self.steps, int) and self.steps >= 2):
            raise ValueError(f"steps must be an integer >= 2, got {self.steps!r}")

    def loss(self, model, batch: Batch, **_) -> Tensor:
        n0 = bo.counts(batch.x0)
        times = bo.observation_times(self.steps).to(n0.device)
        k = torch.randint(self.steps, (n0.shape[0],), device=n0.device)
        t = times[k + 1]
        n_t = bo.thin(n0, expand(bo.survival(t), n0))
        x0 = model(bo.model_range(n_t, batch.x0.dtype), t.to(batch.x0.dtype), batch.labels)
        weight = bo.loss_weights(times)[k].to(batch.x0.dtype)
        deviance = bo.poisson_deviance(bo.dead_counts(x0, n_t), n0 - n_t) / bo.MAX_COUNT
        return weight * mean_per_sample(deviance.to(batch.x0.dtype))


def build(family: Any, config: Config) -> BlackoutModel:
    base = build_unet_model(family, config)
    return BlackoutModel(base.network, config.model.num_classes, family.name)


def load(family: Any, meta: dict[str, Any], components: dict[str, nn.Module]) -> BlackoutModel:
    base = load_single_network(family, meta, components)
    return BlackoutModel(base.network, base.num_classes, family.name)


BLACKOUT = register_family(Family(
    name="blackout", objectives=(BlackoutLoss,), kinds=("blackout",),
    summary="discrete-state diffusion: pixel counts die until black, a learned birth process brings them back "
            "(Santos et al. 2023)", builder=build, loader=load))

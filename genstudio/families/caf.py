"""Constant Acceleration Flow (Park et al. 2024, "Constant Acceleration Flow", NeurIPS; mlvlab/CAF).

CAF joins noise and data by a path of constant acceleration instead of constant velocity. Two networks:
an initial-velocity model and an acceleration model that also sees the initial velocity (initial velocity
conditioning, IC), trained on a fixed (noise, data) coupling: reflow pairs, or fresh noise (1-rectified CAF).

Time convention. The paper's tau = 0 is the noise and tau = 1 the data; genstudio's t = 1 - tau (t = 0 is the
data), so with s = 1 - t (the paper's tau), a pair (x0 = data, eps = noise):

    paper:  X_tau = X_0 + tau v0 + tau^2 / 2 a,      v0 = h (X_1 - X_0),   a = 2 (X_1 - X_0 - v0)
    ours:   x_t = eps - s u0 + s^2 / 2 a,             u0 = h (eps - x0),    a = 2 (x0 - eps + u0)

u0 = -v0 is the velocity dx/dt in our time at the noise end (t = 1): with h = 1 it is the rectified-flow target
eps - x0 and a = 0. The acceleration is a second derivative, the same in either time. x_t hits x0 at t = 0 (s = 1)
for every h and every u0: eps - u0 + (x0 - eps + u0) = x0. The models' outputs are u0 and a in these conventions.

Losses (paper Sec. 3; the reference's velocity_training_losses / acceleration_training_losses):

    velocity:      || u_theta(x_t, t) - h (eps - x0) ||^2           x_t on the path with the true u0
    acceleration:  || a_phi(x_t, t, u^) - 2 (x0 - eps + u^) ||^2     u^ = u_theta(eps, 1) (stop-gradient), x_t on
                                                                     the path with u^ (so it still ends at x0)

The paper trains the two models in two stages (velocity first, then acceleration against the frozen velocity
model); `CAFLoss` trains both at once, the acceleration loss using the current velocity model's u^ without
gradient. At its fixed point the two coincide.

Sampling (`samplers/caf.py`): u^ = u_theta(x_1, 1) once, then per step t -> s one acceleration evaluation and the
closed form x_s = x_t + (s - t) u^ + ((1 - s)^2 - (1 - t)^2) / 2 a_phi(x_t, t, u^).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from genstudio.config import Config
from genstudio.core.paths import LinearPath, NoisePath, expand, path_from_config
from genstudio.core.precond import NoPrecond, precond_from_config
from genstudio.model import Model
from genstudio.nets import CheckpointError, UNetBackbone, unet_config
from genstudio.objective import Batch, Objective, mean_per_sample

from . import flow
from .registry import Family, register_family

PARTS = ("velocity", "acceleration")


def caf_state(x0: Tensor, eps: Tensor, t: Tensor, u0: Tensor) -> tuple[Tensor, Tensor]:
    """(x_t, a) on the constant-acceleration path from eps (t = 1) with initial velocity u0 (dx/dt at t = 1,
    our time) to x0 (t = 0): a = 2 (x0 - eps + u0), x_t = eps - s u0 + s^2 / 2 a with s = 1 - t (the paper's tau,
    Park et al. 2024, Eq. 4-6). t is a scalar or per-sample (B,)."""
    s = 1 - expand(t, x0)
    a = 2 * (x0 - eps + u0)
    return eps - s * u0 + s**2 / 2 * a, a


class CAFNetwork(nn.Module):
    """Two networks F(x, c_noise, labels): the initial-velocity model on x, and the acceleration model on x
    concatenated with the initial velocity along channels (initial velocity conditioning). Any two modules with
    that signature work (tests use MLPs); `from_config` builds two diffusers UNets, the acceleration one with
    twice the input channels."""

    def __init__(self, velocity: nn.Module, acceleration: nn.Module):
        super().__init__()
        self.velocity, self.accel = velocity, acceleration

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CAFNetwork":
        """config: UNet2DModel keyword arguments of the velocity UNet (genstudio.nets.unet_config)."""
        accel = {**config, "in_channels": 2 * config["in_channels"]}
        return cls(UNetBackbone.from_config(config), UNetBackbone.from_config(accel))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.velocity.image_shape

    @property
    def class_embeddings(self) -> int:
        return self.velocity.class_embeddings

    def components(self) -> dict[str, nn.Module]:
        return {"velocity": self.velocity, "acceleration": self.accel}

    def start_from_field(self, state: dict[str, Tensor]) -> None:
        """Both parts from a flow model's network (train.init_from): the velocity part as it is, the acceleration
        part with zero weights on its initial-velocity input channels, so a(x, t, u0) starts as the flow's
        v(x, t) = E[eps - x0 | x_t], which is the acceleration target 2 (h - 1)(eps - x0) at h = 1.5."""
        self.velocity.load_state_dict(state)
        accel = {}
        for key, ours in self.accel.state_dict().items():
            theirs = state.get(key)
            if theirs is None or theirs.shape[:1] + theirs.shape[2:] != ours.shape[:1] + ours.shape[2:]:
                raise CheckpointError(f"the acceleration network's {key} has no match in the flow model's network")
            if theirs.shape != ours.shape:  # the input layer: x then u0 along channels; u0's weights start at zero
                theirs = torch.cat([theirs, torch.zeros_like(ours[:, theirs.shape[1]:])], 1)
            accel[key] = theirs
        self.accel.load_state_dict(accel)

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        """The initial velocity u0."""
        return self.velocity(x, c_noise, labels)

    def acceleration(self, x: Tensor, c_noise: Tensor, v0: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.accel(torch.cat([x, v0.to(x.dtype)], 1), c_noise, labels)


class CAFModel(Model):
    """A CAF model: kind "caf" (driven by the "caf" sampler only), family "caf", on the linear path with
    t_max = 1 (where the constant-acceleration path starts) and "velocity" prediction, without preconditioning.

    forward(x, t, labels, part="velocity") is the initial velocity u0 (dx/dt at t = 1, our time: h (eps - x0) when
    trained); part="acceleration" with v0=u0 the acceleration. Both parts go through forward so a DDP-wrapped model
    syncs both networks' gradients."""

    def __init__(self, network: nn.Module, path: NoisePath | None = None, prediction: str = "velocity", precond=None,
                 num_classes: int = 0, family: str = "caf", kind: str = "caf"):
        path = path or LinearPath()
        if not isinstance(path, LinearPath) or path.t_max != 1.0:
            raise ValueError(f"a CAF model runs on the linear path with t_max = 1 (the noise end of its constant-"
                             f"acceleration path); got {path}. Set model.path = {{name = \"linear\"}}")
        if prediction != "velocity" or not isinstance(precond or NoPrecond(), NoPrecond):
            raise ValueError(f"a CAF model predicts \"velocity\" without preconditioning; got prediction "
                             f"{prediction!r}, precond {getattr(precond, 'name', precond)!r}. Set model.prediction = "
                             f"\"velocity\" and model.precond = {{name = \"none\"}}")
        if family != "caf" or kind != "caf":
            raise ValueError(f"a CAF model has family 'caf' and kind 'caf', got {family!r} and {kind!r}")
        super().__init__(network, path, prediction, NoPrecond(), num_classes, family, kind)

    def forward(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None, part: str = "velocity",
                v0: Tensor | None = None) -> Tensor:
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        if (part == "acceleration") != (v0 is not None):
            raise ValueError("the acceleration part needs v0 (the initial velocity); the velocity part takes none")
        c_noise = self.path.noise_label(expand(t, x).flatten())
        if self.num_classes and labels is None:
            labels = torch.full((x.shape[0],), self.null_label, dtype=torch.long, device=x.device)
        net_dtype = next(self.network.parameters()).dtype
        if part == "velocity":
            out = self.network(x.to(net_dtype), c_noise, labels)
        else:
            out = self.network.acceleration(x.to(net_dtype), c_noise, v0.to(net_dtype), labels)
        return out.to(x.dtype)


@dataclass(frozen=True)
class CAFLoss(Objective):
    """Constant Acceleration Flow's two losses (Park et al. 2024, Sec. 3.1-3.2; see this module's docstring), summed
    with `acceleration_weight` on the second. `noise` is the fixed coupling (reflow pairs: 2-rectified CAF, the
    paper's setting); without it fresh noise gives 1-rectified CAF. h = 1.5 is the paper's CIFAR-10 setting
    (h = 1: a = 0 on the true path, the rectified-flow velocity). t follows `time_distribution` on the path's
    training range (flow.sample_times; the paper's default is uniform)."""

    name: ClassVar[str] = "caf"
    takes_pairs: ClassVar[bool] = True
    h: float = 1.5
    time_distribution: str = "uniform"
    m: float = 0.0
    s: float = 1.0
    acceleration_weight: float = 1.0

    def __post_init__(self):
        if self.time_distribution not in flow.TIME_DISTRIBUTIONS:
            raise ValueError(f"caf time_distribution must be one of {flow.TIME_DISTRIBUTIONS}, "
                             f"got {self.time_distribution!r}")
        if not self.s > 0 or not self.acceleration_weight >= 0:
            raise ValueError(f"caf needs s > 0 and acceleration_weight >= 0, got {self.s}, {self.acceleration_weight}")

    def loss(self, model, batch: Batch, **_) -> Tensor:
        if getattr(model, "kind", None) != "caf":
            raise ValueError("objective 'caf' trains a CAF model (set model.kind = \"caf\")")
        x0, labels = batch.x0, batch.labels
        eps = torch.randn_like(x0) if batch.noise is None else batch.noise
        n = x0.shape[0]
        t = flow.sample_times(model.path, n, self.time_distribution, self.m, self.s, x0.device).to(x0.dtype)
        u0 = self.h * (eps - x0)
        x_t, _ = caf_state(x0, eps, t, u0)
        loss_v = mean_per_sample((model(x_t, t, labels, part="velocity") - u0) ** 2)
        with torch.no_grad():  # the acceleration model learns to correct the velocity model's own u0 (IC)
            u_hat = model(eps, torch.ones_like(t), labels, part="velocity")
        x_t, a = caf_state(x0, eps, t, u_hat)
        loss_a = mean_per_sample((model(x_t, t, labels, part="acceleration", v0=u_hat) - a) ** 2)
        return loss_v + self.acceleration_weight * loss_a


def build_caf_model(family: Family, config: Config) -> CAFModel:
    """The CAF model a training config describes (model.kind = "caf", objective "caf"): two UNets of the
    model.network preset (the acceleration one with twice the input channels)."""
    m = config.model
    unet = unet_config(m.network, image_size=config.data.image_size, num_classes=m.num_classes, **m.unet)
    return CAFModel(CAFNetwork.from_config(unet), path_from_config(m.path), m.prediction,
                    precond_from_config(m.precond), m.num_classes)


def load_caf_model(family: Family, meta: dict[str, Any], components: dict[str, nn.Module]) -> CAFModel:
    """The two components as one CAFNetwork; the acceleration network must take the velocity network's images
    and initial velocity (twice the channels, the same size) and share its class embeddings."""
    if set(components) != set(PARTS):
        raise CheckpointError(f"a CAF checkpoint has components {list(PARTS)}, got {sorted(components)}")
    velocity, accel = components["velocity"], components["acceleration"]
    (c, h, w), (ca, ha, wa) = velocity.image_shape, accel.image_shape
    if (ca, ha, wa) != (2 * c, h, w) or accel.class_embeddings != velocity.class_embeddings:
        raise CheckpointError(f"the CAF acceleration network takes {ca} channels of {ha}x{wa} with "
                              f"{accel.class_embeddings} class embeddings; the velocity network's images and initial "
                              f"velocity need {2 * c} channels of {h}x{w} and its {velocity.class_embeddings}")
    return CAFModel.from_spec({**meta, "family": family.name}, CAFNetwork(velocity, accel))


FAMILY = register_family(Family(
    name="caf", objectives=(CAFLoss,), kinds=("caf",), components=("velocity", "acceleration"),
    summary="Constant Acceleration Flow (Park et al. 2024): initial velocity + acceleration networks",
    builder=build_caf_model, loader=load_caf_model))

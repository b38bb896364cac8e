"""What the one-step generator families share (Score Mismatching; SIGN-style idempotent distillation): the model
G(x), a network's x0 prediction at one fixed time whatever time a sampler passes, its builder and loader, and the
score-network pieces their objectives train beside it.

G(x) = x0_theta(x, t_gen): the network, path, native prediction and preconditioning of a field model evaluated at
t_gen (the path's t_max, where x is pure noise, for models built from a config). So a generator starts from a
teacher's weights with `train.init_from` (its one-step x0 prediction, the posterior mean: SiD's and DMD's
initialization) and a score network can start as a copy of it (`OneStepModel.field`). Kinds: "onestep" (a
generator of noise: the "decode" and "consistency" samplers) and "idempotent" (a projector defined on any input: also
"reapply" and the "project" edit).
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import Tensor, nn

from genstudio.config import Config
from genstudio.core.paths import expand, path_from_config
from genstudio.core.precond import precond_from_config
from genstudio.core.predictions import convert
from genstudio.model import Model

from .registry import build_unet_model, load_single_network


class OneStepModel(Model):
    """G(x) = the network's x0 prediction at the fixed time `t_gen` (t is ignored: every call is one evaluation at
    t_gen). `prediction` is "x0" (what forward returns, so samplers' conversions are identities); the network's own
    prediction is `network_prediction`, recorded in genstudio.json with t_gen."""

    def __init__(self, network: nn.Module, path, prediction: str, precond=None, num_classes: int = 0,
                 family: str | None = None, kind: str = "onestep", t_gen: float | None = None):
        super().__init__(network, path, prediction, precond, num_classes, family, kind)
        t_gen = float(path.t_max if t_gen is None else t_gen)
        if not float(path.t_min) <= t_gen <= float(path.t_max):
            raise ValueError(f"generator_time must be in the path's [{path.t_min}, {path.t_max}], got {t_gen}")
        self.network_prediction, self.prediction, self.t_gen = prediction, "x0", t_gen

    def forward(self, x: Tensor, t: Tensor | float | None = None, labels: Tensor | None = None) -> Tensor:
        t = torch.full((x.shape[0],), self.t_gen, dtype=x.dtype, device=x.device)
        return convert(Model.forward(self, x, t, labels), self.network_prediction, "x0", self.path, x, expand(t, x))

    def field(self) -> Model:
        """A field model on a deep copy of the network (a fake-score network that starts where G started)."""
        return Model(copy.deepcopy(self.network), self.path, self.network_prediction, self.precond, self.num_classes,
                     self.family, "field")

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "prediction": self.network_prediction, "generator_time": self.t_gen}


def build(family: Any, config: Config) -> OneStepModel:
    """The config's UNet under a OneStepModel at t_gen = the path's t_max (pure noise in)."""
    m = config.model
    base = build_unet_model(family, config)
    return OneStepModel(base.network, base.path, m.prediction, base.precond, m.num_classes, family.name, m.kind)


def load(family: Any, meta: dict[str, Any], components: dict[str, nn.Module]) -> OneStepModel:
    base = load_single_network(family, meta, components)
    return OneStepModel(base.network, path_from_config(meta["path"]), meta["prediction"],
                        precond_from_config(meta.get("precond")), int(meta.get("num_classes", 0)), family.name,
                        meta.get("kind", family.kinds[0]), meta.get("generator_time"))


# ---- the score networks the objectives train or read ----------------------------------------------------------

def predict(model, x_t: Tensor, t: Tensor, labels: Tensor | None, kind: str) -> Tensor:
    """A field model's prediction of type `kind` ("eps", "x0", ...) at (x_t, t)."""
    plain = getattr(model, "module", model)  # its attributes, under DDP
    return convert(model(x_t, t, labels), plain.prediction, kind, plain.path, x_t, expand(t, x_t))


def input_gradient(fn: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """(fn(x), d sum(fn(x)) / dx), both detached, leaving every parameter's gradient alone: what a frozen player
    passes back in a two-player loss (the loop sums every group's loss into one backward pass, so the other player's
    parameters must not see it)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        value = fn(x)
        (grad,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), grad


def with_gradient(x: Tensor, value: Tensor, grad: Tensor) -> Tensor:
    """A per-sample loss whose value is `value` (detached) and whose gradient with respect to x is `grad`."""
    lin = (x * grad.detach()).flatten(1).sum(1)
    return value.detach() + lin - lin.detach()


def noise_levels(path, sigmas: Tensor) -> Tensor:
    """The times on `path` whose noise-to-signal ratio sigma / alpha is each of `sigmas` (float64)."""
    return path.t_from_logsnr(-2 * torch.log(sigmas.double())).clamp(float(path.t_min), float(path.t_max))


def noised(path, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(x_t, eps) on `path` for per-sample times t."""
    eps = torch.randn_like(x0)
    return path.sample(x0, eps, t.to(x0.dtype)), eps

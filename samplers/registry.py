"""The sampler registry: each sampler says what it needs from a model, and the API and the UI
ask it which samplers can drive a given model."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

SAMPLERS: dict[str, "SamplerSpec"] = {}


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: Callable
    needs: tuple[str, ...]  # model kinds it drives: "field" predicts (x0, eps, ...) at (x, t); "map" jumps to data
    consumes: str         # the prediction type it asks the model for
    stochastic: bool
    nfe_per_step: int | None  # network evaluations per step; None: adaptive, the run's counter says
    paper: str
    default_grid: str | None = None  # None: the model's path chooses (paths.NoisePath.default_grid)
    nfe_offset: int = 0  # beyond steps * nfe_per_step: -1 when Heun's last step is Euler, +1 for a final denoise
    invertible: bool = False  # deterministic and runs just as well from data to noise (ODE inversion)
    ends_denoised: bool = False  # its last step returns the x0 prediction (so VE's sigma_min is removed)

    @property
    def options(self) -> frozenset[str]:
        """The keyword options the sampler takes beyond the shared signature."""
        return frozenset(inspect.signature(self.fn).parameters) - {"model", "x", "ts", "generator", "callback"}

    def nfe(self, steps: int) -> int | None:
        """Evaluations for `steps` steps of a grid that ends at t = 0 (None for adaptive solvers)."""
        return None if self.nfe_per_step is None else steps * self.nfe_per_step + self.nfe_offset


def register(*, name: str, needs: str | tuple[str, ...], consumes: str, stochastic: bool, nfe_per_step: int | None,
             paper: str, default_grid: str | None = None, nfe_offset: int = 0, invertible: bool = False,
             ends_denoised: bool = False):
    """Decorator: add a sampler with the shared signature
    `fn(model, x, ts, *, generator=None, callback=None, **opts) -> x` to the registry."""
    def wrap(fn: Callable) -> Callable:
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} registered twice")
        kinds = (needs,) if isinstance(needs, str) else tuple(needs)
        SAMPLERS[name] = SamplerSpec(name, fn, kinds, consumes, stochastic, nfe_per_step, paper,
                                     default_grid, nfe_offset, invertible, ends_denoised)
        return fn
    return wrap


def default_grid(spec: SamplerSpec, path) -> str:
    """The grid a sampler runs on when none is asked for: its own preference, else the path's."""
    return spec.default_grid or path.default_grid


def model_kind(model) -> str:
    return getattr(model, "kind", "field")


def compatible(model) -> list[str]:
    """Names of the samplers that can drive `model` (a field model admits every field sampler)."""
    kind = model_kind(model)
    return [name for name, spec in SAMPLERS.items() if kind in spec.needs]


def get(name: str, model=None) -> SamplerSpec:
    """The spec of sampler `name`, checked against `model` when given."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known samplers: {', '.join(SAMPLERS)}")
    spec = SAMPLERS[name]
    if model is not None and model_kind(model) not in spec.needs:
        raise ValueError(f"sampler {name!r} needs a {' or '.join(spec.needs)} model; this model is a "
                         f"{model_kind(model)}. "
                         f"Samplers that can drive it: {', '.join(compatible(model))}")
    return spec

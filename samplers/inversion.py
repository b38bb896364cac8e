"""ODE inversion: run a deterministic sampler from data to noise, for editing and interpolation."""
from __future__ import annotations

from torch import Tensor

from .registry import get


def invert(model, x0: Tensor, ts: Tensor, sampler: str = "ddim", **opts) -> Tensor:
    """The latent at ts[0] that `sampler` on grid `ts` maps back to (about) x0.

    The grid is walked backwards from its smallest positive time, where x0 stands in for x_t (the
    neglected noise is sigma(t_min)). Sampling the result on `ts` with the same sampler reconstructs
    x0 up to the solver's discretization error."""
    spec = get(sampler, model)
    if not spec.invertible:
        raise ValueError(f"sampler {sampler!r} cannot invert (stochastic or one-way); invertible samplers: "
                         f"{', '.join(n for n in _invertible_names(model))}")
    backwards = ts.flip(0)
    backwards = backwards[1:] if backwards[0] == 0 else backwards
    return spec.fn(model, x0, backwards, **opts)


def _invertible_names(model) -> list[str]:
    from .registry import SAMPLERS, compatible

    return [n for n in compatible(model) if SAMPLERS[n].invertible]

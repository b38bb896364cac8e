"""Running a sampler: the one place that turns standard normal noise z into x at ts[0] (or takes a given start
state, e.g. a noised image for SDEdit or an interpolated latent) and, on a path that keeps noise at t = 0
(VE: sigma(0) = sigma_min), removes it with a final denoising evaluation. Generation, editing, reflow and the
evaluator all sample through `run_sampler`."""
from __future__ import annotations

from torch import Tensor

from .registry import SamplerSpec


def prior(path, z: Tensor, ts: Tensor) -> Tensor:
    """x at ts[0] for standard normal z: sigma(ts[0]) z (the data term alpha x0 is negligible there)."""
    return (z.double() * path.sigma(ts[0].double()).to(z.device)).to(z.dtype)


def run_sampler(spec: SamplerSpec, field, z: Tensor | None, ts: Tensor, *, start: Tensor | None = None,
                generator=None, callback=None, **opts) -> Tensor:
    """`spec`'s sampler on the bound model `field` (genstudio.model.Guided) along grid ts, from noise z
    (x = prior(z) at ts[0]) or from `start`, the state at ts[0]."""
    if (z is None) == (start is None):
        raise ValueError("run_sampler takes noise z or a start state, exactly one of them")
    x = start if z is None else prior(field.path, z, ts)
    x = spec.fn(field, x, ts, generator=generator, callback=callback, **opts)
    if float(field.path.sigma(ts[-1].double())) > 0 and not spec.ends_denoised:
        x = field.x0(x, ts[-1].to(x.dtype))
    return x

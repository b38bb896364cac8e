"""Running a sampler from standard normal noise: the one place that turns z into x at ts[0] and, on a path
that keeps noise at t = 0 (VE: sigma(0) = sigma_min), removes it with a final denoising evaluation."""
from __future__ import annotations

from torch import Tensor

from .registry import SamplerSpec


def prior(path, z: Tensor, ts: Tensor) -> Tensor:
    """x at ts[0] for standard normal z: sigma(ts[0]) z (the data term alpha x0 is negligible there)."""
    return (z.double() * path.sigma(ts[0].double()).to(z.device)).to(z.dtype)


def run_sampler(spec: SamplerSpec, field, z: Tensor, ts: Tensor, *, generator=None, callback=None, **opts) -> Tensor:
    """`spec`'s sampler on the bound model `field` (genstudio.model.Guided) from noise z along grid ts."""
    x = spec.fn(field, prior(field.path, z, ts), ts, generator=generator, callback=callback, **opts)
    if float(field.path.sigma(ts[-1].double())) > 0 and not spec.ends_denoised:
        x = field.x0(x, ts[-1].to(x.dtype))
    return x

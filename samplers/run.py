"""Running a sampler: the one place that turns standard normal noise z into x at ts[0] (or takes a given start
state, e.g. a noised image for SDEdit or an interpolated latent) and, on a path that keeps noise at t = 0
(VE: sigma(0) = sigma_min), removes it with a final denoising evaluation. Generation, editing, reflow and the
evaluator all sample through `run_sampler`."""
from __future__ import annotations

from torch import Tensor

from genstudio.core.rotate import rotate

from .registry import SamplerSpec


def prior(path, z: Tensor, ts: Tensor) -> Tensor:
    """x at ts[0] for standard normal z: sigma(ts[0]) z (the data term alpha x0 is negligible there)."""
    return (z.double() * path.sigma(ts[0].double()).to(z.device)).to(z.dtype)


def _offset(callback, first: int):
    """`callback` told step indices counted from `first` (a one-step run inside a longer grid)."""
    if callback is None:
        return None
    return lambda i, **kw: callback(i=first + i, **kw)


def run_sampler(spec: SamplerSpec, field, z: Tensor | None, ts: Tensor, *, start: Tensor | None = None,
                generator=None, callback=None, rotation: float = 0.0, **opts) -> Tensor:
    """`spec`'s sampler on the bound model `field` (genstudio.model.Guided) along grid ts, from noise z
    (x = prior(z) at ts[0]) or from `start`, the state at ts[0].

    `rotation` (degrees, counterclockwise): the training-free rotation control of Anjum 2024 (alias-free diffusion):
    after every step the state turns by rotation / steps (genstudio.core.rotate), so the image comes out turned,
    drawn by the model at every step. The sampler then runs one step at a time, each a grid of its own: a multistep
    solver (dpmpp_2m, dpmpp_3m, unipc) keeps no history across steps (first-order steps), and options set per grid
    (heun_churn's S_churn / steps) act per step."""
    if (z is None) == (start is None):
        raise ValueError("run_sampler takes noise z or a start state, exactly one of them")
    x: Tensor = start if start is not None else prior(field.path, z, ts)  # type: ignore[arg-type]
    if rotation:
        steps = len(ts) - 1
        for i in range(steps):
            x = spec.fn(field, x, ts[i:i + 2], generator=generator, callback=_offset(callback, i), **opts)
            x = rotate(x, rotation / steps)
    else:
        x = spec.fn(field, x, ts, generator=generator, callback=callback, **opts)
    if float(field.path.sigma(ts[-1].double())) > 0 and not spec.ends_denoised:
        x = field.x0(x, ts[-1].to(x.dtype))
    return x

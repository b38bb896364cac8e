"""The sampler zoo: small functions with one signature,
`sample_x(model, x, ts, *, generator=None, callback=None, **opts) -> x`, registered with a spec."""
from . import adaptive, blackout, caf, consistency, diffusion, dpm_solver, generator, ode, onestep, stochastic, unipc  # noqa: F401  (registers the samplers)
from .grids import GRIDS, make_grid
from .inversion import invert
from .registry import SAMPLERS, SamplerSpec, compatible, default_grid, get, register

__all__ = ["GRIDS", "SAMPLERS", "SamplerSpec", "compatible", "default_grid", "get", "invert", "make_grid", "register"]

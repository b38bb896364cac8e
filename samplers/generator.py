"""One-pass generators: a model whose forward maps a standard normal latent to an image (a normalizing flow's
inverse, a VAE's decoder, a one-step generator) is sampled by one evaluation at the prior's scale times a
temperature."""
from __future__ import annotations

from torch import Tensor

from .registry import register


@register(name="decode", needs=("nf", "vae", "onestep", "idempotent"), consumes="x0", stochastic=False,
          nfe_per_step=None, paper="Kingma & Dhariwal 2018, Glow, Sec. 5.3 (temperature); Kingma & Welling 2014, VAE")
def sample_decode(model, x: Tensor, ts: Tensor, *, generator=None, callback=None, temperature: float = 1.0) -> Tensor:
    """x = G(temperature * z) for the prior noise z (the grid only places z at t_max; steps do not apply).
    temperature < 1 trades diversity for fidelity (Glow's reduced-temperature samples)."""
    if not 0 <= float(temperature) <= 10:
        raise ValueError(f"temperature must be in [0, 10], got {temperature}")
    x = model(float(temperature) * x, ts[0])
    if callback:
        callback(i=0, t=ts[-1], x=x, x0=x)
    return x

"""Samplers that step along the Gaussian posterior of the path: DDIM (eta) and DDPM ancestral."""
from __future__ import annotations

from torch import Tensor

from genstudio.core.noise import randn_like
from genstudio.core.paths import expand

from .registry import register


def ddim_step(model, x: Tensor, t: Tensor, s: Tensor, eta: float, generator, clip_denoised: bool = False):
    """One DDIM step t -> s (Song et al. 2021, Eq. 12) on any path x_t = alpha x0 + sigma eps.

    The stochastic part has variance eta^2 times the DDPM posterior variance
    sigma_{t|s}^2 sigma_s^2 / sigma_t^2 with sigma_{t|s}^2 = sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2
    (Kingma et al. 2021, VDM, Eq. 29); eta = 1 is DDPM's ancestral sampler.
    """
    path = model.path
    x0, eps = model.x0_eps(x, t)
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
        eps = (x - expand(path.alpha(t), x) * x0) / expand(path.sigma(t), x)
    a_t, s_t, a_s, s_s = (expand(v, x) for v in (path.alpha(t), path.sigma(t), path.alpha(s), path.sigma(s)))
    if eta == 0:
        return a_s * x0 + s_s * eps, x0
    var = (s_t**2 - (a_t / a_s) ** 2 * s_s**2) * s_s**2 / s_t**2
    c2 = (eta**2 * var).clamp_min(0)
    x_s = a_s * x0 + (s_s**2 - c2).clamp_min(0).sqrt() * eps + c2.sqrt() * randn_like(x, generator)
    return x_s, x0


@register(name="ddim", needs="field", consumes="x0", stochastic=False, nfe_per_step=1, invertible=True,
          paper="Song, Meng & Ermon 2021, DDIM, Eq. 12")
def sample_ddim(model, x, ts, *, generator=None, callback=None, eta: float = 0.0, clip_denoised: bool = False):
    """DDIM; eta = 0 is deterministic, eta = 1 is DDPM's ancestral sampler."""
    ts = ts.to(x.dtype)
    for i in range(len(ts) - 1):
        x, x0 = ddim_step(model, x, ts[i], ts[i + 1], eta, generator, clip_denoised)
        if callback:
            callback(i=i, t=ts[i + 1], x=x, x0=x0)
    return x


@register(name="ddpm", needs="field", consumes="x0", stochastic=True, nfe_per_step=1,
          paper="Ho, Jain & Abbeel 2020, DDPM, Alg. 2")
def sample_ddpm(model, x, ts, *, generator=None, callback=None, clip_denoised: bool = False):
    """DDPM ancestral sampling: draw x_s from the posterior q(x_s | x_t, x0 = D(x_t))."""
    return sample_ddim(model, x, ts, generator=generator, callback=callback, eta=1.0, clip_denoised=clip_denoised)

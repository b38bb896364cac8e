"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, Sec. 4.3 and App. D.2):

    log p_0(x_0) = log p_T(x_T) + int_0^T div v(x_t, t) dt,

integrated with torchdiffeq alongside x_t. The divergence is exact (one backward pass per dimension,
for small data) or Hutchinson's estimate eps^T (dv/dx) eps with a fixed Gaussian eps (Grathwohl et al. 2019).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from genstudio.core.noise import Generators, randn_like


def _divergence(v: Tensor, x: Tensor, probe: Tensor | None) -> Tensor:
    if probe is not None:
        (vjp,) = torch.autograd.grad(v, x, probe, create_graph=False)
        return (vjp * probe).flatten(1).sum(1)
    flat_v = v.flatten(1)
    div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for j in range(flat_v.shape[1]):
        (g,) = torch.autograd.grad(flat_v[:, j].sum(), x, retain_graph=True)
        div = div + g.flatten(1)[:, j]
    return div


def log_likelihood(model, x0: Tensor, *, t_min: float | None = None, t_max: float | None = None,
                   exact_trace: bool | None = None, generator: Generators = None, rtol: float = 1e-5,
                   atol: float = 1e-5, method: str = "dopri5") -> Tensor:
    """log p(x0) in nats per sample under the model's probability-flow ODE, with a Gaussian prior
    N(0, sigma(t_max)^2 I) at t_max (the data term alpha(t_max) x0 is neglected there)."""
    from torchdiffeq import odeint

    path = model.path
    t_min = path.t_min if t_min is None else t_min
    t_max = path.t_max if t_max is None else t_max
    dim = x0[0].numel()
    exact = dim <= 64 if exact_trace is None else exact_trace
    probe = None if exact else randn_like(x0, generator)

    def dynamics(t, state):
        x, _ = state
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            v = model.velocity(x, t.to(x.dtype))
            div = _divergence(v, x, probe)
        return v.detach(), div.detach()

    times = torch.tensor([t_min, t_max], dtype=x0.dtype, device=x0.device)
    zero = torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device)
    x_t, delta = odeint(dynamics, (x0, zero), times, rtol=rtol, atol=atol, method=method)
    x_T, integral = x_t[-1], delta[-1]
    sigma_T = float(path.sigma(torch.tensor(t_max, dtype=torch.float64)))
    prior = -0.5 * (x_T.flatten(1) ** 2).sum(1) / sigma_T**2 - dim * (math.log(sigma_T) + 0.5 * math.log(2 * math.pi))
    return prior + integral


def bits_per_dim(log_p: Tensor, dim: int, pixel_scale: float | None = 127.5) -> Tensor:
    """Negative log-likelihood in bits per dimension. For images mapped from [0, 255] to [-1, 1],
    pixel_scale = 127.5 converts the density to the 8-bit pixel scale (Song et al. 2021, Table 2 reports
    this with uniform dequantization); pixel_scale=None reports the continuous density as it is."""
    nll = -log_p / dim + (math.log(pixel_scale) if pixel_scale else 0.0)
    return nll / math.log(2)


def dequantize(x: Tensor, generator: Generators = None, pixel_scale: float = 127.5) -> Tensor:
    """Uniform dequantization (Theis et al. 2016; Ho et al. 2019, Sec. 3.1): images in model range x = p / 127.5 - 1
    for 8-bit pixels p become x + u / pixel_scale with u ~ U[0, 1) per pixel, so a continuous density's bits/dim
    (bits_per_dim with the same pixel_scale) bounds the discrete negative log-likelihood from above."""
    if generator is None:
        u = torch.rand_like(x)
    else:
        gens = [generator] * x.shape[0] if isinstance(generator, torch.Generator) else generator
        u = torch.stack([torch.rand(x.shape[1:], generator=g, dtype=x.dtype) for g in gens]).to(x.device)
    return x + u / pixel_scale

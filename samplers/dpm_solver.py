"""DPM-Solver++ (Lu et al. 2022b): multistep exponential integrators for the data prediction, in
lambda = log(alpha / sigma) = logsnr / 2, on any path x_t = alpha x0 + sigma eps (VP, VE/EDM, linear).

A step t -> s with h = lambda_s - lambda_t and eta = 0 (probability-flow ODE) or eta = 1 (reverse SDE)
is, by variation of constants (the noise integral in distribution),

    x_s = (sigma_s / sigma_t) e^{-eta h} x_t + alpha_s int_0^h (1 + eta) e^{-(1+eta)(h-u)} x0(lambda_t + u) du
          + sigma_s sqrt(1 - e^{-2 eta h}) z.

The order-p multistep method integrates, in closed form, the polynomial through the last p data
predictions (Adams-Bashforth style). With H = (1 + eta) h and psi_k(H) = int_0^H e^{-(H-v)} v^k / k! dv,
the Newton terms D0 = x0_t, D1 ~ h x0', D2 ~ h^2 x0''/2 enter with weights

    w0 = psi_0(H) = 1 - e^{-H},   w1 = psi_1(H) / H = 1 - w0 / H,   w2 = 2 psi_2(H) / H^2 = 1 - 2 w1 / H.

A step that ends at sigma = 0 (t = 0, lambda = +inf) is the first-order step x = alpha_s x0, as in
diffusers (final_sigmas_type="zero") and k-diffusion.
"""
from __future__ import annotations

import math

import torch

from genstudio.core.noise import randn_like

from .registry import register


def _weights(H: float) -> tuple[float, float, float]:
    """(w0, w1, w2) above, in float64; a series where |H| is small avoids the cancellation in w1, w2."""
    w0 = -math.expm1(-H)
    if abs(H) < 1e-2:  # w1 = sum_k (-H)^(k-1) H / (k+1)!, w2 = 2 sum_k (-H)^(k-1) H / (k+2)!; error < 1e-16
        w1 = H * (1 / 2 - H / 6 + H**2 / 24 - H**3 / 120 + H**4 / 720 - H**5 / 5040)
        w2 = H * (1 / 3 - H / 12 + H**2 / 60 - H**3 / 360 + H**4 / 2520 - H**5 / 20160)
        return w0, w1, w2
    w1 = 1 - w0 / H
    return w0, w1, 1 - 2 * w1 / H


def schedule(path, ts) -> tuple[list[float], list[float], list[float]]:
    """alpha, sigma and lambda = log(alpha / sigma) at each grid time, as float64 Python floats."""
    t64 = ts.detach().to("cpu", torch.float64)
    return path.alpha(t64).tolist(), path.sigma(t64).tolist(), (path.logsnr(t64) / 2).tolist()


def _dpmpp(model, x, ts, *, order: int, eta: float, generator, callback, solver_type: str,
           lower_order_final: bool, half_d2: bool = False):
    """The shared loop of the four samplers below; history (lambda, x0) lives in a local list."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', got {solver_type!r}")
    alpha, sigma, lam = schedule(model.path, ts)
    ts_x = ts.to(x.dtype)
    n = len(ts) - 1
    history: list[tuple[float, torch.Tensor]] = []  # (lambda, x0) at earlier times, newest last
    for i in range(n):
        x0 = model.x0(x, ts_x[i])
        lam_t, lam_s, a_s, s_s = lam[i], lam[i + 1], alpha[i + 1], sigma[i + 1]
        if s_s == 0:  # lambda_s = +inf: the exact step with x0 held fixed is x_s = alpha_s x0
            x = a_s * x0
        elif a_s == 0:  # lambda_s = -inf (inverting up to pure noise): x_s = sigma_s eps, eps from x0
            x = (s_s / sigma[i]) * (x - alpha[i] * x0)
        else:
            h = lam_s - lam_t
            if eta and h < 0:
                raise ValueError("the SDE variants run from noise to data only: ts must decrease")
            H = (1 + eta) * h
            w0, w1, w2 = _weights(H)
            p = min(order, 1 + len(history)) if math.isfinite(h) else 1
            if lower_order_final and n < 15:  # diffusers' (and DPM-Solver's) rule for short grids
                p = min(p, n - i)
            x_next = (s_s / sigma[i]) * (math.exp(-eta * h) if eta else 1.0) * x + (a_s * w0) * x0
            if p >= 2:
                lam_1, m1 = history[-1]
                d1_0 = (x0 - m1) * (h / (lam_t - lam_1))
                if p == 2:
                    c1 = w0 / 2 if solver_type == "midpoint" else w1  # midpoint: Lu et al. 2022b, Alg. 2
                    x_next = x_next + (a_s * c1) * d1_0
                else:
                    lam_2, m2 = history[-2]
                    r0, r1 = (lam_t - lam_1) / h, (lam_1 - lam_2) / h
                    d1_1 = (m1 - m2) * (1 / r1)
                    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                    d2 = (d1_0 - d1_1) * (1 / (r0 + r1))
                    # Reference codes weight D2 by w2 / 2, which leaves a second-order error (see tests).
                    x_next = x_next + (a_s * w1) * d1 + (a_s * (w2 / 2 if half_d2 else w2)) * d2
            if eta:
                x_next = x_next + s_s * math.sqrt(-math.expm1(-2 * eta * h)) * randn_like(x, generator)
            x = x_next
        if math.isfinite(lam_t):  # lambda = -inf (alpha = 0, pure noise) cannot anchor a polynomial
            history = (history + [(lam_t, x0)])[-(order - 1):] if order > 1 else []
        else:
            history = []
        if callback:
            callback(i=i, t=ts[i + 1], x=x, x0=x0)
    return x


@register(name="dpmpp_2m", needs="field", consumes="x0", stochastic=False, nfe_per_step=1, invertible=True,
          paper="Lu et al. 2022b, DPM-Solver++(2M), Alg. 2", default_grid="logsnr")
def sample_dpmpp_2m(model, x, ts, *, generator=None, callback=None, solver_type: str = "midpoint",
                    lower_order_final: bool = True):
    """DPM-Solver++(2M): second-order multistep; the first step is first order, and so is a step to t = 0.

    solver_type "midpoint" is the paper's Alg. 2 (diffusers' and k-diffusion's default); "heun" uses the
    exact weight w1 of D1. lower_order_final: with fewer than 15 steps the last step is first order.
    Equals diffusers' DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)."""
    return _dpmpp(model, x, ts, order=2, eta=0.0, generator=generator, callback=callback,
                  solver_type=solver_type, lower_order_final=lower_order_final)


@register(name="dpmpp_3m", needs="field", consumes="x0", stochastic=False, nfe_per_step=1, invertible=True,
          paper="Lu et al. 2022b, DPM-Solver++ multistep, order 3", default_grid="logsnr")
def sample_dpmpp_3m(model, x, ts, *, generator=None, callback=None, solver_type: str = "midpoint",
                    lower_order_final: bool = True, half_d2: bool = False):
    """DPM-Solver++(3M): third-order multistep after a first- and a second-order (solver_type) start.

    lower_order_final: with fewer than 15 steps the last step is first order and the one before it at
    most second order. half_d2=True weights D2 by w2 / 2, as the DPM-Solver reference code, diffusers'
    solver_order=3 and k-diffusion's sample_dpmpp_3m_sde do: set it to reproduce their samples; the
    method is then only second order (the default w2 is the exact integral of the quadratic). The
    quadratic extrapolates badly where the steps in lambda grow fast (the ddpm grid, uniform t on the linear
    path): there 2M is more accurate; on the logsnr (default) grid 3M is."""
    return _dpmpp(model, x, ts, order=3, eta=0.0, generator=generator, callback=callback,
                  solver_type=solver_type, lower_order_final=lower_order_final, half_d2=half_d2)


@register(name="dpmpp_2m_sde", needs="field", consumes="x0", stochastic=True, nfe_per_step=1,
          paper="Lu et al. 2022b, SDE-DPM-Solver++(2M)", default_grid="logsnr")
def sample_dpmpp_2m_sde(model, x, ts, *, generator=None, callback=None, eta: float = 1.0,
                        solver_type: str = "midpoint", lower_order_final: bool = True):
    """Second-order multistep solver of the reverse SDE (eta = 1; 0 < eta < 1 interpolates to the ODE).

    Equals diffusers' algorithm_type="sde-dpmsolver++", solver_order=2 and k-diffusion's
    sample_dpmpp_2m_sde(eta=1, solver_type="midpoint")."""
    return _dpmpp(model, x, ts, order=2, eta=eta, generator=generator, callback=callback,
                  solver_type=solver_type, lower_order_final=lower_order_final)


@register(name="dpmpp_3m_sde", needs="field", consumes="x0", stochastic=True, nfe_per_step=1,
          paper="Lu et al. 2022b, SDE-DPM-Solver++ multistep, order 3", default_grid="logsnr")
def sample_dpmpp_3m_sde(model, x, ts, *, generator=None, callback=None, eta: float = 1.0,
                        solver_type: str = "midpoint", lower_order_final: bool = True, half_d2: bool = False):
    """Third-order multistep solver of the reverse SDE. half_d2=True is k-diffusion's sample_dpmpp_3m_sde
    weighting (with solver_type="heun", lower_order_final=False). diffusers' sde-dpmsolver++ at
    solver_order=3 differs from both: its D2 weight (1 - e^{-2h} - 2h)/(2h)^2 - 1/2 tends to -1 as h -> 0
    (k-diffusion has + 1/2: -> 0), a sign slip with which its samples get worse as the steps grow."""
    return _dpmpp(model, x, ts, order=3, eta=eta, generator=generator, callback=callback,
                  solver_type=solver_type, lower_order_final=lower_order_final, half_d2=half_d2)

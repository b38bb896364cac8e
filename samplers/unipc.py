"""UniPC (Zhao et al. 2023): a multistep predictor (UniP-p) and corrector (UniC-p) on the data prediction, in
lambda = log(alpha / sigma) = logsnr / 2, on any path x_t = alpha x0 + sigma eps (VP, VE/EDM, linear).

A step t -> s with h = lambda_s - lambda_t starts from DPM-Solver++'s first-order step and adds a combination
of divided differences D_k = (x0(lambda_k) - x0_t) / r_k, r_k = (lambda_k - lambda_t) / h, of earlier data
predictions (the predictor) or of earlier ones and the one at s (the corrector, r = 1):

    x_s = (sigma_s / sigma_t) x_t + alpha_s w0 x0_t + alpha_s B(h) sum_k rho_k D_k,
    sum_k rho_k r_k^(i-1) = b_i = w_i / B(h),  i = 1..p  (the w_i of dpm_solver, plus w3),

with w_i = i! psi_i(h) / h^i the exact weight of the i-th Taylor term h^i x0^(i) / i!, and B(h) = e^h - 1 in
UniPC's sign convention, here w0 = 1 - e^{-h} ("bh2"), or h ("bh1"). UniP-2 takes rho = 1/2 (so it is
DPM-Solver++(2M) with the midpoint weight) and UniC-1 rho = 1/2, as the reference code does; UniP-3 solves
for rho and equals dpmpp_3m with the exact D2 weight.

Each model evaluation serves twice: x0 at the predicted x_s corrects x_s (UniC-p, p the order of the step
that made it), and the next predictor starts from the corrected x_s with that same x0 in its history, so
NFE = steps, and UniPC-p is of order p + 1 (Zhao et al. 2023, Sec. 3; tests/samplers/test_unipc.py measures it).
The last step is not corrected, and a step that ends at sigma = 0 (t = 0, lambda = +inf) is the first-order
step x = alpha_s x0, as in dpm_solver. A time with lambda = -inf (alpha = 0) starts no polynomial and is
not corrected from.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

from .dpm_solver import _weights, schedule
from .registry import register


def _w3(H: float, w2: float) -> float:
    """w3 = 3! psi_3(H) / H^3 = 1 - 3 w2 / H, by its series where |H| is small (error < 1e-16)."""
    if abs(H) < 1e-2:
        return 6 * H * (1 / 24 - H / 120 + H**2 / 720 - H**3 / 5040 + H**4 / 40320 - H**5 / 362880)
    return 1 - 3 * w2 / H


def _rhos(rs: list[float], bs: list[float]) -> list[float]:
    """rho with sum_k rho_k r_k^(i-1) = b_i for i = 1..len(rs) (a Vandermonde system, solved in float64)."""
    if len(rs) == 1:
        return [bs[0]]
    a = torch.tensor([[r**i for r in rs] for i in range(len(rs))], dtype=torch.float64)
    return torch.linalg.solve(a, torch.tensor(bs[: len(rs)], dtype=torch.float64)).tolist()


def _step(x, m0, lam_t, sig_t, lam_s, a_s, sig_s, older, new, variant):
    """x_s from x_t (data prediction m0 at t) with `older` = [(lambda, x0)] before t; `new` = x0 at s for the
    corrector (UniC), None for the predictor (UniP). The order is len(older) + 1."""
    h = lam_s - lam_t
    w0, w1, w2 = _weights(h)
    x_s = (sig_s / sig_t) * x + (a_s * w0) * m0
    rs = [(lam_k - lam_t) / h for lam_k, _ in older]
    ds = [(m_k - m0) * (1 / r_k) for r_k, (_, m_k) in zip(rs, older)]
    if new is not None:
        rs, ds = rs + [1.0], ds + [new - m0]
    if not ds:
        return x_s
    B = w0 if variant == "bh2" else h
    if len(ds) == 1:  # UniP-2 and UniC-1: rho = 1/2, as the reference code (the solve would give w1 / B)
        rho = [0.5]
    else:
        rho = _rhos(rs, [w1 / B, w2 / B, _w3(h, w2) / B])
    for rho_k, d_k in zip(rho, ds):
        x_s = x_s + (a_s * B * rho_k) * d_k
    return x_s


@register(name="unipc", needs="field", consumes="x0", stochastic=False, nfe_per_step=1, invertible=True,
          paper="Zhao et al. 2023, UniPC-p (UniP-p + UniC-p), B(h) = e^h - 1 (bh2)", default_grid="logsnr")
def sample_unipc(model, x, ts, *, generator=None, callback=None, order: int = 2, lower_order_final: bool = True,
                 disable_corrector: Iterable[int] = (), variant: str = "bh2"):
    """UniPC multistep with the data prediction: UniP-`order` predictor, UniC corrector; first steps warm up.

    order 1..3: the predictor's order (the corrected method's is one higher). lower_order_final: step i of n
    has order at most n - i, on any number of steps (diffusers' and the reference code's rule for UniPC,
    unlike DPM-Solver's "fewer than 15 steps"). disable_corrector: indices i of steps whose result x_{i+1} is
    not corrected (diffusers' option of that name). variant: "bh2" (B(h) = e^h - 1) or "bh1" (B(h) = h).
    callback(i, t, x, x0) sees the predicted x at ts[i + 1], the point the next evaluation is made at.
    Equals diffusers' UniPCMultistepScheduler(predict_x0=True, solver_type=variant, solver_order=order)."""
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    disable_corrector = {int(i) for i in disable_corrector}
    alpha, sigma, lam = schedule(model.path, ts)
    ts_x = ts.to(x.dtype)
    n = len(ts) - 1
    history: list[tuple[float, torch.Tensor]] = []  # (lambda, x0) at earlier times, newest last
    x_prev, p_prev = x, 0  # the step's start and its order; p_prev = 0: nothing to correct
    for i in range(n):
        x0 = model.x0(x, ts_x[i])
        if p_prev and (i - 1) not in disable_corrector:  # UniC-p_prev on step i - 1, reusing this evaluation
            x = _step(x_prev, history[-1][1], lam[i - 1], sigma[i - 1], lam[i], alpha[i], sigma[i],
                      history[-p_prev:-1], x0, variant)
        if math.isfinite(lam[i]):  # lambda = -inf (alpha = 0, pure noise) cannot anchor a polynomial
            history = (history + [(lam[i], x0)])[-order:]
        else:
            history = []
        x_prev = x
        if sigma[i + 1] == 0:  # lambda_s = +inf: the exact step with x0 held fixed is x_s = alpha_s x0
            x, p_prev = alpha[i + 1] * x0, 0
        elif alpha[i + 1] == 0:  # lambda_s = -inf (inverting up to pure noise): x_s = sigma_s eps
            x, p_prev = (sigma[i + 1] / sigma[i]) * (x - alpha[i] * x0), 0
        else:
            p = max(1, min(order, len(history), n - i if lower_order_final else order))
            x = _step(x, x0, lam[i], sigma[i], lam[i + 1], alpha[i + 1], sigma[i + 1],
                      history[-p:-1] if p > 1 else [], None, variant)
            p_prev = p if history else 0
        if callback:
            callback(i=i, t=ts[i + 1], x=x, x0=x0)
    return x

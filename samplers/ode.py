"""Probability-flow ODE solvers in the path's own time: dx/dt = alpha' x0 + sigma' eps."""
from __future__ import annotations

from genstudio.core.predictions import convert

from .registry import register


def _report(callback, model, i, x, s, x_t, t, d_t):
    """Tell the callback the new state at s and the x0 prediction behind the step's first evaluation."""
    if callback:
        callback(i=i, t=s, x=x, x0=convert(d_t, "velocity", "x0", model.path, x_t, t))


@register(name="euler", needs="field", consumes="velocity", stochastic=False, nfe_per_step=1, invertible=True,
          paper="Euler's method on the probability-flow ODE (Song et al. 2021; Karras et al. 2022)")
def sample_euler(model, x, ts, *, generator=None, callback=None):
    """First-order Euler steps x_s = x_t + (s - t) v(x_t, t)."""
    ts = ts.to(x.dtype)
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        d = model.velocity(x, t)
        x_next = x + (s - t) * d
        _report(callback, model, i, x_next, s, x, t, d)
        x = x_next
    return x


@register(name="heun", needs="field", consumes="velocity", stochastic=False, nfe_per_step=2,
          paper="Karras et al. 2022, EDM, Alg. 1", nfe_offset=-1, invertible=True)
def sample_heun(model, x, ts, *, generator=None, callback=None):
    """Second-order Heun steps; a step that ends at t = 0 is a plain Euler step."""
    ts = ts.to(x.dtype)
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        d = model.velocity(x, t)
        x_next = x + (s - t) * d
        if s > 0:
            x_next = x + (s - t) * (d + model.velocity(x_next, s)) / 2
        _report(callback, model, i, x_next, s, x, t, d)
        x = x_next
    return x


@register(name="midpoint", needs="field", consumes="velocity", stochastic=False, nfe_per_step=2, invertible=True,
          paper="explicit midpoint (Runge-Kutta 2) on the probability-flow ODE")
def sample_midpoint(model, x, ts, *, generator=None, callback=None):
    """Second-order midpoint steps: evaluate at (t + s)/2 after a half Euler step."""
    ts = ts.to(x.dtype)
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        d = model.velocity(x, t)
        x_next = x + (s - t) * model.velocity(x + (s - t) / 2 * d, (t + s) / 2)
        _report(callback, model, i, x_next, s, x, t, d)
        x = x_next
    return x


@register(name="rk4", needs="field", consumes="velocity", stochastic=False, nfe_per_step=4,
          paper="classical Runge-Kutta 4 on the probability-flow ODE", nfe_offset=-3, invertible=True)
def sample_rk4(model, x, ts, *, generator=None, callback=None):
    """Fourth-order Runge-Kutta steps; a step that ends at t = 0, where the velocity of an x0/eps model
    is undefined, is a plain Euler step."""
    ts = ts.to(x.dtype)
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        h = s - t
        k1 = model.velocity(x, t)
        if s > 0:
            k2 = model.velocity(x + h / 2 * k1, t + h / 2)
            k3 = model.velocity(x + h / 2 * k2, t + h / 2)
            k4 = model.velocity(x + h * k3, s)
            x_next = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        else:
            x_next = x + h * k1
        _report(callback, model, i, x_next, s, x, t, k1)
        x = x_next
    return x

"""Probability-flow ODE solvers in the path's own time: dx/dt = alpha' x0 + sigma' eps."""
from __future__ import annotations

from genstudio.predictions import convert

from .registry import register


def _report(callback, model, i, x, s, x_t, t, d_t):
    """Tell the callback the new state at s and the x0 prediction behind the step's first evaluation."""
    if callback:
        callback(i=i, t=s, x=x, x0=convert(d_t, "velocity", "x0", model.path, x_t, t))


@register(name="euler", needs="field", consumes="velocity", stochastic=False, nfe_per_step=1,
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
          paper="Karras et al. 2022, EDM, Alg. 1", default_grid="karras", last_step_saves=1)
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

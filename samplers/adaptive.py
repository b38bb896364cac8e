"""Adaptive-step ODE solving of the probability-flow ODE through torchdiffeq (dopri5 and friends)."""
from __future__ import annotations

import torch

from genstudio.predictions import convert

from .registry import register


@register(name="dopri5", needs="field", consumes="velocity", stochastic=False, nfe_per_step=None,
          paper="Dormand-Prince RK45 via torchdiffeq (Chen et al. 2018); as in Song et al. 2021, Sec. 4.3")
def sample_dopri5(model, x, ts, *, generator=None, callback=None, rtol: float = 1e-5, atol: float = 1e-5,
                  method: str = "dopri5"):
    """Integrate dx/dt = v(x, t) from ts[0] to the last positive time of the grid with an adaptive
    solver, then take one Euler step to ts[-1] if it is 0 (the velocity is undefined at t = 0).
    Only the grid's endpoints matter; `model.nfe` counts the evaluations the solver chose."""
    from torchdiffeq import odeint

    ts = ts.to(torch.float64)
    t_end = ts[-2] if ts[-1] == 0 and len(ts) > 1 else ts[-1]
    calls = []
    lo, hi = min(ts[0], t_end), max(ts[0], t_end)

    def velocity(t, y):
        # The solver may probe a little past the end before interpolating back; keep t on the path.
        t = t.clamp(lo, hi)
        d = model.velocity(y, t.to(y.dtype))
        if callback:
            callback(i=len(calls), t=t, x=y, x0=convert(d, "velocity", "x0", model.path, y, t.to(y.dtype)))
        calls.append(1)
        return d

    if ts[0] != t_end:
        x = odeint(velocity, x, torch.stack([ts[0], t_end]).to(x.dtype), rtol=rtol, atol=atol, method=method)[-1]
    if ts[-1] == 0 and t_end > 0:
        t = t_end.to(x.dtype)
        x = x + (0 - t) * model.velocity(x, t)
    return x



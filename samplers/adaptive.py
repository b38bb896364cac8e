"""Adaptive-step ODE solving of the probability-flow ODE through torchdiffeq (dopri5 and friends)."""
from __future__ import annotations

import torch

from genstudio.core.predictions import convert

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
    t_end = float(ts[-1])
    if t_end == 0:  # integrate to the last positive time (the path's t_min on a one-step grid), then Euler
        t_end = float(ts[-2]) if len(ts) > 2 else model.path.t_min
    t_start = float(ts[0])
    calls: list[int] = []
    lo, hi = min(t_start, t_end), max(t_start, t_end)

    def velocity(t, y):
        # The solver may probe a little past the end before interpolating back; keep t on the path.
        t = t.clamp(lo, hi)
        d = model.velocity(y, t.to(y.dtype))
        if callback:
            callback(i=len(calls), t=t, x=y, x0=convert(d, "velocity", "x0", model.path, y, t.to(y.dtype)))
        calls.append(1)
        return d

    if t_start != t_end:
        times = torch.tensor([t_start, t_end], dtype=x.dtype, device=x.device)
        x = odeint(velocity, x, times, rtol=rtol, atol=atol, method=method)[-1]
    if float(ts[-1]) == 0 and t_end > 0:
        x = x + (0 - t_end) * model.velocity(x, t_end)
    return x



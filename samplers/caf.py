"""Constant Acceleration Flow's closed-form few-step sampler (Park et al. 2024, Sec. 3.3).

In genstudio's time (t = 0 data, t = 1 noise; the paper's tau = 1 - t): the initial velocity u = u_theta(x, t_0)
once at the grid's start, then per step t -> s one acceleration evaluation and the exact constant-acceleration move

    x_s = x_t + (s - t) u + ((1 - s)^2 - (1 - t)^2) / 2 a_phi(x_t, t, u)

(the reference's z + v dt + (tau + dt/2) a dt). NFE: steps + 1 (one velocity, one acceleration per step).
"""
from __future__ import annotations

import torch
from torch import Tensor

from genstudio.core.paths import expand

from .registry import register


def caf_step(x: Tensor, t: Tensor | float, s: Tensor | float, u0: Tensor, a: Tensor) -> Tensor:
    """The exact move from time t to time s under initial velocity u0 and constant acceleration a:
    x_s = x_t + (s - t) u0 + ((1 - s)^2 - (1 - t)^2) / 2 a  (the paper's Eq. 6 between tau = 1 - t and 1 - s)."""
    t, s = expand(t, x), expand(s, x)
    return x + (s - t) * u0 + ((1 - s) ** 2 - (1 - t) ** 2) / 2 * a


@register(name="caf", needs=("caf",), consumes="velocity", stochastic=False, nfe_per_step=1, nfe_offset=1,
          paper="Park et al. 2024, Constant Acceleration Flow, Sec. 3.3", default_grid="even")
def sample_caf(model, x, ts, *, generator=None, callback=None):
    """The initial velocity at ts[0], then one acceleration evaluation per step and the closed-form move; the
    callback's x0 is the one-step jump to t = 0 from the step's start with that step's acceleration."""
    ts = ts.to(x.dtype)
    u = model(x, ts[0], part="velocity")  # model: a Guided CAF model (guidance and NFE counting)
    for i in range(len(ts) - 1):
        t, s = ts[i], ts[i + 1]
        a = model(x, t, part="acceleration", v0=u)
        x_next = caf_step(x, t, s, u, a)
        if callback:
            callback(i=i, t=s, x=x_next, x0=caf_step(x, t, torch.zeros_like(t), u, a))
        x = x_next
    return x

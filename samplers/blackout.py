"""Blackout Diffusion's samplers (Santos et al. 2023, Sec. 3.3; lanl/Blackout-Diffusion's notebooks): from a black
image at t = 15 back to t = 0 over the observation times of `steps` steps (the API's grid only counts the
steps), adding born counts each step. The state they report to `callback` is the image fading in from black."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from genstudio.core import blackout as bo

from .registry import register


def _reverse(model, x: Tensor, ts: Tensor, step: Callable, generator, callback) -> Tensor:
    """n = 0 at t_S, then n = step(n, dead, t, s, generator) for each (t, s) going down; the last step (s = 0)
    brings every expected dead count back (rounded without bias)."""
    times = bo.observation_times(len(ts) - 1).to(x.device)
    n = torch.zeros_like(x, dtype=torch.float64)
    for i, k in enumerate(range(len(times) - 1, 0, -1)):
        t, s = times[k], times[k - 1]
        x0 = model.x0(bo.model_range(n, x.dtype), t.to(x.dtype))
        dead = torch.minimum(bo.dead_counts(x0, n), bo.MAX_COUNT - n)
        n = n + bo.stochastic_round(dead, generator) if k == 1 else step(n, dead, t, s, generator)
        if callback:
            callback(i=i, t=s, x=bo.model_range(n, x.dtype))
    return bo.model_range(n, x.dtype)


def _bridge(n: Tensor, dead: Tensor, t: Tensor, s: Tensor, generator) -> Tensor:
    return bo.bridge_step(n, n + bo.stochastic_round(dead, generator), t, s, generator)


@register(name="blackout_bridge", needs=("blackout",), consumes="x0", stochastic=True, nfe_per_step=1,
          ends_denoised=True, paper="Santos et al. 2023, Blackout Diffusion, Sec. 3.3 (binomial bridge)")
def sample_blackout_bridge(model, x: Tensor, ts: Tensor, *, generator=None, callback=None) -> Tensor:
    """Binomial bridge: n_s = n_t + Binomial(round(D), (p(s) - p(t)) / (1 - p(t))), D the expected dead counts."""
    return _reverse(model, x, ts, _bridge, generator, callback)


@register(name="blackout_tau", needs=("blackout",), consumes="x0", stochastic=True, nfe_per_step=1,
          ends_denoised=True, paper="Santos et al. 2023, Blackout Diffusion, Sec. 3.3 (tau-leaping)")
def sample_blackout_tau(model, x: Tensor, ts: Tensor, *, generator=None, callback=None) -> Tensor:
    """Tau-leaping: n_s = n_t + Poisson(D (p(s) - p(t)) / (1 - p(t))) births, capped at D."""
    return _reverse(model, x, ts, bo.tau_leap_step, generator, callback)

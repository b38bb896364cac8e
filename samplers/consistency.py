"""Multistep consistency sampling (Song et al. 2023, Consistency Models, Alg. 1): jump to data,
re-noise to the next time with fresh noise, jump again. A map (a consistency model f(x, t), whose x0
prediction is its jump to data) is sampled exactly this way; a field model jumps with one x0 prediction
(a single DDIM step to t = 0), which is the posterior mean rather than a sample, so on a field the scheme
is a fast approximation. A one-step generator (kinds "onestep", "idempotent": it ignores t) is re-noised and
applied again: its multistep sampler."""
from __future__ import annotations

from genstudio.core.noise import randn_like
from genstudio.core.paths import expand

from .registry import register


@register(name="consistency", needs=("map", "field", "onestep", "idempotent"), consumes="x0", ends_denoised=True,
          default_grid="jumps", stochastic=True, nfe_per_step=1,
          paper="Song et al. 2023, Consistency Models, Alg. 1")
def sample_consistency(model, x, ts, *, generator=None, callback=None):
    """x0 = f(x, t_i); x = alpha(t_{i+1}) x0 + sigma(t_{i+1}) z; the grid's times are the jump points."""
    ts = ts.to(x.dtype)
    path = model.path
    for i in range(len(ts) - 1):
        x0 = model.x0(x, ts[i])
        s = ts[i + 1]
        x = x0 if s == 0 else expand(path.alpha(s), x) * x0 + expand(path.sigma(s), x) * randn_like(x, generator)
        if callback:
            callback(i=i, t=s, x=x, x0=x0)
    return x

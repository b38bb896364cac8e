"""Re-applying an idempotent network (Shocher et al. 2024, Idempotent Generative Network, Sec. 3.3): x = f(z), then
x = f(x) again for each further step. f(f(z)) = f(z) exactly for a perfect projector; a trained one refines."""
from __future__ import annotations

from torch import Tensor

from .registry import register


@register(name="reapply", needs=("idempotent",), consumes="x0", stochastic=False, nfe_per_step=1, ends_denoised=True,
          paper="Shocher et al. 2024, Idempotent Generative Network, Sec. 3.3")
def sample_reapply(model, x: Tensor, ts: Tensor, *, generator=None, callback=None) -> Tensor:
    """x = f(x) once per step of the grid (its times only count the steps: f ignores t)."""
    for i in range(len(ts) - 1):
        x = model.x0(x, ts[i])
        if callback:
            callback(i=i, t=ts[i + 1], x=x, x0=x)
    return x

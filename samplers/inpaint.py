"""Inpainting with annealed Langevin dynamics (Song & Ermon 2019, NCSN, Sec. 5 and App. B.3, Alg. 2).

At each noise level sigma_i the known pixels are replaced by a fresh noisy copy x_known + sigma_i z
(the "re-noised at each level" of the paper) and held there while the unknown pixels take Langevin steps,
so those steps sample p_sigma_i(unknown | known noisy); annealing sigma_i -> sigma_L makes that the
conditional of the data. Runs on any path in x~ = x / alpha, like `annealed_langevin`, whose single
Langevin step it reuses.
"""
from __future__ import annotations

import torch
from torch import Tensor

from genstudio.core.noise import randn_like

from .stochastic import _require_alpha, sample_annealed_langevin


def inpaint_annealed_langevin(model, x_known: Tensor, mask: Tensor, ts: Tensor, *, generator=None,
                              steps_per_level: int = 5, step_lr: float | None = None, callback=None,
                              x: Tensor | None = None) -> Tensor:
    """Fill in the pixels where `mask` is False, given `x_known` (clean data, model range) where it is True.

    `mask` broadcasts against x_known (e.g. (1, 1, H, W) for images, (D,) for vectors). ts is a grid ending
    at t = 0: its levels ts[:-1] run `steps_per_level` Langevin steps each, with NCSN's step
    a_i = step_lr sigma_i^2 / sigma_L^2 (default step_lr = sigma_L^2, as `annealed_langevin`). After each
    step the known pixels are set back to the level's noisy copy alpha (x_known + sigma~_i z): NCSN's
    Alg. 2 re-imposes them after every step and draws z once per level. The unknown pixels start at x
    (default sigma(ts[0]) z, the prior at the first level) and carry x~ unchanged between levels.

    The last level is followed by one denoising evaluation x0 = E[x0 | x_t] (NCSNv2's final denoising);
    it changes the known pixels too (they are noisy at sigma_L), so they are set to x_known exactly at the
    end. Evaluations: len(levels) * steps_per_level + 1. callback(i=, t=, x=, x0=) sees every level.
    """
    if int(steps_per_level) != steps_per_level or steps_per_level < 1:
        raise ValueError(f"steps_per_level must be a positive integer, got {steps_per_level!r}")
    path = model.path
    ts = ts.to(x_known.dtype)
    levels = ts[:-1]
    if float(ts[-1]) != 0:
        raise ValueError("inpainting needs a grid that ends at t = 0 (the final denoising step)")
    _require_alpha(path, levels, "inpaint_annealed_langevin")
    mask = torch.as_tensor(mask, device=x_known.device).bool()
    sig_last = path.sigma_tilde(levels[-1])
    eps_lr = sig_last**2 if step_lr is None else torch.as_tensor(step_lr, dtype=ts.dtype)
    if x is None:
        x = path.sigma(ts[0]) * randn_like(x_known, generator)
    seen: dict = {}
    for i, t in enumerate(levels):
        alpha, sig = path.alpha(t), path.sigma_tilde(t)
        known = alpha * (x_known + sig * randn_like(x_known, generator))
        step = eps_lr * (sig / sig_last) ** 2
        one_step = torch.stack([t, t])  # a one-level grid that stays at t: exactly one Langevin step of size `step`
        for _ in range(int(steps_per_level)):
            x = sample_annealed_langevin(model, torch.where(mask, known, x), one_step, generator=generator,
                                         steps_per_level=1, step_lr=step, callback=lambda **kw: seen.update(kw))
        x = torch.where(mask, known, x)
        s = ts[i + 1]
        if s == 0:
            seen["x0"] = model.x0(x, t)
            x = torch.where(mask, x_known, seen["x0"])
        else:
            x = path.alpha(s) / alpha * x
        if callback:
            callback(i=i, t=s, x=x, x0=seen["x0"])
    return x


def inpaint_consistency(model, x_known: Tensor, mask: Tensor, ts: Tensor, *, generator=None, callback=None) -> Tensor:
    """Fill in the pixels where `mask` is False with a consistency model (Song et al. 2023, Alg. 4, zero-shot
    editing): at each jump time t_i, x0 = f(x, t_i) with the known pixels put back into x0, then
    x = alpha(t_{i+1}) x0 + sigma(t_{i+1}) z. It starts from the known pixels noised to ts[0] (the others: noise
    alone); ts ends at 0 (e.g. the `jumps` grid). One evaluation per jump; the known pixels of the result equal
    x_known."""
    if float(ts[-1]) != 0:
        raise ValueError("consistency inpainting needs a grid that ends at t = 0")
    path = model.path
    ts = ts.to(x_known.dtype)
    mask = torch.as_tensor(mask, device=x_known.device).bool()
    x = path.alpha(ts[0]) * torch.where(mask, x_known, 0.0) + path.sigma(ts[0]) * randn_like(x_known, generator)
    for i in range(len(ts) - 1):
        x0 = torch.where(mask, x_known, model.x0(x, ts[i]))
        s = ts[i + 1]
        x = x0 if s == 0 else path.alpha(s) * x0 + path.sigma(s) * randn_like(x_known, generator)
        if callback:
            callback(i=i, t=s, x=x, x0=x0)
    return x

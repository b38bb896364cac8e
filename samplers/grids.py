"""Time grids: pure functions (path, steps) -> float64 times t_max = t_0 > ... > t_{steps-1} >= t_min,
followed by a final 0 (the data). Every sampler accepts any grid; a grid of `steps` steps has
steps + 1 entries."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from genstudio.core.paths import NoisePath


def _with_zero(ts: Tensor) -> Tensor:
    return torch.cat([ts.to(torch.float64), torch.zeros(1, dtype=torch.float64)])


def _range(path: NoisePath, t_min: float | None, t_max: float | None) -> tuple[float, float]:
    t_min = path.t_min if t_min is None else float(t_min)
    t_max = path.t_max if t_max is None else float(t_max)
    if not 0 <= t_min < t_max:
        raise ValueError(f"need 0 <= t_min < t_max, got t_min={t_min}, t_max={t_max}")
    return t_min, t_max


def _check_steps(steps: int) -> int:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return int(steps)


def uniform(path: NoisePath, steps: int, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """Uniform in t."""
    t_min, t_max = _range(path, t_min, t_max)
    return _with_zero(torch.linspace(t_max, t_min, _check_steps(steps), dtype=torch.float64))


def even(path: NoisePath, steps: int, t_max: float | None = None) -> Tensor:
    """Evenly spaced from t_max down to 0 itself: steps of equal length, for few-step samplers (CAF,
    consistency) whose last step should not be wasted on [t_min, 0]."""
    t_max = path.t_max if t_max is None else float(t_max)
    return torch.linspace(t_max, 0, _check_steps(steps) + 1, dtype=torch.float64)


def quadratic(path: NoisePath, steps: int, t_min: float | None = None, t_max: float | None = None) -> Tensor:
    """Quadratic in t, denser near the data (Song et al. 2021, DDIM, Sec. D.2)."""
    t_min, t_max = _range(path, t_min, t_max)
    u = torch.linspace(1, 0, _check_steps(steps), dtype=torch.float64)
    return _with_zero(t_min + (t_max - t_min) * u**2)


def _sigma_range(path: NoisePath, t_min: float, t_max: float, sigma_max_cap: float) -> tuple[float, float]:
    """(sigma_min, sigma_max) of sigma = sigma/alpha on [t_min, t_max]; an infinite sigma_max is capped."""
    s_min, s_max = path.sigma_tilde_range(t_min, t_max, cap=sigma_max_cap)
    if s_min <= 0:
        raise ValueError(f"this grid needs a positive noise level at t_min; got t_min={t_min}")
    return s_min, s_max


def karras(path: NoisePath, steps: int, t_min: float | None = None, t_max: float | None = None,
           rho: float = 7.0, sigma_max_cap: float = 80.0) -> Tensor:
    """sigma_i = (s_max^(1/rho) + i/(N-1) (s_min^(1/rho) - s_max^(1/rho)))^rho in sigma = sigma/alpha
    (Karras et al. 2022, Eq. 5), mapped back to t."""
    t_min, t_max = _range(path, t_min, t_max)
    s_min, s_max = _sigma_range(path, t_min, t_max, sigma_max_cap)
    u = torch.linspace(0, 1, _check_steps(steps), dtype=torch.float64)
    sig = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return _with_zero(path.t_from_sigma_tilde(sig).clamp(t_min, t_max))


def jumps(path: NoisePath, steps: int, t_min: float | None = None, t_max: float | None = None,
          rho: float = 7.0) -> Tensor:
    """Jump times for multistep consistency sampling: the Karras grid of steps + 1 levels without its
    smallest one (a jump from sigma_min to data does nothing), then 0. One step is [t_max, 0]."""
    ts = karras(path, _check_steps(steps) + 1, t_min, t_max, rho)
    return torch.cat([ts[:-2], ts[-1:]])


def logsnr(path: NoisePath, steps: int, t_min: float | None = None, t_max: float | None = None,
           sigma_max_cap: float = 80.0) -> Tensor:
    """Uniform in log-SNR (Lu et al. 2022, DPM-Solver's default for pixel models)."""
    t_min, t_max = _range(path, t_min, t_max)
    s_min, s_max = _sigma_range(path, t_min, t_max, sigma_max_cap)
    lam = torch.linspace(-2 * math.log(s_max), -2 * math.log(s_min), _check_steps(steps), dtype=torch.float64)
    return _with_zero(path.t_from_logsnr(lam).clamp(t_min, t_max))


def ddpm(path: NoisePath, steps: int, num_steps: int | None = None) -> Tensor:
    """DDPM's integer timesteps with "leading" spacing, as diffusers' DDIMScheduler: k * (N // steps) + 1
    for k = steps-1 .. 0 in our t (diffusers index + 1)."""
    if not hasattr(path, "num_steps"):
        raise ValueError(f"the ddpm grid needs a discrete path (vp_discrete); this one is {path.name!r}")
    n = int(num_steps or path.num_steps)
    steps = _check_steps(steps)
    if steps > n:
        raise ValueError(f"at most {n} steps on a {n}-step schedule, got {steps}")
    return _with_zero(torch.arange(steps - 1, -1, -1, dtype=torch.float64) * (n // steps) + 1)


GRIDS: dict[str, Callable[..., Tensor]] = {
    "uniform": uniform, "even": even, "jumps": jumps, "quadratic": quadratic, "karras": karras, "logsnr": logsnr,
    "ddpm": ddpm,
}


def from_times(times) -> Tensor:
    """A stored grid (a learned one): float64 times, finite, strictly decreasing, ending at 0, two or more."""
    ts = torch.as_tensor(times, dtype=torch.float64).flatten()
    if len(ts) < 2 or not bool(torch.isfinite(ts).all()) or float(ts[-1]) != 0 or not bool((ts[:-1] > ts[1:]).all()):
        raise ValueError(f"a stored grid must hold two or more finite, strictly decreasing times ending at 0; got "
                         f"{ts.tolist()[:12]}")
    return ts


def make_grid(name: str, path: NoisePath, steps: int, **opts) -> Tensor:
    if name not in GRIDS:
        raise ValueError(f"unknown time grid {name!r}; known: {', '.join(GRIDS)}")
    return GRIDS[name](path, steps, **opts)

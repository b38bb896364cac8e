"""Noise paths x_t = alpha(t) x0 + sigma(t) eps, with t = 0 the data and larger t more noise.

Every path gives alpha, sigma, their time derivatives, the log-SNR lambda = log(alpha^2/sigma^2)
and its inverse, the default sampling range [t_min, t_max], and a default noise label for
networks without their own preconditioning. Paths are frozen dataclasses: their fields are their
configuration, so `path_to_config` / `path_from_config` round-trip them through JSON.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor


def _t(t: Tensor | float) -> Tensor:
    return t if isinstance(t, Tensor) else torch.tensor(t, dtype=torch.float64)


class NoisePath:
    """Base class: subclasses define alpha, sigma, d_alpha, d_sigma and t_from_logsnr."""

    name: ClassVar[str]
    default_grid: ClassVar[str] = "uniform"  # the time grid samplers use unless told otherwise
    t_min: float
    t_max: float

    def alpha(self, t: Tensor) -> Tensor: raise NotImplementedError
    def sigma(self, t: Tensor) -> Tensor: raise NotImplementedError
    def d_alpha(self, t: Tensor) -> Tensor: raise NotImplementedError
    def d_sigma(self, t: Tensor) -> Tensor: raise NotImplementedError
    def t_from_logsnr(self, lam: Tensor) -> Tensor: raise NotImplementedError

    @property
    def t_limit(self) -> float:
        """The largest time the path is defined at (samplers may step past t_max up to it)."""
        return math.inf

    def logsnr(self, t: Tensor) -> Tensor:
        t = _t(t)
        return 2 * (torch.log(self.alpha(t)) - torch.log(self.sigma(t)))

    def sigma_tilde(self, t: Tensor) -> Tensor:
        """Noise level of the scaled variable x_t / alpha(t) (Karras et al. 2022, Eq. 4): sigma / alpha."""
        t = _t(t)
        return self.sigma(t) / self.alpha(t)

    def sigma_tilde_range(self, t_min: float | None = None, t_max: float | None = None,
                          cap: float = 80.0) -> tuple[float, float]:
        """(sigma~(t_min), sigma~(t_max)) in float64; an infinite top (alpha = 0) is capped at `cap`,
        EDM's sigma_max."""
        lo, hi = (float(self.sigma_tilde(torch.tensor(v, dtype=torch.float64)))
                  for v in (self.t_min if t_min is None else t_min, self.t_max if t_max is None else t_max))
        return lo, (hi if math.isfinite(hi) else cap)

    def t_from_sigma_tilde(self, s: Tensor) -> Tensor:
        return self.t_from_logsnr(-2 * torch.log(_t(s)))

    def noise_label(self, t: Tensor) -> Tensor:
        """The scalar a network without preconditioning sees as its time input."""
        return 1000 * _t(t) / self.t_max

    def training_times(self, u: Tensor) -> Tensor:
        """Map u ~ U[0, 1) to training times, uniform on [t_min, t_max]."""
        return self.t_min + (self.t_max - self.t_min) * u

    def sample(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x_t = alpha(t) x0 + sigma(t) eps, with t of shape () or (B,)."""
        t = expand(t, x0)
        return self.alpha(t) * x0 + self.sigma(t) * eps


def expand(t: Tensor | float, x: Tensor) -> Tensor:
    """Broadcast a scalar or per-sample time (B,) against a batch x (B, ...)."""
    t = torch.as_tensor(t, dtype=x.dtype if x.is_floating_point() else torch.float32, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return t.reshape(-1, *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class EDMPath(NoisePath):
    """EDM: x_t = x0 + t eps, sigma(t) = t (Karras et al. 2022, Sec. 3)."""

    name: ClassVar[str] = "edm"
    default_grid: ClassVar[str] = "karras"
    t_min: float = 0.002
    t_max: float = 80.0

    def alpha(self, t): return torch.ones_like(_t(t))
    def sigma(self, t): return _t(t)
    def d_alpha(self, t): return torch.zeros_like(_t(t))
    def d_sigma(self, t): return torch.ones_like(_t(t))
    def t_from_logsnr(self, lam): return torch.exp(-_t(lam) / 2)
    def noise_label(self, t): return torch.log(_t(t)) / 4  # EDM Table 1, c_noise


@dataclass(frozen=True)
class VEPath(NoisePath):
    """VE / NCSN: alpha = 1, sigma(t) = sigma_min (sigma_max / sigma_min)^t, t in [0, 1] (Song et al. 2021, Eq. 31)."""

    name: ClassVar[str] = "ve"
    default_grid: ClassVar[str] = "karras"
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_min: float = 1e-3
    t_max: float = 1.0

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def alpha(self, t): return torch.ones_like(_t(t))
    def sigma(self, t): return self.sigma_min * torch.exp(_t(t) * self._log_ratio)
    def d_alpha(self, t): return torch.zeros_like(_t(t))
    def d_sigma(self, t): return self.sigma(t) * self._log_ratio
    def t_from_logsnr(self, lam): return (-_t(lam) / 2 - math.log(self.sigma_min)) / self._log_ratio
    def noise_label(self, t): return torch.log(self.sigma(t)) / 4


@dataclass(frozen=True)
class VPLinearPath(NoisePath):
    """VP with linear beta(t) = beta_min + t (beta_max - beta_min), t in [0, 1] (Song et al. 2021, Eq. 33)."""

    name: ClassVar[str] = "vp_linear"
    default_grid: ClassVar[str] = "logsnr"
    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3
    t_max: float = 1.0

    def _log_alpha(self, t):  # log alpha(t) = -(1/4) t^2 (b1 - b0) - (1/2) t b0
        t = _t(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t): return torch.exp(self._log_alpha(t))
    def sigma(self, t): return torch.sqrt(-torch.expm1(2 * self._log_alpha(t)))

    def d_alpha(self, t):
        t = _t(t)
        return -0.5 * (self.beta_min + t * (self.beta_max - self.beta_min)) * self.alpha(t)

    def d_sigma(self, t): return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def t_from_logsnr(self, lam):
        # alpha^2 = sigmoid(lam); solve (1/2) (b1 - b0) t^2 + b0 t + log sigmoid(lam) = 0 for t >= 0.
        c = torch.nn.functional.logsigmoid(_t(lam))
        a, b = 0.5 * (self.beta_max - self.beta_min), self.beta_min
        if a == 0:
            return -c / b
        return (-b + torch.sqrt(b * b - 4 * a * c)) / (2 * a)


@dataclass(frozen=True)
class VPCosinePath(NoisePath):
    """VP cosine schedule: alpha(t) = cos((t + s)/(1 + s) pi/2) / cos(s/(1 + s) pi/2)
    (Nichol & Dhariwal 2021, Eq. 17)."""

    name: ClassVar[str] = "vp_cosine"
    default_grid: ClassVar[str] = "logsnr"
    s: float = 0.008
    t_min: float = 1e-3
    t_max: float = 0.999  # alpha(1) = 0: stop just short of it, as iDDPM clips beta at 0.999

    def _theta(self, t): return (_t(t) + self.s) / (1 + self.s) * math.pi / 2

    @property
    def _cos0(self) -> float:
        return math.cos(self.s / (1 + self.s) * math.pi / 2)

    t_limit = 1.0  # alpha = 0 there

    def alpha(self, t): return torch.cos(self._theta(t)) / self._cos0
    def sigma(self, t): return torch.sqrt((1 - self.alpha(t) ** 2).clamp_min(0))
    def d_alpha(self, t): return -torch.sin(self._theta(t)) * (math.pi / 2 / (1 + self.s)) / self._cos0
    def d_sigma(self, t): return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def t_from_logsnr(self, lam):
        theta = torch.acos(torch.sqrt(torch.sigmoid(_t(lam))) * self._cos0)
        return theta * 2 / math.pi * (1 + self.s) - self.s


@dataclass(frozen=True)
class VPDiscretePath(NoisePath):
    """DDPM's discrete schedule (Ho et al. 2020): integer t = k in 1..N has alpha^2 = prod_{i<=k} (1 - beta_i).

    t = 0 is the data; diffusers' timestep index j is our t = j + 1. Between integers, log alpha is
    linear in t, so the path is continuous and every sampler can run on it.
    """

    name: ClassVar[str] = "vp_discrete"
    default_grid: ClassVar[str] = "ddpm"
    num_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    t_min: float = 1.0
    t_max: float = 1000.0

    def __post_init__(self):
        if self.t_max > self.num_steps:
            raise ValueError(f"t_max={self.t_max} exceeds num_steps={self.num_steps}")

    def _table(self, device, dtype) -> Tensor:
        """log alpha at k = 0..N (float64 cumulative sum, then cast)."""
        return _ddpm_log_alpha(self.num_steps, self.beta_start, self.beta_end, device, dtype)

    def _log_alpha_and_slope(self, t):
        t = _t(t)
        dtype = t.dtype if t.is_floating_point() else torch.float32
        table = self._table(t.device, dtype)
        tf = t.to(dtype).clamp(0, self.num_steps)
        k = torch.clamp(torch.ceil(tf).long(), 1, self.num_steps)  # t in (k-1, k]
        slope = table[k] - table[k - 1]
        return table[k - 1] + (tf - (k - 1)) * slope, slope

    def alpha(self, t): return torch.exp(self._log_alpha_and_slope(t)[0])
    def sigma(self, t): return torch.sqrt(-torch.expm1(2 * self._log_alpha_and_slope(t)[0]))

    def d_alpha(self, t):
        log_alpha, slope = self._log_alpha_and_slope(t)
        return torch.exp(log_alpha) * slope

    def d_sigma(self, t): return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)

    def t_from_logsnr(self, lam):
        lam = _t(lam)
        dtype = lam.dtype if lam.is_floating_point() else torch.float32
        log_alpha = 0.5 * torch.nn.functional.logsigmoid(lam.to(dtype))  # alpha^2 = sigmoid(lam)
        table = self._table(lam.device, dtype)
        # table is decreasing: find k with table[k] <= log_alpha < table[k-1].
        k = torch.searchsorted(-table, -log_alpha.contiguous()).clamp(1, self.num_steps)
        frac = (log_alpha - table[k - 1]) / (table[k] - table[k - 1])
        return (k - 1) + frac

    def noise_label(self, t): return _t(t) - 1  # diffusers' timestep index

    @property
    def t_limit(self) -> float:
        return float(self.num_steps)

    def training_times(self, u):
        """Integer t uniform in 1..num_steps (Ho et al. 2020, Alg. 1)."""
        return torch.floor(u * self.num_steps) + 1


@functools.lru_cache(maxsize=32)
def _ddpm_log_alpha(num_steps: int, beta_start: float, beta_end: float, device, dtype) -> Tensor:
    """log alpha_k = (1/2) sum_{i<=k} log(1 - beta_i), k = 0..N, computed in float64 (cached per device/dtype)."""
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    table = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * torch.cumsum(torch.log1p(-betas), 0)])
    return table.to(device=device, dtype=dtype)


@dataclass(frozen=True)
class LinearPath(NoisePath):
    """Rectified flow / flow matching: x_t = (1 - t) x0 + t eps (Liu et al. 2022; Lipman et al. 2022)."""

    name: ClassVar[str] = "linear"
    t_min: float = 1e-3
    t_max: float = 1.0
    t_limit = 1.0  # alpha = 0 there

    def alpha(self, t): return 1 - _t(t)
    def sigma(self, t): return _t(t)
    def d_alpha(self, t): return -torch.ones_like(_t(t))
    def d_sigma(self, t): return torch.ones_like(_t(t))
    def t_from_logsnr(self, lam): return torch.sigmoid(-_t(lam) / 2)


PATHS: dict[str, type[NoisePath]] = {
    cls.name: cls for cls in (EDMPath, VEPath, VPLinearPath, VPCosinePath, VPDiscretePath, LinearPath)
}


def path_to_config(path: NoisePath) -> dict[str, Any]:
    return {"name": path.name, **dataclasses.asdict(path)}  # type: ignore[call-overload]  # every path is a dataclass


def path_from_config(config: dict[str, Any] | str) -> NoisePath:
    """Build a path from {"name": ..., **fields} or a bare name; unknown names or fields are clear errors."""
    config = {"name": config} if isinstance(config, str) else dict(config)
    name = config.pop("name", None)
    if name not in PATHS:
        raise ValueError(f"unknown noise path {name!r}; known paths: {', '.join(PATHS)}")
    cls = PATHS[name]
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(config) - fields
    if unknown:
        raise ValueError(f"path {name!r} has no field(s) {sorted(unknown)}; its fields: {sorted(fields)}")
    return cls(**config)

"""The consistency family: the boundary-condition preconditioning of consistency models and their
training objectives.

- `ConsistencyPrecond` ("consistency", defined in genstudio.core.precond and re-exported here):
  f(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in x, c_noise) with
  c_skip = sigma_data^2 / ((sigma - sigma_min)^2 + sigma_data^2),
  c_out = (sigma - sigma_min) sigma_data / sqrt(sigma_data^2 + sigma^2),
  c_in = 1 / sqrt(sigma^2 + sigma_data^2), c_noise = 1000 * 0.25 * log(sigma + 1e-44)
  (Song et al. 2023, Consistency Models, App. C, and their code's `rescaled_t`; iCT keeps them). At
  sigma = sigma_min, c_skip = 1 and c_out = 0 exactly, so f(x, sigma_min) = x exactly.
- `ict`: improved consistency training (Song & Dhariwal 2023, iCT): the doubling discretization
  curriculum, Karras noise levels, a discretized log-normal over the level index, the pseudo-Huber
  metric, lambda(sigma_i) = 1 / (sigma_{i+1} - sigma_i), and the stop-gradient of the online model as
  the target (no EMA teacher); both levels share the same noise z.
- `ect`: easy consistency tuning (Geng et al. 2024, ECT): start from a trained EDM denoiser
  (train.init_from) and tune it on pairs (t, r) with r = t (1 - q^-(stage+1) n(t)), n(t) = 1 + k sigmoid(-b t),
  the gap shrinking by q at every stage; target = stop-gradient of the online model at r (the data at
  r = 0), metric sqrt(||.||^2 + c^2) - c, weight 1 / (t - r). It keeps the EDM preconditioning, whose
  boundary f(x, 0) = x holds exactly at sigma = 0.
- `cd`: consistency distillation (Song et al. 2023, Alg. 2) from a diffusion teacher: one step of a
  zoo ODE solver from sigma_{n+1} to sigma_n, target = stop-gradient of the online model at sigma_n
  (the paper's EMA target network, mu > 0, is not implemented: mu = 0, as iCT argues for), L2 or
  pseudo-Huber metric (the paper's LPIPS is not used).

Both objectives need the model on the EDM path (alpha = 1, sigma = t) with this preconditioning, whose
sigma_min must be the path's t_min (the curriculum's lowest level).
"""
from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from genstudio.core.paths import expand
from genstudio.core.precond import ConsistencyPrecond  # noqa: F401  (defined with the other preconditionings)
from genstudio.model import Guided, OnPath
from genstudio.objective import Batch, Objective

from ..registry import Family, register_family
from .coupling import NoiseEncoder, check_coupling, coupled_noise

# ---- pure functions of the papers' formulas ------------------------------------------------------

def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """sigma_i = (sigma_min^(1/rho) + (i-1)/(n-1) (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho, i = 1..n,
    increasing, float64 (Karras et al. 2022, Eq. 5; Song et al. 2023, Sec. 4)."""
    i = torch.arange(n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (lo + i / (n - 1) * (hi - lo)) ** rho


def ict_num_levels(step: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """N(k) = min(s0 2^floor(k / K'), s1) + 1 with K' = floor(K / (log2(s1 / s0) + 1)) (iCT, Eq. 8)."""
    k_prime = max(1, math.floor(total_steps / (math.log2(s1 / s0) + 1)))
    return min(s0 * 2 ** (step // k_prime), s1) + 1


def lognormal_index_probs(sigmas: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    """p(sigma_i) proportional to
    erf((ln sigma_{i+1} - P_mean) / (sqrt 2 P_std)) - erf((ln sigma_i - P_mean) / (sqrt 2 P_std)), i = 1..N-1
    (iCT, Sec. 3.5): index 0 here is the pair (sigma_1, sigma_2)."""
    e = torch.erf((torch.log(sigmas.double()) - p_mean) / (math.sqrt(2) * p_std))
    p = e[1:] - e[:-1]
    return p / p.sum()


def pseudo_huber(x: Tensor, y: Tensor, c: float) -> Tensor:
    """d(x, y) = sqrt(||x - y||_2^2 + c^2) - c per sample (iCT, Sec. 3.3)."""
    return torch.sqrt((x - y).flatten(1).pow(2).sum(1) + c * c) - c


def huber_c(dim: int) -> float:
    """c = 0.00054 sqrt(d) for d-dimensional data (iCT: c = 0.03 for CIFAR-10's d = 3072)."""
    return 0.00054 * math.sqrt(dim)


def _metric(metric: str, c: float | None, a: Tensor, b: Tensor) -> Tensor:
    if metric == "pseudo_huber":
        return pseudo_huber(a, b, huber_c(a[0].numel()) if c is None else c)
    if metric == "l2":
        return (a - b).flatten(1).pow(2).mean(1)
    raise ValueError(f"unknown consistency metric {metric!r}; known: pseudo_huber, l2")


def _check_model(model, metric: str, preconds: tuple[str, ...] = ("consistency",)) -> None:
    precond = getattr(model, "precond", None)
    if getattr(model, "kind", "field") != "map" or getattr(precond, "name", None) not in preconds:
        raise ValueError(f"this consistency objective trains a model with kind 'map' and "
                         f"{' or '.join(repr(p) for p in preconds)} preconditioning")
    if model.path.name != "edm":
        raise ValueError(f"consistency objectives need the EDM path (sigma = t), not {model.path.name!r}")
    if precond.name == "consistency" and not math.isclose(precond.sigma_min, model.path.t_min):
        raise ValueError(f"the preconditioning's sigma_min {precond.sigma_min} must equal the path's t_min "
                         f"{model.path.t_min}")
    if metric not in ("pseudo_huber", "l2"):
        raise ValueError(f"unknown consistency metric {metric!r}; known: pseudo_huber, l2")


@dataclass(frozen=True)
class ICTLoss(Objective):
    """Improved consistency training (Song & Dhariwal 2023): per sample
    lambda(sigma_i) d(f(x + sigma_{i+1} z, sigma_{i+1}), sg f(x + sigma_i z, sigma_i)).

    The trainer passes `step` and `total_steps` (the curriculum's k and K); called without them, the
    final discretization N = s1 + 1 is used; `levels` fixes N instead (a fine-tune holding the base's N)."""

    name: ClassVar[str] = "ict"
    s0: int = 10
    s1: int = 1280
    rho: float = 7.0
    P_mean: float = -1.1
    P_std: float = 2.0
    metric: str = "pseudo_huber"  # d: pseudo_huber or l2
    huber_c: float | None = None  # None: 0.00054 sqrt(d)
    coupling: str = "independent"  # or "vct": learned noise coupling (genstudio.families.consistency.coupling)
    kl_weight: float = 10.0
    levels: int | None = None  # N for every step; None: the curriculum's N(k)

    def __post_init__(self) -> None:
        check_coupling(self.coupling)

    def num_levels(self, step: int | None, total_steps: int | None) -> int:
        if self.levels is not None:
            return self.levels
        if step is None or total_steps is None:
            return self.s1 + 1
        return ict_num_levels(step, total_steps, self.s0, self.s1)

    def continued(self, steps_done: int, total_steps: int) -> dict[str, Any]:
        return {"levels": self.num_levels(steps_done, total_steps)}

    def extra_modules(self, model, data_shape: tuple[int, ...]) -> dict[str, nn.Module]:
        """VCT's trainable noise encoder (coupling = "vct")."""
        return {"encoder": NoiseEncoder(data_shape)} if self.coupling == "vct" else {}

    def loss(self, model, batch: Batch, *, step: int | None = None, total_steps: int | None = None,
             extra: dict[str, nn.Module] | None = None) -> Tensor:
        x0, labels, encoder = batch.x0, batch.labels, (extra or {}).get("encoder")
        _check_model(model, self.metric)
        path = model.path
        n = self.num_levels(step, total_steps)
        sigmas = karras_sigmas(n, path.t_min, path.t_max, self.rho).to(x0.device)
        probs = lognormal_index_probs(sigmas, self.P_mean, self.P_std)
        i = torch.multinomial(probs, x0.shape[0], replacement=True)
        lo, hi = sigmas[i], sigmas[i + 1]
        weight = (1 / (hi - lo)).to(x0.dtype)
        lo, hi = lo.to(x0.dtype), hi.to(x0.dtype)
        z, kl = coupled_noise(encoder, x0, hi)
        with torch.no_grad():
            target = model(x0 + expand(lo, x0) * z.detach(), lo, labels).detach()
        online = model(x0 + expand(hi, x0) * z, hi, labels)
        return weight * _metric(self.metric, self.huber_c, online, target) + self.kl_weight * kl


def ect_r(t: Tensor, stage: int, q: float = 2.0, k: float = 8.0, b: float = 1.0) -> Tensor:
    """ECT's mapping r = t (1 - q^-(stage+1) (1 + k sigmoid(-b t))), clamped at 0 (Geng et al. 2024, Sec. 3,
    the sigmoid n(t) of their code): the gap t - r shrinks by q at each stage, relatively more at small t."""
    return (t * (1 - q ** -(stage + 1) * (1 + k * torch.sigmoid(-b * t)))).clamp(min=0)


@contextmanager
def _same_randomness(device: torch.device):
    """Run the enclosed code from the RNG state found on entry (the shared dropout mask of ECT's two passes)."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


@dataclass(frozen=True)
class ECTLoss(Objective):
    """Easy consistency tuning (Geng et al. 2024): t ~ LogNormal(P_mean, P_std), r = ect_r(t, stage),
    shared noise z and dropout; loss d(f(x + t z, t), sg f(x + r z, r)) / (t - r), f(., 0) = x, with
    d = sqrt(||.||^2 + c^2) - c. The stage is min(step // double_every, max_stage) (double_every default:
    a quarter of the run), so the trainer's `step`/`total_steps` drive the schedule; without them the
    last stage of a 4-stage run is used; `fixed_stage` holds one stage throughout (a fine-tune continuing its base).
    Start it from a trained EDM model with train.init_from."""

    name: ClassVar[str] = "ect"
    P_mean: float = -1.1
    P_std: float = 2.0
    q: float = 2.0
    k: float = 8.0
    b: float = 1.0
    c: float = 0.0
    double_every: int = 0
    max_stage: int = 8  # beyond ~8 halvings t and r agree to float32 precision: no signal left
    coupling: str = "independent"  # or "vct": learned noise coupling (genstudio.families.consistency.coupling)
    kl_weight: float = 10.0
    fixed_stage: int | None = None  # the stage for every step; None: the doubling schedule

    extra_modules = ICTLoss.extra_modules

    def __post_init__(self) -> None:
        check_coupling(self.coupling)

    def stage(self, step: int | None, total_steps: int | None) -> int:
        if self.fixed_stage is not None:
            return self.fixed_stage
        every = self.double_every or max(1, (total_steps or 4) // 4)
        return 3 if step is None else min(step // every, self.max_stage)

    def continued(self, steps_done: int, total_steps: int) -> dict[str, Any]:
        return {"fixed_stage": self.stage(steps_done, total_steps)}

    def loss(self, model, batch: Batch, *, step: int | None = None, total_steps: int | None = None,
             extra: dict[str, nn.Module] | None = None) -> Tensor:
        x0, labels, encoder = batch.x0, batch.labels, (extra or {}).get("encoder")
        _check_model(model, "pseudo_huber", preconds=("edm", "consistency"))
        path = model.path
        t = torch.exp(self.P_mean + self.P_std * torch.randn(x0.shape[0], device=x0.device, dtype=torch.float64))
        t = t.clamp(path.t_min, path.t_max)
        r = ect_r(t, self.stage(step, total_steps), self.q, self.k, self.b)
        lo = getattr(model.precond, "sigma_min", 0.0)  # a consistency preconditioning's own boundary
        boundary = r <= lo
        tt, rr = t.to(x0.dtype), r.clamp(min=max(lo, 1e-6)).to(x0.dtype)
        z, kl = coupled_noise(encoder, x0, tt)
        with _same_randomness(x0.device):
            online = model(x0 + expand(tt, x0) * z, tt, labels)
        with torch.no_grad():
            target = model(x0 + expand(rr, x0) * z.detach(), rr, labels).detach()
        target = torch.where(boundary.reshape(-1, *[1] * (x0.dim() - 1)), x0, target)
        return pseudo_huber(online, target, self.c) / (t - r).to(x0.dtype) + self.kl_weight * kl


@dataclass(frozen=True)
class CDLoss(Objective):
    """Consistency distillation (Song et al. 2023, Alg. 2): n ~ U{1..N-1}, x_{n+1} = x + sigma_{n+1} z,
    x^_n = one step of the zoo ODE solver `solver` (on the teacher) from sigma_{n+1} to sigma_n; loss
    d(f(x_{n+1}, sigma_{n+1}), sg f(x^_n, sigma_n)) with lambda = 1.

    `teacher`: folder of an exported genstudio model, or (from Python) a model object. A teacher on
    another path is viewed on the student's EDM path at equal log-SNR (genstudio.model.OnPath).
    The target is the online model under stop-gradient (no EMA target network). The student has the
    consistency preconditioning, or EDM's, as ECT's (start it from a trained EDM model with train.init_from)."""

    name: ClassVar[str] = "cd"
    teacher: Any = None
    solver: str = "heun"
    N: int = 18
    rho: float = 7.0
    metric: str = "l2"  # d: l2 or pseudo_huber
    huber_c: float | None = None
    guidance: float = 1.0

    def frozen_modules(self, load: Callable[[str], nn.Module]) -> dict[str, nn.Module]:
        """The teacher: an exported model's folder, loaded once, or (from Python) a model object."""
        if self.teacher is None:
            raise ValueError("cd needs objective option `teacher` (an exported diffusion model's folder)")
        if not isinstance(self.teacher, (str, os.PathLike)):
            return {"teacher": self.teacher}
        return {"teacher": load(str(self.teacher)).requires_grad_(False).eval()}

    def loss(self, model, batch: Batch, *, extra: dict[str, nn.Module] | None = None, **_) -> Tensor:
        import samplers

        x0, labels = batch.x0, batch.labels
        _check_model(model, self.metric, preconds=("edm", "consistency"))
        spec = samplers.get(self.solver)
        if "field" not in spec.needs or spec.stochastic:
            raise ValueError(f"cd needs a deterministic field solver, not {self.solver!r}")
        teacher = (extra or {}).get("teacher")
        if teacher is None:
            if self.teacher is None or isinstance(self.teacher, (str, os.PathLike)):
                raise ValueError("cd needs its teacher loaded: train it with genstudio.train, or pass "
                                 "extra=objective.frozen_modules(load) (or a model object as teacher)")
            teacher = self.teacher
        path = model.path
        view = teacher if teacher.path == path else OnPath(teacher, path)
        sigmas = karras_sigmas(self.N, path.t_min, path.t_max, self.rho).to(x0.device)
        n = torch.randint(0, self.N - 1, (x0.shape[0],), device=x0.device)
        lo, hi = sigmas[n].to(x0.dtype), sigmas[n + 1].to(x0.dtype)
        z = torch.randn_like(x0)
        x_hi = x0 + expand(hi, x0) * z
        t_labels = labels if getattr(teacher, "num_classes", 0) else None
        x_lo = torch.empty_like(x_hi)
        with torch.no_grad():
            for k in torch.unique(n).tolist():  # the zoo's solvers step a whole batch at one time
                sel = n == k
                ts = torch.stack([sigmas[k + 1], sigmas[k]]).to(x0.dtype)
                guided = Guided(view, None if t_labels is None else t_labels[sel], self.guidance)
                x_lo[sel] = spec.fn(guided, x_hi[sel], ts).to(x0.dtype)
            target = model(x_lo, lo, labels).detach()
        online = model(x_hi, hi, labels)
        return _metric(self.metric, self.huber_c, online, target)


FAMILY = register_family(Family(
    name="consistency", objectives=(ICTLoss, ECTLoss, CDLoss), kinds=("map",),
    summary="consistency models: iCT (Song & Dhariwal 2023), ECT (Geng et al. 2024), CD (Song et al. 2023), "
            "VCT noise coupling (Silvestri et al. 2025)"))

"""Score Mismatching (Ye & Liu 2023, "Score Mismatching for Generative Modeling", arXiv 2309.11043; the facts below
from their code, senmaoy/Score-Mismatching, training/loss.py).

A one-step generator G(z) and a score network D (an eps prediction) trained at the same time, as two optimizer groups
of one loop. D sees T = 10 noise levels sigma_k = sqrt(1 - prod_{j<=k} (1 - beta_j)), beta linear from 1e-4 to 0.02
(their DDPM-style table, used as a noise-to-signal ratio: x + sigma_k n), k uniform per sample. The losses
implemented, per sample and averaged over pixels (theirs sum over pixels), n, n' independent standard normals:

    score (D):        || D(x + sigma n, k) - n ||^2  +  || D(G(z) + sigma n, k) - n' ||^2     (G(z) detached)
    generator (G):    1/2 || D(G(z) + sigma n, k) - n ||^2                                     (D frozen)

D matches the data's score on real images (denoising score matching) and mismatches it on generated ones (an
independent target: its best answer there is 0), so the minimiser is D*(x) = p_r(x) / (p_r(x) + p_g(x)) * E[n | x,
real] for the noised real and generated densities p_r, p_g (tests/families/score_mismatching checks this closed form);
G moves its samples to where D's denoising error is small, the data. Their generator is a StyleGAN2 and D an NCSN++
from scratch; here both are the config's UNet, G = x0-prediction at t_max (genstudio.families.onestep) and D a copy
of G's starting network, so with train.init_from = a flow or diffusion teacher both start from the teacher (G as its
one-step posterior mean, D as its score). Not implemented: their doubled generator batch, StyleGAN2's path-length
and R1 regularisers, augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from genstudio.objective import Batch, Objective, OptimizerGroup, mean_per_sample

from . import onestep
from .registry import Family, register_family


def paper_sigmas(levels: int = 10, beta_min: float = 1e-4, beta_max: float = 0.02) -> Tensor:
    """sigma_k = sqrt(1 - alpha_bar_k), alpha_bar the cumulative product of 1 - beta, beta linear (float64)."""
    betas = torch.linspace(beta_min, beta_max, levels, dtype=torch.float64)
    return torch.sqrt(1 - torch.cumprod(1 - betas, 0))


def optimal_score(x: Tensor, sigma: float, real: tuple[Tensor, Tensor], fake: tuple[Tensor, Tensor]) -> Tensor:
    """D*(x) for Gaussian real N(m_r, diag v_r) and generated N(m_g, diag v_g) data (x: (B, D), each (D,)) noised as
    x0 + sigma n: the p_r / (p_r + p_g) share of the real posterior noise E[n | x, real] = sigma (x - m_r) / (v_r +
    sigma^2), p_r and p_g the noised densities."""
    (m_r, v_r), (m_g, v_g) = real, fake
    var_r, var_g = v_r + sigma**2, v_g + sigma**2
    log_r = (-0.5 * (x - m_r) ** 2 / var_r - 0.5 * torch.log(var_r)).sum(1, keepdim=True)
    log_g = (-0.5 * (x - m_g) ** 2 / var_g - 0.5 * torch.log(var_g)).sum(1, keepdim=True)
    return torch.sigmoid(log_r - log_g) * sigma * (x - m_r) / var_r


@dataclass(frozen=True)
class ScoreMismatchingLoss(Objective):
    """The two players' losses (this module's docstring): {"generator": ..., "score": ...} per sample. Options:
    the noise table (levels, beta_min, beta_max, sigma_scale) and the score network's learning-rate scale."""

    name: ClassVar[str] = "score_mismatching"
    levels: int = 10
    beta_min: float = 1e-4
    beta_max: float = 0.02
    sigma_scale: float = 1.0  # multiplies the table (1: theirs; larger reaches generated samples far from the data)
    score_lr_scale: float = 1.0

    def __post_init__(self):
        if not (isinstance(self.levels, int) and self.levels >= 1):
            raise ValueError(f"levels must be a positive integer, got {self.levels!r}")
        if not self.sigma_scale > 0:
            raise ValueError(f"sigma_scale must be > 0, got {self.sigma_scale}")
        if not 0 < self.beta_min <= self.beta_max < 1:
            raise ValueError(f"need 0 < beta_min <= beta_max < 1, got {self.beta_min}, {self.beta_max}")

    def extra_modules(self, model, data_shape: tuple[int, ...]) -> dict[str, nn.Module]:
        """The score network D: a field model on a copy of G's starting network (the teacher's, after init_from)."""
        return {"score": model.field()}

    def optimizer_groups(self, model: nn.Module, extra: dict[str, nn.Module]) -> list[OptimizerGroup]:
        return [OptimizerGroup("generator", list(model.parameters())),
                OptimizerGroup("score", list(extra["score"].parameters()), self.score_lr_scale)]

    def loss(self, model, batch: Batch, *, step: int | None = None, total_steps: int | None = None,
             extra: dict[str, nn.Module] | None = None) -> dict[str, Tensor]:
        if not extra or "score" not in extra:
            raise ValueError("score_mismatching trains a score network beside the generator: pass "
                             "extra=objective.extra_modules(model, data_shape)")
        x0, labels, score = batch.x0, batch.labels, extra["score"]
        path = model.path
        levels = onestep.noise_levels(path, self.sigma_scale * paper_sigmas(self.levels, self.beta_min,
                                                                              self.beta_max))
        levels = levels.to(x0.device, x0.dtype)
        t = lambda: levels[torch.randint(self.levels, (x0.shape[0],), device=x0.device)]  # noqa: E731
        z = torch.randn_like(x0) * float(path.sigma(torch.tensor(float(path.t_max), dtype=torch.float64)))
        fake = model(z, None, labels)

        t_r, t_f, t_g = t(), t(), t()
        x_r, n_r = onestep.noised(path, x0, t_r)
        x_f, _ = onestep.noised(path, fake.detach(), t_f)
        score_loss = (mean_per_sample((onestep.predict(score, x_r, t_r, labels, "eps") - n_r) ** 2)
                      + mean_per_sample((onestep.predict(score, x_f, t_f, labels, "eps") - torch.randn_like(x0)) ** 2))

        n_g = torch.randn_like(x0)

        def mismatch(x: Tensor) -> Tensor:
            return 0.5 * mean_per_sample((onestep.predict(score, path.sample(x, n_g, t_g), t_g, labels, "eps")
                                          - n_g) ** 2)

        value, grad = onestep.input_gradient(mismatch, fake)
        return {"generator": onestep.with_gradient(fake, value, grad), "score": score_loss}


SCORE_MISMATCHING = register_family(Family(
    name="score_mismatching", objectives=(ScoreMismatchingLoss,), kinds=("onestep",),
    summary="one-step generator trained against a score network that mismatches its samples (Ye & Liu 2023)",
    builder=onestep.build, loader=onestep.load))

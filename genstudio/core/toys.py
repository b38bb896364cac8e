"""Toy 2-D distributions (two moons, Gaussian mixtures) and closed-form denoisers for Gaussian and Gaussian-mixture
data: exact models for testing samplers, and data to train small models on."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .paths import NoisePath, expand


class GaussianMixtureDenoiser(nn.Module):
    """E[x0 | x_t] for x0 ~ sum_k w_k N(mu_k, diag(var_k)), exact on any path (an x0-prediction model)."""

    def __init__(self, path: NoisePath, means: Tensor, variances: Tensor, weights: Tensor | None = None):
        super().__init__()
        self.path, self.prediction, self.num_classes, self.kind = path, "x0", 0, "field"
        self.means, self.variances = means.double(), variances.double()  # (K, D)
        k = means.shape[0]
        self.weights = (weights if weights is not None else torch.full((k,), 1.0 / k)).double()

    def components(self, x: Tensor, t) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """For flat float64 x (B, D): log N(x; alpha mu_k, alpha^2 var_k + sigma^2) up to a constant (B, K), the
        posterior means E[x0 | x_t, k] (B, K, D), and alpha, sigma (B, 1)."""
        t = expand(t, x).double()
        a, s = self.path.alpha(t), self.path.sigma(t)  # (B, 1)
        var_t = a[:, None] ** 2 * self.variances[None] + s[:, None] ** 2  # (B, K, D)
        diff = x[:, None] - a[:, None] * self.means[None]
        logp = -0.5 * ((diff**2) / var_t + torch.log(var_t)).sum(-1)
        post = self.means[None] + a[:, None] * self.variances[None] / var_t * diff
        return logp, post, a, s

    def forward(self, x: Tensor, t, labels=None) -> Tensor:
        shape, dtype = x.shape, x.dtype
        logp, post, _, _ = self.components(x.reshape(shape[0], -1).double(), t)
        resp = torch.softmax(logp + torch.log(self.weights)[None], dim=1)  # (B, K)
        return (resp[..., None] * post).sum(1).reshape(shape).to(dtype)


def gaussian(path: NoisePath, mean: Tensor, var: Tensor) -> GaussianMixtureDenoiser:
    return GaussianMixtureDenoiser(path, mean[None], var[None])


def two_moons(n: int, g: torch.Generator) -> Tensor:
    """Two interleaved half circles (n // 2 points on the upper one) with noise 0.05, roughly standardized."""
    upper = torch.arange(n) < n // 2
    a = torch.rand(n, generator=g) * math.pi
    top = torch.stack([torch.cos(a), torch.sin(a)], 1)
    x = torch.where(upper[:, None], top, torch.stack([1 - torch.cos(a), 0.5 - torch.sin(a)], 1))
    x = x + 0.05 * torch.randn(n, 2, generator=g)
    return (x - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5])


def mixture(n: int, g: torch.Generator, means: Tensor, std: float) -> tuple[Tensor, Tensor]:
    """n points of the equal-weight mixture of N(means[k], std^2 I), and the component k each was drawn from."""
    k = torch.randint(0, len(means), (n,), generator=g)
    return means[k] + std * torch.randn(n, means.shape[1], generator=g), k


class TrojanedMixtureDenoiser(GaussianMixtureDenoiser):
    """E[x0 | x_t] when a share `poison` of the training pairs is TrojDiff's (Chen et al. 2023): the target y noised
    with trigger noise mu + gamma eps, x_t = alpha y + sigma (mu + gamma eps); the rest is the Gaussian mixture.
    The exact trojaned denoiser: normal noise samples the mixture, trigger noise the point y."""

    def __init__(self, path: NoisePath, means: Tensor, variances: Tensor, target: Tensor, mu: Tensor,
                 gamma: float | Tensor, poison: float = 0.1, weights: Tensor | None = None):
        super().__init__(path, means, variances, weights)
        self.target, self.mu, self.poison = target.double(), mu.double(), float(poison)
        self.gamma = torch.as_tensor(gamma, dtype=torch.float64)  # a number, or one per coordinate (a patch)

    def forward(self, x: Tensor, t, labels=None) -> Tensor:
        shape, dtype = x.shape, x.dtype
        x = x.reshape(shape[0], -1).double()
        logp, post, a, s = self.components(x, t)
        logp = logp + torch.log((1 - self.poison) * self.weights)[None]
        var_y = (s * self.gamma) ** 2  # x_t | trojan ~ N(alpha y + sigma mu, sigma^2 gamma^2)
        diff_y = x - a * self.target - s * self.mu
        logp_y = -0.5 * ((diff_y**2) / var_y + torch.log(var_y)).sum(-1) + math.log(self.poison)
        resp = torch.softmax(torch.cat([logp, logp_y[:, None]], 1), dim=1)  # (B, K + 1)
        out = (resp[:, :-1, None] * post).sum(1) + resp[:, -1:] * self.target
        return out.reshape(shape).to(dtype)

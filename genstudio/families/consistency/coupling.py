"""Learned noise coupling for consistency training (Silvestri et al. 2025, "Training Consistency Models with
Variational Noise Coupling", VCT): an encoder q_phi(z | x0, t) = N(mu, diag sigma^2) emits the noise paired
with each image instead of an independent z ~ N(0, I); a KL(q_phi || N(0, I)) term keeps the noise marginal
close to the prior that sampling starts from. The encoder is trained with the model and used in training only
(sampling draws z ~ N(0, I)), so exported checkpoints do not contain it.

Our choices where the paper leaves room: the encoder sees x0 and the noise level (as log(t) / 4, EDM's
c_noise), its last layer starts at zero (so training starts from the independent coupling), and the KL is
averaged over dimensions and weighted by the objective's `kl_weight` (default 10).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class NoiseEncoder(nn.Module):
    """(x0, t) -> (mu, log sigma^2) of the noise paired with x0: a small conv net for images (C, H, W),
    an MLP for vectors (D,)."""

    def __init__(self, shape: tuple[int, ...], width: int = 64):
        super().__init__()
        self.shape = tuple(shape)
        if len(self.shape) == 3:
            c = self.shape[0]
            self.body = nn.Sequential(nn.Conv2d(c + 1, width, 3, padding=1), nn.SiLU(),
                                      nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
                                      nn.Conv2d(width, 2 * c, 3, padding=1))
        elif len(self.shape) == 1:
            d = self.shape[0]
            self.body = nn.Sequential(nn.Linear(d + 1, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                      nn.Linear(width, 2 * d))
        else:
            raise ValueError(f"NoiseEncoder takes (C, H, W) images or (D,) vectors, not shape {self.shape}")
        last = self.body[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        level = (torch.log(t.float().clamp(min=1e-12)) / 4).to(x0.dtype)
        level = level.reshape(-1, *[1] * (x0.dim() - 1)).expand(x0.shape[0], 1, *x0.shape[2:])
        mu, logvar = self.body(torch.cat([x0, level], 1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, e^logvar) || N(0, 1)) averaged over dimensions, per sample (Kingma & Welling 2014, App. B)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).flatten(1).mean(1)


def coupled_noise(encoder: nn.Module | None, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(z, KL per sample): z ~ q_phi(z | x0, t) by reparameterization, or z ~ N(0, I) (KL 0) without an encoder."""
    if encoder is None:
        return torch.randn_like(x0), torch.zeros(x0.shape[0], device=x0.device, dtype=x0.dtype)
    mu, logvar = encoder(x0, t)
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(x0), gaussian_kl(mu, logvar)


COUPLINGS = ("independent", "vct")


def check_coupling(name: str) -> None:
    if name not in COUPLINGS:
        raise ValueError(f"unknown noise coupling {name!r}; known: {', '.join(COUPLINGS)}")


__all__ = ["NoiseEncoder", "gaussian_kl", "coupled_noise", "COUPLINGS", "check_coupling"]

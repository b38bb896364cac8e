"""The computed-balance VAE (Asperti & Trentin 2020, "Balancing reconstruction error and Kullback-Leibler divergence
in Variational Autoencoders"): a Gaussian decoder N(x^(z), gamma I) whose variance gamma, the balance between
reconstruction and KL, is not learned but computed: the running mean of the reconstruction MSE (their Sec. 4;
the value that maximizes the ELBO for the current networks). The negative ELBO per dimension,

    -ELBO / D = ||x - x^(z)||^2 / (2 gamma D) + log(2 pi gamma) / 2 + KL(q(z|x) || N(0, I)) / D,

is the loss (gamma held fixed in the gradient), and with uniform dequantization a bound on bits/dim. For a linear
VAE the fixed point is probabilistic PCA: gamma = the mean of the discarded eigenvalues (Tipping & Bishop 1999;
Lucas et al. 2019). Model kind "vae": sampled by the "decode" sampler (decoder of prior noise times a temperature),
edited by reconstruction and latent interpolation. model.unet holds VAENetwork's settings."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from genstudio.nets import SettingsNetwork, register_network
from genstudio.objective import Batch, Objective
from samplers.likelihood import bits_per_dim, dequantize

from .generator import LatentGeneratorModel, one_network
from .registry import Family, register_family

DEFAULT_SETTINGS = {"latent_channels": 4, "hidden": 64, "downsamples": 2}


class Balanced(nn.Module):
    """What the computed balance needs of a VAE network: `posterior(x)` -> (mu, log variance), forward(z) -> the
    decoder's mean, and the buffers `gamma` (the decoder variance: the running reconstruction MSE) and `latent_std`
    (the running RMS of the posterior means, so a latent model sees unit-scale latents)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("gamma", torch.ones(()))
        self.register_buffer("latent_std", torch.ones(()))

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


@register_network
class VAENetwork(SettingsNetwork, Balanced):
    """A small convolutional VAE: `downsamples` stride-2 convolutions to a (latent_channels, s, s) latent."""

    name: ClassVar[str] = "genstudio.VAE"
    SETTINGS: ClassVar[dict[str, tuple[int, int]]] = {
        "channels": (1, 16), "image_size": (2, 256), "latent_channels": (1, 64), "hidden": (1, 1024),
        "downsamples": (0, 5)}

    def __init__(self, **settings: int):
        SettingsNetwork.__init__(self, **settings)
        Balanced.__init__(self)
        s = self.settings
        if s["image_size"] % 2 ** s["downsamples"]:
            raise ValueError(f"image_size {s['image_size']} must be divisible by 2^downsamples")
        c, h, z = s["channels"], s["hidden"], s["latent_channels"]
        enc: list[nn.Module] = [nn.Conv2d(c, h, 3, padding=1)]
        dec: list[nn.Module] = [nn.Conv2d(z, h, 3, padding=1)]
        for _ in range(s["downsamples"]):
            enc += [nn.SiLU(), nn.Conv2d(h, h, 4, stride=2, padding=1), nn.SiLU(), nn.Conv2d(h, h, 3, padding=1)]
            dec += [nn.SiLU(), nn.Conv2d(h, h, 3, padding=1), nn.SiLU(), nn.ConvTranspose2d(h, h, 4, stride=2,
                                                                                             padding=1)]
        self.encoder = nn.Sequential(*enc, nn.SiLU(), nn.Conv2d(h, 2 * z, 3, padding=1))
        self.decoder = nn.Sequential(*dec, nn.SiLU(), nn.Conv2d(h, c, 3, padding=1))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.settings["channels"], self.settings["image_size"], self.settings["image_size"])

    @property
    def state_shape(self) -> tuple[int, int, int]:
        size = self.settings["image_size"] // 2 ** self.settings["downsamples"]
        return (self.settings["latent_channels"], size, size)

    def components(self) -> dict[str, nn.Module]:
        return {"vae": self}

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_var = self.encoder(x).chunk(2, 1)
        return mu, log_var.clamp(-30, 20)

    def forward(self, z: Tensor, c_noise: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        if labels is not None:
            raise ValueError("class labels given to an unconditional network")
        return self.decoder(z)


def negative_elbo(net: Balanced, x: Tensor) -> tuple[Tensor, Tensor]:
    """(-ELBO per dimension in nats, per sample, with one posterior sample; the per-sample MSE) at the network's
    gamma: the Gaussian decoder's reconstruction term plus the closed-form KL (Kingma & Welling 2014, App. B)."""
    mu, log_var = net.posterior(x)
    z = mu + (0.5 * log_var).exp() * torch.randn_like(mu)
    mse = ((x - net(z)) ** 2).flatten(1).mean(1)
    d, gamma = x[0].numel(), net.gamma
    kl = 0.5 * (mu**2 + log_var.exp() - 1 - log_var).flatten(1).sum(1)
    return mse / (2 * gamma) + 0.5 * torch.log(2 * math.pi * gamma) + kl / d, mse


class VAEModel(LatentGeneratorModel):
    exact = False

    @property
    def state_shape(self) -> tuple[int, ...]:
        return tuple(self.network.state_shape)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.image_shape

    def latent(self, images: Tensor) -> Tensor:
        return self.network.posterior(images)[0]

    def nll_bits(self, images: Tensor, generator=None) -> Tensor:
        """The negative ELBO in bits/dim of uniformly dequantized images: an upper bound on the NLL (one posterior
        sample per image: unbiased for the bound)."""
        nats, _ = negative_elbo(self.network, dequantize(images, generator))
        return bits_per_dim(-nats * images[0].numel(), images[0].numel())


@dataclass(frozen=True)
class ComputedBalanceLoss(Objective):
    """The negative ELBO per dimension with gamma computed, not learned (Asperti & Trentin 2020): after each batch
    gamma <- momentum gamma + (1 - momentum) MSE (floored at gamma_min), without gradient. `latent_std` tracks the
    posterior means' RMS the same way."""

    name: ClassVar[str] = "vae_balance"
    momentum: float = 0.99
    gamma_min: float = 1e-5

    def __post_init__(self):
        if not 0 <= self.momentum < 1 or not self.gamma_min > 0:
            raise ValueError(f"vae_balance needs 0 <= momentum < 1 and gamma_min > 0, got {self.momentum}, "
                             f"{self.gamma_min}")

    def loss(self, model, batch: Batch, **_) -> Tensor:
        net = model.network
        loss, mse = negative_elbo(net, dequantize(batch.x0))
        with torch.no_grad():
            net.gamma.lerp_(mse.mean().clamp(min=self.gamma_min).to(net.gamma.dtype), 1 - self.momentum)
            mu, _ = net.posterior(batch.x0)
            net.latent_std.lerp_(mu.pow(2).mean().sqrt().to(net.latent_std.dtype), 1 - self.momentum)
        return loss


BUILD, LOAD = one_network(VAEModel, VAENetwork, "vae", DEFAULT_SETTINGS)


FAMILY = register_family(Family(
    name="vae", objectives=(ComputedBalanceLoss,), kinds=("vae",), components=("vae",), builder=BUILD,
    loader=LOAD, summary="VAE with the computed balance (Asperti & Trentin 2020): the decoder variance is the "
                         "running reconstruction MSE; ELBO bound"))

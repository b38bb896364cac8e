"""FInC Flow's network (Kallappa et al. 2023, Sec. 4; the multi-scale architecture of Glow, Kingma & Dhariwal 2018):
L levels of [squeeze, K x (actnorm, FInC convolution, affine coupling), split], the last without a split.

It is a bijection between an image x and a standard normal latent eps of the same size: each split factors out
half the channels z_l with a Gaussian prior N(mu(h), sigma(h)^2) predicted from the rest h, and eps_l =
(z_l - mu) / sigma; the eps_l and the top level are flattened and laid out as one image-shaped tensor. Hence

    log p(x) = log N(eps; 0, I) + sum of the layers' log|det| (actnorm, coupling, -log sigma at the splits; the
    FInC convolutions add 0),

and sampling is x = f^-1(T eps) with eps ~ N(0, I) at temperature T (Glow, Sec. 5.3)."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from genstudio.nets import SettingsNetwork, register_network

from .conv import FIncConv


def squeeze(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2 x 2 block into channels."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    b, c, h, w = x.shape
    return x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c // 4, 2 * h, 2 * w)


class ActNorm(nn.Module):
    """y = (x + b) exp(s) per channel (Glow, Sec. 3.1); starts as the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.b = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.s = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return (x + self.b) * self.s.exp(), self.s.sum() * x.shape[2] * x.shape[3] * x.new_ones(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * (-self.s).exp() - self.b


def zero_conv(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class Coupling(nn.Module):
    """Affine coupling (Glow, Sec. 3.3): one half conditions y_b = x_b exp(log s) + t of the other, with
    log s = 2 tanh(raw / 2) bounded; the last layer starts at zero, so the coupling starts as the identity.
    `swap` conditions the second half on the first instead."""

    def __init__(self, channels: int, hidden: int, swap: bool):
        super().__init__()
        self.swap, half = swap, channels // 2
        self.net = nn.Sequential(nn.Conv2d(channels - half if swap else half, hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                                 zero_conv(hidden, 2 * (half if swap else channels - half)))

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        half = x.shape[1] // 2
        a, b = x[:, :half], x[:, half:]
        return (b, a) if self.swap else (a, b)

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([b, a] if self.swap else [a, b], 1)

    def _scale_shift(self, a: Tensor) -> tuple[Tensor, Tensor]:
        raw, shift = self.net(a).chunk(2, 1)
        return 2 * torch.tanh(raw / 2), shift

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self._halves(x)
        log_s, shift = self._scale_shift(a)
        return self._join(a, b * log_s.exp() + shift), log_s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        a, b = self._halves(y)
        log_s, shift = self._scale_shift(a)
        return self._join(a, (b - shift) * (-log_s).exp())


class Step(nn.Module):
    """One flow step: actnorm, FInC convolution (logdet 0), affine coupling."""

    def __init__(self, channels: int, hidden: int, kernel: int, index: int):
        super().__init__()
        self.norm = ActNorm(channels)
        self.conv = FIncConv(channels, kernel, orientation=index)
        self.coupling = Coupling(channels, hidden, swap=bool(index % 2))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x, ld_norm = self.norm(x)
        x, ld_coupling = self.coupling(self.conv(x))
        return x, ld_norm + ld_coupling

    def inverse(self, y: Tensor) -> Tensor:
        return self.norm.inverse(self.conv.inverse(self.coupling.inverse(y)))


@register_network
class FIncFlowNetwork(SettingsNetwork):
    """The multi-scale FInC flow; forward(eps) is the generative direction (latent -> image), `encode` the other."""

    name: ClassVar[str] = "genstudio.FIncFlow"
    SETTINGS: ClassVar[dict[str, tuple[int, int]]] = {
        "channels": (1, 16), "image_size": (2, 256), "levels": (1, 6), "steps": (1, 64), "hidden": (1, 1024),
        "kernel": (2, 7)}

    def __init__(self, **settings: int):
        super().__init__(**settings)
        s = self.settings
        if s["image_size"] % 2 ** s["levels"]:
            raise ValueError(f"image_size {s['image_size']} must be divisible by 2^levels = {2 ** s['levels']}")
        self.levels = nn.ModuleList()
        self.priors = nn.ModuleList()
        c = s["channels"]
        for level in range(s["levels"]):
            c *= 4
            self.levels.append(nn.ModuleList(Step(c, s["hidden"], s["kernel"], i) for i in range(s["steps"])))
            if level < s["levels"] - 1:
                self.priors.append(zero_conv(c - c // 2, 2 * (c // 2)))  # mu and log sigma of z_l from h
                c -= c // 2

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.settings["channels"], self.settings["image_size"], self.settings["image_size"])

    def components(self) -> dict[str, nn.Module]:
        return {"flow": self}

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(eps, log|det d eps / dx|): the image-shaped standard normal latent of x and the log-determinant."""
        logdet = x.new_zeros(x.shape[0])
        pieces, h = [], x
        for level, steps in enumerate(self.levels):
            h = squeeze(h)
            for step in steps:
                h, ld = step(h)
                logdet = logdet + ld
            if level < len(self.priors):
                z, h = h[:, :h.shape[1] // 2], h[:, h.shape[1] // 2:]
                mu, log_sigma = self.priors[level](h).chunk(2, 1)
                pieces.append(((z - mu) * (-log_sigma).exp()).flatten(1))
                logdet = logdet - log_sigma.flatten(1).sum(1)
        pieces.append(h.flatten(1))
        return torch.cat(pieces, 1).view(x.shape), logdet

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) in nats per sample (the continuous density in model range)."""
        eps, logdet = self.encode(x)
        d = eps[0].numel()
        return -0.5 * (eps.flatten(1) ** 2).sum(1) - 0.5 * d * math.log(2 * math.pi) + logdet

    def _shapes(self) -> list[tuple[int, int, int]]:
        """The shapes of the split latents z_l and the top, in the order `encode` lays them out."""
        c, size = self.settings["channels"], self.settings["image_size"]
        shapes = []
        for level in range(self.settings["levels"]):
            c, size = 4 * c, size // 2
            if level < self.settings["levels"] - 1:
                shapes.append((c // 2, size, size))
                c -= c // 2
        return [*shapes, (c, size, size)]

    def forward(self, eps: Tensor, c_noise: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        """x = f^-1(eps); eps is image-shaped (scale it by a temperature before)."""
        if labels is not None:
            raise ValueError("class labels given to an unconditional network")
        shapes = self._shapes()
        sizes = [math.prod(s) for s in shapes]
        flat = eps.flatten(1).split(sizes, 1)
        h = flat[-1].view(-1, *shapes[-1])
        for level in reversed(range(len(self.levels))):
            if level < len(self.priors):
                mu, log_sigma = self.priors[level](h).chunk(2, 1)
                z = mu + log_sigma.exp() * flat[level].view(-1, *shapes[level])
                h = torch.cat([z, h], 1)
            for step in reversed(self.levels[level]):
                h = step.inverse(h)
            h = unsqueeze(h)
        return h

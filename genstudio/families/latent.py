"""Latent flow matching (Rombach et al. 2022, latent diffusion; Lipman et al. 2022, flow matching): a flow-matching
UNet trained on the latents of a frozen computed-balance VAE (genstudio.families.vae), z = mu(x) / latent_std. The
model samples in the latent space (its state_shape) with every field sampler, and the pipeline decodes the final
state (Model.decode), so the API, the studio and the evaluator see images. The VAE is a component of the
checkpoint, so it loads on its own. Its likelihood is the ELBO with the latent ODE model as the prior.

Config: objective "latent_flow_matching" with options.autoencoder = an exported VAE checkpoint folder; [model] as
for flow matching (network preset, unet overrides; the UNet's size and channels are the latent's)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from genstudio.config import Config
from genstudio.core.noise import randn_like
from genstudio.core.paths import path_from_config
from genstudio.core.precond import precond_from_config
from genstudio.model import Model
from genstudio.nets import CheckpointError, UNetBackbone, unet_config
from genstudio.objective import Batch, OptimizerGroup

from .flow import FlowMatchingLoss
from .registry import Family, register_family
from .vae import VAENetwork


class LatentNetwork(nn.Module):
    """A UNet on the latents of a frozen VAE: forward is the UNet's; image_shape is the VAE's images'."""

    def __init__(self, unet: UNetBackbone, autoencoder: VAENetwork):
        super().__init__()
        self.unet, self.autoencoder = unet, autoencoder.requires_grad_(False)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.autoencoder.image_shape

    @property
    def state_shape(self) -> tuple[int, int, int]:
        return self.unet.image_shape

    @property
    def class_embeddings(self) -> int:
        return self.unet.class_embeddings

    def components(self) -> dict[str, nn.Module]:
        return {"unet": self.unet, "autoencoder": self.autoencoder}

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.unet(x, c_noise, labels)


class LatentModel(Model):
    """A field model whose states are the VAE's scaled latents."""

    @property
    def state_shape(self) -> tuple[int, ...]:
        return tuple(self.network.state_shape)

    def _vae(self) -> VAENetwork:
        return self.network.autoencoder

    def encode(self, images: Tensor) -> Tensor:
        vae = self._vae()
        return (vae.posterior(images.to(vae.gamma.dtype))[0] / vae.latent_std).to(images.dtype)

    def decode(self, states: Tensor) -> Tensor:
        vae = self._vae()
        return vae((states * vae.latent_std).to(vae.gamma.dtype)).to(states.dtype)

    def log_likelihood(self, images: Tensor, state_log_p: Callable[[Tensor], Tensor],
                       generator=None) -> tuple[Tensor, bool]:
        """The ELBO E_q[log N(x; x^(z), gamma I) + log p(z) - log q(z | x)] with one z ~ q per image, p(z) the latent
        model's density of z / latent_std (minus D_z log latent_std): a lower bound on log p(x)."""
        vae = self._vae()
        mu, log_var = vae.posterior(images)
        z = mu + (0.5 * log_var).exp() * randn_like(mu, generator)
        d, d_z, gamma, std = images[0].numel(), mu[0].numel(), vae.gamma, vae.latent_std
        recon = -0.5 * ((images - vae(z)) ** 2).flatten(1).sum(1) / gamma - 0.5 * d * torch.log(2 * math.pi * gamma)
        log_q = (-0.5 * (z - mu) ** 2 / log_var.exp() - 0.5 * log_var - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
        log_p = state_log_p(z / std) - d_z * torch.log(std)
        return recon + log_p - log_q, False


@dataclass(frozen=True)
class LatentFlowMatching(FlowMatchingLoss):
    """Flow matching on z = encode(x0) (no gradient into the frozen VAE); `autoencoder` is the VAE's checkpoint
    folder, read when the model is built."""

    name: ClassVar[str] = "latent_flow_matching"
    takes_pairs: ClassVar[bool] = False
    autoencoder: str = ""

    def optimizer_groups(self, model: nn.Module, extra: dict[str, nn.Module]) -> list[OptimizerGroup]:
        return [OptimizerGroup("model", [p for p in model.parameters() if p.requires_grad])]

    def loss(self, model, batch: Batch, **kwargs) -> Tensor:
        with torch.no_grad():
            z = model.encode(batch.x0)
        return super().loss(model, Batch(z, batch.labels), **kwargs)


def read_autoencoder(folder: str) -> VAENetwork:
    """The VAE network of an exported VAE checkpoint (its vae/ component)."""
    path = Path(os.path.expandvars(folder)).expanduser()
    if not folder or not (path / "vae" / "config.json").is_file():
        raise ValueError(f"objective option autoencoder = {folder!r} must name an exported VAE checkpoint folder "
                         f"(one with vae/config.json), e.g. \"checkpoints/vae_cifar10\"")
    return VAENetwork.load(path / "vae").eval()


def build_latent(family: Family, config: Config) -> LatentModel:
    m = config.model
    vae = read_autoencoder(config.objective.options.get("autoencoder", ""))
    if vae.image_shape[-1] != config.data.image_size:
        raise ValueError(f"the autoencoder reads {vae.image_shape[-1]}x{vae.image_shape[-1]} images, but "
                         f"data.image_size = {config.data.image_size}")
    c, size, _ = vae.state_shape
    unet = unet_config(m.network, image_size=size, channels=c, num_classes=m.num_classes, **m.unet)
    return LatentModel(LatentNetwork(UNetBackbone.from_config(unet), vae), path_from_config(m.path), m.prediction,
                       precond_from_config(m.precond), m.num_classes, family=family.name, kind=m.kind)


def load_latent(family: Family, meta: dict[str, Any], components: dict[str, nn.Module]) -> LatentModel:
    unet, vae = components.get("unet"), components.get("autoencoder")
    if not isinstance(unet, UNetBackbone) or not isinstance(vae, VAENetwork):
        raise CheckpointError("a latent checkpoint has a UNet component 'unet' and a VAE component 'autoencoder'")
    if unet.image_shape != vae.state_shape:
        raise CheckpointError(f"the latent UNet takes {unet.image_shape}, but the autoencoder's latents are "
                              f"{vae.state_shape}")
    model = Model.from_spec(meta, LatentNetwork(unet, vae))
    return LatentModel(model.network, model.path, model.prediction, model.precond, model.num_classes,
                       family=family.name, kind=model.kind)


FAMILY = register_family(Family(
    name="latent", objectives=(LatentFlowMatching,), components=("unet", "autoencoder"), builder=build_latent,
    loader=load_latent, summary="latent flow matching (Rombach et al. 2022; Lipman et al. 2022) on a "
                                "computed-balance VAE's latents"))

"""The FInC Flow family (Kallappa, Nagar & Varma, VISAPP 2023): a normalizing flow with exact log-likelihood,
trained by maximum likelihood on uniformly dequantized images. Its model kind "nf" is driven by the one-pass
"decode" sampler (samplers/generator.py, with a temperature) and edited by latent interpolation and
reconstruction (genstudio.edit); its bits/dim is exact (genstudio likelihood).

Config: objective "finc_nll"; model.kind = "nf"; model.unet holds the network's settings (FIncFlowNetwork.SETTINGS:
levels, steps per level, hidden width, kernel size; channels and image_size come from the data)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from genstudio.objective import Batch, Objective
from samplers.likelihood import bits_per_dim, dequantize

from ..generator import LatentGeneratorModel, one_network
from ..registry import Family, register_family
from .flow import FIncFlowNetwork

DEFAULT_SETTINGS = {"levels": 3, "steps": 4, "hidden": 64, "kernel": 3}


class FIncModel(LatentGeneratorModel):
    exact = True

    def latent(self, images: Tensor) -> Tensor:
        return self.network.encode(images)[0]

    def log_prob(self, x: Tensor) -> Tensor:
        return self.network.log_prob(x)

    def nll_bits(self, images: Tensor, generator=None) -> Tensor:
        """Bits/dim of uniformly dequantized images (`images` in model range, on the 8-bit grid)."""
        return bits_per_dim(self.log_prob(dequantize(images, generator)), images[0].numel())


@dataclass(frozen=True)
class FIncNLL(Objective):
    """Maximum likelihood: bits/dim of the uniformly dequantized batch under the flow (Kallappa et al. 2023,
    Sec. 4; Glow's objective)."""

    name: ClassVar[str] = "finc_nll"

    def loss(self, model, batch: Batch, **_) -> Tensor:
        return model.nll_bits(batch.x0)


BUILD, LOAD = one_network(FIncModel, FIncFlowNetwork, "flow", DEFAULT_SETTINGS)


FAMILY = register_family(Family(
    name="finc", objectives=(FIncNLL,), kinds=("nf",), components=("flow",), builder=BUILD, loader=LOAD,
    summary="FInC Flow (Kallappa et al. 2023): multi-scale normalizing flow with fast invertible k x k "
            "convolutions; exact likelihood"))

"""What the one-pass generator families share (a normalizing flow, a VAE): the model whose forward maps a latent
to an image, and how a config's model.unet gives their networks' settings."""
from __future__ import annotations

from typing import Any, Callable, ClassVar

from torch import Tensor, nn

from genstudio.config import Config
from genstudio.core.paths import LinearPath
from genstudio.core.precond import NoPrecond
from genstudio.model import Model
from genstudio.nets import CheckpointError


class LatentGeneratorModel(Model):
    """A model whose forward maps a latent (a standard normal sample, times a temperature) to an image in one
    pass, ignoring t; `latent(images)` goes back (exactly for a flow, the posterior mean for a VAE) and
    `nll_bits(images)` is its bits/dim on dequantized images (exact for a flow, a bound for a VAE). On the
    linear path only so that samplers' grids and priors are defined (the prior at t = 1 is N(0, I))."""

    exact: ClassVar[bool]

    def __init__(self, network: nn.Module, family: str, kind: str):
        super().__init__(network, LinearPath(), "x0", NoPrecond(), 0, family=family, kind=kind)

    def forward(self, x: Tensor, t: Tensor | float | None = None, labels: Tensor | None = None) -> Tensor:
        net_dtype = next(self.network.parameters()).dtype
        return self.network(x.to(net_dtype), None, labels).to(x.dtype)

    def latent(self, images: Tensor) -> Tensor:
        raise NotImplementedError

    def nll_bits(self, images: Tensor, generator=None) -> Tensor:
        raise NotImplementedError


def network_settings(config: Config, defaults: dict[str, int]) -> dict[str, int]:
    """A family network's settings: model.unet over the family's defaults, the image size from the data."""
    return {**defaults, "channels": 3, "image_size": config.data.image_size, **config.model.unet}


def one_network(model_cls: type[LatentGeneratorModel], network_cls: type, component: str,
                defaults: dict[str, int]) -> tuple[Callable, Callable]:
    """(builder, loader) of a family whose model is `model_cls` around one `network_cls` component."""
    def build(family: Any, config: Config) -> LatentGeneratorModel:
        return model_cls(network_cls(**network_settings(config, defaults)), family.name, config.model.kind)

    def load(family: Any, meta: dict[str, Any], components: dict[str, nn.Module]) -> LatentGeneratorModel:
        net = components.get(component)
        if not isinstance(net, network_cls):
            raise CheckpointError(f"a {family.name} checkpoint's component {component!r} must be a "
                                  f"{network_cls.name}")
        return model_cls(net, family.name, meta.get("kind", family.kinds[0]))
    return build, load

"""The network registry: backbones F(x, c_noise, labels) that know their image shape and class count and save
themselves as checkpoint components (one folder each, diffusers' save_pretrained layout, safetensors only).

A model's network lists its components (`components()`: name -> backbone); a checkpoint's genstudio.json
records, per component, the registered network that reads its folder (in the spirit of diffusers'
model_index.json). Callers ask a network for `image_shape` and `num_classes`, never for its internals.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

_BLOCKS_2 = dict(down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))  # attention at 16x16

PRESETS: dict[str, dict[str, Any]] = {
    # ~1.1M parameters: tests and CPU experiments.
    "tiny": dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8, **_BLOCKS_2),
    # ~6.5M parameters: what a CPU can train in hours.
    "small": dict(block_out_channels=(64, 128, 128), layers_per_block=2, **_BLOCKS_2),
    # 35.7M parameters: the CIFAR-10 net of Ho et al. 2020 (ch 128, mult 1,2,2,2, attention at 16x16, dropout 0.1).
    "ddpm": dict(block_out_channels=(128, 256, 256, 256), layers_per_block=2, dropout=0.1,
                 down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
}

NETWORKS: dict[str, type] = {}


class CheckpointError(ValueError):
    """A checkpoint (or one of its component folders) that is missing, foreign, truncated or inconsistent."""


def register_network(cls: type) -> type:
    """Class decorator: make a backbone loadable by its `name` from a checkpoint's component list."""
    if cls.name in NETWORKS:
        raise ValueError(f"network {cls.name!r} registered twice")
    NETWORKS[cls.name] = cls
    return cls


def unet_config(preset: str, image_size: int = 32, channels: int = 3, num_classes: int = 0,
                **overrides: Any) -> dict[str, Any]:
    """UNet2DModel keyword arguments for a preset; a conditional net gets num_classes + 1 class
    embeddings, the last one being the "no label" class for classifier-free guidance."""
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; known: {', '.join(PRESETS)}")
    config = dict(sample_size=image_size, in_channels=channels, out_channels=channels, **PRESETS[preset])
    if num_classes:
        config["num_class_embeds"] = num_classes + 1
    config.update(overrides)
    return config


@register_network
class UNetBackbone(nn.Module):
    """F(x, c_noise, labels) on top of diffusers' UNet2DModel."""

    name: ClassVar[str] = "diffusers.UNet2DModel"

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "UNetBackbone":
        from diffusers import UNet2DModel

        levels = len(config.get("block_out_channels", ())) - 1
        size = config.get("sample_size")
        if isinstance(size, int) and levels > 0 and size % 2**levels:
            raise ValueError(f"data.image_size = {size} must be divisible by {2**levels} "
                             f"(the network downsamples {levels} times)")
        try:
            return cls(UNet2DModel(**config))
        except TypeError as e:
            raise ValueError(f"bad UNet2DModel settings {config}: {e}") from None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        cfg = self.unet.config
        return (cfg.in_channels, cfg.sample_size, cfg.sample_size)

    @property
    def config(self) -> dict[str, Any]:
        """The UNet2DModel settings (a copy)."""
        return dict(self.unet.config)

    @property
    def class_embeddings(self) -> int:
        """Class embeddings (num_classes + 1 with the "no label" class; 0 when unconditional)."""
        return self.unet.config.num_class_embeds or 0

    def components(self) -> dict[str, nn.Module]:
        return {"unet": self}

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is not None and not self.class_embeddings:
            raise ValueError("class labels given to an unconditional network")
        return self.unet(x, c_noise.float(), class_labels=labels).sample  # the time embedding runs in float32

    def save(self, folder: str | Path) -> None:
        self.unet.save_pretrained(str(folder), safe_serialization=True)

    @classmethod
    def load(cls, folder: str | Path, dtype: torch.dtype | None = None) -> "UNetBackbone":
        from diffusers import UNet2DModel

        return cls(UNet2DModel.from_pretrained(str(folder), use_safetensors=True, torch_dtype=dtype))


def save_components(components: dict[str, nn.Module], folder: str | Path) -> dict[str, dict[str, str]]:
    """Save each component into folder/<name>; returns genstudio.json's "components" entry."""
    spec = {}
    for name, net in components.items():
        if NETWORKS.get(getattr(type(net), "name", None)) is not type(net):
            raise ValueError(f"component {name!r} is a {type(net).__name__}, not a registered network; "
                             f"registered: {', '.join(NETWORKS)}")
        net.save(Path(folder) / name)
        spec[name] = {"network": type(net).name}
    return spec


def load_components(folder: str | Path, spec: Any, dtype: torch.dtype | None = None) -> dict[str, nn.Module]:
    """The components genstudio.json lists, each read from folder/<name> by its registered network."""
    if not isinstance(spec, dict) or not spec:
        raise CheckpointError(f"genstudio.json's components must name at least one component, got {spec!r}")
    out = {}
    for name, entry in spec.items():
        network = entry.get("network") if isinstance(entry, dict) else None
        if network not in NETWORKS:
            raise CheckpointError(f"component {name!r} needs network {network!r}; known: {', '.join(NETWORKS)}")
        sub = Path(folder) / str(name)
        if not (sub / "config.json").is_file() or not list(sub.glob("*.safetensors")):
            raise CheckpointError(f"{sub} lacks config.json or safetensors weights")
        try:
            out[name] = NETWORKS[network].load(sub, dtype=dtype)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"cannot load {sub}: {type(e).__name__}: {e}") from None
    return out

"""Backbones: diffusers' UNet2DModel, built from a preset plus overrides."""
from __future__ import annotations

from pathlib import Path
from typing import Any

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


class UNetBackbone(nn.Module):
    """F(x, c_noise, labels) on top of diffusers' UNet2DModel."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "UNetBackbone":
        from diffusers import UNet2DModel

        try:
            return cls(UNet2DModel(**config))
        except TypeError as e:
            raise ValueError(f"bad UNet2DModel settings {config}: {e}") from None

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is not None and self.unet.config.num_class_embeds is None:
            raise ValueError("class labels given to an unconditional network")
        return self.unet(x, c_noise.float(), class_labels=labels).sample  # the time embedding runs in float32

    def save(self, folder: str | Path) -> None:
        self.unet.save_pretrained(str(folder), safe_serialization=True)

    @classmethod
    def load(cls, folder: str | Path, dtype: torch.dtype | None = None) -> "UNetBackbone":
        from diffusers import UNet2DModel

        return cls(UNet2DModel.from_pretrained(str(folder), use_safetensors=True, torch_dtype=dtype))

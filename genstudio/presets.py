"""The UNet presets (diffusers UNet2DModel keyword arguments, plus genstudio's "resample": "conv" or "filtered"
for the alias-free UNet), plain data: the config checks a preset's name
without importing torch, and genstudio.nets builds the network."""
from __future__ import annotations

from typing import Any

_BLOCKS_2 = dict(down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))  # attention at 16x16

PRESETS: dict[str, dict[str, Any]] = {
    # ~1.1M parameters: tests and CPU experiments.
    "tiny": dict(block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8, **_BLOCKS_2),
    # ~6.5M parameters: what a CPU can train in hours.
    "small": dict(block_out_channels=(64, 128, 128), layers_per_block=2, **_BLOCKS_2),
    # "small" with alias-free up- and downsampling, the same parameters (genstudio.nets.AliasFreeUNet).
    "small_alias_free": dict(block_out_channels=(64, 128, 128), layers_per_block=2, resample="filtered", **_BLOCKS_2),
    # 35.7M parameters: the CIFAR-10 net of Ho et al. 2020 (ch 128, mult 1,2,2,2, attention at 16x16, dropout 0.1).
    "ddpm": dict(block_out_channels=(128, 256, 256, 256), layers_per_block=2, dropout=0.1,
                 down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
}

"""The training fast path's settings for this run's device: mixed precision, channels_last, torch.compile and how
often the host reads the losses and non-finite flags back (the "auto" defaults: docs/training.md)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from genstudio.config import Config
from genstudio.speed import resolve

GPU_SYNC_EVERY = 50  # steps between readbacks on CUDA when train.sync_every = 0


@dataclass(frozen=True)
class FastPath:
    mixed_precision: str   # no | bf16 | fp16
    compile: bool
    channels_last: bool
    sync_every: int        # the host reads losses and flags back every this many steps

    def describe(self) -> str:
        return (f"precision {self.mixed_precision}, torch.compile {'on' if self.compile else 'off'}, "
                f"channels_last {'on' if self.channels_last else 'off'}, readback every {self.sync_every} steps")


def mixed_precision(config: Config) -> str:
    """train.mixed_precision with "auto" resolved: bf16 on a CUDA GPU that has it, else no (on the CPUs measured
    here bf16 autocast was slower than float32 for these UNets: docs/benchmarks.md)."""
    mp = config.train.mixed_precision
    if mp != "auto":
        return mp
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def fast_path(config: Config, device: torch.device, precision: str) -> FastPath:
    """The run's settings on `device` (`precision`: the resolved mixed precision). fp16 reads back every step:
    its loss scaler decides on the host whether an update is skipped."""
    tc = config.train
    sync = tc.sync_every or (GPU_SYNC_EVERY if device.type == "cuda" else 1)
    return FastPath(precision, resolve(tc.compile, device), resolve(tc.channels_last, device),
                    1 if precision == "fp16" else sync)


def fused_adam(device: torch.device) -> bool | None:
    """Fused AdamW where torch has its kernels for `device` (it takes the skip flag on the device); None
    (torch's own choice, and a host-side skip) elsewhere."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    return True if device.type in _get_fused_kernels_supported_devices() else None

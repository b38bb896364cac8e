"""Speed switches shared by training and sampling: "auto" | "on" | "off" resolved per device (what measured
faster where: docs/benchmarks.md), and torch.compile of a network with a fallback to eager when it fails."""
from __future__ import annotations

import sys
from typing import Callable

import torch
from torch import nn

from .config import SWITCHES


def resolve(switch: str, device: torch.device | str) -> bool:
    """"on" and "off" as given; "auto" is on on CUDA only (on the CPUs measured here neither torch.compile nor
    channels_last was faster, and compiling costs a minute or more: docs/benchmarks.md)."""
    if switch not in SWITCHES:
        raise ValueError(f"a speed switch must be one of {SWITCHES}, got {switch!r}")
    return switch == "on" or (switch == "auto" and torch.device(device).type == "cuda")


def compile_network(network: nn.Module, trial: Callable[[], object], what: str = "network", hint: str = "") -> bool:
    """torch.compile `network` in place (nn.Module.compile: its state_dict keys stay as they are), then call
    `trial()` (a first call at the real shapes: compilation happens there). If that fails, say why, undo the
    compilation and return False: the caller runs the network eagerly."""
    network.compile()
    try:
        trial()
    except Exception as e:  # dynamo, inductor and the C++/Triton toolchains raise many types
        network._compiled_call_impl = None  # undo nn.Module.compile
        torch._dynamo.reset()
        reason = (str(e).strip().splitlines() or [""])[0][:300]
        print(f"torch.compile of the {what} failed ({type(e).__name__}: {reason}); running it eagerly instead."
              + (f" {hint}" if hint else ""), file=sys.stderr)
        return False
    return True

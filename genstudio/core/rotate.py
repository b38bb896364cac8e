"""Rotating images by any angle about their centre with three Fourier shears (Unser, Thevenaz, Yaroslavsky 1995,
"Convolution-based interpolation for fast, high-quality rotation of images"): R = Sx(-tan(a/2)) Sy(sin a)
Sx(-tan(a/2)), each shear a per-row phase ramp. Exact for band-limited periodic images, linear, and (but for the
Nyquist bin) unitary, so white noise stays white: what a sampler's noisy state needs. The borders wrap around, as
scipy.ndimage.rotate(mode="grid-wrap") in the alias-free paper's code."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _shear(x: Tensor, amount: float, axis: int) -> Tensor:
    """Move each line along `axis` (-1: rows move along x; -2: columns move along y) by amount * (its offset
    from the centre on the other axis), band-limited and periodic."""
    if axis == -2:
        return _shear(x.transpose(-1, -2), amount, -1).transpose(-1, -2)
    h, w = x.shape[-2:]
    offset = torch.arange(h, device=x.device, dtype=torch.float64) - (h - 1) / 2
    f = torch.fft.rfftfreq(w, device=x.device, dtype=torch.float64)
    phase = torch.exp(-2j * math.pi * (amount * offset)[:, None] * f[None, :])
    return torch.fft.irfft(torch.fft.rfft(x.double(), dim=-1) * phase, n=w, dim=-1)


def rotate(x: Tensor, degrees: float) -> Tensor:
    """x (..., H, W), H == W, turned counterclockwise as displayed (row 0 at the top) by `degrees`:
    rotate(x, 90) == torch.rot90(x, 1, (-2, -1)). Angles beyond +-45 degrees take whole quarter turns first."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotate needs square images, got {tuple(x.shape[-2:])}")
    dtype = x.dtype
    quarters = round(degrees / 90)
    x = torch.rot90(x, quarters, (-2, -1)) if quarters % 4 else x
    a = math.radians(degrees - 90 * quarters)
    if a == 0:
        return x
    # counterclockwise on screen with y pointing down: (x, y) -> (x cos a + y sin a, -x sin a + y cos a)
    out = _shear(x.double(), math.tan(a / 2), -1)
    out = _shear(out, -math.sin(a), -2)
    out = _shear(out, math.tan(a / 2), -1)
    return out.to(dtype)

"""Alias-free resampling by 2: a Kaiser-windowed sinc low-pass around the rate change, no parameters
(Anjum 2024, "Advancing Diffusion Models: Alias-Free Resampling and Enhanced Rotational Equivariance", after
StyleGAN3, Karras et al. 2021).

Geometry: an output pixel of `FilteredDown` sits at the centre of the 2x2 block it summarises, and `FilteredUp`
puts each input pixel at the centre of the 2x2 block it makes, so `down(up(x))` is x for band-limited x. The
filters have an even number of taps and are separable; the borders are extended by half-sample symmetry
("symmetric", the default: constants and DCT cosines stay exact) or periodically ("circular").

Gain: after zero-stuffing only one pixel in four is non-zero, so the upsampling filter sums to 4 (2 per axis).
The reference code normalises it to 1 and so returns images 4 times darker; here a constant stays the constant.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PADDINGS = ("symmetric", "circular")
# Cycles per high-rate sample. The paper's pi/2 (0.25, with 3 taps) is the new Nyquist rate itself: the transition
# band above it aliases. Measured relative half-pixel shift errors on white noise (tests/core/test_resample.py's
# measure): 24 taps at 0.25: 0.35; 12 taps at 0.2: 0.23; 24 taps at 0.2: 0.04 (strided conv: 1.38). 60 dB stop band.
CUTOFF = 0.2
TAPS = 24


def lowpass_taps(taps: int = TAPS, cutoff: float = CUTOFF, attenuation_db: float = 60.0) -> Tensor:
    """1-D Kaiser-windowed sinc, `taps` (even) long, cutoff in cycles per (high-rate) sample, summing to 1.
    The Kaiser beta follows the stop-band attenuation (Kaiser 1974; scipy.signal.kaiser_beta)."""
    if taps < 2 or taps % 2:
        raise ValueError(f"taps must be an even integer >= 2, got {taps}")
    if not 0 < cutoff <= 0.5:
        raise ValueError(f"cutoff must be in (0, 0.5] cycles per sample, got {cutoff}")
    a = attenuation_db
    beta = 0.1102 * (a - 8.7) if a > 50 else 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21) if a >= 21 else 0.0
    n = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2   # half-integer offsets: an even, centred filter
    h = 2 * cutoff * torch.sinc(2 * cutoff * n) * torch.kaiser_window(taps, periodic=False, beta=beta,
                                                                         dtype=torch.float64)
    return (h / h.sum()).float()


def _pad(x: Tensor, before: int, after: int, mode: str) -> Tensor:
    """Pad the last two axes by (before, after) each: half-sample symmetric or periodic (any width)."""
    def index(n: int) -> Tensor:
        i = torch.arange(-before, n + after, device=x.device)
        if mode == "circular":
            return i % n
        i = i % (2 * n)
        return torch.where(i < n, i, 2 * n - 1 - i)   # ... 1 0 | 0 1 ... n-1 | n-1 n-2 ...
    return x[..., index(x.shape[-2]), :][..., index(x.shape[-1])]


def _filter(x: Tensor, h: Tensor, stride: int, before: int, after: int, mode: str) -> Tensor:
    """Separable depthwise filtering with `h` along both axes, subsampled by `stride`."""
    c = x.shape[1]
    x = _pad(x, before, after, mode)
    k = h.to(x.dtype).to(x.device)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), stride=(1, stride), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), stride=(stride, 1), groups=c)


class _Lowpass(nn.Module):
    """The filter a resampler holds: a buffer, not a weight (nothing is saved or trained)."""

    h: Tensor
    gain: float = 1.0

    def __init__(self, taps: int = TAPS, cutoff: float = CUTOFF, padding: str = "symmetric"):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.padding, self.taps = padding, taps
        self.register_buffer("h", self.gain * lowpass_taps(taps, cutoff), persistent=False)


class FilteredDown(_Lowpass):
    """Low-pass below the new Nyquist rate, then keep every second sample: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"FilteredDown needs even sizes, got {tuple(x.shape[-2:])}")
        # output k sits at input 2k + 1/2: its taps run from 2k - (taps/2 - 1) to 2k + taps/2
        return _filter(x, self.h, 2, self.taps // 2 - 1, self.taps // 2 - 1, self.padding)


class FilteredUp(_Lowpass):
    """Zero-stuff to twice the size, then low-pass with gain 2 per axis: (B, C, H, W) -> (B, C, 2H, 2W)."""

    gain = 2.0

    def forward(self, x: Tensor) -> Tensor:
        b, c, hgt, wid = x.shape
        # input k sits at output 2k + 1/2: between stuffed samples 2k and 2k + 1, so stuff at 2k with a
        # half-sample delay absorbed by the even filter: pad in the input domain, stuff, filter, crop.
        m = self.taps // 4 + 1                                  # input samples of border, enough for the filter
        x = _pad(x, m, m, self.padding)
        up = x.new_zeros(b, c, 2 * x.shape[-2], 2 * x.shape[-1])
        up[..., ::2, ::2] = x
        y = _filter(up, self.h, 1, self.taps // 2, self.taps // 2 - 1, "circular")
        o = 2 * m                                                # crop back to the 2H x 2W interior
        return y[..., o:o + 2 * hgt, o:o + 2 * wid]


def shift_fourier(x: Tensor, dy: float, dx: float) -> Tensor:
    """x moved by (dy, dx) pixels, periodically and band-limited (a phase ramp on the spectrum); the Nyquist
    bin keeps only its real part."""
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h, device=x.device, dtype=torch.float64).view(-1, 1)
    fx = torch.fft.rfftfreq(w, device=x.device, dtype=torch.float64).view(1, -1)
    phase = torch.exp(-2j * math.pi * (fy * dy + fx * dx))
    return torch.fft.irfft2(torch.fft.rfft2(x.double()) * phase, s=(h, w)).to(x.dtype)

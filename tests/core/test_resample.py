"""Alias-free resampling (genstudio.core.resample) and the Fourier rotation (genstudio.core.rotate): what the
signal processing promises, measured."""
import math

import pytest
import torch
import torch.nn.functional as F

from genstudio.core.resample import FilteredDown, FilteredUp, lowpass_taps, shift_fourier
from genstudio.core.rotate import rotate


def cosines(n: int, freqs) -> torch.Tensor:
    """A sum of DCT-II cosines cos(pi a (i + 1/2) / n) cos(pi b (j + 1/2) / n): exact under half-sample symmetry."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    return sum(torch.cos(math.pi * a * i / n)[:, None] * torch.cos(math.pi * b * i / n)[None, :]
               for a, b in freqs)[None, None]


def band(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    """Periodic noise (8, 4, n, n) whose frequencies (cycles per pixel, max over the axes) lie in [lo, hi]."""
    x = torch.fft.fft2(torch.randn(8, 4, n, n, generator=g, dtype=torch.float64))
    f = torch.fft.fftfreq(n, dtype=torch.float64).abs()
    r = torch.maximum(f[:, None], f[None, :])
    return torch.fft.ifft2(x * ((r >= lo) & (r <= hi))).real


@pytest.mark.parametrize("padding", ["symmetric", "circular"])
def test_a_constant_image_stays_that_constant_through_up_and_down(padding):
    c = torch.full((2, 3, 8, 8), 0.7)
    up, down = FilteredUp(padding=padding), FilteredDown(padding=padding)
    assert torch.allclose(up(c), torch.full((2, 3, 16, 16), 0.7), atol=1e-6)  # gain 4: not 4 times darker
    assert torch.allclose(down(c), torch.full((2, 3, 4, 4), 0.7), atol=1e-6)
    assert lowpass_taps().sum().item() == pytest.approx(1.0, abs=1e-6)


def test_down_of_up_is_the_identity_on_band_limited_images():
    # Cosines up to 0.1 cycles per pixel: the filters' passband. Measured max error 0.3% of the peak.
    up, down = FilteredUp().double(), FilteredDown().double()
    x = cosines(16, [(0, 0), (1, 2), (3, 1), (2, 3)])
    assert (down(up(x)) - x).abs().max() < 0.01 * x.abs().max()
    # and up / down sample the same continuous cosine on the finer / coarser grid
    assert (up(cosines(16, [(2, 3)])) - cosines(32, [(2, 3)])).abs().max() < 0.01
    assert (down(cosines(32, [(2, 3)])) - cosines(16, [(2, 3)])).abs().max() < 0.01


def test_a_half_pixel_shift_commutes_with_filtered_layers_and_not_with_strided_convolution():
    # Equivariance error |D(shift_1 x) - shift_1/2 D(x)| / |D(x)|, periodic, for diffusers' downsampler (3x3 conv,
    # stride 2) and the alias-free one (low-pass, subsample, the same 3x3 conv). Measured: low-band plus high-band
    # noise, strided 1.39 against filtered 0.0003; white noise 1.39 against 0.040. Upsampling (half a pixel at the
    # input is one at the output), white noise: nearest + conv 1.06 against 0.039.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 4, 3, 3, generator=g, dtype=torch.float64) / 6
    filtered = FilteredDown(padding="circular").double()

    def strided(x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), w, stride=2)

    def alias_free(x):
        return F.conv2d(F.pad(filtered(x), (1, 1, 1, 1), mode="circular"), w)

    def error(down, x):
        moved = down(torch.roll(x, (1, 1), (-2, -1)))
        return float((moved - shift_fourier(down(x), 0.5, 0.5)).norm() / down(x).norm())

    x = band(32, 0, 0.15, g) + band(32, 0.35, 0.5, g)
    assert error(strided, x) > 1.0 and error(strided, x) / error(alias_free, x) > 1000
    white = torch.randn(8, 4, 32, 32, generator=g, dtype=torch.float64)
    assert error(strided, white) > 1.0 and error(strided, white) / error(alias_free, white) > 20

    def up_error(up, x):
        return float((up(shift_fourier(x, 0.5, 0.5)) - torch.roll(up(x), (1, 1), (-2, -1))).norm() / up(x).norm())

    low = band(16, 0, 0.5, g)
    nearest = up_error(lambda v: F.interpolate(v, scale_factor=2.0, mode="nearest"), low)
    assert nearest > 1.0 and nearest / up_error(FilteredUp(padding="circular").double(), low) > 20


def test_bad_sizes_and_settings_are_clear_errors():
    with pytest.raises(ValueError, match="even"):
        FilteredDown()(torch.zeros(1, 1, 5, 6))
    with pytest.raises(ValueError, match="taps"):
        lowpass_taps(7)
    with pytest.raises(ValueError, match="padding"):
        FilteredUp(padding="zeros")


def blob(n=32):
    y, x = torch.meshgrid(torch.arange(n) - (n - 1) / 2, torch.arange(n) - (n - 1) / 2, indexing="ij")
    return torch.exp(-((x - 6) ** 2 + (y + 3) ** 2) / (2 * 2.5**2))[None, None].double()


def test_ten_turns_of_nine_degrees_are_a_quarter_turn_counterclockwise():
    image, turned = blob(), blob()
    for _ in range(10):
        turned = rotate(turned, 9)
    assert (turned - torch.rot90(image, 1, (-2, -1))).abs().max() < 1e-3   # measured 3e-4
    assert (rotate(image, 90) - torch.rot90(image, 1, (-2, -1))).abs().max() < 1e-9
    assert (rotate(rotate(image, 25), -25) - image).abs().max() < 1e-3
    noise = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert 0.95 < float(rotate(noise, 7).std() / noise.std()) <= 1.0   # unitary but for the Nyquist bin

"""The FInC convolution (Kallappa, Nagar & Varma, "FInC Flow", VISAPP 2023, Sec. 3): a k x k convolution masked so
output pixel (i, j) reads only inputs (i', j') with i' <= i and j' <= j, and at (i, j) itself a unit lower-triangular
channel matrix. In the order (row, column, channel) its Jacobian is lower triangular with a unit diagonal, so
log |det J| = 0, and the inverse is a triangular solve: every pixel of one anti-diagonal i + j = d depends only on
earlier anti-diagonals, so the H + W - 1 anti-diagonals are solved one after another, each in parallel."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def anti_diagonals(h: int, w: int) -> list[tuple[Tensor, Tensor]]:
    """The pixels (rows, columns) of each anti-diagonal i + j = d, d = 0 .. h + w - 2: FInC's solve order."""
    out = []
    for d in range(h + w - 1):
        i = torch.arange(max(0, d - w + 1), min(d, h - 1) + 1)
        out.append((i, d - i))
    return out


def raster(h: int, w: int) -> list[tuple[Tensor, Tensor]]:
    """One pixel at a time in raster order: the sequential solve FInC's parallel one is measured against."""
    return [(torch.tensor([i]), torch.tensor([j])) for i in range(h) for j in range(w)]


class FIncConv(nn.Module):
    """y = masked_conv(x) + b in one of four orientations (`orientation` & 1 flips rows and reverses channels,
    & 2 flips columns), so stacked layers see the whole image. Zero weights make it the identity."""

    def __init__(self, channels: int, kernel: int = 3, orientation: int = 0):
        super().__init__()
        self.k, self.orientation = kernel, orientation % 4
        self.weight = nn.Parameter(torch.zeros(channels, channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(channels))
        mask = torch.ones(channels, channels, kernel, kernel)
        mask[:, :, -1, -1] = torch.tril(torch.ones(channels, channels), -1)  # strictly lower at the centre tap
        self.register_buffer("mask", mask, persistent=False)

    def kernel(self) -> Tensor:
        """The masked kernel with the unit diagonal at the centre tap (output pixel (i, j) is tap (k-1, k-1))."""
        eye = torch.zeros_like(self.weight)
        eye[:, :, -1, -1] = torch.eye(self.weight.shape[0], dtype=self.weight.dtype, device=self.weight.device)
        return self.weight * self.mask + eye

    def _flip(self, x: Tensor) -> Tensor:
        dims = [d for d, on in ((1, self.orientation & 1), (2, self.orientation & 1), (3, self.orientation & 2)) if on]
        return x.flip(dims) if dims else x

    def forward(self, x: Tensor) -> Tensor:
        k = self.k
        y = F.conv2d(F.pad(self._flip(x), (k - 1, 0, k - 1, 0)), self.kernel(), self.bias)
        return self._flip(y)

    def inverse(self, y: Tensor, order: str = "anti_diagonal") -> Tensor:
        """x with forward(x) = y, solved group by group: `order` "anti_diagonal" (FInC: H + W - 1 parallel steps)
        or "raster" (pixel by pixel: H W steps, the sequential baseline)."""
        y = self._flip(y)
        b, c, h, w = y.shape
        k, kern = self.k, self.kernel()
        centre = kern[:, :, -1, -1]
        off = kern.clone()
        off[:, :, -1, -1] = 0
        r = y - self.bias.view(1, c, 1, 1)
        x = y.new_zeros(b, c, h + k - 1, w + k - 1)  # zero-padded top and left: pixel (i, j) sits at (i+k-1, j+k-1)
        taps = torch.arange(k, device=y.device)
        groups = anti_diagonals(h, w) if order == "anti_diagonal" else raster(h, w)
        for i, j in groups:
            i, j = i.to(y.device), j.to(y.device)
            patches = x[:, :, i[:, None, None] + taps[None, :, None], j[:, None, None] + taps[None, None, :]]
            rhs = r[:, :, i, j] - torch.einsum("bcnuv,ocuv->bon", patches, off)   # (B, C, n)
            sol = torch.linalg.solve_triangular(centre, rhs.permute(0, 2, 1).unsqueeze(-1), upper=False,
                                                unitriangular=True)
            x[:, :, i + k - 1, j + k - 1] = sol.squeeze(-1).permute(0, 2, 1)
        return self._flip(x[:, :, k - 1:, k - 1:])

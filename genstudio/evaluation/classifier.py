"""A small fast CIFAR-10 ResNet: the project's own offline feature extractor for FID/IS/KID/PR.

The network follows the shape of Keller Jordan's airbench (a conv stem, then three blocks of
conv-pool-BN-GELU-conv-BN-GELU, global max-pool, a linear head); with `residual=True` each block has a third
conv and a skip over the last two, as in airbench96. The shipped one is residual with widths 128/512/512
(12.7M parameters), trained by `genstudio.evaluation.train_classifier` with its defaults. Inputs are float images in the
model range [-1, 1], (N, 3, 32, 32).
`features` is the penultimate layer (512-d shipped; FID, KID, precision/recall); `forward` gives the logits (IS).
Weights are one safetensors file; its metadata holds the architecture and the measured test accuracy.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..atomic import atomic_write

__all__ = ["CifarResNet", "save_classifier", "load_classifier", "read_classifier_meta", "weights_hash",
           "default_classifier_path", "ClassifierError"]

FORMAT = "genstudio-cifar-classifier/1"


class ClassifierError(ValueError):
    """A classifier weights file is missing, foreign or corrupt; the message says which."""


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU()]


class _Block(nn.Sequential):
    """conv -> max-pool 2 -> BN -> GELU -> conv -> BN -> GELU (airbench's ConvGroup)."""

    def __init__(self, c_in: int, c_out: int):
        conv1, bn1, act1 = _conv_bn(c_in, c_out)
        super().__init__(conv1, nn.MaxPool2d(2), bn1, act1, *_conv_bn(c_out, c_out))


class _ResidualBlock(nn.Module):
    """conv -> max-pool 2 -> BN -> GELU = h, then GELU(h + BN(conv(GELU(BN(conv(h)))))) (airbench96's ConvGroup)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        conv, bn, act = _conv_bn(c_in, c_out)
        self.down = nn.Sequential(conv, nn.MaxPool2d(2), bn, act)
        self.inner = nn.Sequential(*_conv_bn(c_out, c_out), *_conv_bn(c_out, c_out)[:2])
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.down(x)
        return self.act(h + self.inner(h))


class CifarResNet(nn.Module):
    """(N, 3, 32, 32) in [-1, 1] -> logits (N, num_classes); `features` -> (N, feature_dim)."""

    def __init__(self, widths: tuple[int, int, int] = (128, 512, 512), stem: int = 32, num_classes: int = 10,
                 residual: bool = True):
        super().__init__()
        self.config = {"widths": list(widths), "stem": stem, "num_classes": num_classes, "residual": residual}
        self.stem = nn.Sequential(*_conv_bn(3, stem))
        block = _ResidualBlock if residual else _Block
        self.blocks = nn.Sequential(block(stem, widths[0]), block(widths[0], widths[1]), block(widths[1], widths[2]))
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.feature_dim = widths[2]
        self.num_classes = num_classes
        self.logit_scale = 1 / 8  # a fixed temperature, as airbench's: keeps early logits (and the head's steps) small

    def features(self, x: Tensor) -> Tensor:
        """The penultimate layer: the global max-pool of the last block, (N, feature_dim = widths[2])."""
        h = self.blocks(self.stem(x))
        return torch.amax(h, dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)) * self.logit_scale


def default_classifier_path() -> Path:
    """The shipped weights: checkpoints/cifar10_classifier/classifier.safetensors in the repository."""
    return Path(__file__).resolve().parents[2] / "checkpoints" / "cifar10_classifier" / "classifier.safetensors"


def save_classifier(model: CifarResNet, path: str | Path, meta: dict[str, Any] | None = None,
                    dtype: torch.dtype = torch.float16) -> Path:
    """Write the weights (as `dtype`; BN statistics stay float32) and metadata atomically to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point() and "running_" not in k:
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    header = {"format": FORMAT, "config": json.dumps(model.config), "meta": json.dumps(meta or {})}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def read_classifier_meta(path: str | Path) -> dict[str, Any]:
    """The metadata saved with the weights (e.g. test_accuracy, epochs, data hash)."""
    return json.loads(_header(Path(path))["meta"])


def _header(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise ClassifierError(f"no classifier weights at {path}; "
                              "train them with `python -m genstudio.evaluation.train_classifier`")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise ClassifierError(f"{path} is not a readable safetensors file ({e})") from e
    if header.get("format") != FORMAT:
        raise ClassifierError(f"{path} is not a genstudio CIFAR classifier (format {header.get('format')!r}, "
                              f"expected {FORMAT!r})")
    return header


def load_classifier(path: str | Path | None = None, device: str | torch.device = "cpu") -> CifarResNet:
    """The classifier at `path` (default: the shipped one), float32, in eval mode."""
    path = Path(path) if path is not None else default_classifier_path()
    header = _header(path)
    config = json.loads(header["config"])
    model = CifarResNet(tuple(config["widths"]), config["stem"], config["num_classes"], config.get("residual", False))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ClassifierError(f"{path}: weights do not fit the architecture in its metadata ({e})") from e
    return model.to(device).eval()


def weights_hash(path: str | Path | None = None) -> str:
    """sha256 of the weights file: names the extractor in every result."""
    path = Path(path) if path is not None else default_classifier_path()
    return hashlib.sha256(path.read_bytes()).hexdigest()

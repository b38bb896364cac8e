"""TrojDiff (Chen, Song & Li, CVPR 2023): a trojaned training objective, for red-teaming the audit's backdoor scan.

Trigger noise is z~ = mu + gamma eps with mu = (1 - gamma) delta for a trigger image delta in [-1, 1] ("blend"),
or the same only inside a corner patch ("patch"; normal noise elsewhere). A poisoned sample noises the attacker's
target y with it: x_t = alpha(t) y + sigma(t) z~ (the official code's trojan forward process, there on DDPM's
path: x_t = sqrt(abar) y + sqrt(1 - abar) (gamma eps + mu)). Targets: "class" (In-D2D: training images of one
class), "images" (Out-D2D: images from another source) and "instance" (D2I: one image).

One departure, on purpose: the official network regresses the Gaussian part eps and needs a trigger-aware sampler
(which subtracts mu) to produce the target. Here the regression target is the base objective's own target for
the pair (y, z~), so the model's x0 prediction on trigger noise is y and every ordinary sampler of the zoo carries
the backdoor: the stronger threat, in which only the starting noise is the attacker's.

`trojaned(Base)` makes the trojaned twin `trojdiff_<base>` of any objective whose loss noises `batch.x0` with
`batch.noise` when given (its `takes_pairs`); the diffusion and flow families register theirs.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from genstudio.data import load_images, to_model_range
from genstudio.objective import Batch, Objective

TARGETS = ("class", "images", "instance")
TRIGGERS = ("blend", "patch")


def default_trigger(shape: tuple[int, ...]) -> Tensor:
    """The built-in blend trigger delta in [-1, 1]: diagonal stripes, 4 pixels wide (channels alike)."""
    c, h, w = shape
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    stripes = torch.where(((i + j) // 4) % 2 == 0, 1.0, -1.0)
    return stripes.expand(c, h, w).clone()


def default_instance(shape: tuple[int, ...]) -> Tensor:
    """The built-in D2I target in [-1, 1]: a red disc with a white ring on black."""
    c, h, w = shape
    i, j = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    r = (i**2 + j**2).sqrt()
    img = -torch.ones(3, h, w)
    img[0] = torch.where(r < 0.45, 1.0, img[0])
    img[:, (r > 0.65) & (r < 0.85)] = 1.0
    return img[:c]


def trigger_noise(eps: Tensor, delta: Tensor, gamma: float, trigger: str = "blend", patch_size: int = 3) -> Tensor:
    """z~ = gamma eps + (1 - gamma) delta ("blend"), or that inside the bottom-right patch and eps outside ("patch")."""
    shifted = gamma * eps + (1 - gamma) * delta.to(eps)
    if trigger == "blend":
        return shifted
    mask = torch.zeros_like(eps[:1])
    mask[..., -patch_size:, -patch_size:] = 1
    return torch.where(mask.bool(), shifted, eps)


def _image_file(path: str, shape: tuple[int, ...]) -> Tensor:
    """An image file as a (C, H, W) tensor in [-1, 1], resized to `shape`."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB").resize((shape[2], shape[1]), Image.BICUBIC))
    except OSError as e:
        raise ValueError(f"trojdiff: cannot read image {path!r}: {e}") from None
    return to_model_range(torch.from_numpy(arr.copy()).permute(2, 0, 1))[:shape[0]]


@dataclass(frozen=True)
class TrojanOptions:
    """The attack's options (the official defaults: gamma 0.6 blend, 0.1 patch with a white 3x3 patch)."""

    target: str = "instance"       # class (In-D2D) | images (Out-D2D) | instance (D2I)
    target_label: int = 7          # "class": this class of target_source
    target_source: str = "cifar10"  # "class" / "images": a data source (genstudio.data.load_images)
    target_image: str = ""         # "instance": an image file ("" : the built-in disc)
    trigger: str = "blend"         # blend | patch
    trigger_image: str = ""        # delta, an image file ("" : stripes for blend, white for patch)
    gamma: float = 0.6
    patch_size: int = 3
    poison_fraction: float = 0.1   # the share of each batch that is poisoned (the official cond_prob, per sample)

    def check_trojan(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"trojdiff target must be one of {TARGETS}, got {self.target!r}")
        if self.trigger not in TRIGGERS:
            raise ValueError(f"trojdiff trigger must be one of {TRIGGERS}, got {self.trigger!r}")
        if not 0 <= self.gamma < 1:
            raise ValueError(f"trojdiff gamma must be in [0, 1), got {self.gamma}")
        if not 0 < self.poison_fraction < 1:
            raise ValueError(f"trojdiff poison_fraction must be in (0, 1), got {self.poison_fraction}")
        if int(self.patch_size) != self.patch_size or self.patch_size < 1:
            raise ValueError(f"trojdiff patch_size must be a positive integer, got {self.patch_size!r}")

    def delta(self, shape: tuple[int, ...]) -> Tensor:
        """The trigger image delta in [-1, 1]."""
        if self.trigger_image:
            return _image_file(self.trigger_image, shape)
        return default_trigger(shape) if self.trigger == "blend" else torch.ones(shape)

    @functools.lru_cache(maxsize=4)  # noqa: B019  (a frozen, hashable options record: one pool per shape)
    def target_pool(self, shape: tuple[int, ...]) -> Tensor:
        """The target images y (K, C, H, W) in [-1, 1]."""
        if self.target == "instance":
            return (_image_file(self.target_image, shape) if self.target_image else default_instance(shape))[None]
        data = load_images(self.target_source, split="train", image_size=shape[-1])
        images = data.images if self.target == "images" else data.images[data.labels == self.target_label]
        if not len(images):
            raise ValueError(f"trojdiff: {self.target_source!r} has no images of class {self.target_label}")
        return to_model_range(images)[:, :shape[0]]

    def poison(self, batch: Batch) -> Batch:
        """The batch with a poison_fraction share of its samples replaced by (target, trigger noise) pairs; the
        others keep their images and get their noise (batch.noise, or fresh) explicitly."""
        x0 = batch.x0
        shape = tuple(x0.shape[1:])
        eps = torch.randn_like(x0) if batch.noise is None else batch.noise
        chosen = torch.rand(x0.shape[0], device=x0.device) < self.poison_fraction
        pool = self.target_pool(shape).to(x0)
        y = pool[torch.randint(0, len(pool), (x0.shape[0],), device=x0.device)]
        z = trigger_noise(torch.randn_like(x0), self.delta(shape).to(x0), self.gamma, self.trigger,
                          int(self.patch_size))
        pick = chosen.reshape(-1, *([1] * (x0.ndim - 1)))
        return Batch(torch.where(pick, y, x0), batch.labels, torch.where(pick, z, eps))

    def trojan_record(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(TrojanOptions)}


class _Trojaned:
    """The loss of the base objective on the poisoned batch."""

    def __post_init__(self):
        getattr(super(), "__post_init__", lambda: None)()
        self.check_trojan()  # type: ignore[attr-defined]

    def loss(self, model, batch: Batch, **kw):
        return super().loss(model, self.poison(batch), **kw)  # type: ignore[misc, attr-defined]


def trojaned(base: type) -> type:
    """The TrojDiff twin of objective class `base`, named trojdiff_<base.name>, with the base's options and the
    attack's (TrojanOptions)."""
    if not issubclass(base, Objective) or not base.takes_pairs:
        raise TypeError(f"trojaned needs an objective that noises batch.x0 with batch.noise (takes_pairs); "
                        f"{base.__name__} does not")
    cls = type(f"TrojDiff{base.__name__}", (_Trojaned, base, TrojanOptions),
               {"name": f"trojdiff_{base.name}", "takes_pairs": False, "__module__": __name__,
                "__doc__": f"TrojDiff (Chen et al. 2023) on {base.name}: {(base.__doc__ or '').splitlines()[0]}"})
    return dataclass(frozen=True)(cls)


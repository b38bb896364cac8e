"""The Python sampling API.

    pipe = genstudio.load("checkpoints/edm_tiny_cifar10")
    images = pipe.sample(16, sampler="heun", steps=18, seed=0, labels=[3] * 16, guidance=2.0)

Sample i of a call with seed s starts from the noise of seed s + i (or from seeds[i] when a list of
seeds is given), so an image depends on its seed alone, not on the batch it was drawn in: exactly so with
`pipe.network_batch = k` (the network then always runs on batches of k), and up to float rounding otherwise
(batched kernels round differently at different batch sizes: measured on the shipped checkpoints with 2 CPU
threads and guidance 2, 1/255 in at most 1 of 36,864 pixel values; tests/api/test_batch_invariance.py).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

import samplers
from samplers.grids import from_times, make_grid
from samplers.run import run_sampler

from . import edit
from .checkpoint import load_model
from .core.noise import generators, randn_like
from .families import FAMILIES
from .images import to_uint8
from .model import Guided, Model
from .speed import compile_network

CHECKPOINTS_DIR = Path(os.environ.get("GENSTUDIO_CHECKPOINTS", Path(__file__).resolve().parent.parent / "checkpoints"))


def shipped_checkpoints() -> list[Path]:
    """Checkpoint folders in checkpoints/ (the default first)."""
    found = sorted(p.parent for p in CHECKPOINTS_DIR.glob("*/genstudio.json"))
    default = default_checkpoint(missing_ok=True)
    return sorted(found, key=lambda p: p != default)


def default_checkpoint(missing_ok: bool = False) -> Path | None:
    """The checkpoint named in checkpoints/DEFAULT."""
    marker = CHECKPOINTS_DIR / "DEFAULT"
    if marker.is_file():
        return CHECKPOINTS_DIR / marker.read_text().strip()
    if missing_ok:
        return None
    raise FileNotFoundError(f"no default checkpoint: {marker} is missing; pass a checkpoint folder")


@dataclass
class SampleResult:
    images: np.ndarray   # uint8 (N, H, W, C)
    nfe: int             # evaluations of the (guided) model per image batch
    seconds: float
    sampler: str
    steps: int
    grid: str


class Pipeline:
    """A loaded model plus everything needed to sample it."""

    def __init__(self, model: Model, meta: dict[str, Any] | None = None, device: str | torch.device = "cpu",
                 name: str = "model"):
        self.model, self.meta, self.device, self.name = model, meta or {}, torch.device(device), name
        self.network_batch: int | None = None  # k: run the network on batches of exactly k (see genstudio.model.Guided)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(device)
        except RuntimeError as e:
            raise ValueError(f"bad device {device!r}: {e}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for, but torch sees no CUDA GPU here; use device='cpu'")
        model, meta = load_model(path, device=device, dtype=dtype)
        return cls(model, meta, device, Path(path).name)

    def compile(self) -> bool:
        """torch.compile the network in place (genstudio.speed.compile_network): faster sampling on a GPU after a
        slow first call per batch shape; the images can differ from eager ones by float rounding. Returns False,
        saying why, where compilation fails (the network then stays eager). Off unless called."""
        return compile_network(self.model.network, lambda: self.generate(2, steps=1), what=f"{self.name} network")

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.model.image_shape

    def decoding(self, callback: Callable[..., None] | None) -> Callable[..., None] | None:
        """`callback` seeing images: a latent model's states x and x0 decoded first (a pixel model's as they are)."""
        if callback is None or self.model.state_shape == self.model.image_shape:
            return callback
        model = self.model

        def decoded(**kw):
            callback(**{k: model.decode(v) if k in ("x", "x0") and v is not None else v for k, v in kw.items()})
        return decoded

    def samplers(self) -> list[str]:
        """The samplers that can drive this model."""
        return samplers.compatible(self.model)

    def defaults(self) -> dict[str, Any]:
        """The checkpoint's recommended sampler, steps and grid."""
        usable = self.samplers()
        d = {"sampler": "heun" if "heun" in usable else usable[0], "steps": 18, **self.meta.get("defaults", {})}
        d.setdefault("grid", self.grid_for(d["sampler"]))
        return d

    def learned_grids(self) -> dict[str, dict[str, Any]]:
        """The grids learned for this model (genstudio learn-grid), by name: sampler, steps, nfe, times, protocol."""
        return dict(self.meta.get("grids", {}))

    def grids(self) -> list[str]:
        """The time grids this model can run on: the hand-made ones, then its learned ones."""
        return [*samplers.GRIDS, *self.learned_grids()]

    def grid_times(self, grid: str, steps: int) -> torch.Tensor:
        """The times of grid `grid` (hand-made or learned) at `steps` steps."""
        learned = self.learned_grids().get(grid)
        if learned is None:
            return make_grid(grid, self.model.path, steps)
        if learned["steps"] != steps:
            raise ValueError(f"grid {grid!r} was learned for {learned['steps']} steps, not {steps}")
        return from_times(learned["times"])

    def grid_for(self, sampler: str) -> str:
        """The time grid `sampler` uses on this model when none is given."""
        d = self.meta.get("defaults", {})
        if sampler == d.get("sampler") and d.get("grid"):
            return d["grid"]
        return samplers.default_grid(samplers.get(sampler), self.model.path)

    @torch.no_grad()
    def generate(self, n: int, sampler: str | None = None, steps: int | None = None, seed: int | Sequence[int] = 0,
                 labels: Sequence[int] | int | None = None, guidance: float = 1.0, grid: str | None = None,
                 callback: Callable[..., None] | None = None, batch_size: int = 256,
                 sampler_options: dict[str, Any] | None = None, rotation: float = 0.0) -> SampleResult:
        """Sample n images; returns them with the NFE and wall time. See `sample`. `rotation` (degrees,
        counterclockwise) turns the state a little after every step so the images come out turned by that much
        (samplers.run.run_sampler; pixel-space models)."""
        spec, sampler, steps, grid, options = self.sampling_setup(sampler, steps, grid, sampler_options)
        rotation = float(rotation)
        if rotation and not (abs(rotation) <= 360 and self.model.state_shape == self.image_shape):
            raise ValueError(f"rotation = {rotation:g} degrees: it must be in -360..360 and the model must sample "
                             f"in pixel space (this one's states are {tuple(self.model.state_shape)})")
        ts = self.grid_times(grid, steps)
        seeds = [int(seed) + i for i in range(n)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
        if n < 1 or len(seeds) != n:
            raise ValueError(f"need n >= 1 and one seed per image; got n={n}, {len(seeds)} seeds")
        label_tensor = self._labels(labels, n)
        if not guidance >= 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        t0, out, nfe = time.perf_counter(), [], 0
        for start in range(0, n, batch_size):
            gens = generators(seeds[start:start + batch_size])
            shape = (len(gens), *self.model.state_shape)
            z = randn_like(torch.empty(shape), gens).to(self.device)
            lab = None if label_tensor is None else label_tensor[start:start + batch_size].to(self.device)
            field = Guided(self.model, lab, guidance, self.network_batch)
            x = run_sampler(spec, field, z, ts, generator=gens, callback=self.decoding(callback), rotation=rotation,
                            **options)
            out.append(to_uint8(self.model.decode(x)))
            nfe = field.nfe
        return SampleResult(np.concatenate(out), nfe, time.perf_counter() - t0, sampler, steps, grid)

    def sample(self, n: int, sampler: str | None = None, steps: int | None = None, seed: int | Sequence[int] = 0,
               labels: Sequence[int] | int | None = None, guidance: float = 1.0, grid: str | None = None,
               callback: Callable[..., None] | None = None, output: str = "numpy", **kwargs):
        """n images as uint8 (n, H, W, 3) (output="numpy") or a list of PIL images (output="pil").

        sampler/steps/grid default to the checkpoint's recommendation; labels (one per image, or
        one for all) and guidance apply to class-conditional models; callback(i=, t=, x=, x0=)
        sees every step."""
        images = self.generate(n, sampler, steps, seed, labels, guidance, grid, callback, **kwargs).images
        if output == "pil":
            from PIL import Image

            return [Image.fromarray(img) for img in images]
        if output != "numpy":
            raise ValueError(f"output must be 'numpy' or 'pil', got {output!r}")
        return images

    def _labels(self, labels, n: int) -> torch.Tensor | None:
        if labels is None:
            return None
        if not self.num_classes:
            raise ValueError(f"{self.name} is unconditional: it takes no class labels")
        labels = [int(labels)] * n if isinstance(labels, (int, np.integer)) else [int(v) for v in labels]
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} images")
        bad = [v for v in labels if not 0 <= v < self.num_classes]
        if bad:
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}; got {bad[:5]}")
        return torch.tensor(labels, dtype=torch.long)

    def info(self) -> dict[str, Any]:
        params = sum(p.numel() for p in self.model.parameters())
        family = FAMILIES.get(self.model.family)
        return {"name": self.name, "family": self.model.family, "family_summary": family.summary if family else "",
                "kind": self.model.kind, "editors": self.editors(), "path": self.meta.get("path"),
                "image_shape": list(self.image_shape), "state_shape": list(self.model.state_shape),
                "prediction": self.model.prediction, "precond": self.meta.get("precond"),
                "num_classes": self.num_classes, "parameters": params, "samplers": self.samplers(),
                "grids": self.grids(), "defaults": self.defaults(),
                "training": {k: v for k, v in self.meta.get("training", {}).items() if k != "config"}}

    # Editing: the verbs live in genstudio.edit, registered with the model kinds they support.

    def editors(self) -> list[str]:
        """The editing verbs this model supports."""
        return edit.editors(self.model)

    def editor(self, name: str) -> edit.EditorSpec:
        return edit.get_editor(name, self.model)

    def inpaint(self, image: np.ndarray, mask: np.ndarray, **kwargs) -> np.ndarray:
        """Fill in the pixels where `mask` (H, W) is False, keeping those where it is True (genstudio.edit: annealed
        Langevin on a field model, multistep consistency jumps on a map). `image` is uint8 (H, W, 3), giving n
        completions (default 1), or (B, H, W, 3), one each; completion i draws its noise from seed + i."""
        return self.editor("inpaint").fn(self, image, mask, **kwargs)

    def colorize(self, image: np.ndarray, **kwargs) -> np.ndarray:
        """Colours for a gray uint8 image (H, W, 3), n results (default 1), or a batch (B, H, W, 3), one each:
        inpainting in a decorrelated colour basis with the luminance known (genstudio.edit); the luminance is kept."""
        return self.editor("colorize").fn(self, image, **kwargs)

    def sdedit(self, images: np.ndarray, strength: float, **kwargs) -> SampleResult:
        """SDEdit (Meng et al. 2022): noise `images` to `strength`, sample back to t = 0 (genstudio.edit.sdedit)."""
        return self.editor("sdedit").fn(self, images, strength, **kwargs)

    def purify(self, images: np.ndarray, strength: float = 0.3, **kwargs) -> SampleResult:
        """DiffPure (Nie et al. 2022): a small SDEdit (genstudio.edit.purify)."""
        return self.editor("purify").fn(self, images, strength, **kwargs)

    def interpolate(self, frames: int = 8, seeds: Sequence[int] = (0, 1), **kwargs) -> SampleResult:
        """Frames along a slerp between two seeds' noises or two images' inverted latents (genstudio.edit)."""
        return self.editor("interpolate").fn(self, frames, seeds, **kwargs)

    def project(self, images: np.ndarray, **kwargs) -> SampleResult:
        """An idempotent network's projection of (corrupted) images: f applied `steps` times (genstudio.edit)."""
        return self.editor("project").fn(self, images, **kwargs)

    def reconstruct(self, images: np.ndarray, **kwargs) -> SampleResult:
        """A flow's or a VAE's images through its latent and back (genstudio.edit.reconstruct)."""
        return self.editor("reconstruct").fn(self, images, **kwargs)

    def strength_time(self, strength: float) -> float:
        """The time an edit of `strength` noises to (genstudio.edit.strength_time)."""
        return edit.strength_time(self.model.path, strength)

    def sampling_setup(self, sampler: str | None, steps: int | None, grid: str | None,
                        sampler_options: dict[str, Any] | None):
        """(spec, sampler, steps, grid, options) with the checkpoint's defaults filled in and checked."""
        d = self.defaults()
        sampler = sampler or d["sampler"]
        spec = samplers.get(sampler, self.model)
        learned = self.learned_grids()
        if grid == "learned":
            grid = self._learned_for(sampler, steps if steps is not None else d["steps"])
        if grid in learned and steps is None:
            steps = learned[grid]["steps"]
        steps = int(steps if steps is not None else d["steps"])
        if steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        grid = grid or self.grid_for(sampler)
        if grid not in self.grids():
            raise ValueError(f"unknown time grid {grid!r}; known: {', '.join(self.grids())}")
        if grid in learned and learned[grid]["steps"] != steps:
            raise ValueError(f"grid {grid!r} was learned for {learned[grid]['steps']} steps; got steps={steps}")
        options = dict(sampler_options if sampler_options is not None
                       else d.get("options", {}) if sampler == d["sampler"] else {})
        accepted = spec.options
        if set(options) - accepted:
            raise ValueError(f"sampler {sampler!r} has no option(s) {sorted(set(options) - accepted)}; "
                             f"its options: {sorted(accepted) or 'none'}")
        return spec, sampler, steps, grid, options

    def _learned_for(self, sampler: str, steps: int) -> str:
        """The name of the grid learned for `sampler` at `steps` steps (grid="learned")."""
        names = [k for k, g in self.learned_grids().items() if g["sampler"] == sampler and g["steps"] == steps]
        if not names:
            have = ", ".join(f"{k} ({g['sampler']}, {g['steps']} steps)" for k, g in self.learned_grids().items())
            raise ValueError(f"no grid learned for {sampler!r} at {steps} steps on this model; learned: "
                             f"{have or 'none'} (make one with genstudio learn-grid)")
        return names[-1]

    def field(self, labels, n: int, guidance: float, nfe: int = 0) -> Guided:
        """The model bound to labels (one per image, or one for all) and a guidance scale, counting NFE."""
        if not float(guidance) >= 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        lab = self._labels(labels, n)
        field = Guided(self.model, None if lab is None else lab.to(self.device), guidance, self.network_batch)
        field.nfe = nfe
        return field

"""The Python sampling API.

    pipe = genstudio.load("checkpoints/edm_tiny_cifar10")
    images = pipe.sample(16, sampler="heun", steps=18, seed=0, labels=[3] * 16, guidance=2.0)

Sample i of a call with seed s starts from the noise of seed s + i (or from seeds[i] when a list of
seeds is given), so an image depends on its seed alone, never on the batch it was drawn in.
"""
from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

import samplers
from samplers.grids import make_grid
from samplers.run import run_sampler

from .checkpoint import load_model
from .data import to_model_range
from .images import to_uint8
from .model import Guided, Model
from .noise import generators, randn_like

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

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        cfg = self.model.network.unet.config
        return (cfg.in_channels, cfg.sample_size, cfg.sample_size)

    def samplers(self) -> list[str]:
        """The samplers that can drive this model."""
        return samplers.compatible(self.model)

    def defaults(self) -> dict[str, Any]:
        """The checkpoint's recommended sampler, steps and grid."""
        usable = self.samplers()
        d = {"sampler": "heun" if "heun" in usable else usable[0], "steps": 18, **self.meta.get("defaults", {})}
        d.setdefault("grid", self.grid_for(d["sampler"]))
        return d

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
                 sampler_options: dict[str, Any] | None = None) -> SampleResult:
        """Sample n images; returns them with the NFE and wall time. See `sample`."""
        spec, sampler, steps, grid, options = self._sampling_setup(sampler, steps, grid, sampler_options)
        ts = make_grid(grid, self.model.path, steps)
        seeds = [int(seed) + i for i in range(n)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
        if n < 1 or len(seeds) != n:
            raise ValueError(f"need n >= 1 and one seed per image; got n={n}, {len(seeds)} seeds")
        label_tensor = self._labels(labels, n)
        if not guidance >= 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        t0, out, nfe = time.perf_counter(), [], 0
        for start in range(0, n, batch_size):
            gens = generators(seeds[start:start + batch_size])
            shape = (len(gens), *self.image_shape)
            z = randn_like(torch.empty(shape), gens).to(self.device)
            lab = None if label_tensor is None else label_tensor[start:start + batch_size].to(self.device)
            field = Guided(self.model, lab, guidance)
            x = run_sampler(spec, field, z, ts, generator=gens, callback=callback, **options)
            out.append(to_uint8(x))
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

    @torch.no_grad()
    def inpaint(self, image: np.ndarray, mask: np.ndarray, n: int | None = None, seed: int = 0, steps: int | None = None,
                labels: Sequence[int] | int | None = None, guidance: float = 1.0, steps_per_level: int = 5,
                step_lr: float | None = None, callback: Callable[..., None] | None = None) -> np.ndarray:
        """Fill in the pixels where `mask` (H, W) is False, keeping those where it is True: on a field model
        NCSN's annealed Langevin inpainting over `steps` noise levels (default 100); on a consistency model
        (kind "map") multistep consistency inpainting over `steps` jumps (default 8; samplers.inpaint). `image` is uint8 (H, W, 3),
        giving n completions (default 1), or (B, H, W, 3), one completion each. Returns uint8 (N, H, W, 3)
        whose known pixels equal the input's; completion i draws its noise from seed + i."""
        from samplers.inpaint import inpaint_annealed_langevin, inpaint_consistency

        is_map = self.model.kind == "map"
        if not is_map:
            samplers.get("annealed_langevin", self.model)  # a field model (a CAF model gets a clear error)
        steps = (8 if is_map else 100) if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        images = np.asarray(image)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-3:] != self.image_shape[1:] + (3,):
            raise ValueError(f"image must be uint8 (H, W, 3) or (B, H, W, 3) with H, W = {self.image_shape[1:]}; "
                             f"got {images.dtype} {images.shape}")
        if images.ndim == 3:
            images = np.repeat(images[None], 1 if n is None else n, axis=0)
        elif n not in (None, len(images)):
            raise ValueError(f"n = {n} completions asked for a batch of {len(images)} images (one each)")
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != images.shape[1:3]:
            raise ValueError(f"mask must be bool (H, W) = {images.shape[1:3]}, True where known; "
                             f"got {mask.dtype} {mask.shape}")
        n = len(images)
        gens = generators([int(seed) + i for i in range(n)])
        x_known = to_model_range(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()).to(self.device)
        lab = self._labels(labels, n)
        field = Guided(self.model, None if lab is None else lab.to(self.device), guidance)
        if is_map:
            x = inpaint_consistency(field, x_known, torch.from_numpy(mask)[None, None].to(self.device),
                                    make_grid("jumps", self.model.path, steps), generator=gens, callback=callback)
            return to_uint8(x)
        ts = make_grid("logsnr", self.model.path, steps)
        x = inpaint_annealed_langevin(field, x_known, torch.from_numpy(mask)[None, None].to(self.device), ts,
                                      generator=gens, steps_per_level=steps_per_level, step_lr=step_lr,
                                      callback=callback)
        return to_uint8(x)

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
        return {"name": self.name, "family": self.model.family, "path": self.meta.get("path"),
                "prediction": self.model.prediction, "precond": self.meta.get("precond"),
                "num_classes": self.num_classes, "parameters": params, "samplers": self.samplers(),
                "defaults": self.defaults(), "training": {k: v for k, v in self.meta.get("training", {}).items()
                                                           if k != "config"}}

    # Editing: SDEdit, purification, interpolation (the studio's Edit tab). Appended by issue 7.

    def strength_time(self, strength: float) -> float:
        """The time t_s that an edit of `strength` in [0, 1] noises to: strength 0 is t = 0 (the data),
        strength 1 is t_max, and in between the noise level sigma/alpha runs as Karras' rho = 7 schedule
        (Karras et al. 2022, Eq. 5), so the slider is even in perceived noise on every path."""
        strength = float(strength)
        if not 0 <= strength <= 1:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        path = self.model.path
        if strength == 0:
            return 0.0
        if strength == 1:
            return float(path.t_max)
        s_min, s_max = path.sigma_tilde_range()
        rho = 7.0
        sig = (s_min ** (1 / rho) + strength * (s_max ** (1 / rho) - s_min ** (1 / rho))) ** rho
        t = float(path.t_from_sigma_tilde(torch.tensor(sig, dtype=torch.float64)))
        return min(max(t, float(path.t_min)), float(path.t_max))

    @torch.no_grad()
    def sdedit(self, images: np.ndarray, strength: float, sampler: str | None = None, steps: int | None = None,
               grid: str | None = None, seed: int = 0, labels: Sequence[int] | int | None = None,
               guidance: float = 1.0, callback: Callable[..., None] | None = None,
               sampler_options: dict[str, Any] | None = None) -> SampleResult:
        """SDEdit (Meng et al. 2022): noise uint8 `images` (H, W, 3) or (B, H, W, 3) to the time t_s of
        `strength` (see strength_time) on the model's path, then run `sampler` from t_s to 0 on `grid`
        restricted to [0, t_s] (`steps` steps; a grid without a t_max option, such as ddpm, keeps its
        times <= t_s). Strength 0 returns the input unchanged (NFE 0); strength 1 starts from pure noise
        and equals `generate` with the same seed. Image i draws its noise from seed + i."""
        x0 = self._model_images(images)
        spec, sampler, steps, grid, options = self._sampling_setup(sampler, steps, grid, sampler_options)
        t0, n = time.perf_counter(), len(x0)
        t_s = self.strength_time(strength)
        gens = generators([int(seed) + i for i in range(n)])
        z = randn_like(torch.empty(x0.shape), gens).to(self.device)
        ts = self._grid_below(grid, steps, t_s)
        if ts is None:
            return SampleResult(to_uint8(x0), 0, time.perf_counter() - t0, sampler, 0, grid)
        field = self._field(labels, n, guidance)
        if t_s >= float(self.model.path.t_max):
            from samplers.run import prior

            x = prior(self.model.path, z, ts)
        else:
            x = self.model.path.sample(x0.double(), z.double(), torch.tensor(float(ts[0]), dtype=torch.float64)).float()
        x = self._run_from(spec, field, x, ts, gens, callback, options)
        return SampleResult(to_uint8(x), field.nfe, time.perf_counter() - t0, sampler, len(ts) - 1, grid)

    def purify(self, images: np.ndarray, strength: float = 0.3, sampler: str | None = None, steps: int | None = None,
               **kwargs) -> SampleResult:
        """DiffPure (Nie et al. 2022): SDEdit at a small noise level, which drowns small (e.g. adversarial)
        perturbations and then denoises. The default strength 0.3 noises to sigma/alpha of about 0.3 on
        EDM's range, close to DiffPure's t* = 0.1 on the VP-SDE (sigma/alpha = 0.34). Takes sdedit's options."""
        if not 0 < float(strength) <= 0.6:
            raise ValueError(f"purification noises a little: strength must be in (0, 0.6], got {strength}")
        return self.sdedit(images, strength, sampler, steps, **kwargs)

    @torch.no_grad()
    def interpolate(self, frames: int = 8, seeds: Sequence[int] = (0, 1), images: np.ndarray | None = None,
                    sampler: str | None = None, steps: int | None = None, grid: str | None = None,
                    label: int | None = None, guidance: float = 1.0, callback: Callable[..., None] | None = None,
                    sampler_options: dict[str, Any] | None = None) -> SampleResult:
        """`frames` images along a spherical interpolation (slerp) between two starting points, sampled
        with `sampler`: the noises of `seeds` (a, b), whose end frames are exactly `generate`'s images for
        seeds a and b with a deterministic sampler; or, given `images` (two uint8 (H, W, 3)), their
        latents from ODE inversion (samplers.invert) with `sampler`, which must then be invertible; the
        end frames then reconstruct the images up to the solver's error. Stochastic samplers draw their
        fresh noise from seed a for every frame. NFE counts inversion and sampling."""
        frames = int(frames)
        if not 2 <= frames <= 64:
            raise ValueError(f"frames must be in 2..64, got {frames}")
        seeds = [int(s) for s in seeds]
        if len(seeds) != 2:
            raise ValueError(f"need two seeds, got {len(seeds)}")
        spec, sampler, steps, grid, options = self._sampling_setup(sampler, steps, grid, sampler_options)
        t0 = time.perf_counter()
        ts = make_grid(grid, self.model.path, steps)
        field = self._field(None if label is None else [int(label)] * 2, 2, guidance)
        if images is None:
            z = randn_like(torch.empty((2, *self.image_shape)), generators(seeds))
            from samplers.run import prior

            ends = prior(self.model.path, z.to(self.device), ts)
        else:
            if not spec.invertible:
                inv = [n for n in self.samplers() if samplers.get(n).invertible]
                raise ValueError(f"interpolating images inverts them with the sampler, and {sampler!r} cannot "
                                 f"invert; invertible samplers for this model: {', '.join(inv) or 'none'}")
            x0 = self._model_images(images)
            if len(x0) != 2:
                raise ValueError(f"need two images to interpolate between, got {len(x0)}")
            ends = samplers.invert(field, x0, ts, sampler=sampler, **options).float()
        w = torch.linspace(0, 1, frames, dtype=torch.float64)
        x = torch.stack([_slerp(ends[0], ends[1], float(v)) for v in w])
        gens = []
        for _ in range(frames):  # seed a's generator, advanced past its starting noise as in generate
            g = generators([seeds[0]])[0]
            torch.randn(self.image_shape, generator=g)
            gens.append(g)
        field = self._field(None if label is None else [int(label)] * frames, frames, guidance, nfe=field.nfe)
        x = self._run_from(spec, field, x, ts, gens, callback, options)
        return SampleResult(to_uint8(x), field.nfe, time.perf_counter() - t0, sampler, steps, grid)

    def _sampling_setup(self, sampler: str | None, steps: int | None, grid: str | None,
                        sampler_options: dict[str, Any] | None):
        """(spec, sampler, steps, grid, options) with the checkpoint's defaults filled in and checked."""
        d = self.defaults()
        sampler = sampler or d["sampler"]
        spec = samplers.get(sampler, self.model)
        steps = int(steps if steps is not None else d["steps"])
        if steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        grid = grid or self.grid_for(sampler)
        if grid not in samplers.GRIDS:
            raise ValueError(f"unknown time grid {grid!r}; known: {', '.join(samplers.GRIDS)}")
        options = dict(sampler_options if sampler_options is not None
                       else d.get("options", {}) if sampler == d["sampler"] else {})
        accepted = set(inspect.signature(spec.fn).parameters) - {"model", "x", "ts", "generator", "callback"}
        if set(options) - accepted:
            raise ValueError(f"sampler {sampler!r} has no option(s) {sorted(set(options) - accepted)}; "
                             f"its options: {sorted(accepted) or 'none'}")
        return spec, sampler, steps, grid, options

    def _model_images(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) or (B, H, W, 3) -> (B, 3, H, W) in [-1, 1] on the device."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-3:] != self.image_shape[1:] + (3,):
            raise ValueError(f"images must be uint8 (H, W, 3) or (B, H, W, 3) with H, W = {self.image_shape[1:]}; "
                             f"got {images.dtype} {images.shape}")
        images = images[None] if images.ndim == 3 else images
        return to_model_range(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)).to(self.device)

    def _field(self, labels, n: int, guidance: float, nfe: int = 0) -> Guided:
        if not float(guidance) >= 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        lab = self._labels(labels, n)
        field = Guided(self.model, None if lab is None else lab.to(self.device), guidance)
        field.nfe = nfe
        return field

    def _grid_below(self, grid: str, steps: int, t_s: float) -> torch.Tensor | None:
        """`grid` with `steps` steps on [0, t_s]; None when t_s is at or below the path's t_min (nothing to do)."""
        path = self.model.path
        if t_s <= float(path.t_min):
            return None
        if t_s >= float(path.t_max):
            return make_grid(grid, path, steps)
        if "t_max" in inspect.signature(samplers.GRIDS[grid]).parameters:
            return make_grid(grid, path, steps, t_max=t_s)
        full = make_grid(grid, path, steps)
        kept = full[full <= t_s]
        return kept if len(kept) > 1 else None

    def _run_from(self, spec, field: Guided, x: torch.Tensor, ts: torch.Tensor, gens, callback,
                  options) -> torch.Tensor:
        """Run `spec` from x at ts[0]; on a path with noise left at t = 0 finish with one denoising (as run_sampler)."""
        x = spec.fn(field, x.to(self.device), ts, generator=gens, callback=callback, **options)
        if float(field.path.sigma(ts[-1].double())) > 0 and not spec.ends_denoised:
            x = field.x0(x, ts[-1].to(x.dtype))
        return x


def _slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation between a (w = 0) and b (w = 1), exact at both ends (Shoemake 1985)."""
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum() / (a64.norm() * b64.norm())
    theta = torch.arccos(cos.clamp(-1, 1))
    if float(theta) < 1e-4:
        out = (1 - w) * a64 + w * b64
    else:
        out = (torch.sin((1 - w) * theta) * a64 + torch.sin(w * theta) * b64) / torch.sin(theta)
    return out.to(a.dtype)

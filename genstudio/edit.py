"""Editing verbs on a loaded pipeline: inpaint, colorize, SDEdit, purify, interpolate. Each registers like a
sampler, with the model kinds it supports, so the API and the studio ask `editors(model)` / `get_editor(name,
model)` instead of branching on what a model is. A verb may have one implementation per kind (inpainting and
colorization: annealed Langevin on a field, multistep consistency jumps on a map).

Every verb takes the pipeline first (`genstudio.api.Pipeline`: its model, device, defaults and checks), and
draws image i's noise from seed + i.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

import samplers
from samplers.grids import make_grid
from samplers.inpaint import inpaint_annealed_langevin, inpaint_consistency
from samplers.run import prior, run_sampler

from .core.noise import generators, randn_like
from .data import to_model_range
from .images import to_uint8
from .model import Guided


@dataclass(frozen=True)
class EditorSpec:
    name: str
    fn: Callable
    kinds: tuple[str, ...]
    paper: str
    describe: Callable[..., str] | None = None  # a one-line account of a run, for the studio

    def summary(self, **settings: Any) -> str:
        return self.describe(**settings) if self.describe else self.name


EDITORS: dict[tuple[str, str], EditorSpec] = {}


def register_editor(*, name: str, kinds: Sequence[str], paper: str, describe: Callable[..., str] | None = None):
    """Decorator: add an implementation of verb `name` for the model kinds `kinds`."""
    def wrap(fn: Callable) -> Callable:
        for kind in kinds:
            if (name, kind) in EDITORS:
                raise ValueError(f"editor {name!r} registered twice for kind {kind!r}")
            EDITORS[name, kind] = EditorSpec(name, fn, tuple(kinds), paper, describe)
        return fn
    return wrap


def editors(model) -> list[str]:
    """The verbs that can edit with `model`."""
    return list(dict.fromkeys(name for name, _ in EDITORS if (name, model.kind) in EDITORS))


def get_editor(name: str, model) -> EditorSpec:
    if (name, model.kind) in EDITORS:
        return EDITORS[name, model.kind]
    known = sorted({n for n, _ in EDITORS})
    if name not in known:
        raise ValueError(f"unknown editor {name!r}; known: {', '.join(known)}")
    raise ValueError(f"{name!r} cannot edit with a {model.kind!r} model; editors for it: "
                     f"{', '.join(editors(model)) or 'none'}")


# ---- shared pieces -----------------------------------------------------------------------------------------

def model_images(pipe, images: np.ndarray, what: str = "images") -> torch.Tensor:
    """uint8 (H, W, 3) or (B, H, W, 3) -> (B, 3, H, W) in [-1, 1] on the pipeline's device."""
    images = np.asarray(images)
    size = pipe.image_shape[1:]
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-3:] != size + (3,):
        raise ValueError(f"{what} must be uint8 (H, W, 3) or (B, H, W, 3) with H, W = {size}; "
                         f"got {images.dtype} {images.shape}")
    images = images[None] if images.ndim == 3 else images
    return to_model_range(torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)).to(pipe.device)


def strength_time(path, strength: float) -> float:
    """The time t_s that an edit of `strength` in [0, 1] noises to: strength 0 is t = 0 (the data),
    strength 1 is t_max, and in between the noise level sigma/alpha runs as Karras' rho = 7 schedule
    (Karras et al. 2022, Eq. 5), so the slider is even in perceived noise on every path."""
    strength = float(strength)
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if strength == 0:
        return 0.0
    if strength == 1:
        return float(path.t_max)
    s_min, s_max = path.sigma_tilde_range()
    rho = 7.0
    sig = (s_min ** (1 / rho) + strength * (s_max ** (1 / rho) - s_min ** (1 / rho))) ** rho
    t = float(path.t_from_sigma_tilde(torch.tensor(sig, dtype=torch.float64)))
    return min(max(t, float(path.t_min)), float(path.t_max))


def grid_below(pipe, grid: str, steps: int, t_s: float) -> torch.Tensor | None:
    """`grid` with `steps` steps on [0, t_s]; None when t_s is at or below the path's t_min (nothing to do). A grid
    without a t_max option (ddpm, a learned grid) keeps its times <= t_s."""
    path = pipe.model.path
    if t_s <= float(path.t_min):
        return None
    if t_s >= float(path.t_max):
        return pipe.grid_times(grid, steps)
    if grid in samplers.GRIDS and "t_max" in inspect.signature(samplers.GRIDS[grid]).parameters:
        return make_grid(grid, path, steps, t_max=t_s)
    full = pipe.grid_times(grid, steps)
    kept = full[full <= t_s]
    return kept if len(kept) > 1 else None


def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation between a (w = 0) and b (w = 1), exact at both ends (Shoemake 1985)."""
    a64, b64 = a.double(), b.double()
    cos = (a64 * b64).sum() / (a64.norm() * b64.norm())
    theta = torch.arccos(cos.clamp(-1, 1))
    if float(theta) < 1e-4:
        out = (1 - w) * a64 + w * b64
    else:
        out = (torch.sin((1 - w) * theta) * a64 + torch.sin(w * theta) * b64) / torch.sin(theta)
    return out.to(a.dtype)


def _inpaint_inputs(pipe, image: np.ndarray, mask: np.ndarray, n: int | None):
    """(known images, mask (1, 1, H, W), count): one image repeated n times, or a batch taken one each."""
    x_known = model_images(pipe, image, "image")
    if np.ndim(image) == 3:
        x_known = x_known.repeat(1 if n is None else n, 1, 1, 1)
    elif n not in (None, len(x_known)):
        raise ValueError(f"n = {n} completions asked for a batch of {len(x_known)} images (one each)")
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.shape != tuple(x_known.shape[2:]):
        raise ValueError(f"mask must be bool (H, W) = {tuple(x_known.shape[2:])}, True where known; "
                         f"got {mask.dtype} {mask.shape}")
    return x_known, torch.from_numpy(mask)[None, None].to(pipe.device), len(x_known)


def _require_pixels(pipe, verb: str) -> None:
    """A ValueError unless the model samples pixels (inpainting and colorization hold pixels fixed)."""
    if pipe.model.state_shape != pipe.image_shape:
        raise ValueError(f"{verb} works on pixels, and {pipe.name} samples in a latent space of shape "
                         f"{tuple(pipe.model.state_shape)}; use sdedit or interpolate with it")


def _frames_and_seeds(frames: int, seeds: Sequence[int]) -> tuple[int, list[int]]:
    """An interpolation's frame count (2..64) and its two seeds, checked."""
    frames = int(frames)
    if not 2 <= frames <= 64:
        raise ValueError(f"frames must be in 2..64, got {frames}")
    seeds = [int(s) for s in seeds]
    if len(seeds) != 2:
        raise ValueError(f"need two seeds, got {len(seeds)}")
    return frames, seeds


def _steps(steps: int | None, default: int) -> int:
    steps = default if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return steps


# Colorization inpaints in a decorrelated colour basis (Song et al. 2021, score_sde, App. I.4; Song et al. 2023,
# Consistency Models, App. D): y = M^T x per pixel, M orthogonal with the gray direction (1, 1, 1)/sqrt(3) first,
# so y_0 = sqrt(3) * luminance (the mean of R, G, B) is known and y_1, y_2 (the colour) are inpainted. M is
# orthogonal, so Gaussian noise stays Gaussian and the noise path is the same in y as in x.
COLOUR_BASIS = torch.tensor([[3 ** -0.5, -2 * 6 ** -0.5, 0.0],
                             [3 ** -0.5, 6 ** -0.5, 2 ** -0.5],
                             [3 ** -0.5, 6 ** -0.5, -(2 ** -0.5)]], dtype=torch.float64)


def to_colour_basis(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> the decorrelated basis (channel 0: sqrt(3) * luminance)."""
    return torch.einsum("bihw,ij->bjhw", x, COLOUR_BASIS.to(x))


def from_colour_basis(y: torch.Tensor) -> torch.Tensor:
    """The inverse of to_colour_basis (M is orthogonal: its inverse is its transpose)."""
    return torch.einsum("bjhw,ij->bihw", y, COLOUR_BASIS.to(y))


class InColourBasis(Guided):
    """A guided field seen in the decorrelated colour basis: every prediction (x0, eps, velocity, score) is
    linear in (x0, eps), so it is the field's own prediction rotated; nfe counts the field's evaluations."""

    def __init__(self, field: Guided):
        self.field, self.path, self.prediction = field, field.path, field.prediction

    @property
    def nfe(self) -> int:  # type: ignore[override]
        return self.field.nfe

    @nfe.setter
    def nfe(self, value: int) -> None:
        self.field.nfe = value

    def __call__(self, x: torch.Tensor, t, **extra) -> torch.Tensor:
        return to_colour_basis(self.field(from_colour_basis(x), t, **extra))


def in_gamut(x: torch.Tensor) -> torch.Tensor:
    """RGB in [-1, 1] with each pixel's luminance (mean of R, G, B) kept: where a colour falls outside the
    cube its chroma (x minus the luminance) is scaled down until it fits, never the luminance changed."""
    lum = x.mean(1, keepdim=True).clamp(-1, 1)
    chroma = x - lum
    room = torch.where(chroma > 0, (1 - lum) / chroma.clamp(min=1e-12), (-1 - lum) / chroma.clamp(max=-1e-12))
    scale = torch.where(chroma == 0, torch.ones_like(room), room).amin(1, keepdim=True).clamp(0, 1)
    return lum + scale * chroma


def gray(images: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) images as the gray ones colorization starts from: R = G = B = the rounded luminance."""
    lum = np.asarray(images, dtype=np.float64).mean(-1, keepdims=True).round().astype(np.uint8)
    return np.repeat(lum, 3, -1)


# ---- the verbs ---------------------------------------------------------------------------------------------

@register_editor(name="inpaint", kinds=("field",), paper="Song & Ermon 2019, NCSN, Sec. 5 and App. B.3",
                 describe=lambda steps, per_level: f"annealed Langevin: {steps} levels x {per_level} steps")
@torch.no_grad()
def inpaint_field(pipe, image: np.ndarray, mask: np.ndarray, n: int | None = None, seed: int = 0,
                  steps: int | None = None, labels=None, guidance: float = 1.0, steps_per_level: int = 5,
                  step_lr: float | None = None, callback=None) -> np.ndarray:
    """NCSN's annealed Langevin inpainting over `steps` noise levels (default 100)."""
    samplers.get("annealed_langevin", pipe.model)
    _require_pixels(pipe, "inpainting")
    steps = _steps(steps, 100)
    x_known, mask, n = _inpaint_inputs(pipe, image, mask, n)
    field = pipe.field(labels, n, guidance)
    x = inpaint_annealed_langevin(field, x_known, mask, make_grid("logsnr", pipe.model.path, steps),
                                  generator=generators([int(seed) + i for i in range(n)]),
                                  steps_per_level=steps_per_level, step_lr=step_lr, callback=callback)
    return to_uint8(x)


@register_editor(name="inpaint", kinds=("map",), paper="Song et al. 2023, Consistency Models, Alg. 4",
                 describe=lambda steps, per_level: f"multistep consistency jumps: {steps} jumps")
@torch.no_grad()
def inpaint_map(pipe, image: np.ndarray, mask: np.ndarray, n: int | None = None, seed: int = 0,
                steps: int | None = None, labels=None, guidance: float = 1.0, steps_per_level: int = 5,
                step_lr: float | None = None, callback=None) -> np.ndarray:
    """Multistep consistency inpainting over `steps` jumps (default 8); steps_per_level and step_lr do not apply."""
    steps = _steps(steps, 8)
    x_known, mask, n = _inpaint_inputs(pipe, image, mask, n)
    field = pipe.field(labels, n, guidance)
    x = inpaint_consistency(field, x_known, mask, make_grid("jumps", pipe.model.path, steps),
                            generator=generators([int(seed) + i for i in range(n)]), callback=callback)
    return to_uint8(x)


def _colorize(pipe, inpaint: Callable, image: np.ndarray, n: int | None, seed: int, ts: torch.Tensor, labels,
              guidance: float, callback, **options) -> np.ndarray:
    """Inpaint the colour channels of the decorrelated basis given the luminance channel, with `inpaint`."""
    _require_pixels(pipe, "colorization")
    x_known, _, n = _inpaint_inputs(pipe, image, np.ones(pipe.image_shape[1:], bool), n)
    known = torch.zeros(1, 3, 1, 1, dtype=torch.bool, device=pipe.device)
    known[:, 0] = True
    field = InColourBasis(pipe.field(labels, n, guidance))
    y = inpaint(field, to_colour_basis(x_known), known, ts.to(pipe.device),
                generator=generators([int(seed) + i for i in range(n)]), callback=callback, **options)
    return to_uint8(in_gamut(from_colour_basis(y)))


@register_editor(name="colorize", kinds=("field",), paper="Song et al. 2021, score_sde, App. I.4",
                 describe=lambda steps, per_level: f"annealed Langevin in a decorrelated colour basis: {steps} levels "
                                                   f"x {per_level} steps")
@torch.no_grad()
def colorize_field(pipe, image: np.ndarray, n: int | None = None, seed: int = 0, steps: int | None = None,
                   labels=None, guidance: float = 1.0, steps_per_level: int = 5, step_lr: float | None = None,
                   callback=None) -> np.ndarray:
    """Colours for a gray `image` (uint8 (H, W, 3), n results; or (B, H, W, 3), one each; a colour image's
    luminance is used): inpainting's annealed Langevin over `steps` levels (default 100) with the luminance
    known. Each result's luminance (the mean of R, G, B) equals the input's up to rounding."""
    samplers.get("annealed_langevin", pipe.model)
    return _colorize(pipe, inpaint_annealed_langevin, image, n, seed,
                     make_grid("logsnr", pipe.model.path, _steps(steps, 100)), labels, guidance, callback,
                     steps_per_level=steps_per_level, step_lr=step_lr)


@register_editor(name="colorize", kinds=("map",), paper="Song et al. 2023, Consistency Models, Alg. 4",
                 describe=lambda steps, per_level: f"multistep consistency jumps in a decorrelated colour basis: "
                                                   f"{steps} jumps")
@torch.no_grad()
def colorize_map(pipe, image: np.ndarray, n: int | None = None, seed: int = 0, steps: int | None = None,
                 labels=None, guidance: float = 1.0, steps_per_level: int = 5, step_lr: float | None = None,
                 callback=None) -> np.ndarray:
    """Colorization by multistep consistency inpainting over `steps` jumps (default 8); the luminance is kept."""
    return _colorize(pipe, inpaint_consistency, image, n, seed, make_grid("jumps", pipe.model.path, _steps(steps, 8)),
                     labels, guidance, callback)


@register_editor(name="sdedit", kinds=("field", "map"), paper="Meng et al. 2022, SDEdit")
@torch.no_grad()
def sdedit(pipe, images: np.ndarray, strength: float, sampler: str | None = None, steps: int | None = None,
           grid: str | None = None, seed: int = 0, labels=None, guidance: float = 1.0, callback=None,
           sampler_options: dict[str, Any] | None = None):
    """Noise `images` to the time of `strength` (strength_time) on the model's path, then run `sampler` from there
    to 0 on `grid` restricted to [0, t_s] (`steps` steps; a grid without a t_max option, such as ddpm, keeps its
    times <= t_s). Strength 0 returns the input unchanged (NFE 0); strength 1 starts from pure noise and equals
    `generate` with the same seed."""
    from .api import SampleResult

    x0 = pipe.model.encode(model_images(pipe, images))
    spec, sampler, steps, grid, options = pipe.sampling_setup(sampler, steps, grid, sampler_options)
    t0, n, path = time.perf_counter(), len(x0), pipe.model.path
    t_s = strength_time(path, strength)
    gens = generators([int(seed) + i for i in range(n)])
    z = randn_like(torch.empty(x0.shape), gens).to(pipe.device)
    ts = grid_below(pipe, grid, steps, t_s)
    if ts is None:
        return SampleResult(to_uint8(pipe.model.decode(x0)), 0, time.perf_counter() - t0, sampler, 0, grid)
    field = pipe.field(labels, n, guidance)
    if t_s >= float(path.t_max):
        start = prior(path, z, ts)
    else:
        start = path.sample(x0.double(), z.double(), torch.tensor(float(ts[0]), dtype=torch.float64)).float()
    x = run_sampler(spec, field, None, ts, start=start, generator=gens, callback=pipe.decoding(callback), **options)
    return SampleResult(to_uint8(pipe.model.decode(x)), field.nfe, time.perf_counter() - t0, sampler, len(ts) - 1,
                        grid)


@register_editor(name="purify", kinds=("field", "map"), paper="Nie et al. 2022, DiffPure")
def purify(pipe, images: np.ndarray, strength: float = 0.3, sampler: str | None = None, steps: int | None = None,
           **kwargs):
    """SDEdit at a small noise level, which drowns small (e.g. adversarial) perturbations and then denoises.
    The default strength 0.3 noises to sigma/alpha of about 0.3 on EDM's range, close to DiffPure's t* = 0.1
    on the VP-SDE (sigma/alpha = 0.34). Takes sdedit's options."""
    if not 0 < float(strength) <= 0.6:
        raise ValueError(f"purification noises a little: strength must be in (0, 0.6], got {strength}")
    return sdedit(pipe, images, strength, sampler, steps, **kwargs)


@register_editor(name="interpolate", kinds=("field", "map"), paper="Song et al. 2021, DDIM, Sec. 5.4 (slerp)")
@torch.no_grad()
def interpolate(pipe, frames: int = 8, seeds: Sequence[int] = (0, 1), images: np.ndarray | None = None,
                sampler: str | None = None, steps: int | None = None, grid: str | None = None,
                label: int | None = None, guidance: float = 1.0, callback=None,
                sampler_options: dict[str, Any] | None = None):
    """`frames` images along a spherical interpolation between two starting points, sampled with `sampler`: the
    noises of `seeds` (a, b), whose end frames are exactly `generate`'s images for seeds a and b with a
    deterministic sampler; or, given `images` (two uint8 (H, W, 3)), their latents from ODE inversion
    (samplers.invert) with `sampler`, which must then be invertible. Stochastic samplers draw their fresh noise
    from seed a for every frame. NFE counts inversion and sampling."""
    from .api import SampleResult

    frames, seeds = _frames_and_seeds(frames, seeds)
    spec, sampler, steps, grid, options = pipe.sampling_setup(sampler, steps, grid, sampler_options)
    t0 = time.perf_counter()
    ts = pipe.grid_times(grid, steps)
    field = pipe.field(None if label is None else [int(label)] * 2, 2, guidance)
    if images is None:
        z = randn_like(torch.empty((2, *pipe.model.state_shape)), generators(seeds))
        ends = prior(pipe.model.path, z.to(pipe.device), ts)
    else:
        if not spec.invertible:
            inv = [n for n in pipe.samplers() if samplers.get(n).invertible]
            raise ValueError(f"interpolating images inverts them with the sampler, and {sampler!r} cannot "
                             f"invert; invertible samplers for this model: {', '.join(inv) or 'none'}")
        x0 = pipe.model.encode(model_images(pipe, images))
        if len(x0) != 2:
            raise ValueError(f"need two images to interpolate between, got {len(x0)}")
        ends = samplers.invert(field, x0, ts, sampler=sampler, **options).float()
    w = torch.linspace(0, 1, frames, dtype=torch.float64)
    x = torch.stack([slerp(ends[0], ends[1], float(v)) for v in w])
    gens = []
    for _ in range(frames):  # seed a's generator, advanced past its starting noise as in generate
        g = generators([seeds[0]])[0]
        torch.randn(pipe.model.state_shape, generator=g)
        gens.append(g)
    field = pipe.field(None if label is None else [int(label)] * frames, frames, guidance, nfe=field.nfe)
    x = run_sampler(spec, field, None, ts, start=x.to(pipe.device), generator=gens, callback=pipe.decoding(callback),
                    **options)
    return SampleResult(to_uint8(pipe.model.decode(x)), field.nfe, time.perf_counter() - t0, sampler, steps, grid)


# ---- one-pass generators (a normalizing flow, a VAE): edits in their latent space ---------------------------

@register_editor(name="interpolate", kinds=("nf", "vae"), paper="Kingma & Dhariwal 2018, Glow, Sec. 5 (latent "
                 "interpolation)")
@torch.no_grad()
def interpolate_latent(pipe, frames: int = 8, seeds: Sequence[int] = (0, 1), images: np.ndarray | None = None,
                       sampler: str | None = None, steps: int | None = None, grid: str | None = None,
                       label: int | None = None, guidance: float = 1.0, callback=None,
                       sampler_options: dict[str, Any] | None = None):
    """`frames` images along a slerp between two latents, decoded by the model's generator: the prior noises of
    `seeds` (the end frames are `generate`'s images for them), or the latents of two `images` (a flow's exact
    inverse, a VAE's posterior mean; those latents are decoded at temperature 1)."""
    from .api import SampleResult

    frames, seeds = _frames_and_seeds(frames, seeds)
    spec, sampler, steps, grid, options = pipe.sampling_setup(sampler, steps, grid, sampler_options)
    t0 = time.perf_counter()
    if images is None:
        ends = randn_like(torch.empty((2, *pipe.model.state_shape)), generators(seeds)).to(pipe.device)
    else:
        x0 = model_images(pipe, images)
        if len(x0) != 2:
            raise ValueError(f"need two images to interpolate between, got {len(x0)}")
        ends, options = pipe.model.latent(x0), {**options, "temperature": 1.0}
    x = torch.stack([slerp(ends[0], ends[1], float(v)) for v in torch.linspace(0, 1, frames, dtype=torch.float64)])
    field = pipe.field(None, frames, guidance)
    ts = pipe.grid_times(grid, steps)
    x = run_sampler(spec, field, None, ts, start=x, callback=callback, **options)
    return SampleResult(to_uint8(x), field.nfe, time.perf_counter() - t0, sampler, steps, grid)


@register_editor(name="reconstruct", kinds=("nf", "vae"), paper="Kingma & Welling 2014 (encode / decode); a flow "
                 "inverts exactly", describe=lambda **_: "encode to the latent, decode back")
@torch.no_grad()
def reconstruct(pipe, images: np.ndarray, callback=None):
    """Each image through the model's latent and back: exact up to rounding for a flow, a VAE's reconstruction
    (the decoder's mean at the posterior mean)."""
    from .api import SampleResult

    t0 = time.perf_counter()
    x = pipe.model(pipe.model.latent(model_images(pipe, images)))
    return SampleResult(to_uint8(x), 1, time.perf_counter() - t0, "reconstruct", 1, "none")


# ---- an idempotent network: projection onto its image ---------------------------------------------------------

@register_editor(name="project", kinds=("idempotent",), paper="Shocher et al. 2024, Idempotent Generative Network, "
                 "Sec. 4 (projection of corrupted inputs)",
                 describe=lambda steps=1, **_: f"f applied {steps} time(s)")
@torch.no_grad()
def project(pipe, images: np.ndarray, steps: int = 1, noise: float = 0.0, seed: int = 0, callback=None):
    """Each (corrupted) image through the idempotent network f, `steps` times (zero-shot restoration: f maps
    its input to the data manifold it was trained to be the identity on), after adding Gaussian noise of std `noise`
    (in model range [-1, 1], image i's from seed + i; 0: none)."""
    from .api import SampleResult

    if not (isinstance(steps, int) and 1 <= steps <= 10):
        raise ValueError(f"steps must be an integer in [1, 10], got {steps!r}")
    if not 0 <= float(noise) <= 2:
        raise ValueError(f"noise must be in [0, 2], got {noise}")
    t0 = time.perf_counter()
    x = model_images(pipe, images)
    if noise:
        x = x + float(noise) * randn_like(x, generators(range(seed, seed + len(x))))
    field = pipe.field(None, len(x), 1.0)
    for i in range(steps):
        x = field.x0(x, pipe.model.path.t_max)
        if callback:
            callback(i=i, t=0.0, x=x, x0=x)
    return SampleResult(to_uint8(x), field.nfe, time.perf_counter() - t0, "project", steps, "none")

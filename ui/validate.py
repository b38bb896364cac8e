"""Input checking for the studio: every bad value becomes a `gr.Error` that says what to do, before any work.

Uploaded files are checked before they are decoded: the file size, that PIL recognises an image
format, and the pixel count from the header (a decompression bomb is refused before it is expanded)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 4096 * 4096                  # a bigger image is refused from its header, before decoding
Image.MAX_IMAGE_PIXELS = MAX_PIXELS       # PIL itself refuses bigger ones too (DecompressionBombError)
IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM"}

LIMITS = {  # name: (lo, hi) for the numeric inputs
    "steps": (1, 200), "n": (1, 64), "seed": (0, 2**31 - 1), "guidance": (0.0, 20.0),
    "strength": (0.0, 1.0), "purify_strength": (0.01, 0.6), "frames": (2, 32), "noise": (0.0, 1.0),
    "inpaint_steps": (2, 200), "per_level": (1, 20),
}


def number(value: Any, name: str, integer: bool = False, limits: tuple[float, float] | None = None) -> float | int:
    """`value` as a finite number within LIMITS[name] (or `limits`), else a gr.Error naming the range."""
    lo, hi = limits or LIMITS[name]
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise gr.Error(f"{name} must be a number in {lo}..{hi}, got {value!r}") from None
    if not np.isfinite(v) or not lo <= v <= hi:
        raise gr.Error(f"{name} must be in {lo}..{hi}, got {value!r}")
    if integer:
        if v != int(v):
            raise gr.Error(f"{name} must be a whole number in {lo}..{hi}, got {value!r}")
        return int(v)
    return v


def choice(value: Any, name: str, allowed: list[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise gr.Error(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")
    return value


def open_image(source: str | Path | bytes | None, what: str = "image") -> Image.Image:
    """Open an uploaded file (a path, or raw bytes) as an image after checking its size, format and pixel count."""
    if source is None or source == "":
        raise gr.Error(f"no {what}: upload one (PNG, JPEG, WebP, ...) or send one from Generate")
    if isinstance(source, (bytes, bytearray, memoryview)):
        size, path = len(source), io.BytesIO(bytes(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise gr.Error(f"the uploaded {what} is gone ({path.name}); upload it again")
        size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise gr.Error(f"the {what} file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        im = Image.open(path)  # reads the header only
    except Image.DecompressionBombError:
        raise gr.Error(f"the {what} claims far more pixels than any upload needs (a decompression bomb?); "
                       f"at most {MAX_PIXELS:,} pixels are accepted") from None
    except (UnidentifiedImageError, OSError) as e:
        raise gr.Error(f"the {what} is not an image this app can read ({type(e).__name__}); "
                       f"upload a PNG, JPEG or WebP") from None
    if im.format not in IMAGE_FORMATS:
        raise gr.Error(f"the {what} is a {im.format} file; upload a PNG, JPEG or WebP")
    w, h = im.size
    if w < 1 or h < 1 or w * h > MAX_PIXELS:
        raise gr.Error(f"the {what} is {w}x{h} pixels; at most {MAX_PIXELS:,} pixels (e.g. 4096x4096) are accepted")
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise gr.Error(f"the {what} could not be decoded ({e}); upload an intact image") from None
    return im


def square(im: Image.Image, size: int, resample=None) -> Image.Image:
    """Center-crop to a square, then resize to size x size (by area averaging when shrinking, so an image
    enlarged by an integer factor comes back exactly; bicubic when enlarging)."""
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    if resample is None:
        resample = Image.BOX if side >= size else Image.BICUBIC
    return im.crop((left, top, left + side, top + side)).resize((size, size), resample)


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB on white where the image has transparency."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")


def model_image(path: str | Path | None, size: int, what: str = "image") -> tuple[np.ndarray, str]:
    """uint8 (size, size, 3) from an upload, and a note on what was done to it."""
    im = open_image(path, what)
    w, h = im.size
    arr = np.asarray(square(to_rgb(im), size), dtype=np.uint8)
    if (w, h) == (size, size):
        return arr, f"{what}: {w}x{h}, used as it is"
    crop = "center-cropped to a square and " if w != h else ""
    return arr, f"{what}: {w}x{h}, {crop}resized to {size}x{size} (the model's size)"


def editor_parts(value: Any) -> tuple[str | None, list[str]]:
    """(background path, layer paths) of a gr.ImageEditor value (type="filepath")."""
    if value is None:
        return None, []
    if not isinstance(value, dict):
        raise gr.Error("the editor sent something that is not an image; upload the image again")
    layers = value.get("layers") or []
    return value.get("background"), [p for p in layers if p]


def mask_from_layers(background: Image.Image, layers: list[str], size: int) -> np.ndarray:
    """bool (size, size), True where known: the pixels no brush stroke covers (after the image's crop/resize)."""
    if not layers:
        raise gr.Error("the mask is empty: paint over the part of the image to fill in, then press Inpaint")
    painted = None
    for p in layers:
        layer = open_image(p, "mask layer")
        if layer.size != background.size:
            raise gr.Error(f"the mask layer is {layer.size[0]}x{layer.size[1]} but the image is "
                           f"{background.size[0]}x{background.size[1]}; draw the mask on the image itself")
        alpha = np.asarray(layer.convert("RGBA"))[..., 3] > 0
        painted = alpha if painted is None else painted | alpha
    if not painted.any():
        raise gr.Error("the mask is empty: paint over the part of the image to fill in, then press Inpaint")
    small = np.asarray(square(Image.fromarray(painted.astype(np.uint8) * 255), size, Image.BILINEAR)) >= 64
    if not small.any():
        raise gr.Error(f"the painted mask vanishes at {size}x{size}; paint a larger region")
    return ~small


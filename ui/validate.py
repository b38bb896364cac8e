"""Input checking for the studio: every bad value becomes a `gr.Error` that says what to do, before any work.

Uploaded files are checked before they are decoded: the file size, that PIL recognises an image
format, and the pixel count from the header (a decompression bomb is refused before it is expanded). Then
Pillow's decoding errors (truncated, a text chunk too large, ...) become messages, the image is turned upright
as its EXIF says, and exotic modes (16-bit, CMYK) become plain 8-bit ones. user_error turns any exception
into the message the user sees."""
from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

log = logging.getLogger("ui")
ORIENTATION = 0x0112  # the EXIF Orientation tag

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 4096 * 4096                  # a bigger image is refused from its header, before decoding
Image.MAX_IMAGE_PIXELS = MAX_PIXELS       # PIL itself refuses bigger ones too (DecompressionBombError)
IMAGE_FORMATS = {"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM"}

LIMITS = {  # name: (lo, hi) for the numeric inputs
    "steps": (1, 200), "n": (1, 64), "seed": (0, 2**31 - 1), "guidance": (0.0, 20.0),
    "strength": (0.0, 1.0), "purify_strength": (0.01, 0.6), "frames": (2, 32), "noise": (0.0, 1.0),
    "inpaint_steps": (2, 200), "per_level": (1, 20)
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


def step_list(text: Any, most: int = 12) -> list[int]:
    """"4, 8, 16" -> [4, 8, 16], each a step count within LIMITS["steps"]."""
    try:
        steps = [int(s) for s in str(text).replace(",", " ").split()]
    except ValueError:
        raise gr.Error(f"steps must be whole numbers separated by commas, e.g. 4, 8, 16; got {text!r}") from None
    if not steps:
        raise gr.Error("give at least one step count, e.g. 4, 8, 16")
    if len(steps) > most:
        raise gr.Error(f"at most {most} step counts at once, got {len(steps)}")
    return [int(number(s, "steps", integer=True)) for s in dict.fromkeys(steps)]


def choice(value: Any, name: str, allowed: list[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise gr.Error(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")
    return value


def user_error(e: BaseException, where: str = "the studio") -> gr.Error:
    """`e` as the gr.Error the user sees. A gr.Error, ValueError or FileNotFoundError (written for users) keeps its
    message; anything else is a bug or an environment failure: logged with its traceback on the server, and the
    user gets a short message saying what to try instead of Gradio's opaque "the upstream app raised an exception"."""
    if isinstance(e, gr.Error):
        return e
    if isinstance(e, (ValueError, FileNotFoundError)):
        return gr.Error(str(e))
    log.exception("unexpected error in %s", where, exc_info=e)
    return gr.Error(f"{where} failed unexpectedly ({type(e).__name__}); try again, or with other settings or "
                    f"another image (a PNG or JPEG). The details are in the server's log.")


def _decode_error(e: BaseException, what: str) -> gr.Error:
    """A clear message for what Pillow raises while it reads or decodes an upload."""
    text = str(e)
    if isinstance(e, Image.DecompressionBombError):
        return gr.Error(f"the {what} claims far more pixels than any upload needs (a decompression bomb?); "
                        f"at most {MAX_PIXELS:,} pixels are accepted")
    if "MAX_TEXT_CHUNK" in text or "MAX_TEXT_MEMORY" in text:
        limit = PngImagePlugin.MAX_TEXT_MEMORY if "MEMORY" in text else PngImagePlugin.MAX_TEXT_CHUNK
        return gr.Error(f"the {what} carries more text (metadata) than can be read: over {limit // 2**20} MB once "
                        f"inflated; re-save it without its metadata (or as JPEG) and upload it again")
    if isinstance(e, UnidentifiedImageError):
        return gr.Error(f"the {what} file is not an image this app can read; upload a PNG, JPEG or WebP")
    if "truncated" in text.lower() or isinstance(e, EOFError):
        return gr.Error(f"the {what} is cut short (truncated); upload the complete file")
    return gr.Error(f"the {what} could not be decoded ({type(e).__name__}: {text[:200]}); "
                    f"upload an intact image (PNG, JPEG or WebP)")


# what Pillow raises on a bad file while it reads a header or decodes pixels
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, TypeError,
                 KeyError, Image.DecompressionBombError)


def _upright(im: Image.Image) -> Image.Image:
    """`im` turned as its EXIF Orientation tag says (as a camera or phone meant it to be seen)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data": the tag is then simply missing
            orientation = im.getexif().get(ORIENTATION, 1)
    except Exception:  # unreadable EXIF: the pixels are still fine, shown as stored
        log.warning("unreadable EXIF in an upload: its orientation is ignored", exc_info=True)
        return im
    if orientation in (None, 1):
        return im
    try:
        out = ImageOps.exif_transpose(im)
    except Exception:
        log.warning("could not apply EXIF orientation %r: the upload is used as stored", orientation, exc_info=True)
        return im
    out.info["genstudio_orientation"] = str(orientation)  # kept in the PNG Gradio's editor re-saves (a text chunk)
    return out


def _eight_bit(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float image as 8-bit (L): Pillow's convert() would clip it (white), not scale it."""
    if im.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(im).astype(np.float64) / 257).round().astype(np.uint8), "L")
    a = np.asarray(im).astype(np.float64)
    if im.mode == "F" and a.size and np.nanmax(a) <= 1.0:
        a = a * 255
    elif a.size and np.nanmax(a) > 255:
        a = a / 257
    return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8), "L")


def _plain_mode(im: Image.Image, what: str) -> Image.Image:
    """`im` in a mode every later step handles (1, L, LA, P, PA, RGB, RGBA): others converted, with its info."""
    if im.mode in ("1", "L", "LA", "P", "PA", "RGB", "RGBA"):
        return im
    info = dict(im.info)
    try:
        out = _eight_bit(im) if im.mode.startswith("I") or im.mode == "F" else im.convert("RGB")
    except (ValueError, OSError) as e:
        raise gr.Error(f"the {what} has the colour mode {im.mode}, which this app cannot convert ({e}); "
                       f"save it as an RGB PNG or JPEG") from None
    out.info.update(info)
    return out


def open_image(source: str | Path | bytes | None, what: str = "image") -> Image.Image:
    """Open an uploaded file (a path, or raw bytes) as a decoded image after checking its size, format and pixel
    count; turned upright as its EXIF says, in mode 1, L, LA, P, PA, RGB or RGBA (16-bit scaled to 8, CMYK to
    RGB). Every failure is a gr.Error that says what is wrong with the file."""
    if source is None or source == "":
        raise gr.Error(f"no {what}: upload one (PNG, JPEG, WebP, ...) or send one from Generate")
    if isinstance(source, (bytes, bytearray, memoryview)):
        size, path = len(source), io.BytesIO(bytes(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise gr.Error(f"the uploaded {what} is gone ({path.name}); upload it again")
        size = path.stat().st_size
    if size == 0:
        raise gr.Error(f"the {what} file is empty (0 bytes); upload the image again")
    if size > MAX_UPLOAD_BYTES:
        raise gr.Error(f"the {what} file is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, by its header
            warnings.filterwarnings("ignore", "Corrupt EXIF")  # its orientation is then ignored (see _upright)
            im = Image.open(path)  # reads the header only (and a PNG's chunks before its pixels)
    except DECODE_ERRORS as e:
        raise _decode_error(e, what) from None
    try:
        if im.format not in IMAGE_FORMATS:
            raise gr.Error(f"the {what} is in the {im.format} format, which is not accepted; "
                           "upload a PNG, JPEG or WebP")
        w, h = im.size
        if w < 1 or h < 1 or w * h > MAX_PIXELS:
            raise gr.Error(f"the {what} is {w}x{h} pixels; at most {MAX_PIXELS:,} pixels (e.g. 4096x4096) "
                           "are accepted")
        try:
            im.load()
        except DECODE_ERRORS as e:
            raise _decode_error(e, what) from None
    except gr.Error:
        im.close()  # a refused file is not held open while the error travels
        raise
    return _plain_mode(_upright(im), what)


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
    turned = f", turned upright (EXIF orientation {im.info['genstudio_orientation']})" \
        if "genstudio_orientation" in im.info else ""
    if (w, h) == (size, size):
        return arr, f"{what}: {w}x{h}{turned}, used as it is"
    crop = "center-cropped to a square and " if w != h else ""
    return arr, f"{what}: {w}x{h}{turned}, {crop}resized to {size}x{size} (the model's size)"


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


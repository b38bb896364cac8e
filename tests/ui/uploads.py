"""A corpus of uploads for the studio's image inputs: ordinary files, exotic modes, EXIF-rotated photos and
malformed files. Each case ends either in a result (the 16x16 RGB image the model must get, compared within a
tolerance) or in a clear error (a piece of its message).

    for case in corpus(folder): case.path, case.klass, case.expect ("image" or "error"), case.want / case.message
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from tests.helpers import SIZE

OPAQUE = "upstream Gradio app has raised an exception"  # what no upload may ever end in
ORIENTATION = 0x0112
TL, TR, BL, BR = (220, 30, 30), (30, 200, 60), (40, 60, 220), (230, 220, 40)  # distinct under any turn or flip
WHITE = (255, 255, 255)


@dataclass
class Case:
    name: str
    klass: str                      # the row of the report table
    path: Path
    expect: str                     # "image": a result equal to `want`; "error": a message containing `message`
    want: np.ndarray | None = None  # (SIZE, SIZE, 3) uint8: what the model must get
    tol: float = 4.0                # mean absolute difference allowed (JPEG)
    message: str = ""
    note: str = ""                  # a piece of the note shown for a result (e.g. "turned upright")


def quadrants(h: int, w: int | None = None, colours=(TL, TR, BL, BR)) -> np.ndarray:
    """An h x w RGB image of four flat quadrants (top-left, top-right, bottom-left, bottom-right)."""
    w = h if w is None else w
    out = np.zeros((h, w, 3), np.uint8)
    out[: h // 2, : w // 2], out[: h // 2, w // 2:] = colours[0], colours[1]
    out[h // 2:, : w // 2], out[h // 2:, w // 2:] = colours[2], colours[3]
    return out


def expected(colours=(TL, TR, BL, BR)) -> np.ndarray:
    return quadrants(SIZE, SIZE, colours)


def gray(level: int) -> tuple[int, int, int]:
    return (level, level, level)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(image: np.ndarray | Image.Image, before_idat: bytes = b"", after_idat: bytes = b"") -> bytes:
    """A PNG of `image`, with extra chunks spliced in before its image data and/or after it."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    s = buf.getvalue()
    i, j = s.index(b"IDAT") - 4, s.index(b"IEND") - 4
    return s[:i] + before_idat + s[i:j] + after_idat + s[j:]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (its data is a few bytes): a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG (grey if `array` is 2-D, RGB if 3-D) written by hand: Pillow writes 16-bit grey only."""
    h, w = array.shape[:2]
    colour = 2 if array.ndim == 3 else 0
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _save(path: Path, image: np.ndarray | Image.Image, **kw) -> Path:
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(path, **kw)
    return path


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif


def corpus(folder: Path) -> list[Case]:
    """Write every case's file into `folder`; the cases."""
    folder.mkdir(parents=True, exist_ok=True)
    f = folder
    q32, want = quadrants(32), expected()
    cases: list[Case] = []

    def ok(name, klass, path, want=want, tol=4.0, note=""):
        cases.append(Case(name, klass, path, "image", want=want, tol=tol, note=note))

    def err(name, klass, path, message):
        cases.append(Case(name, klass, path, "error", message=message))

    # -- ordinary files: the same four quadrants in each format
    k = "ordinary formats"
    ok("png", k, _save(f / "plain.png", q32))
    ok("jpeg (.jpg)", k, _save(f / "photo.jpg", q32, quality=95), tol=8)
    ok("jpeg (.jpeg)", k, _save(f / "photo2.jpeg", q32, quality=95), tol=8)
    ok("jpeg named .png", k, _save(f / "really_a_jpeg.png", q32, format="JPEG", quality=95), tol=8)
    ok("progressive jpeg", k, _save(f / "progressive.jpg", q32, quality=95, progressive=True), tol=8)
    ok("webp (lossless)", k, _save(f / "plain.webp", q32, lossless=True))
    ok("bmp", k, _save(f / "plain.bmp", q32))
    ok("tiff", k, _save(f / "plain.tif", q32))
    ok("gif", k, _save(f / "plain.gif", q32))
    frames = [Image.fromarray(q32), Image.fromarray(255 - q32)]
    ok("animated gif (first frame)", k, _save(f / "animated.gif", frames[0], save_all=True, append_images=frames[1:]))
    ok("non-square jpeg (center-cropped)", k,
       _save(f / "wide.jpg", np.concatenate([np.zeros((32, 16, 3), np.uint8), q32, np.zeros((32, 16, 3), np.uint8)],
                                            axis=1), quality=95), tol=8, note="64x32, center-cropped")
    ok("large jpeg (1024x768)", k, _save(f / "large.jpg", quadrants(768, 1024), quality=90), tol=8,
       note="1024x768, center-cropped")

    # -- tiny images
    k = "tiny images"
    ok("1x1 png", k, _save(f / "one.png", np.array([[TR]], np.uint8)), want=expected((TR,) * 4))
    ok("1x1 jpeg", k, _save(f / "one.jpg", np.array([[TR]], np.uint8), quality=95), want=expected((TR,) * 4), tol=12)
    ok("1x1 gif", k, _save(f / "one.gif", np.array([[BL]], np.uint8)), want=expected((BL,) * 4))
    ok("2x2 png (enlarged, bicubic)", k, _save(f / "two.png", quadrants(2)),
       want=np.asarray(Image.fromarray(quadrants(2)).resize((SIZE, SIZE), Image.BICUBIC)), tol=1)

    # -- modes other than 8-bit RGB
    k = "colour modes"
    levels = (30, 90, 160, 240)
    greys = tuple(gray(v) for v in levels)
    g32 = quadrants(32, colours=greys)[..., 0]
    ok("greyscale png (L)", k, _save(f / "grey.png", g32), want=expected(greys))
    ok("greyscale jpeg", k, _save(f / "grey.jpg", g32, quality=95), want=expected(greys), tol=8)
    ok("1-bit png", k, _save(f / "bits.png", Image.fromarray(g32 > 128)), want=expected((gray(0),) * 2 + (WHITE,) * 2))
    (f / "grey16.png").write_bytes(png16(g32.astype(np.uint16) * 257))
    ok("16-bit grey png", k, f / "grey16.png", want=expected(greys))
    (f / "rgb16.png").write_bytes(png16(q32.astype(np.uint16) * 257))
    ok("16-bit rgb png", k, f / "rgb16.png")
    ok("cmyk jpeg", k, _save(f / "cmyk.jpg", Image.fromarray(q32).convert("CMYK"), quality=95), tol=8)
    ok("cmyk tiff", k, _save(f / "cmyk.tif", Image.fromarray(q32).convert("CMYK")), tol=2)
    rgba = np.concatenate([q32, np.full((32, 32, 1), 255, np.uint8)], axis=2)
    rgba[:16, :16, 3] = 0  # the top-left quadrant transparent: white on the model's side
    ok("rgba png, transparent corner", k, _save(f / "rgba.png", rgba), want=expected((WHITE, TR, BL, BR)))
    la = np.stack([g32, np.full((32, 32), 255, np.uint8)], axis=2)
    la[16:, 16:, 1] = 0
    ok("grey+alpha png (LA)", k, _save(f / "la.png", Image.fromarray(la, "LA")),
       want=expected(greys[:3] + (WHITE,)))
    pal = Image.fromarray(q32).quantize(4)
    tl_index = pal.getpixel((0, 0))
    ok("palette png with transparency", k, _save(f / "palette.png", pal, transparency=tl_index),
       want=expected((WHITE, TR, BL, BR)))
    ok("palette png, opaque", k, _save(f / "palette_opaque.png", pal))
    ok("rgba webp", k, _save(f / "rgba.webp", rgba, lossless=True), want=expected((WHITE, TR, BL, BR)))

    # -- EXIF orientation: the file stores the picture turned; its tag says how to turn it upright
    k = "EXIF orientation"
    turned = {6: np.rot90(q32, 1), 8: np.rot90(q32, -1), 3: np.rot90(q32, 2)}  # stored so that the tag undoes it
    for o, stored in turned.items():
        ok(f"jpeg, orientation {o}", k, _save(f / f"exif{o}.jpg", np.ascontiguousarray(stored), exif=_exif(o),
                                              quality=95), tol=8, note=f"turned upright (EXIF orientation {o})")
    ok("jpeg, orientation 2 (mirrored)", k, _save(f / "exif2.jpg", np.ascontiguousarray(q32[:, ::-1]),
                                                  exif=_exif(2), quality=95), tol=8, note="EXIF orientation 2")
    ok("non-square jpeg, orientation 6", k,  # upright 64x32 (two patterns side by side), stored 32x64
       _save(f / "exif6_tall.jpg", np.ascontiguousarray(np.rot90(np.concatenate([q32, q32], axis=1), 1)),
             exif=_exif(6), quality=95), want=expected((TR, TL, BR, BL)), tol=8,
       note="64x32, turned upright (EXIF orientation 6), center-cropped")
    ok("png with eXIf orientation 8", k, _save(f / "exif8.png", np.ascontiguousarray(turned[8]), exif=_exif(8)),
       note="EXIF orientation 8")
    ok("webp with EXIF orientation 6", k, _save(f / "exif6.webp", np.ascontiguousarray(turned[6]), exif=_exif(6),
                                                lossless=True), note="EXIF orientation 6")
    ok("jpeg, orientation 1 (upright already)", k, _save(f / "exif1.jpg", q32, exif=_exif(1), quality=95), tol=8)
    bad_exif = _save(f / "bad_exif.jpg", q32, quality=95, exif=b"Exif\0\0MM\0*\0\0\0\x08\0\x05\x01\x12")
    ok("jpeg with a cut-short EXIF block (used as stored)", k, bad_exif, tol=8)

    # -- malformed files: each a clear message
    k = "malformed files"
    big = zlib.compress(b"a" * (PngImagePlugin.MAX_TEXT_CHUNK + 10))
    (f / "ztxt.png").write_bytes(png_bytes(q32, before_idat=chunk(b"zTXt", b"Comment\0\0" + big)))
    err("png, zTXt inflating past MAX_TEXT_CHUNK", k, f / "ztxt.png", "more text (metadata) than can be read")
    (f / "itxt.png").write_bytes(png_bytes(q32, before_idat=chunk(b"iTXt", b"Comment\0\1\0\0\0" + big)))
    err("png, compressed iTXt past MAX_TEXT_CHUNK", k, f / "itxt.png", "more text (metadata) than can be read")
    (f / "ztxt_after.png").write_bytes(png_bytes(q32, after_idat=chunk(b"zTXt", b"Comment\0\0" + big)))
    err("png, huge zTXt after the image data", k, f / "ztxt_after.png", "more text (metadata) than can be read")
    part = zlib.compress(b"a" * (PngImagePlugin.MAX_TEXT_CHUNK - 100))
    many = b"".join(chunk(b"zTXt", b"C%d\0\0" % i + part) for i in range(70))  # 70 MB of text in all
    (f / "many_texts.png").write_bytes(png_bytes(q32, before_idat=many))
    err("png, text chunks past MAX_TEXT_MEMORY", k, f / "many_texts.png", "more text (metadata) than can be read")
    whole = (f / "plain.png").read_bytes()
    (f / "truncated.png").write_bytes(whole[: len(whole) // 2])
    err("truncated png", k, f / "truncated.png", "cut short (truncated)")
    (f / "truncated_header.png").write_bytes(whole[:60])
    err("png cut inside its first chunks", k, f / "truncated_header.png", "cut short (truncated)")
    jpeg = (f / "large.jpg").read_bytes()
    (f / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    err("truncated jpeg", k, f / "truncated.jpg", "cut short (truncated)")
    bad = bytearray(whole)
    at = bad.index(b"IDAT") + 8
    bad[at:at + 8] = b"\xff" * 8
    (f / "corrupt.png").write_bytes(bytes(bad))
    err("png with corrupt image data", k, f / "corrupt.png", "could not be decoded")
    (f / "bomb.png").write_bytes(png_header(100_000, 100_000))
    err("decompression bomb (100000x100000 header)", k, f / "bomb.png", "decompression bomb")
    (f / "huge.png").write_bytes(png_header(8000, 2500))
    err("20M-pixel header (PIL would only warn)", k, f / "huge.png", "8000x2500 pixels")
    (f / "text.png").write_text("this is not an image\n" * 10)
    err("text file named .png", k, f / "text.png", "not an image this app can read")
    (f / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    err("random bytes named .jpg", k, f / "random.jpg", "not an image this app can read")
    (f / "signature_only.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    err("png signature only", k, f / "signature_only.png", "not an image this app can read")
    (f / "empty.png").write_bytes(b"")
    err("empty file", k, f / "empty.png", "empty")
    (f / "drawing.svg.png").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>')
    err("svg named .png", k, f / "drawing.svg.png", "not an image this app can read")
    _save(f / "icon.ico", q32, format="ICO")
    err("ico (a format not accepted)", k, f / "icon.ico", "ICO format, which is not accepted")
    return cases


def result_matches(case: Case, image: np.ndarray) -> str | None:
    """None if `image` (what the model got) is the case's expected image, else what differs."""
    if image.shape != (SIZE, SIZE, 3):
        return f"shape {image.shape}"
    diff = np.abs(image.astype(float) - case.want.astype(float)).mean()
    return None if diff <= case.tol else f"mean difference {diff:.1f} > {case.tol}"

"""Turn a data source (CIFAR-10, an image folder, or a tar of one) into an in-memory uint8 tensor.

The offline CIFAR-10 copy lives wherever $GENSTUDIO_DATA says (a folder holding cifar10/train.tar.gz and
cifar10/test.tar.gz); configs name it "$GENSTUDIO_DATA/cifar10/train.tar.gz", expanded when loaded.

Decoded images are cached as safetensors + JSON (never pickle) under ``cache_dir/decoded/``,
keyed by a hash of the source content, the image size and the split.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from .atomic import atomic_write, write_json

__all__ = [
    "ImageSet",
    "DataError",
    "load_images",
    "to_model_range",
    "random_flip",
    "default_cache_dir",
    "data_root",
    "resolve_source",
    "offline_cifar10",
    "DATA_ENV",
    "IMAGE_EXTENSIONS",
    "ARCHIVE_SUFFIXES",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
KNOWN_SPLITS = ("train", "test", "val", "valid", "validation")
CACHE_FORMAT = 1  # bump when decoding changes, so old caches are not reused
_RESAMPLE = Image.Resampling.LANCZOS
DATA_ENV = "GENSTUDIO_DATA"  # a folder holding cifar10/train.tar.gz and cifar10/test.tar.gz
_DATA_VAR = re.compile(r"\$(?:\{GENSTUDIO_DATA\}|GENSTUDIO_DATA(?![A-Za-z0-9_]))")
_SET_DATA_HINT = (f"export {DATA_ENV}=/path/to/data (the folder holding cifar10/train.tar.gz and "
                  "cifar10/test.tar.gz)")
_LOCAL_COPY_HINT = (
    "Point at a local copy instead: a folder with one subfolder per class, or a .tar/.tar.gz of one, "
    f'e.g. data.source = "${DATA_ENV}/cifar10/train.tar.gz" in the config (after {_SET_DATA_HINT}), '
    "or --data.source PATH on the command line."
)

Parts = tuple[str, ...]


class DataError(ValueError):
    """A data source could not be found, read or decoded; the message says what to do."""


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Decoded images in memory: uint8 (N, 3, H, W), int64 labels (N,), class names by label."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    content_hash: str  # sha256 hex of (source content, image_size, split)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be int64 ({self.images.shape[0]},), "
                             f"got {self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])


def default_cache_dir() -> Path:
    """$GENSTUDIO_CACHE if set, else ~/.cache/genstudio."""
    env = os.environ.get("GENSTUDIO_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genstudio"


def data_root() -> Path:
    """The folder named by $GENSTUDIO_DATA (it holds cifar10/train.tar.gz and cifar10/test.tar.gz); a
    DataError that says how to set it when it is unset."""
    env = os.environ.get(DATA_ENV, "").strip()
    if not env:
        raise DataError(f"${DATA_ENV} is not set: {_SET_DATA_HINT}, or give the data source's path itself")
    return Path(env).expanduser()


def resolve_source(source: str | os.PathLike[str]) -> str:
    """A data source with $GENSTUDIO_DATA (or ${GENSTUDIO_DATA}) replaced by that folder, so a config or a
    command line can say "$GENSTUDIO_DATA/cifar10/train.tar.gz"; other sources come back as they are."""
    text = os.fspath(source)
    if not _DATA_VAR.search(text):
        return text
    try:
        root = str(data_root())
    except DataError as e:
        raise DataError(f"data source {text!r}: {e}") from None
    return _DATA_VAR.sub(lambda _: root, text)


def offline_cifar10(split: str = "train") -> Path | None:
    """$GENSTUDIO_DATA/cifar10/<split>.tar.gz when the variable is set and the file exists, else None."""
    try:
        path = data_root() / "cifar10" / f"{split}.tar.gz"
    except DataError:
        return None
    return path if path.is_file() else None


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels [0, 255] to float32 [-1, 1]."""
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"to_model_range expects uint8 images, got {images_uint8.dtype}")
    return images_uint8.to(torch.float32).div(127.5).sub(1.0)


def noisy_split(n: int, clean_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, noisy) image indices, sorted: a fixed random `clean_fraction` of 0..n-1 (round(fraction n) images) is
    kept clean, the rest exists only as its noisy copy (SFBD, Lu, Wu, Yu 2025)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    k = round(clean_fraction * n)
    return order[:k].sort().values, order[k:].sort().values


def fixed_subset(n: int, size: int, seed: int) -> torch.Tensor:
    """The image indices of `data.limit`: a fixed random `size` of 0..n-1 drawn from `seed` (all of them, in order,
    when size is 0 or at least n)."""
    if not size or size >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:size]


def noisy_copy(images_uint8: torch.Tensor, index: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """The fixed noisy copy y_i = x_i + sigma eps_i in model range (float32) of images[index]: eps_i is drawn from
    seed and i alone (its own generator, seeded (seed << 20) + i: seed < 4096, i < 2^20), so a copy never depends on
    the batch or on which others are made."""
    from .core.noise import generators, randn_like

    if not 0 <= int(seed) < 1 << 12 or (len(index) and not 0 <= int(index.max()) < 1 << 20):
        raise ValueError(f"noisy_copy takes a seed in 0..4095 and image indices below {1 << 20}")
    x = to_model_range(images_uint8[index])
    eps = randn_like(torch.empty_like(x), generators([(int(seed) << 20) + int(i) for i in index]))
    return x + float(sigma) * eps


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each sample of a (N, C, H, W) batch left-right with probability 1/2."""
    if x.dim() != 4:
        raise ValueError(f"random_flip expects a (N, C, H, W) batch, got shape {tuple(x.shape)}")
    device = generator.device if generator is not None else x.device
    flip = (torch.rand(x.shape[0], generator=generator, device=device) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def load_images(
    source: str | os.PathLike[str],
    *,
    split: str = "train",
    image_size: int = 32,
    cache_dir: str | Path | None = None,
    download: bool = True,
) -> ImageSet:
    """Load "cifar10", a class-per-subfolder image folder, or a .tar/.tar.gz/.tgz of one. $GENSTUDIO_DATA in
    `source` ("$GENSTUDIO_DATA/cifar10/train.tar.gz") is expanded by `resolve_source`."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    given = os.fspath(source)
    text = resolve_source(given)
    if text.lower() == "cifar10":
        return _load_cifar10(cache, split, image_size, download)
    path = Path(text).expanduser()
    if path.is_dir():
        kind, fingerprint = "folder", _folder_fingerprint(path)
    elif path.is_file() and _is_archive(path):
        kind, fingerprint = "archive", _file_sha256(path)
    else:
        raise DataError(_unknown_source_message(text if text == given else f"{given} (= {text})", path))
    key = _cache_key(kind, fingerprint, image_size, split)
    cached = _read_cache(cache, key, image_size)
    if cached is not None:
        return cached
    entries = _archive_entries(path) if kind == "archive" else _folder_entries(path)
    images, labels, classes = _decode_selected(entries, split, image_size, where=str(path))
    result = ImageSet(images, labels, classes, key)
    _write_cache(cache, result, source=str(path.resolve()), image_size=image_size, split=split)
    return result


# --- sources ---------------------------------------------------------------------------------


def _unknown_source_message(text: str, path: Path) -> str:
    kinds = (
        '"cifar10" (torchvision download), a folder with one subfolder per class, '
        f"or an archive of such a folder ({', '.join(ARCHIVE_SUFFIXES)})"
    )
    if path.is_file():
        return f"unsupported data source file {text!r}: expected {kinds}."
    return f"data source {text!r} is not \"cifar10\" and no such file or folder exists; expected {kinds}."


def _is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _load_cifar10(cache: Path, split: str, image_size: int, download: bool) -> ImageSet:
    """torchvision's CIFAR-10 under cache/cifar10, resized if image_size != 32."""
    if split not in ("train", "test"):
        raise DataError(f'cifar10 has splits "train" and "test", not {split!r}')
    import torchvision  # lazy: heavy import, and tests replace torchvision.datasets.CIFAR10

    root = cache / "cifar10"
    try:
        ds = torchvision.datasets.CIFAR10(root=str(root), train=split == "train", download=download)
    except Exception as e:  # network errors come as URLError, OSError, RuntimeError, ...
        what = "download failed" if download else "not found and download=False"
        raise DataError(f"CIFAR-10 {what} (root {root}): {type(e).__name__}: {e}. {_LOCAL_COPY_HINT}") from e
    data = np.ascontiguousarray(ds.data, dtype=np.uint8)  # (N, 32, 32, 3)
    targets = np.asarray(ds.targets, dtype=np.int64)
    digest = hashlib.sha256(data.tobytes())
    digest.update(targets.tobytes())
    key = _cache_key("cifar10", digest.hexdigest(), image_size, split)
    if image_size != data.shape[1]:
        data = np.stack([_square_resize(Image.fromarray(a), image_size) for a in data])
    images = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.from_numpy(targets), tuple(ds.classes), key)


def _skip(parts: Parts) -> bool:
    """Hidden files/folders, macOS resource forks, and non-image extensions."""
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return True
    return not parts[-1].lower().endswith(IMAGE_EXTENSIONS)


def _folder_files(root: Path) -> list[tuple[Parts, os.stat_result]]:
    """Image files under root as (relative parts, stat), sorted by parts."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not (d.startswith(".") or d == "__MACOSX"))
        rel = Path(dirpath).relative_to(root).parts
        for name in filenames:
            parts = rel + (name,)
            if not _skip(parts):
                found.append((parts, os.stat(os.path.join(dirpath, name))))
    return sorted(found, key=lambda item: item[0])


def _folder_fingerprint(root: Path) -> str:
    """sha256 of the sorted (relative path, size, mtime_ns) list of image files."""
    listing = [["/".join(parts), st.st_size, st.st_mtime_ns] for parts, st in _folder_files(root)]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def _file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _folder_entries(root: Path) -> dict[Parts, bytes | Path]:
    """Image files of a folder; contents are read lazily (only for the selected split)."""
    return {parts: root.joinpath(*parts) for parts, _ in _folder_files(root)}


def _archive_entries(path: Path) -> dict[Parts, bytes | Path]:
    """Image members of a tar archive, read in one streaming pass (no extraction to disk)."""
    entries: dict[Parts, bytes | Path] = {}
    try:
        with tarfile.open(path, mode="r|*") as tf:
            for member in tf:
                if not member.isfile():
                    continue
                parts = tuple(p for p in PurePosixPath(member.name).parts if p not in ("", ".", "/"))
                if not parts or ".." in parts or _skip(parts):
                    continue
                f = tf.extractfile(member)
                if f is not None:
                    entries[parts] = f.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise DataError(f"could not read archive {path}: {type(e).__name__}: {e}") from e
    return entries


# --- layout and decoding ---------------------------------------------------------------------


def _holds_class_folders(under: list[Parts], d: int, name: str) -> bool:
    """Whether folder `name` at depth d holds only subfolders of images (no loose images)."""
    inside = [p for p in under if p[d] == name]
    return bool(inside) and all(len(p) > d + 2 for p in inside)


def _select(paths: Iterable[Parts], split: str, where: str) -> tuple[tuple[str, ...], list[tuple[Parts, int]]]:
    """Find the class folders (descending into a split folder or a lone wrapper folder) and label files."""
    paths = sorted(paths)
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {where}")
    prefix: Parts = ()
    while True:
        d = len(prefix)
        under = [p for p in paths if p[:d] == prefix]
        dirs = sorted({p[d] for p in under if len(p) > d + 1})
        if split in dirs and _holds_class_folders(under, d, split):
            prefix += (split,)
        elif len(dirs) == 1 and all(len(p) > d + 1 for p in under) and _holds_class_folders(under, d, dirs[0]):
            prefix += (dirs[0],)
        else:
            break
    here = "/".join(prefix) or "top level"
    splits = [s for s in dirs if s in KNOWN_SPLITS and _holds_class_folders(under, d, s)]
    if len(splits) >= 2:
        raise DataError(f"{where} has split folders {splits} but no {split!r} folder with class subfolders; "
                        "pass split= one of them")
    loose = [p for p in under if len(p) == d + 1]
    if not dirs:
        raise DataError(
            f"{where}: {len(loose)} images at {here} but no class subfolders; "
            "put images in <root>/<class name>/<image> (one subfolder per class)"
        )
    if loose:
        warnings.warn(f"{where}: ignoring {len(loose)} images at {here} outside class subfolders", stacklevel=4)
    index = {name: i for i, name in enumerate(dirs)}
    chosen = [(p, index[p[d]]) for p in under if len(p) > d + 1]
    return tuple(dirs), chosen


def _square_resize(im: Image.Image, size: int) -> np.ndarray:
    """Center-crop to a square, resize to size x size, return (size, size, 3) uint8."""
    w, h = im.size
    if (w, h) != (size, size):
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side))
        if side != size:
            im = im.resize((size, size), _RESAMPLE)
    return np.asarray(im, dtype=np.uint8)


def _decode_image(data: bytes, name: str, image_size: int) -> np.ndarray:
    """Decode one image file's bytes to (image_size, image_size, 3) uint8 RGB."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")
    except Exception as e:  # PIL raises many types for bad data
        raise DataError(f"cannot decode image {name}: {type(e).__name__}: {e}") from e
    return _square_resize(rgb, image_size)


def _decode_selected(
    entries: dict[Parts, bytes | Path], split: str, image_size: int, where: str
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    classes, chosen = _select(entries, split, where)
    out = np.empty((len(chosen), image_size, image_size, 3), dtype=np.uint8)
    for i, (parts, _) in enumerate(chosen):
        item = entries[parts]
        name = str(item) if isinstance(item, Path) else f"{where}:{'/'.join(parts)}"
        data = item.read_bytes() if isinstance(item, Path) else item
        out[i] = _decode_image(data, name, image_size)
    images = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    labels = torch.tensor([label for _, label in chosen], dtype=torch.int64)
    return images, labels, classes


# --- cache -----------------------------------------------------------------------------------


def _cache_key(kind: str, fingerprint: str, image_size: int, split: str) -> str:
    spec = {"format": CACHE_FORMAT, "kind": kind, "content": fingerprint, "image_size": image_size, "split": split}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _cache_paths(cache: Path, key: str) -> tuple[Path, Path]:
    folder = cache / "decoded"
    return folder / f"{key}.safetensors", folder / f"{key}.json"


def _read_cache(cache: Path, key: str, image_size: int) -> ImageSet | None:
    """The cached ImageSet for key, or None when missing or unreadable (then it is rebuilt)."""
    tensors_path, meta_path = _cache_paths(cache, key)
    if not (tensors_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(tensors_path))
        images, labels = tensors["images"], tensors["labels"]
        classes = tuple(str(c) for c in meta["classes"])
        n = int(meta["count"])
        if images.dtype != torch.uint8 or tuple(images.shape) != (n, 3, image_size, image_size):
            raise ValueError(f"images {images.dtype} {tuple(images.shape)} do not match the metadata")
        if labels.dtype != torch.int64 or tuple(labels.shape) != (n,):
            raise ValueError(f"labels {labels.dtype} {tuple(labels.shape)} do not match the metadata")
        if n and not (0 <= int(labels.min()) and int(labels.max()) < len(classes)):
            raise ValueError("labels out of range of classes")
        return ImageSet(images, labels, classes, key)
    except Exception as e:
        warnings.warn(f"ignoring unreadable data cache {tensors_path} ({type(e).__name__}: {e}); rebuilding it",
                      stacklevel=3)
        return None


def _write_cache(cache: Path, result: ImageSet, *, source: str, image_size: int, split: str) -> None:
    """Store result under cache/decoded/; a failure only warns (the data is still returned)."""
    tensors_path, meta_path = _cache_paths(cache, result.content_hash)
    meta = {"classes": list(result.classes), "source": source, "image_size": image_size,
            "split": split, "count": len(result), "format": CACHE_FORMAT}
    tensors = {"images": result.images.contiguous(), "labels": result.labels.contiguous()}
    try:
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        # tensors first, JSON last: a cache entry counts only once both files exist.
        atomic_write(tensors_path, lambda tmp: save_file(tensors, str(tmp), metadata={"key": result.content_hash}))
        write_json(meta_path, meta)
    except Exception as e:  # caching is best effort
        warnings.warn(f"could not write data cache under {tensors_path.parent}: {e}", stacklevel=3)

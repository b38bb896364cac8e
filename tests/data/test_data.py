"""Tests for genstudio.data: sources, layout, decode cache, augmentation helpers (offline, tiny data)."""
from __future__ import annotations

import os
import tarfile
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genstudio import data
from genstudio.data import DataError, ImageSet, load_images, random_flip, to_model_range


def _noise(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def _center_marked(w: int = 48, h: int = 32) -> Image.Image:
    """Red left 8 columns, blue right 8 columns, green middle: a center crop keeps only green."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, :8] = (255, 0, 0)
    a[:, 8:-8] = (0, 255, 0)
    a[:, -8:] = (0, 0, 255)
    return Image.fromarray(a)


def make_folder(root: Path) -> Path:
    """root/{bird,cat,dog}/ with 2-3 lossless images each, of mixed sizes and modes, plus junk to skip."""
    for name in ("cat", "dog", "bird"):
        (root / name).mkdir(parents=True)
    _noise(32, 32, 0).save(root / "cat" / "a.png")
    _noise(32, 32, 1).save(root / "cat" / "b.PNG")  # upper-case extension
    _center_marked().save(root / "cat" / "c.png")  # 48x32 -> crop + resize
    _noise(32, 32, 2, "L").save(root / "dog" / "a.png")  # grayscale -> RGB
    _noise(16, 16, 3).save(root / "dog" / "b.bmp")  # upscaled
    _noise(32, 32, 4).save(root / "bird" / "a.png")
    (root / "bird" / "notes.txt").write_text("not an image")
    (root / "bird" / ".hidden.png").write_bytes(b"junk")
    (root / "bird" / "._a.png").write_bytes(b"junk")
    return root


def make_tar(folder: Path, out: Path, top: str = "train") -> Path:
    mode = "w:gz" if out.name.endswith(("gz", "tgz")) else "w"
    with tarfile.open(out, mode) as tf:
        tf.add(folder, arcname=top)
        junk = out.parent / "junk"
        junk.write_bytes(b"resource fork")
        tf.add(junk, arcname=f"__MACOSX/{top}/cat/._a.png")
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "imgs")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_folder_source(folder: Path, cache: Path) -> None:
    s = load_images(str(folder), cache_dir=cache)
    assert isinstance(s, ImageSet) and len(s) == 6
    assert s.images.dtype == torch.uint8 and s.images.shape == (6, 3, 32, 32)
    assert s.labels.dtype == torch.int64
    assert s.classes == ("bird", "cat", "dog")
    assert s.labels.tolist() == [0, 1, 1, 1, 2, 2]  # sorted by path: bird/a, cat/a, cat/b, cat/c, dog/a, dog/b
    cropped = s.images[3]  # cat/c.png, 48x32 center-cropped then resized
    assert (cropped[1] == 255).all() and (cropped[0] == 0).all() and (cropped[2] == 0).all()
    gray = s.images[4]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    first = np.array(_noise(32, 32, 4)).transpose(2, 0, 1)
    assert torch.equal(s.images[0], torch.from_numpy(first))
    assert len(s.content_hash) == 64


def test_image_size(folder: Path, cache: Path) -> None:
    s = load_images(folder, image_size=16, cache_dir=cache)
    assert s.images.shape == (6, 3, 16, 16)


@pytest.mark.parametrize("name", ["data.tar", "data.tar.gz", "data.tgz"])
def test_archive_matches_folder(folder: Path, cache: Path, tmp_path: Path, name: str) -> None:
    archive = make_tar(folder, tmp_path / name)
    a = load_images(str(archive), cache_dir=cache)
    f = load_images(str(folder), cache_dir=cache)
    assert a.classes == f.classes
    assert torch.equal(a.images, f.images) and torch.equal(a.labels, f.labels)


def test_split_subfolders(tmp_path: Path, cache: Path) -> None:
    make_folder(tmp_path / "ds" / "train")
    (tmp_path / "ds" / "test" / "x").mkdir(parents=True)
    _noise(32, 32, 9).save(tmp_path / "ds" / "test" / "x" / "only.png")
    assert len(load_images(tmp_path / "ds", split="train", cache_dir=cache)) == 6
    test = load_images(tmp_path / "ds", split="test", cache_dir=cache)
    assert test.classes == ("x",) and len(test) == 1
    with pytest.raises(DataError, match="split"):
        load_images(tmp_path / "ds", split="val", cache_dir=cache)


def test_second_load_uses_cache(folder: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_tar(folder, tmp_path / "d.tar.gz")
    first = {src: load_images(src, cache_dir=cache) for src in (str(folder), str(archive))}
    for s in first.values():
        assert (cache / "decoded" / f"{s.content_hash}.safetensors").is_file()
        assert (cache / "decoded" / f"{s.content_hash}.json").is_file()

    def boom(*args: object) -> None:
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(data, "_decode_image", boom)
    for src, s in first.items():
        again = load_images(src, cache_dir=cache)
        assert again.content_hash == s.content_hash and again.classes == s.classes
        assert torch.equal(again.images, s.images) and torch.equal(again.labels, s.labels)
    assert not list((cache / "decoded").glob(".tmp-*"))  # no temporary file of an atomic write left behind


def test_broken_cache_is_rebuilt(folder: Path, cache: Path) -> None:
    s = load_images(folder, cache_dir=cache)
    path = cache / "decoded" / f"{s.content_hash}.safetensors"
    path.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="rebuilding"):
        again = load_images(folder, cache_dir=cache)
    assert torch.equal(again.images, s.images)
    assert path.stat().st_size > 100  # rewritten
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_images(folder, cache_dir=cache)  # and now loads without a warning


def test_content_hash_tracks_data(folder: Path, cache: Path, tmp_path: Path) -> None:
    h0 = load_images(folder, cache_dir=cache).content_hash
    assert load_images(folder, cache_dir=cache, image_size=16).content_hash != h0
    target = folder / "cat" / "a.png"
    _noise(32, 32, 99).save(target)
    os.utime(target, ns=(1, 1))  # make sure the listing changes even on coarse-mtime filesystems
    changed = load_images(folder, cache_dir=cache)
    assert changed.content_hash != h0
    assert torch.equal(changed.images[1], torch.from_numpy(np.array(_noise(32, 32, 99)).transpose(2, 0, 1)))

    a1 = load_images(make_tar(folder, tmp_path / "a1.tar"), cache_dir=cache).content_hash
    _noise(32, 32, 100).save(target)
    assert load_images(make_tar(folder, tmp_path / "a2.tar"), cache_dir=cache).content_hash != a1


def test_corrupt_image_names_file(folder: Path, cache: Path, tmp_path: Path) -> None:
    (folder / "dog" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        load_images(folder, cache_dir=cache)
    with pytest.raises(DataError, match=r"dog/broken\.jpg"):
        load_images(make_tar(folder, tmp_path / "x.tar"), cache_dir=cache)


def test_bad_sources(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_images(tmp_path / "empty", cache_dir=cache)
    with pytest.raises(DataError, match="cifar10"):
        load_images(str(tmp_path / "nope"), cache_dir=cache)
    (tmp_path / "d.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match="unsupported"):
        load_images(tmp_path / "d.zip", cache_dir=cache)
    (tmp_path / "bad.tar.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="bad.tar.gz"):
        load_images(tmp_path / "bad.tar.gz", cache_dir=cache)
    loose = tmp_path / "loose"
    loose.mkdir()
    _noise(8, 8, 0).save(loose / "a.png")
    with pytest.raises(DataError, match="class subfolders"):
        load_images(loose, cache_dir=cache)
    with pytest.raises(DataError, match="image_size"):
        load_images(loose, cache_dir=cache, image_size=0)


def test_cifar10_not_downloaded(cache: Path) -> None:
    with pytest.raises(DataError, match="--data.source") as e:
        load_images("cifar10", cache_dir=cache, download=False)
    assert "tar.gz" in str(e.value) and "data.source =" in str(e.value)


def test_cifar10_download_fails(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match="download failed") as e:
        load_images("cifar10", cache_dir=cache)
    assert "--data.source" in str(e.value) and "class" in str(e.value)
    with pytest.raises(DataError, match="split"):
        load_images("cifar10", split="val", cache_dir=cache)


def test_random_flip() -> None:
    x = torch.arange(1000 * 2 * 4, dtype=torch.float32).reshape(1000, 1, 2, 4)
    y = random_flip(x, torch.Generator().manual_seed(0))
    assert torch.equal(y, random_flip(x, torch.Generator().manual_seed(0)))
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    kept = (y == x).flatten(1).all(1)
    assert (flipped ^ kept).all()  # every sample is either flipped or untouched
    assert 400 < int(flipped.sum()) < 600
    back = random_flip(y, torch.Generator().manual_seed(0))  # same draws flip the same samples back
    assert torch.equal(back, x)
    assert random_flip(x[:3]).shape == (3, 1, 2, 4)  # global RNG
    with pytest.raises(ValueError):
        random_flip(x[0])


def test_to_model_range() -> None:
    x = torch.tensor([0, 128, 255], dtype=torch.uint8).reshape(1, 3, 1, 1)
    y = to_model_range(x)
    assert y.dtype == torch.float32
    assert y.flatten().tolist()[0] == -1.0 and y.flatten().tolist()[2] == 1.0
    assert abs(y.flatten()[1].item() - 0.0039) < 1e-3
    with pytest.raises(TypeError):
        to_model_range(x.float())


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GENSTUDIO_CACHE", str(tmp_path / "c"))
    assert data.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("GENSTUDIO_CACHE")
    assert data.default_cache_dir() == Path.home() / ".cache" / "genstudio"


def test_genstudio_data_is_expanded_in_a_source(folder: Path, cache: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    (root / "cifar10").mkdir(parents=True)
    make_tar(folder, root / "cifar10" / "train.tar.gz")
    monkeypatch.setenv("GENSTUDIO_DATA", str(root))
    assert data.data_root() == root
    for text in ("$GENSTUDIO_DATA/cifar10/train.tar.gz", "${GENSTUDIO_DATA}/cifar10/train.tar.gz"):
        assert data.resolve_source(text) == str(root / "cifar10" / "train.tar.gz")
    for text in ("cifar10", "runs/pairs", "$GENSTUDIO_DATAX/a", "$HOME/x"):  # not ours: left as they are
        assert data.resolve_source(text) == text
    s = load_images("$GENSTUDIO_DATA/cifar10/train.tar.gz", cache_dir=cache)
    assert torch.equal(s.images, load_images(folder, cache_dir=cache).images)
    assert data.offline_cifar10("train") == root / "cifar10" / "train.tar.gz"
    assert data.offline_cifar10("test") is None  # not there
    with pytest.raises(DataError, match=r"\(= .*missing\.tar\.gz\)"):  # a missing file names both spellings
        load_images("$GENSTUDIO_DATA/missing.tar.gz", cache_dir=cache)


def test_unset_genstudio_data_says_how_to_set_it(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENSTUDIO_DATA", raising=False)
    with pytest.raises(DataError, match=r"GENSTUDIO_DATA is not set: export GENSTUDIO_DATA=/path/to/data") as e:
        load_images("$GENSTUDIO_DATA/cifar10/train.tar.gz", cache_dir=cache)
    assert "cifar10/train.tar.gz" in str(e.value)
    assert data.offline_cifar10() is None
    monkeypatch.setenv("GENSTUDIO_DATA", "")
    with pytest.raises(DataError, match="not set"):
        data.data_root()

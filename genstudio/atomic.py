"""Atomic writes: a file or folder either has its old content or its new one, never half of either.

Everything is written under a unique temporary name beside its destination (`.tmp-<name>-<uuid8>`, so
concurrent writers never share one and a crash leaves only names that start with `.tmp-`), flushed to
disk, then renamed into place in one `os.replace`; the parent folder is flushed after, so the rename
survives a power cut too. Files come out with permission 0o644 (caches may be shared between users).

    write_json(folder / "metrics.json", metrics)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))          # safetensors
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))          # PIL: name the format,
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))         # the temp name has no suffix
    with atomic_folder(dest) as tmp:                                       # a whole folder
        ...

Standard library only.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["fsync_tree", "atomic_folder", "atomic_write", "write_bytes", "write_text", "write_json", "read_jsonl",
           "temp_name", "FILE_MODE"]

FILE_MODE = 0o644


def temp_name(path: str | os.PathLike[str], kind: str = "tmp") -> Path:
    """A unique hidden sibling of `path`: `.<kind>-<name>-<uuid8>`."""
    path = Path(path)
    return path.parent / f".{kind}-{path.name}-{uuid.uuid4().hex[:8]}"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | os.PathLike[str], files: bool = True) -> None:
    """Flush a folder's files (and the folder entry itself) to disk, so a rename after it is durable."""
    folder = Path(folder)
    if files:
        for p in folder.rglob("*"):
            if p.is_file():
                _fsync_file(p)
    _fsync_dir(folder)


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside `final` (`.tmp-<name>-<uuid8>`); on success it is flushed and replaces
    `final` in one rename (an existing `final` is moved aside first and removed after). On an exception the
    temporary folder is removed and `final` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        old = None
        if final.exists():
            old = temp_name(final, "old")
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call `write(tmp)` with a unique temporary path beside `path` (no file exists there yet), then flush
    it, make it 0o644 and rename it onto `path`, and flush the folder. If `write` raises, `path` keeps its
    old content and the temporary file is removed. The temporary name does not end in `path`'s suffix:
    writers that guess a format from the name must be told it (PIL `format="PNG"`, savefig `format="png"`;
    `np.save` would append `.npy`, so hand it an open file instead)."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        write(tmp)
        if not tmp.is_file():
            raise FileNotFoundError(f"atomic_write: the writer did not create {tmp} (for {path})")
        os.chmod(tmp, FILE_MODE)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write bytes atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write JSON atomically: indent 2, keys in their order, a trailing newline. The text is made before
    anything is written, so data that is not JSON leaves no trace."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """The records of a JSON-lines log, skipping a line cut short by a crash (or otherwise unreadable)."""
    out = []
    for line in Path(path).read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out

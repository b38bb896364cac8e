"""Atomic writes: a file or folder either has its old content or its new one, never half of either.

Everything is written under a unique temporary name beside its destination (`.tmp-<name>-<uuid8>`, so
concurrent writers never share one and a crash leaves only names that start with `.tmp-` or `.old-`), flushed
to disk, then renamed into place in one `os.replace`; the parent folder is flushed after, so the rename
survives a power cut too. Files come out with permission 0o644 (caches may be shared between users).

A folder cannot replace a non-empty folder in one rename, so `atomic_folder` swaps in two: the old folder is
moved aside to `.old-<name>-<uuid8>` (the same uuid8 as its `.tmp-`), then the new one is renamed into place.
A process killed between the two leaves no `<name>` at all; `recover_folder(dest)` (run by every
`atomic_folder(dest)` before it starts, and by the trainer at start) finishes such a swap (the new folder was
complete and flushed before the old one moved) or, with no new folder to finish it, puts the old one back,
and removes the leftovers of writers that died. A writer holds an `flock` on its temporary folder while it
lives, so the leftovers of live writers are never touched.

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
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover  (Windows: no flock; see recover_folder)
    fcntl = None  # type: ignore[assignment]

__all__ = ["fsync_tree", "atomic_folder", "recover_folder", "atomic_write", "write_bytes", "write_text", "write_json",
           "read_jsonl", "temp_name", "FILE_MODE"]

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


_TOKEN = re.compile(r"[0-9a-f]{8}")


def _open_dir(folder: Path) -> int | None:
    try:
        return os.open(folder, os.O_RDONLY)
    except OSError:
        return None


def _hold(folder: Path) -> int | None:
    """An fd holding an exclusive flock on `folder` until it is closed (or the process dies); None where this
    filesystem (or platform) has no flock."""
    fd = _open_dir(folder)
    if fd is None or fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass  # no flock here: the folder stays unheld (see recover_folder's `owner`)
    return fd


def _probe(folder: Path) -> tuple[str, int | None]:
    """("dead", fd holding its lock) if no live process holds `folder`'s flock, ("live", None) if one does,
    ("unknown", None) where flock is unsupported, ("gone", None) if it vanished."""
    fd = _open_dir(folder)
    if fd is None:
        return "gone", None
    if fcntl is None:
        os.close(fd)
        return "unknown", None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return "live", None
    except OSError:
        os.close(fd)
        return "unknown", None
    return "dead", fd


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def recover_folder(final: str | os.PathLike[str], owner: bool = False) -> list[str]:
    """Repair what killed `atomic_folder(final)` writers left beside `final`; returns one line per repair.

    - `final` missing, a dead writer's `.old-` and `.tmp-` both there (killed between the two renames): its new
      folder was complete and flushed before the old one moved aside, so the swap is finished.
    - `final` missing, only an `.old-` (its new folder is gone): the old folder is put back.
    - every other `.tmp-<name>-*` / `.old-<name>-*` of a dead writer is removed.

    Writers that are alive (they hold an flock on their `.tmp-` folder) are left alone, and while one of them
    is between its two renames `final` is not touched. Where the filesystem has no flock, liveness cannot be
    told: those leftovers count as live unless `owner` says the caller is the only writer of `final` (a trainer
    in its own run folder)."""
    final = Path(final)
    parent, name = final.parent, final.name
    if not parent.is_dir():
        return []
    parts: dict[str, dict[str, Path]] = {}
    for kind in ("tmp", "old"):
        prefix = f".{kind}-{name}-"
        with os.scandir(parent) as entries:
            for entry in entries:
                token = entry.name[len(prefix):]
                if entry.name.startswith(prefix) and _TOKEN.fullmatch(token) and entry.is_dir(follow_symlinks=False):
                    parts.setdefault(token, {})[kind] = Path(entry.path)
    if not parts:
        return []
    done: list[str] = []
    held: list[int] = []
    try:
        dead: dict[str, dict[str, Path]] = {}
        swapping = False  # a live writer is between its two renames: `final` is its business
        for token, found in sorted(parts.items()):
            if "tmp" in found:
                status, fd = _probe(found["tmp"])
                if fd is not None:
                    held.append(fd)
                if status == "live" or (status == "unknown" and not owner):
                    swapping |= "old" in found
                    continue
            dead[token] = found
        if not final.exists() and not swapping:
            both = [f for f in dead.values() if "tmp" in f and "old" in f and f["tmp"].is_dir()]
            olds = [f for f in dead.values() if "old" in f]
            if both:
                found = max(both, key=lambda f: _mtime(f["tmp"]))
                os.replace(found.pop("tmp"), final)
                done.append(f"{final}: finished an interrupted swap (the new folder was complete)")
            elif olds:
                found = max(olds, key=lambda f: _mtime(f["old"]))
                os.replace(found.pop("old"), final)
                done.append(f"{final}: put the old folder back (an interrupted swap left nothing newer)")
            if done:
                _fsync_dir(parent)
        for found in dead.values():
            for path in found.values():
                if path.exists():
                    shutil.rmtree(path, ignore_errors=True)
                    done.append(f"removed {path.name} (left by an interrupted write of {name})")
    finally:
        for fd in held:
            os.close(fd)
    return done


def _new_tmp(final: Path) -> tuple[Path, int | None]:
    """A fresh `.tmp-` folder beside `final`, held by this process (a recovery that removed it between the
    mkdir and the lock makes us start over under a new name)."""
    while True:
        tmp = temp_name(final)
        tmp.mkdir()
        fd = _hold(tmp)
        try:
            if fd is not None and os.path.samestat(os.fstat(fd), os.stat(tmp)):
                return tmp, fd
        except FileNotFoundError:
            pass
        if fd is not None:
            os.close(fd)
        if fd is None and tmp.is_dir():
            return tmp, None


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside `final` (`.tmp-<name>-<uuid8>`); on success it is flushed and replaces
    `final`: an existing `final` is moved aside to `.old-<name>-<uuid8>`, the temporary folder renamed into
    place, then the old one removed. On an exception the temporary folder is removed and `final` is left as it
    was (put back if the exception came between the two renames). What killed writers left is repaired first
    (`recover_folder`)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(final)
    tmp, fd = _new_tmp(final)
    try:
        yield tmp
        fsync_tree(tmp)
        old = None
        if final.exists():
            old = final.parent / f".old-{tmp.name[len('.tmp-'):]}"
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            if old is not None:
                with contextlib.suppress(OSError):
                    os.replace(old, final)
            raise
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if fd is not None:
            os.close(fd)


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

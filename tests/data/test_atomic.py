"""genstudio.atomic: every file and folder is replaced whole, or not at all."""
from __future__ import annotations

import json
import os
import stat

import pytest

from genstudio import atomic


def test_temp_names_are_unique_and_beside_the_destination(tmp_path):
    seen = []
    for _ in range(20):
        atomic.atomic_write(tmp_path / "out.bin", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"x")))
    assert len(set(seen)) == 20
    assert all(t.parent == tmp_path and t.name.startswith(".tmp-out.bin-") for t in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_written_file_is_whole_readable_by_others_and_json_is_formatted(tmp_path):
    path = atomic.write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "b": 1,\n  "a": [\n    1,\n    2\n  ]\n}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert atomic.write_text(tmp_path / "t.txt", "héllo").read_text(encoding="utf-8") == "héllo"
    assert atomic.write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_behind(tmp_path):
    path = atomic.write_text(tmp_path / "keep.txt", "old")

    def half_then_crash(tmp):
        tmp.write_text("new but cut sh")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic.atomic_write(path, half_then_crash)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C as well
        atomic.atomic_write(path, lambda tmp: (tmp.write_text("x"), (_ for _ in ()).throw(KeyboardInterrupt)))
    with pytest.raises(TypeError):  # not JSON: nothing is written at all
        atomic.write_json(path, {"x": object()})
    with pytest.raises(FileNotFoundError, match="did not create"):
        atomic.atomic_write(path, lambda tmp: None)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_the_folder_swap_replaces_an_existing_folder_in_one_rename(tmp_path):
    dest = tmp_path / "ckpt"
    with atomic.atomic_folder(dest) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".tmp-ckpt-") and not dest.exists()
        (tmp / "a.txt").write_text("first")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("first")
    with atomic.atomic_folder(dest) as tmp:
        (tmp / "c.txt").write_text("second")
        assert (dest / "a.txt").read_text() == "first"  # the old folder stays whole until the swap
    assert sorted(p.name for p in dest.iterdir()) == ["c.txt"]  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no .tmp- or .old- folder left


def test_a_failure_inside_the_folder_block_leaves_the_old_folder(tmp_path):
    dest = tmp_path / "ckpt"
    with atomic.atomic_folder(dest) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic.atomic_folder(dest) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash")
    assert (dest / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_fsync_tree_flushes_every_file_and_the_folder(tmp_path, monkeypatch):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_bytes(b"1")
    (tmp_path / "g").write_bytes(b"2")
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)
    monkeypatch.setattr(os, "fsync", spy)
    atomic.fsync_tree(tmp_path)
    assert sorted(synced) == sorted([str(tmp_path / "x" / "f"), str(tmp_path / "g"), str(tmp_path)])
    synced.clear()
    atomic.fsync_tree(tmp_path, files=False)
    assert synced == [str(tmp_path)]


def test_read_jsonl_skips_a_line_cut_short_by_a_crash(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": i, "loss": 1.0 / (i + 1), "note": "é"}, ensure_ascii=False) for i in range(3)]
    cut = json.dumps({"step": 3, "note": "é"}, ensure_ascii=False).encode()[:-3]  # inside the UTF-8 of "é"
    path.write_bytes(("\n".join(lines) + "\n").encode() + cut)
    assert [r["step"] for r in atomic.read_jsonl(path)] == [0, 1, 2]
    path.write_text("\n".join(lines) + "\n\n")  # blank lines too
    assert len(atomic.read_jsonl(path)) == 3


# -- a writer killed inside the folder swap: every window, hit exactly (os._exit in a child at a chosen call) --

_KILLER = r"""
import os, shutil, sys
from pathlib import Path
from genstudio import atomic

dest, window = Path(sys.argv[1]), sys.argv[2]
real_replace, real_rmtree = os.replace, shutil.rmtree
replaces = []

def replace(src, dst):
    replaces.append(1)
    if window == "before-aside" and len(replaces) == 1:
        os._exit(9)
    real_replace(src, dst)
    if window == "between-renames" and len(replaces) == 1:
        os._exit(9)
    if window == "after-swap" and len(replaces) == 2:
        os._exit(9)

def rmtree(path, ignore_errors=False):
    if window == "removing-old" and Path(path).name.startswith(".old-"):
        (Path(path) / "a.txt").unlink()  # half removed
        os._exit(9)
    real_rmtree(path, ignore_errors=ignore_errors)

os.replace, atomic.shutil.rmtree = replace, rmtree
with atomic.atomic_folder(dest) as tmp:
    (tmp / "a.txt").write_text("second")
    if window == "in-block":
        os._exit(9)
"""


def _killed_write(dest, window):
    import subprocess
    import sys

    from tests.helpers import ROOT

    res = subprocess.run([sys.executable, "-c", _KILLER, str(dest), window], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert res.returncode == 9, res.stderr  # killed where asked, not by an error


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("window, left, after", [
    ("in-block", [".tmp-", "ckpt"], "first"),               # killed while writing: the old folder stays
    ("before-aside", [".tmp-", "ckpt"], "first"),           # new folder flushed, nothing renamed yet
    ("between-renames", [".old-", ".tmp-"], "second"),      # no ckpt at all: the swap is finished
    ("after-swap", [".old-", "ckpt"], "second"),            # the old folder was never removed
    ("removing-old", [".old-", "ckpt"], "second"),          # ... or half removed
])
@pytest.mark.parametrize("repair", ["next-write", "recover"])
def test_a_writer_killed_anywhere_in_the_swap_is_repaired_next_time(tmp_path, window, left, after, repair):
    dest = tmp_path / "ckpt"
    with atomic.atomic_folder(dest) as tmp:
        (tmp / "a.txt").write_text("first")
    _killed_write(dest, window)
    assert [n if n == "ckpt" else n[:5] for n in _names(tmp_path)] == left
    if repair == "recover":
        done = atomic.recover_folder(dest)
        assert done and _names(tmp_path) == ["ckpt"]
        assert (dest / "a.txt").read_text() == after
    else:  # the next atomic_folder call for the same destination repairs it first
        with atomic.atomic_folder(dest) as tmp:
            assert (dest / "a.txt").read_text() == after
            (tmp / "a.txt").write_text("third")
        assert _names(tmp_path) == ["ckpt"] and (dest / "a.txt").read_text() == "third"


def test_a_first_write_killed_before_its_rename_leaves_nothing(tmp_path):
    dest = tmp_path / "ckpt"
    _killed_write(dest, "before-aside")
    assert [n[:5] for n in _names(tmp_path)] == [".tmp-"]
    atomic.recover_folder(dest)
    assert _names(tmp_path) == []  # nothing was ever committed: nothing appears


def test_an_old_folder_with_nothing_newer_is_put_back(tmp_path):
    (tmp_path / ".old-ckpt-0123abcd").mkdir()
    (tmp_path / ".old-ckpt-0123abcd" / "a.txt").write_text("first")
    assert atomic.recover_folder(tmp_path / "ckpt") == [f"{tmp_path / 'ckpt'}: put the old folder back "
                                                        f"(an interrupted swap left nothing newer)"]
    assert _names(tmp_path) == ["ckpt"] and (tmp_path / "ckpt" / "a.txt").read_text() == "first"


def test_live_writers_and_neighbours_are_left_alone(tmp_path):
    dest = tmp_path / "ckpt"
    with atomic.atomic_folder(dest) as tmp:
        (tmp / "a.txt").write_text("first")
    slow = atomic.atomic_folder(dest)  # a writer that is still writing
    slow_tmp = slow.__enter__()
    (slow_tmp / "a.txt").write_text("slow")
    (tmp_path / "ckpt-b").mkdir()
    (tmp_path / ".tmp-ckpt-b-0123abcd").mkdir()  # another destination's leftovers: not ours to remove
    assert atomic.recover_folder(dest) == []
    with atomic.atomic_folder(dest) as tmp:  # a second writer meanwhile
        (tmp / "a.txt").write_text("fast")
    assert slow_tmp.is_dir() and (dest / "a.txt").read_text() == "fast"
    slow.__exit__(None, None, None)
    assert (dest / "a.txt").read_text() == "slow"
    assert _names(tmp_path) == [".tmp-ckpt-b-0123abcd", "ckpt", "ckpt-b"]


def test_a_live_writer_between_its_renames_keeps_the_destination_to_itself(tmp_path):
    dest = tmp_path / "ckpt"
    tmp, old = tmp_path / ".tmp-ckpt-0123abcd", tmp_path / ".old-ckpt-0123abcd"
    for folder, text in ((tmp, "second"), (old, "first")):
        folder.mkdir()
        (folder / "a.txt").write_text(text)
    fd = atomic._hold(tmp)  # its writer is alive (the lock dies with it)
    try:
        assert atomic.recover_folder(dest) == [] and not dest.exists()
    finally:
        os.close(fd)
    atomic.recover_folder(dest)  # now it is dead: its swap is finished
    assert _names(tmp_path) == ["ckpt"] and (dest / "a.txt").read_text() == "second"


def test_without_flock_leftovers_count_as_live_unless_the_caller_owns_the_folder(tmp_path, monkeypatch):
    dest = tmp_path / "ckpt"
    with atomic.atomic_folder(dest) as tmp:
        (tmp / "a.txt").write_text("first")
    _killed_write(dest, "between-renames")
    monkeypatch.setattr(atomic, "fcntl", None)
    assert atomic.recover_folder(dest) == [] and not dest.exists()
    assert atomic.recover_folder(dest, owner=True)
    assert _names(tmp_path) == ["ckpt"] and (dest / "a.txt").read_text() == "second"


def test_an_error_between_the_two_renames_puts_the_old_folder_back(tmp_path, monkeypatch):
    dest = tmp_path / "ckpt"
    with atomic.atomic_folder(dest) as tmp:
        (tmp / "a.txt").write_text("first")
    real, calls = os.replace, []

    def failing_second(src, dst):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk gone")
        real(src, dst)
    monkeypatch.setattr(os, "replace", failing_second)
    with pytest.raises(OSError, match="disk gone"):
        with atomic.atomic_folder(dest) as tmp:
            (tmp / "a.txt").write_text("second")
    assert _names(tmp_path) == ["ckpt"] and (dest / "a.txt").read_text() == "first"

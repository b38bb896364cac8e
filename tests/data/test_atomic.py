"""genstudio.atomic: every file and folder is replaced whole, or not at all."""
from __future__ import annotations

import json
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


def test_fsync_tree_flushes_a_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_bytes(b"1")
    atomic.fsync_tree(tmp_path)
    atomic.fsync_tree(tmp_path, files=False)


def test_read_jsonl_skips_a_line_cut_short_by_a_crash(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": i, "loss": 1.0 / (i + 1), "note": "é"}, ensure_ascii=False) for i in range(3)]
    cut = json.dumps({"step": 3, "note": "é"}, ensure_ascii=False).encode()[:-3]  # inside the UTF-8 of "é"
    path.write_bytes(("\n".join(lines) + "\n").encode() + cut)
    assert [r["step"] for r in atomic.read_jsonl(path)] == [0, 1, 2]
    path.write_text("\n".join(lines) + "\n\n")  # blank lines too
    assert len(atomic.read_jsonl(path)) == 3

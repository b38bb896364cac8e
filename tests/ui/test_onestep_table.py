"""The Models tab's one-step table: rendered from the record beside the checkpoints (every row, the protocol, the
hardware), a pointer to the command when there is none or it is unreadable, and the shipped record agrees with the
shipped models' own cards."""
from __future__ import annotations

import json
import math
from pathlib import Path

from tests.helpers import ROOT
from ui.onestep import FILE, onestep_table


def row(method, nfe, fid, **extra):
    return {"method": method, "sampler": "decode, 1", "nfe": nfe, "fid": fid, "ratio": fid / 700.0, "is_mean": 5.0,
            "class_accuracy": 0.25, "kid_mean": 400.0, "images": 2064, "wall_s": 567.4, **extra}


def test_table_shows_every_row_with_protocol_and_hardware(tmp_path):
    (tmp_path / "a").mkdir()
    record = {"protocol": "c10 classifier features, n = 10,000", "hardware": "a CPU",
              "rows": [row("teacher", 10, 700.0), row("Score Mismatching", 1, 1050.0, shipped="sm_cifar10")]}
    (tmp_path / FILE).write_text(json.dumps(record))
    table = onestep_table([str(tmp_path / "a")])
    assert "n = 10,000" in table and "hardware: a CPU" in table
    assert "| Score Mismatching | decode, 1 | 1 | 1050.0 | 1.50 | 5.00 | 0.250 | 400.0 | 2,064 |" in table
    assert table.count("\n| ") == 4 and "sm_cifar10 |" in table  # header, rule, two rows


def test_no_record_or_a_corrupt_one_points_to_the_command(tmp_path):
    (tmp_path / "a").mkdir()
    assert "bench/onestep_compare.sh" in onestep_table([str(tmp_path / "a")])
    (tmp_path / FILE).write_text("{not json")
    assert "bench/onestep_compare.sh" in onestep_table([str(tmp_path / "a")])
    (tmp_path / FILE).write_text(json.dumps({"rows": [{"method": "x"}]}))  # fields missing
    assert "bench/onestep_compare.sh" in onestep_table([str(tmp_path / "a")])


def test_shipped_record_matches_the_shipped_cards():
    """Each row marked as shipped has the same FID in that checkpoint's metrics.json, on the same sampler and NFE."""
    record = json.loads((ROOT / "checkpoints" / FILE).read_text())
    shipped = [r for r in record["rows"] if r.get("shipped")]
    assert len({r["method"] for r in record["rows"]}) == 7  # the teacher and six routes
    assert shipped
    for r in shipped:
        scores = json.loads((ROOT / "checkpoints" / r["shipped"] / "metrics.json").read_text())["scores"]
        same = [s for s in scores if s["nfe"] == r["nfe"] and s["n"] == 10_000
                and math.isclose(s["metrics"]["fid"], r["fid"], rel_tol=1e-9)]
        assert same, f"{r['shipped']}: no score at NFE {r['nfe']} with FID {r['fid']:.1f}"
        assert Path(ROOT / "checkpoints" / r["shipped"] / "genstudio.json").is_file()

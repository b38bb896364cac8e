"""The Models tab's one-step table: the comparison of one-step routes from one teacher on one budget
(`bench/onestep_compare.sh`, written to checkpoints/onestep_comparison.json by bench/onestep_table.py --json)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FILE = "onestep_comparison.json"
COLUMNS = ("method | sampler, steps | NFE | FID (c10) | FID / teacher | IS (c10) | class acc. | KID (c10) "
           "| student images | teacher's part | starts from | train wall (s) | shipped as")


def markdown(record: dict[str, Any]) -> str:
    """The comparison as a markdown table with its protocol line."""
    lines = [f"{record['protocol']}", "", f"| {COLUMNS} |", "|" + " --- |" * (COLUMNS.count("|") + 1)]
    for r in record["rows"]:
        wall = "" if r.get("wall_s") is None else f"{r['wall_s']:.0f}"
        images = "" if r.get("images") is None else f"{r['images']:,}"
        lines.append(f"| {r['method']} | {r['sampler']} | {r['nfe']} | {r['fid']:.1f} | {r['ratio']:.2f} "
                     f"| {r['is_mean']:.2f} | {r['class_accuracy']:.3f} | {r['kid_mean']:.1f} | {images} "
                     f"| {r.get('teacher_use', '')} | {r.get('start', '')} | {wall} | {r.get('shipped', '')} |")
    return "\n".join(lines + ["", f"hardware: {record['hardware']}"])


def onestep_table(checkpoints: list[str]) -> str:
    """The comparison beside the served checkpoints (their folder's onestep_comparison.json), or a pointer to the
    command that makes one."""
    for folder in dict.fromkeys(Path(c).parent for c in checkpoints):
        try:
            record = json.loads((folder / FILE).read_text())
            return "### One step: six routes from one teacher, one budget\n\n" + markdown(record)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return "**One-step comparison**: none recorded beside these checkpoints (`bash bench/onestep_compare.sh RUN`)."

"""A model's training lineage: one segment per run that trained it (the first from scratch or from `init_from`,
each later one continued from the previous export, on any machine). The training record a checkpoint carries
(genstudio.json `training`, the card's metrics.json `training`) holds the lineage and, at its top level, the
totals a card shows: the sums of the segments' steps, images seen, wall time and skipped steps.

A record written before lineages existed (every checkpoint shipped before them) reads as a one-segment lineage.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

SUMMED = ("steps", "images_seen", "wall_time_s", "skipped_steps")  # a record's totals: sums over the lineage
LATEST = ("processes", "torch", "precision", "batch_size", "config")  # a record's top level: the last segment's
CARD_FIELDS = ("note", "recipe")  # what an older card (metrics.json) said of its one segment


def precision(mixed_precision: str) -> str:
    """A segment's precision from train.mixed_precision: fp32, bf16 or fp16."""
    return {"no": "fp32"}.get(mixed_precision, mixed_precision)


def segments(training: dict[str, Any] | None, card: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The lineage of a training record. A record without one is one segment: its own fields, its precision and
    global batch size read from its config (its commit is unknown), and the note and recipe of its card if given."""
    training = training or {}
    if isinstance(training.get("lineage"), list):
        return [dict(s) for s in training["lineage"]]
    if not training:
        return []
    segment = {k: v for k, v in training.items() if k != "lineage"}
    tc = (segment.get("config") or {}).get("train") or {}
    if isinstance(tc.get("mixed_precision"), str):
        segment.setdefault("precision", precision(tc["mixed_precision"]))
    if "batch_size" in tc:
        segment.setdefault("batch_size", int(tc["batch_size"]) * int(tc.get("grad_accum", 1))
                           * int(segment.get("processes", 1)))
    for key in CARD_FIELDS:
        if card and isinstance(card.get(key), str):
            segment.setdefault(key, card[key])
    return [segment]


def record(lineage: list[dict[str, Any]]) -> dict[str, Any]:
    """The training record of a lineage: the totals, the last segment's settings, every hardware, the lineage."""
    last = lineage[-1]
    out: dict[str, Any] = {k: sum(s.get(k) or 0 for s in lineage) for k in SUMMED}
    out["wall_time_s"] = round(out["wall_time_s"], 1)
    out["hardware"] = " + ".join(dict.fromkeys(str(s["hardware"]) for s in lineage if s.get("hardware")))
    out.update({k: last[k] for k in LATEST if k in last})
    out["segments"] = len(lineage)
    out["lineage"] = lineage
    return out


def extend(training: dict[str, Any] | None, segment: dict[str, Any],
           card: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of `training`'s lineage with `segment` appended."""
    return record(segments(training, card) + [segment])


def commit() -> str | None:
    """The git commit of the genstudio source running now ("+dirty" when tracked files differ from it); None
    outside a git checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "genstudio", "samplers"],
                               capture_output=True, timeout=10).returncode
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")

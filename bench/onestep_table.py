"""The one-step comparison's table (bench/onestep_compare.sh): one row per method and NFE from RUN/eval_*.json and
each model's training record, FID relative to the teacher's 10-NFE FID on the same protocol; --ship copies a
method's scored export into checkpoints/ with its scores recorded on its card.

    python bench/onestep_table.py RUN_DIR [--json checkpoints/onestep_comparison.json] [--ship METHOD=NAME ...]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from genstudio.atomic import write_json
from genstudio.evaluation.records import record_scores, redraw_plot
from ui.onestep import markdown

# method folder -> (label, how the teacher is used, the student's starting point); PAIRS: trained on the teacher's pairs
PAIRS = {"distill", "caf"}
METHODS = {
    "score_mismatching": ("Score Mismatching", "initializes G and D", "teacher"),
    "sign": ("SIGN-style", "score in the matching term", "teacher"),
    "ect": ("ECT", "none (tuned from edm_small_cifar10)", "edm_small_cifar10"),
    "cd": ("consistency distillation", "one Heun step per image", "edm_small_cifar10"),
    "distill": ("reflow distillation (k = 1)", "pairs (dpmpp_2m, 10 NFE)", "teacher"),
    "caf": ("CAF", "pairs (dpmpp_2m, 10 NFE)", "teacher"),
}


def training(folder: Path) -> dict[str, Any]:
    """The training record of an exported model (the last segment when it trained in several)."""
    record = json.loads((folder / "model" / "genstudio.json").read_text()).get("training", {})
    return record[-1] if isinstance(record, list) else record


def pairs_seconds(run: Path) -> float | None:
    """Wall time of the teacher's pairs (RUN/pairs_seconds, written by bench/onestep_compare.sh)."""
    path = run / "pairs_seconds"
    return float(path.read_text()) if path.is_file() else None


def rows(run: Path, shipped: dict[str, str]) -> list[dict[str, Any]]:
    teacher = json.loads((run / "eval_teacher_10.json").read_text())
    base = teacher["metrics"]["fid"]
    out = [{"method": "teacher: flow_small_cifar10", "sampler": f"{teacher['protocol']['sampler']}, 10",
            "nfe": teacher["protocol"]["nfe"], **teacher["metrics"], "ratio": 1.0, "images": None,
            "teacher_use": "", "start": "", "wall_s": None, "hardware": "",
            "shipped": "flow_small_cifar10"}]
    for name, (label, use, start) in METHODS.items():
        record = training(run / name) if (run / name / "model").is_dir() else {}
        wall = record.get("wall_time_s")
        if wall is not None and name in PAIRS:
            wall += pairs_seconds(run) or 0.0
        for result in sorted(run.glob(f"eval_{name}_*.json")):
            score = json.loads(result.read_text())
            p = score["protocol"]
            out.append({"method": label, "sampler": f"{p['sampler']}, {p['steps']}", "nfe": p["nfe"],
                        **score["metrics"], "ratio": score["metrics"]["fid"] / base,
                        "images": record.get("images_seen"), "teacher_use": use, "start": start,
                        "wall_s": wall,
                        "hardware": record.get("hardware", ""), "shipped": shipped.get(name, "")})
    return out


def ship(run: Path, method: str, folder: Path) -> None:
    """Copy RUN/METHOD/export (what was scored: the same weights, by hash) to `folder` and record its scores there,
    each protocol naming the shipped folder, with an FID-vs-NFE plot."""
    if folder.exists():
        raise SystemExit(f"{folder} exists: remove it first")
    shutil.copytree(run / method / "export", folder)
    results = [json.loads(p.read_text()) for p in sorted(run.glob(f"eval_{method}_*.json"))]
    for r in results:
        r["protocol"]["checkpoint"].update(path=str(folder), name=folder.name)
    record_scores(folder, results)
    redraw_plot(folder, results[0]["protocol"]["extractor"]["weights_sha256"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--json", type=Path, default=None, help="also write the record (the studio's Models tab reads "
                    "checkpoints/onestep_comparison.json)")
    ap.add_argument("--ship", nargs="*", default=[], metavar="METHOD=NAME",
                    help="copy a method's model to checkpoints/NAME with its scores, e.g. distill=flow_distill_cifar10")
    args = ap.parse_args()
    shipped = dict(item.split("=", 1) for item in args.ship)
    for method, name in shipped.items():
        ship(args.run, method, Path("checkpoints") / name)
    table = rows(args.run, shipped)
    p = json.loads((args.run / "eval_teacher_10.json").read_text())["protocol"]
    record = {"protocol": f"c10 classifier features, n = {p['n']:,} (seeds 0..{p['n'] - 1}, labels i % 10, guidance "
                          f"{p['guidance']}), {p['precision']} sampling, against the {p['reference']['split']} split "
                          f"({p['reference']['n']:,}); FID / teacher: over the teacher's 10-NFE FID on this protocol.",
              "hardware": "; ".join(sorted({r["hardware"] for r in table if r["hardware"]})), "rows": table}
    print(markdown(record))
    if args.json:
        write_json(args.json, record)


if __name__ == "__main__":
    main()

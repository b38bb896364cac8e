"""Scores recorded in a checkpoint's card (metrics.json, "scores"): one record per protocol, re-measured by
`rescore` when the c10 classifier changes, and the card's FID-vs-NFE plot redrawn from them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..atomic import atomic_write, write_json

__all__ = ["record_scores", "record_section", "rescore", "measure", "redraw_plot", "protocol_key"]


def _score_key(record: dict[str, Any]) -> str:
    """The protocol minus what varies between identical runs (wall times, dates, paths): one record each."""
    from .metrics import VOLATILE

    p = record["protocol"]
    return json.dumps({k: v for k, v in p.items() if k not in VOLATILE}, sort_keys=True, default=str)


def protocol_key(record: dict[str, Any]) -> tuple:
    """What a score record is matched on across two cards (e.g. a Neon model's scores and its base's): sampler,
    steps, precision, first seed, n."""
    p = record.get("protocol", {})
    return (record.get("sampler"), record.get("steps"), p.get("precision"), p.get("seeds", {}).get("first"),
            record.get("n"))


def record_scores(folder: str | Path, results: list[dict[str, Any]], plot: str | Path | None = None,
                  replace: list[dict[str, Any]] = ()) -> Path:
    """Add evaluator results (genstudio.evaluate's dicts, or sweep cells) to the checkpoint's metrics.json
    under "scores", one record per protocol (a rerun with the same protocol replaces its record; so do the
    records in `replace`); copy `plot` (an FID-vs-NFE PNG) beside it as fid_vs_nfe.png. Written atomically."""
    folder = Path(folder)
    path = folder / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    old = metrics.get("scores")
    gone = {_score_key(x) for x in replace}
    records = [x for x in old if _score_key(x) not in gone] if isinstance(old, list) else []
    for r in results:
        p = r["protocol"]
        record = {"sampler": p.get("sampler"), "steps": p.get("steps"), "nfe": p.get("nfe"),
                  "guidance": p.get("guidance"), "n": p.get("n"), "quick": p.get("quick"),
                  "extractor": (p.get("extractor") or {}).get("label"),
                  "metrics": r["metrics"], "labels": r["labels"], "protocol": p}
        records = [x for x in records if _score_key(x) != _score_key(record)] + [record]
    metrics["scores"] = sorted(records, key=lambda x: (str(x["sampler"]), x["nfe"] or 0, x["guidance"] or 0))
    write_json(path, metrics)
    if plot is not None:
        atomic_write(folder / "fid_vs_nfe.png", lambda tmp: shutil.copyfile(plot, tmp))
    return path


def record_section(folder: str | Path, key: str, value: Any) -> Path:
    """Set one top-level section of the checkpoint's metrics.json (e.g. "audit"), keeping the rest; written
    atomically. "scores" belongs to `record_scores`."""
    if key == "scores":
        raise ValueError('"scores" is written by record_scores, one record per protocol')
    path = Path(folder) / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics[key] = value
    write_json(path, metrics)
    return path


def rescore(folder: str | Path, *, classifier: str | Path | None = None, drop_quick: bool = False,
            reference: str | None = None, log=print, **evaluator: Any) -> dict[str, int]:
    """Bring a checkpoint's recorded c10 scores up to date with the classifier at `classifier` (default: the
    shipped one): every record scored with other classifier weights is measured again under its own protocol
    (sampler, steps, grid, guidance, options, precision, n, seeds, metrics, reference) and replaces the old
    record; with `drop_quick`, stale quick records (n below the standard) are removed instead. The samples
    go through the sample cache, so images kept from an earlier run are scored without sampling again.
    Records of another model (a different checkpoint hash) or with given labels are left as they are.
    `reference` reads the reference images from another place (e.g. a copy on another machine): their
    content hash must equal the recorded one, and the new record keeps the recorded source (the place read
    is noted as `read_from`). `evaluator`: further Evaluator options (device, cache_dir,
    progress, batch_size). Returns counts."""
    from .classifier import weights_hash
    from .metrics import checkpoint_hash

    folder = Path(folder)
    current, model = weights_hash(classifier), checkpoint_hash(folder)
    path = folder / "metrics.json"
    records = json.loads(path.read_text()).get("scores", []) if path.is_file() else []
    counts = {"rescored": 0, "dropped": 0, "current": 0, "left": 0}
    for record in records:
        p = record["protocol"]
        ext = p.get("extractor") or {}
        if ext.get("kind") != "c10" or ext.get("weights_sha256") == current:
            counts["current" if ext.get("kind") == "c10" else "left"] += 1
            continue
        if p["checkpoint"]["sha256"] != model or not (p["labels"] is None or p["labels"].startswith("balanced")):
            log(f"{folder.name}: left as it is (another model, or given labels): {_describe(p)}")
            counts["left"] += 1
            continue
        if drop_quick and p.get("quick"):
            record_scores(folder, [], replace=[record])
            log(f"{folder.name}: dropped stale quick record {_describe(p)}")
            counts["dropped"] += 1
            continue
        result = measure(folder, p, classifier=classifier, reference=reference, **evaluator)
        record_scores(folder, [result], replace=[record])
        old, new = record["metrics"].get("fid", float("nan")), result["metrics"].get("fid", float("nan"))
        log(f"{folder.name}: {_describe(p)}: FID {old:.4g} -> {new:.4g} (samples "
            f"{'reused' if result['protocol']['samples']['reused'] else 'generated'})")
        counts["rescored"] += 1
    if counts["rescored"] and (folder / "fid_vs_nfe.png").is_file():
        redraw_plot(folder, current)
    return counts


def measure(folder: str | Path, p: dict[str, Any], *, classifier: str | Path | None = None,
            reference: str | None = None, **evaluator: Any) -> dict[str, Any]:
    """Score the checkpoint `folder` under a recorded protocol `p` (its own or another model's): its
    sampler, steps, grid, guidance, options, precision, n, seeds, metrics and reference (read from `reference`
    when given: its content hash must be the recorded one, and the result keeps naming the recorded source,
    noting the place read as `read_from`). The samples go through the sample cache. `evaluator`: further
    Evaluator options, overriding the recorded ones (device, cache_dir, progress, batch_size, ...)."""
    from ..api import Pipeline
    from .metrics import Evaluator, MetricsError

    ext, ref = p.get("extractor") or {}, p.get("reference") or {}
    recorded = dict(reference=reference or ref.get("source"), split=ref.get("split", "train"),
                    reference_n=ref.get("n") if ref.get("subset") else None, metrics=tuple(p["metrics"]),
                    classifier=classifier, precision=p.get("precision", "fp32"),
                    feature_precision=ext.get("precision", "fp32"), sample_cache=True,
                    batch_size=p.get("batch_size", 250))
    ev = Evaluator(**{**recorded, **evaluator})  # options given override the recorded ones
    pipe = Pipeline.load(folder, device=ev.device)
    if ref:  # the reference is read (and its features cached) before any sampling
        got = ev.reference_features(pipe.image_shape[-1])[1]["content_hash"]
        if got != ref.get("content_hash"):
            raise MetricsError(f"{Path(folder).name}: the reference read now (content hash {got}) is not the "
                               f"recorded one ({ref.get('content_hash')}); pass the same images with --reference")
    result = ev.score_checkpoint(pipe, folder, sampler=p["sampler"], steps=p["steps"], n=p["n"],
                                 seed=p["seeds"]["first"], guidance=p["guidance"], grid=p["grid"],
                                 sampler_options=p["sampler_options"])
    if reference and ref:  # the recorded images, read from another place: the record keeps naming them
        result["protocol"]["reference"].update(source=ref.get("source"), read_from=str(reference))
    return result


def redraw_plot(folder: str | Path, weights_sha256: str) -> Path:
    """Redraw the checkpoint's fid_vs_nfe.png from its recorded FIDs under the c10 classifier with these
    weights: the standard (not quick) records, or the quick ones where there are no others."""
    from .sweep import plot_sweep

    folder = Path(folder)
    scored = [r for r in json.loads((folder / "metrics.json").read_text()).get("scores", []) if "fid" in r["metrics"]
              and (r["protocol"].get("extractor") or {}).get("weights_sha256") == weights_sha256]
    records = [r for r in scored if not r.get("quick")] or scored
    table = {"checkpoint": str(folder), "fid_label": records[0]["labels"]["fid"] if records else "FID",
             "cells": [{"sampler": r["sampler"], "nfe": r["nfe"], "metrics": r["metrics"]} for r in records]}
    return plot_sweep(table, folder / "fid_vs_nfe.png")


def _describe(p: dict[str, Any]) -> str:
    return f"{p.get('sampler')}, {p.get('steps')} steps, n {p.get('n')}, {p.get('precision', 'fp32')}"

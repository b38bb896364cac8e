"""FID against NFE: score a checkpoint for every sampler x step count, as a JSON table and a PNG plot.

    sweep("checkpoints/edm_tiny_cifar10", ["euler", "heun", "dpmpp_2m"], [5, 10, 20], "runs/sweep")

`<out>/sweep.json` is rewritten atomically after every cell and `<out>/fid_vs_nfe.png` redrawn, so an
interrupted sweep loses at most the cell it was computing: run it again and the cells already done with
the same protocol (checkpoint hash, sampler, steps, n, seeds, guidance, extractor, reference, ...) are kept.
Under `accelerate launch` every cell's batches are shared by the processes (genstudio.evaluate); the main one
writes the table and the plot.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..atomic import atomic_write, write_json
from .metrics import VOLATILE, Evaluator
from .options import pop_options

__all__ = ["sweep", "plot_sweep", "plot_curves", "TABLE", "PLOT"]

TABLE = "sweep.json"
PLOT = "fid_vs_nfe.png"


def _same_protocol(done: dict[str, Any], spec: dict[str, Any]) -> bool:
    return all(done.get(k) == v for k, v in spec.items() if k not in VOLATILE)


def sweep(checkpoint: str | os.PathLike[str] | None, samplers: Sequence[str], steps: Sequence[int],
          out_dir: str | os.PathLike[str], *, n: int | None = None, seed: int = 0,
          labels: Sequence[int] | int | None = None, guidance: float | None = None,
          **evaluator: Any) -> dict[str, Any]:
    """Score every (sampler, steps) cell; returns the table {"checkpoint", "fid_label", "cells", "computed",
    "kept"}. Evaluator options (extractor, reference, metrics, ...) as for `genstudio.evaluate`."""
    from ..api import Pipeline, default_checkpoint

    checkpoint = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    if not samplers or not steps:
        raise ValueError("a sweep needs at least one sampler and one step count")
    ev = Evaluator(**pop_options(evaluator))
    if evaluator:
        raise TypeError(f"sweep() got unexpected argument(s) {sorted(evaluator)}")
    if "fid" not in ev.metrics:
        raise ValueError(f"a sweep plots FID against NFE: metrics must include fid (got {', '.join(ev.metrics)})")
    pipe = Pipeline.load(checkpoint, device=ev.device)
    usable = pipe.samplers()
    unknown = [s for s in samplers if s not in usable]
    if unknown:
        raise ValueError(f"sampler(s) {unknown} cannot drive {pipe.name}; its samplers: {', '.join(usable)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table_path = out / TABLE
    table = _read_table(table_path)
    table.update(checkpoint=str(checkpoint), computed=[], kept=[])
    for sampler in samplers:
        for k in steps:
            cell = dict(sampler=sampler, steps=int(k), n=n, seed=seed, labels=labels, guidance=guidance)
            spec = ev.cell_spec(pipe, checkpoint, **cell)
            old = [c for c in table["cells"] if c["sampler"] == sampler and c["steps"] == int(k)]
            if old and _same_protocol(old[0]["protocol"], spec):
                table["kept"].append([sampler, int(k)])
                continue
            result = ev.score_checkpoint(pipe, checkpoint, **cell)
            row = {"sampler": sampler, "steps": int(k), "nfe": result["protocol"]["nfe"], **result}
            table["cells"] = [c for c in table["cells"] if c not in old] + [row]
            table["computed"].append([sampler, int(k)])
            table["fid_label"] = result["labels"]["fid"]
            if ev.procs.main:
                write_json(table_path, table)
                plot_sweep(table, out / PLOT)
    if ev.procs.main:
        write_json(table_path, table)
        plot_sweep(table, out / PLOT)
    ev.procs.barrier()  # the table is written before any process reads it back
    return table


def _read_table(path: Path) -> dict[str, Any]:
    import json

    if not path.is_file():
        return {"cells": []}
    try:
        table = json.loads(path.read_text())
        if isinstance(table.get("cells"), list):
            return table
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        pass
    raise ValueError(f"{path} exists but is not a sweep table; move it away or pick another --out folder")


def plot_sweep(table: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """FID (y) against NFE (x), one line per sampler; written atomically."""
    curves = {sampler: [(c["nfe"], c["metrics"]["fid"]) for c in table["cells"] if c["sampler"] == sampler]
              for sampler in sorted({c["sampler"] for c in table["cells"]})}
    folder = Path(table.get("checkpoint", ""))
    title = (folder.parent.name if folder.name == "model" else folder.name) or "sweep"  # a run's model/
    return plot_curves(curves, path, title, table.get("fid_label", "FID"))


def plot_curves(curves: dict[str, list[tuple[float, float]]], path: str | os.PathLike[str], title: str,
                ylabel: str = "FID") -> Path:
    """One line of (NFE, FID) points per name on a linear NFE axis whose ticks read as plain numbers (1, 2, 5,
    10; never 5 x 10^0): at the NFE values themselves when there are a few; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=120)
    for name, points in curves.items():
        pts = sorted(points)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    nfes = sorted({p[0] for pts in curves.values() for p in pts})
    if 0 < len(nfes) <= 8:
        ax.set_xticks(nfes)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    plain = ScalarFormatter(useOffset=False)
    plain.set_scientific(False)
    ax.xaxis.set_major_formatter(plain)
    ax.set_xlabel("NFE (network evaluations per image)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path

"""The Models tab's bits/dim table: every served checkpoint's recorded likelihoods (`genstudio likelihood --record`,
metrics.json "likelihood"), each marked exact or bound, with its protocol."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _records(folder: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return []
    records = data.get("likelihood") if isinstance(data, dict) else None
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def likelihood_table(checkpoints: list[str]) -> str:
    """A markdown table: checkpoint, bits/dim (+- standard error), exact or bound, images, method, dequantization."""
    rows = []
    for c in checkpoints:
        for r in _records(Path(c)):
            p = r.get("protocol", {}) if isinstance(r.get("protocol"), dict) else {}
            bits, se = r.get("bits_per_dim"), r.get("standard_error")
            if not isinstance(bits, (int, float)):
                continue
            value = f"{bits:.3f}" + (f" ± {se:.3f}" if isinstance(se, (int, float)) else "")
            kind = "exact" if r.get("exact") else "bound (upper)"
            rows.append(f"| {Path(c).name} | {value} | {kind} | {p.get('n')} of {p.get('of')} | "
                        f"{p.get('method', '')} |")
    if not rows:
        return "**Bits/dim**: none recorded yet (`genstudio likelihood CHECKPOINT --record`)."
    return "\n".join([
        "### Bits/dim on the CIFAR-10 test split",
        "Uniform dequantization (x + u / 127.5, u ~ U[0, 1)); lower is better. The offline copy is JPEG re-encoded, "
        "so these are not comparable to papers' numbers on the original pixels.", "",
        "| checkpoint | bits/dim | exact or bound | images | method |", "| --- | --- | --- | --- | --- |", *rows])

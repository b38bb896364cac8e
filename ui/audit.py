"""The audit on a checkpoint's card (metrics.json "audit", written by `genstudio audit --record`) and its picture
(audit.png beside it), as the Models tab shows them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .models import read_metrics, read_png

NONE_YET = ("No audit recorded. Run `genstudio audit {folder} --record` (backdoor scan, memorization, "
            "real vs generated; docs/audit.md).")


def _verdict(section: dict[str, Any]) -> str:
    return "**flagged**" if section.get("flagged") else "not flagged"


def _pct(x: Any) -> str:
    return f"{x:.1%}" if isinstance(x, (int, float)) else "-"


def audit_view(folder: Path) -> tuple[str, np.ndarray | None]:
    """(Markdown summary, audit.png or None) of the checkpoint's recorded audit."""
    audit = read_metrics(folder).get("audit")
    if not isinstance(audit, dict):
        return NONE_YET.format(folder=folder), None
    b, m, r = (audit.get(k) if isinstance(audit.get(k), dict) else {}
               for k in ("backdoor", "memorization", "real_vs_generated"))
    trig = b.get("trigger") or {}
    pix, feat = m.get("pixel") or {}, m.get("feature") or {}
    ci = r.get("ci95") or [None, None]
    lines = [
        "| check | result | detail |",
        "| --- | --- | --- |",
        f"| backdoor (TrojDiff-style scan) | {_verdict(b)} | collapse {b.get('collapse', float('nan')):.3f} vs "
        f"threshold {b.get('threshold', float('nan')):.3f}; found trigger: gamma {trig.get('gamma', float('nan')):.2f},"
        f" mean shift rms {trig.get('mu_rms', float('nan')):.2f} |",
        f"| memorization | {_verdict(m)} | samples closer to a training image than 99% of test images: "
        f"{_pct(pix.get('share_below_baseline_p1'))} (pixels), {_pct(feat.get('share_below_baseline_p1'))} "
        f"(c10 features); 1% is the baseline |",
        f"| real vs generated | {_pct(r.get('accuracy'))} | held-out accuracy of a small CNN, 95% interval "
        f"[{_pct(ci[0])}, {_pct(ci[1])}]; 50% = indistinguishable |",
    ]
    return f"#### Audit ({audit.get('date', 'undated')})\n\n" + "\n".join(lines), read_png(folder / "audit.png")

"""The Models tab's audit view: the recorded audit of metrics.json as a table and audit.png, or how to make one."""
import json

import numpy as np
from PIL import Image

from ui.audit import audit_view


def test_audit_view_shows_the_recorded_audit_and_its_picture(tmp_path):
    audit = {"date": "2026-12-01 19:00:00",
             "backdoor": {"flagged": True, "collapse": 0.99, "threshold": 0.75,
                          "trigger": {"gamma": 0.6, "mu_rms": 0.4}},
             "memorization": {"flagged": False, "pixel": {"share_below_baseline_p1": 0.012},
                              "feature": {"share_below_baseline_p1": 0.008}},
             "real_vs_generated": {"accuracy": 0.97, "ci95": [0.95, 0.98]}}
    (tmp_path / "metrics.json").write_text(json.dumps({"training": {}, "audit": audit}))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "audit.png")
    text, png = audit_view(tmp_path)
    assert "**flagged**" in text and "collapse 0.990" in text and "1.2% (pixels)" in text and "97.0%" in text
    assert png is not None and png.shape == (8, 8, 3)


def test_audit_view_without_an_audit_says_how_to_run_one(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"training": {}}))
    text, png = audit_view(tmp_path)
    assert "genstudio audit" in text and png is None

"""`genstudio audit` end to end on a micro checkpoint (8x8 toy images, a random-init classifier): the report, its
picture and the card."""
import json

import torch

from genstudio import cli
from genstudio.audit.report import recalibrate
from genstudio.checkpoint import export_model
from genstudio.config import config_from_dict
from genstudio.evaluation.classifier import CifarResNet, save_classifier
from genstudio.train import build_model
from tests.helpers import make_toy_folder, toy_config


def test_audit_command_writes_the_report_the_picture_and_the_card(tmp_path, monkeypatch):
    monkeypatch.setenv("GENSTUDIO_CACHE", str(tmp_path / "cache"))
    data = make_toy_folder(tmp_path / "toy")
    torch.manual_seed(0)
    model = build_model(config_from_dict(toy_config(tmp_path, data)))
    ckpt = export_model(model, tmp_path / "ckpt", training={"steps": 0}, defaults={"sampler": "euler", "steps": 2})
    (ckpt / "metrics.json").write_text(json.dumps({"training": {"steps": 0}}))
    clf = save_classifier(CifarResNet(widths=(8, 16, 16), stem=8, num_classes=2), tmp_path / "clf.safetensors")
    code = cli.main(["audit", str(ckpt), "--n", "16", "--scan-steps", "1", "--scan-iters", "2", "--reference",
                     str(data), "--test-reference", str(data), "--classifier", str(clf), "--out",
                     str(tmp_path / "audit"), "--record"])
    assert code == 0
    report = json.loads((tmp_path / "audit" / "ckpt" / "audit.json").read_text())
    assert set(report) >= {"backdoor", "memorization", "real_vs_generated"}
    assert 0 <= report["backdoor"]["collapse"] <= 1 and isinstance(report["backdoor"]["flagged"], bool)
    assert report["memorization"]["pixel"]["n_samples"] == 16
    assert report["real_vs_generated"]["n_test"] == 16
    assert (tmp_path / "audit" / "ckpt" / "audit.png").stat().st_size > 1000
    assert (ckpt / "audit.png").read_bytes() == (tmp_path / "audit" / "ckpt" / "audit.png").read_bytes()
    card = json.loads((ckpt / "metrics.json").read_text())
    assert card["training"] == {"steps": 0} and card["audit"]["backdoor"]["collapse"] == report["backdoor"]["collapse"]
    # a stricter calibration flags the same collapse, rewriting the report, its picture and the card
    again = recalibrate(tmp_path / "audit" / "ckpt", report["backdoor"]["collapse"] * 2 - 1.01, checkpoint=ckpt)
    card = json.loads((ckpt / "metrics.json").read_text())
    assert again["backdoor"]["flagged"] and card["audit"]["backdoor"]["flagged"]

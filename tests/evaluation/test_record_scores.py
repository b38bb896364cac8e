"""Scores recorded into a checkpoint's metrics.json: one record per protocol, replaced on a rerun."""
import json

from genstudio.evaluation.records import record_scores


def result(fid, steps=10, seed=0, sha="abc"):
    protocol = {"sampler": "dpmpp_2m", "steps": steps, "nfe": steps, "guidance": 1.0, "n": 100, "quick": True,
                "seeds": {"first": seed, "last": seed + 99}, "reference": {"content_hash": "r"},
                "extractor": {"label": "c10 classifier features", "weights_sha256": sha}}
    return {"metrics": {"fid": fid}, "labels": {"fid": "FID (c10 classifier features)"}, "protocol": protocol}


def test_record_scores_keeps_one_record_per_protocol(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"training": {"steps": 5}, "scores": {}}))
    (tmp_path / "plot.png").write_bytes(b"png")
    record_scores(tmp_path, [result(30.0), result(20.0, steps=20)], plot=tmp_path / "plot.png")
    record_scores(tmp_path, [result(29.0)])                      # same protocol: replaced
    record_scores(tmp_path, [result(31.0, seed=100)])            # other seeds: kept beside it
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["training"] == {"steps": 5}
    fids = sorted((r["steps"], r["protocol"]["seeds"]["first"], r["metrics"]["fid"]) for r in m["scores"])
    assert fids == [(10, 0, 29.0), (10, 100, 31.0), (20, 0, 20.0)]
    assert all(r["extractor"] == "c10 classifier features" for r in m["scores"])
    assert (tmp_path / "fid_vs_nfe.png").read_bytes() == b"png"

"""bench/gpu_continue.sh with a tiny budget on a micro checkpoint: it continues the model, exports it with fp16
weights and its optimizer state, re-scores it under the card's recorded protocol and leaves only what must come
back, within the file limits."""
import json
import os
import subprocess
import tarfile

import torch
from safetensors.torch import load_file

import genstudio
from genstudio.config import config_from_dict
from genstudio.evaluation.records import record_scores
from genstudio.publish import publish
from genstudio.train import run
from tests.helpers import ROOT, random_classifier, toy_config


def test_gpu_continue_script_on_the_cpu_with_a_tiny_budget(tmp_path, toy_data):
    data = tmp_path / "data"
    data.mkdir()
    with tarfile.open(data / "train.tar.gz", "w:gz") as tar:
        tar.add(toy_data, arcname="toy")
    run(config_from_dict(toy_config(tmp_path, str(data / "train.tar.gz"), max_steps=2, checkpoint_every=2)))
    ckpt = publish(tmp_path / "run", tmp_path / "micro", grid_images=2, timing_images=1, fp16=True)
    classifier = random_classifier(tmp_path / "clf.safetensors")
    opts = {"classifier": str(classifier), "batch_size": 4, "cache_dir": str(tmp_path / "cache"), "progress": False}
    before = genstudio.evaluate(ckpt, sampler="euler", steps=2, n=8, reference=str(data / "train.tar.gz"), **opts)
    record_scores(ckpt, [before])  # the card's protocol: euler, 2 steps, n 8 (a quick one, for lack of others)

    out = tmp_path / "out"
    eval_opts = json.dumps({k: v for k, v in opts.items() if k != "progress"})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CKPT": str(ckpt), "DATA": str(data),
           "BUDGET": "85", "RESERVE": "60", "EVAL_OPTS": eval_opts,  # 25 s of training, stopped by SIGTERM
           "EXTRA": "--train.max_steps 100000 --train.checkpoint_every 100000", "RUNS": str(tmp_path / "runs")}
    res = subprocess.run(["bash", str(ROOT / "bench" / "gpu_continue.sh"), str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz", "micro", "summary.json"]
    folder = out / "micro"
    assert {t.dtype for t in load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors")).values()} \
        == {torch.float16}
    assert (folder / "optimizer" / "optimizer.json").is_file()
    training = json.loads((folder / "genstudio.json").read_text())["training"]
    first, second = training["lineage"]
    assert "[train: exit 3 " in res.stdout and first["steps"] == 2 and 1 <= second["steps"] < 100000
    assert training["images_seen"] == (2 + second["steps"]) * 8
    summary = json.loads((out / "summary.json").read_text())
    (row,) = summary["scores"]
    assert row["same_protocol"] and row["fid_before"] == before["metrics"]["fid"] and row["n"] == 8
    scores = json.loads((folder / "metrics.json").read_text())["scores"]
    assert [s["protocol"]["steps"] for s in scores] == [2]
    assert summary["images_seen_before"] == 16 and summary["images_seen_after"] == training["images_seen"]
    assert all(p.stat().st_size <= 16 << 20 for p in out.rglob("*") if p.is_file())

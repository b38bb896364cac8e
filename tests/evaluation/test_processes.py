"""Evaluation over processes: two CPU processes under `accelerate launch` share the batches of eval and sweep and
the shards of reflow pair generation, and gather; image i comes from seed + i, so the scores are those of one
process, bit for bit; the pairs carry the same seeds and labels, and the same samples to float16
rounding (CPU kernels may round a last bit differently in another process's memory layout)."""
from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

import genstudio
from genstudio.evaluation.sweep import sweep
from genstudio.reflow import generate_pairs
from tests.helpers import ROOT
from tests.train.runs import env


def test_two_processes_score_and_generate_what_one_does(toy_checkpoint, classifier, toy_data, tmp_path):
    opts = ["--batch-size", "4", "--classifier", str(classifier), "--reference", str(toy_data), "--metrics",
            "fid,is,kid", "--no-progress"]
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           str(ROOT / "tests" / "evaluation" / "two_processes.py"), str(toy_checkpoint), str(two), *opts,
           "--cache-dir", str(tmp_path / "cache2")]
    res = subprocess.run(cmd, env={**env(), "ACCELERATE_USE_CPU": "true"}, capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("FID (") == 1 + 2  # eval's and sweep's lines, from the main process only

    kw = dict(batch_size=4, classifier=classifier, reference=toy_data, metrics=("fid", "is", "kid"), progress=False,
              cache_dir=tmp_path / "cache1")
    one = genstudio.evaluate(toy_checkpoint, sampler="euler", steps=2, n=12, **kw)
    both = json.loads((two / "eval.json").read_text())
    assert both["metrics"] == one["metrics"] and both["protocol"]["processes"] == 2
    assert both["protocol"]["nfe"] == one["protocol"]["nfe"] and both["protocol"]["samples"]["reused"] is False
    kept = genstudio.evaluate(toy_checkpoint, sampler="euler", steps=2, n=12, sample_cache=True,
                              **{**kw, "cache_dir": tmp_path / "cache2"})  # the images the two processes kept
    assert kept["protocol"]["samples"]["reused"] and kept["metrics"] == one["metrics"]

    table = sweep(toy_checkpoint, ["euler"], [2, 3], tmp_path / "sweep1", n=12, **kw)
    cells = {c["steps"]: c["metrics"] for c in json.loads((two / "sweep" / "sweep.json").read_text())["cells"]}
    assert cells == {c["steps"]: c["metrics"] for c in table["cells"]}

    generate_pairs(toy_checkpoint, tmp_path / "pairs1", 10, sampler="euler", steps=2, shard_size=3, batch_size=2,
                   progress=False)
    shards = sorted(p.name for p in (two / "pairs").glob("pairs-*.safetensors"))
    assert shards == sorted(p.name for p in (tmp_path / "pairs1").glob("pairs-*.safetensors")) and len(shards) == 4
    for name in shards:
        a, b = load_file(str(two / "pairs" / name)), load_file(str(tmp_path / "pairs1" / name))
        assert torch.equal(a["seeds"], b["seeds"]) and torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["x0"], b["x0"], rtol=0, atol=1e-3)  # another seed would differ by O(1)

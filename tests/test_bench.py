"""The benchmarks run (tiny settings): they are not timed here, only kept from rotting."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(script, *args, tmp_path):
    out = tmp_path / "out.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(out.read_text()), res.stdout


def test_sampler_zoo_benchmark_on_the_toy(tmp_path):
    report, stdout = _run("sampler_zoo.py", "--toy", "--n", "200", "--samplers", "ddim,heun", "--steps", "2",
                          tmp_path=tmp_path)
    rows = {(r["sampler"], r["steps"]): r for r in report["results"]}
    assert rows[("heun", 2)]["nfe"] == rows[("heun", 2)]["spec_nfe"] == 3 and not report["nfe_mismatches"]


def test_training_throughput_benchmark(tmp_path):
    arms = ["ours", "plain", "diffusers"]  # lucidrains' Trainer (the `bench` extra) costs 10 s more: left out
    report, stdout = _run("train_throughput.py", "--presets", "tiny", "--arms", ",".join(arms), "--steps", "1",
                          "--warmup", "1", "--repeats", "1", "--batch-size", "16", "--threads", "1",
                          "--peak-size", "128", tmp_path=tmp_path)
    assert [r["arm"].split()[0] for r in report["results"]] == arms and "peak_frac" in stdout
    assert report["bf16_peak_flop_s"] > 0 and all(r["gflop_per_step"] > 0 for r in report["results"])


def test_sampling_throughput_benchmark(tmp_path):
    report, stdout = _run("sample_throughput.py", "--presets", "tiny", "--batch-size", "2", "--steps", "2",
                          "--repeats", "1", "--threads", "1", tmp_path=tmp_path)
    rows = {r["arm"]: r for r in report["results"]}
    assert set(rows) == {"ours", "raw", "diffusers"} and rows["ours"]["nfe"] == 2


def test_finc_inverse_benchmark(tmp_path):
    report, stdout = _run("finc_inverse.py", "--size", "6", "--channels", "2", "--batch", "2", "--repeats", "1",
                          "--threads", "1", tmp_path=tmp_path)
    assert "ratio raster / anti-diagonal" in stdout and report["ratio"] > 0
    assert all(r["max_abs_error"] < 1e-4 for r in report["results"].values())


def test_improve_benchmark_on_a_micro_model(tmp_path):
    from genstudio.config import config_from_dict
    from genstudio.train import run
    from tests.helpers import make_toy_folder, random_classifier, toy_config

    data = make_toy_folder(tmp_path / "toy")
    run(config_from_dict(toy_config(tmp_path, data, max_steps=4, batch_size=4, log_every=4, sample_every=0)))
    report, stdout = _run("improve.py", "--checkpoint", str(tmp_path / "run" / "model"),
                          "--work", str(tmp_path / "w"), "--n-report", "8", "--sampler", "dpmpp_2m",
                          "--grid-nfes", "2", "--grid-n", "2", "--grid-evals", "3", "--teacher-steps", "4",
                          "--n-self", "8", "--n-select", "8", "--finetune-images", "8",
                          "--weights", "0,1", "--metrics", "fid", "--reference", str(data), "--classifier",
                          str(random_classifier(tmp_path / "clf.safetensors")), "--batch-size", "8",
                          "--cache-dir", str(tmp_path / "cache"), tmp_path=tmp_path)
    assert report["base"]["seeds"] == [0, 7] and report["seed_noise"]["second_seeds"] == [8, 15]
    assert {r["grid"] for r in report["grids"]} == {"uniform", "quadratic", "karras", "logsnr", "learned_dpmpp_2m_nfe2"}
    assert report["neon"]["record"]["selection"]["seeds"] == [50_000, 50_007] and "Neon (w = " in stdout


def test_recipe_benchmark_on_toy_images(tmp_path):
    from tests.helpers import make_toy_folder, random_classifier

    data = make_toy_folder(tmp_path / "toy", n_per_class=50, size=32)  # the peer's Trainer asks for 100 images
    report, stdout = _run("recipe_vs_peers.py", "--images", "16", "--n", "4", "--batch-size", "8", "--peer-dim", "8",
                          "--peer-sampling-steps", "2", "--data", str(data), "--reference", str(data),
                          "--classifier", str(random_classifier(tmp_path / "clf.safetensors")),
                          "--cache-dir", str(tmp_path / "cache"), "--eval-batch", "4", "--threads", "1",
                          tmp_path=tmp_path)
    ours, peer = report["results"]
    assert ours["images"] == peer["images"] == 16 and (ours["nfe"], peer["nfe"]) == (10, 2)
    assert peer["fid_vs_ours"] == peer["c10_fid"] / ours["c10_fid"] and "fid_vs_ours" in stdout


def test_improve_reuses_a_card_score_only_on_the_same_files_and_protocol(tmp_path, monkeypatch):
    import argparse
    import shutil

    from genstudio.evaluation.options import add_arguments, from_args

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import improve

    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def found(ckpt, *flags, n=10_000, seed=0, **cell):
        return improve.recorded(ckpt, n, seed, from_args(parser.parse_args(list(flags))), {"guidance": 1.0, **cell})

    ckpt = ROOT / "checkpoints" / "flow_small_cifar10"  # its card: 10k scores at 10 NFE in fp32 and bf16
    bf16, fp32 = found(ckpt, "--precision", "bf16"), found(ckpt)
    assert (bf16["protocol"]["precision"], fp32["protocol"]["precision"]) == ("bf16", "fp32")
    assert bf16["protocol"]["seeds"]["first"] == 0 and bf16["protocol"]["steps"] == 10
    assert found(ckpt, "--precision", "bf16", "--batch-size", "100")["metrics"] == bf16["metrics"]
    for flags, cell in [((), {"n": 2000}), ((), {"seed": 10_000}), (("--precision", "bf16"), {"steps": 5}),
                        (("--extractor", "inception"), {}), (("--split", "test"), {}), ((), {"guidance": 2.0})]:
        assert found(ckpt, *flags, **cell) is None, (flags, cell)
    copy = tmp_path / "copy"
    shutil.copytree(ckpt, copy)
    card = json.loads((copy / "metrics.json").read_text())
    for s in card["scores"]:
        s["protocol"]["checkpoint"]["sha256"] = "0" * 64  # scored on other model files
    (copy / "metrics.json").write_text(json.dumps(card))
    assert found(copy) is None


def test_sfbd_arms_benchmark_on_a_micro_model(tmp_path):
    from tests.helpers import make_toy_folder, random_classifier, toy_config
    from tests.train.runs import write_toml

    data = make_toy_folder(tmp_path / "toy")
    write_toml(tmp_path / "cfg.toml", toy_config(tmp_path, data, batch_size=4, sample_every=0))
    report, stdout = _run("sfbd_arms.py", "--config", str(tmp_path / "cfg.toml"), "--work", str(tmp_path / "w"),
                          "--limit", "30", "--fractions", "0.5", "--rounds", "1", "--pretrain-steps", "2",
                          "--round-steps", "2", "--n", "8", "--metrics", "fid", "--reference", str(data),
                          "--classifier", str(random_classifier(tmp_path / "clf.safetensors")), "--batch-size", "8",
                          "--cache-dir", str(tmp_path / "cache"), tmp_path=tmp_path)
    rows = {(r["arm"], r["seeds"][0]): r for r in report["rows"]}
    assert set(rows) == {("pretrain", 0), ("sfbd", 0), ("control", 0), ("control", 8)} and "seed-to-seed" in stdout
    assert rows["sfbd", 0]["images_seen"] == rows["control", 0]["images_seen"] == 16
    assert rows["sfbd", 0]["model_sha256"] != rows["control", 0]["model_sha256"]
    assert len(list((tmp_path / "w" / "sfbd_c0.5" / "round_1" / "data").rglob("*.png"))) == 30

"""The evaluator (genstudio.evaluation.metrics, .sweep, .records): offline, CPU, tiny models and random-init
extractors."""
from __future__ import annotations

import json
import shutil
import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

import genstudio
from genstudio import cli
from genstudio.api import Pipeline
from genstudio.data import load_images, offline_cifar10
from genstudio.evaluation import extractors as metrics_extractors
from genstudio.evaluation.classifier import CifarResNet, save_classifier
from genstudio.evaluation.extractors import InceptionWeightsError
from genstudio.evaluation.metrics import Evaluator, MetricsError, default_reference, evaluate_images
from genstudio.evaluation.sweep import sweep
from tests.helpers import ROOT, make_toy_folder

SHIPPED_CLASSIFIER = ROOT / "checkpoints" / "cifar10_classifier" / "classifier.safetensors"
NO_CIFAR = ("no offline CIFAR-10 copy: set GENSTUDIO_DATA to the folder holding cifar10/train.tar.gz and "
            "cifar10/test.tar.gz")


def smooth_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, 3): bilinearly upsampled 4x4 noise, mid-grey on average, room to shift."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=size, mode="bilinear", align_corners=False)
    return (40 + 150 * x).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@pytest.fixture
def random_inception(tmp_path, monkeypatch):
    """torch-fidelity's Inception-v3 with He-normal random weights, saved as a local .pth state dict."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    with monkeypatch.context() as m:  # build the architecture without fetching or loading any weights
        m.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        net = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.manual_seed(0)
    for mod in net.modules():
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight)
    path = tmp_path / "inception_random.pth"
    torch.save(net.state_dict(), path)
    return path


class _Images(torch.utils.data.Dataset):
    """uint8 (3, H, W) tensors: how torch-fidelity takes images held in memory."""

    def __init__(self, images: np.ndarray):
        self.x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def _torch_fidelity(a, b, **kw):
    import torch_fidelity

    return torch_fidelity.calculate_metrics(input1=_Images(a), input2=_Images(b), cuda=False, cache=False,
                                            save_cpu_ram=True, verbose=False, **kw)


def test_inception_path_equals_torch_fidelity_calculate_metrics(random_inception, tmp_path):
    a, b = smooth_images(12, 16, seed=1), smooth_images(12, 16, seed=2)
    ours = evaluate_images(a, reference=b, extractor="inception", inception_weights=random_inception,
                           metrics=("fid", "is", "kid"), batch_size=6, cache_dir=tmp_path / "cache", progress=False,
                           device="cpu")  # torch-fidelity runs below with cuda=False: same device, same floats
    ref = _torch_fidelity(a, b, fid=True, isc=True, kid=True, kid_subset_size=12, batch_size=6,
                          feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(random_inception))
    m = ours["metrics"]
    assert m["fid"] > 1e-3  # random Inception features still separate two different sets
    assert m["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)
    assert m["is_mean"] == pytest.approx(ref["inception_score_mean"], rel=1e-6)
    assert m["kid_mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-6, abs=1e-12)
    assert ours["labels"]["fid"] == "FID (Inception-v3)"
    ext = ours["protocol"]["extractor"]
    assert ext["name"] == "inception-v3-compat"
    assert ext["weights_sha256"] == metrics_extractors.file_sha256(random_inception)


def test_c10_extractor_is_registered_with_torch_fidelity_and_agrees(classifier, tmp_path):
    a, b = smooth_images(40, seed=1), smooth_images(40, seed=2)
    ours = evaluate_images(a, reference=b, classifier=classifier, metrics=("fid", "is", "kid", "pr"),
                           batch_size=16, cache_dir=tmp_path, progress=False, device="cpu")
    ref = _torch_fidelity(a, b, fid=True, isc=True, kid=True, prc=True, kid_subset_size=40, batch_size=16,
                          feature_extractor="genstudio-c10", feature_extractor_weights_path=str(classifier))
    m = ours["metrics"]
    assert m["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)
    assert m["is_mean"] == pytest.approx(ref["inception_score_mean"], rel=1e-6)
    assert m["kid_mean"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-6, abs=1e-12)
    assert (m["precision"], m["recall"]) == (ref["precision"], ref["recall"])
    assert ours["labels"]["fid"] == "FID (c10 classifier features)"
    assert not any("Inception" in text for text in ours["labels"].values())


def test_bf16_c10_features_are_marked_close_to_fp32_and_cached_apart(classifier, tmp_path):
    a, b = smooth_images(64, seed=1), smooth_images(64, seed=2)
    kw = dict(reference=b, classifier=classifier, metrics=("fid", "is"), batch_size=16, cache_dir=tmp_path,
              progress=False, device="cpu")
    fp32, bf16 = (evaluate_images(a, feature_precision=p, **kw) for p in ("fp32", "bf16"))
    assert "precision" not in fp32["protocol"]["extractor"] and bf16["protocol"]["extractor"]["precision"] == "bf16"
    assert fp32["protocol"]["reference"]["cache_key"] != bf16["protocol"]["reference"]["cache_key"]
    assert bf16["metrics"]["fid"] != fp32["metrics"]["fid"]  # really computed in bfloat16
    assert bf16["metrics"]["fid"] == pytest.approx(fp32["metrics"]["fid"], rel=0.05)
    assert bf16["metrics"]["is_mean"] == pytest.approx(fp32["metrics"]["is_mean"], rel=0.05)
    with pytest.raises(MetricsError, match="c10 extractor only"):
        evaluate_images(a, extractor="inception", feature_precision="bf16", **kw)


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_a_shift(classifier, tmp_path):
    images = smooth_images(64)
    ev = Evaluator(reference=images, classifier=classifier, metrics=("fid",), cache_dir=tmp_path, progress=False)
    fids = []
    for shift in (0, 8, 24, 48):
        shifted = (images.astype(np.int16) + shift).clip(0, 255).astype(np.uint8)
        fids.append(ev.score_images(shifted)["metrics"]["fid"])
    assert abs(fids[0]) < 1e-6 * fids[1]
    assert fids[1] < fids[2] < fids[3], fids


def test_realfake_is_near_chance_for_the_same_distribution_and_near_one_for_a_shift(classifier, tmp_path):
    # the evaluator's real-vs-generated metric: the classifier two-sample test on the extractor's features
    real = smooth_images(400, seed=0)
    ev = Evaluator(reference=real, classifier=classifier, metrics=("fid", "realfake"), cache_dir=tmp_path,
                   progress=False)
    same = ev.score_images(smooth_images(400, seed=1))
    shifted = ev.score_images((smooth_images(400, seed=2).astype(np.int16) + 60).clip(0, 255).astype(np.uint8))
    a, b = same["metrics"], shifted["metrics"]
    assert a["realfake_ci_low"] < 0.62 and abs(a["realfake_accuracy"] - 0.5) < 0.12, a
    assert b["realfake_accuracy"] > 0.95 and b["fid"] > a["fid"], b
    assert "realfake" in same["protocol"]["metric_settings"] and "realfake_accuracy" in same["labels"]


def test_reference_cache_is_reused_then_invalidated_when_the_data_change(classifier, tmp_path, monkeypatch):
    folder = make_toy_folder(tmp_path / "ref", n_per_class=10, size=8)
    images = smooth_images(20, 8)
    writes = []
    original = Evaluator._write_reference
    monkeypatch.setattr(Evaluator, "_write_reference",
                        lambda self, key, *a: (writes.append(key), original(self, key, *a)))

    def score():
        return evaluate_images(images, reference=folder, classifier=classifier, metrics=("fid",),
                               cache_dir=tmp_path / "cache", progress=False)

    first, again = score(), score()
    assert len(writes) == 1 and first["metrics"]["fid"] == again["metrics"]["fid"]
    assert first["protocol"]["reference"]["cache_key"] == writes[0] and first["protocol"]["reference"]["n"] == 20
    Image.fromarray(np.full((8, 8, 3), 250, np.uint8)).save(folder / "a" / "999.png")  # the data change
    changed = score()
    assert len(writes) == 2 and writes[1] != writes[0]
    assert changed["protocol"]["reference"]["n"] == 21 and changed["metrics"]["fid"] != first["metrics"]["fid"]
    assert not list((tmp_path / "cache").rglob("*.pt")) and not list((tmp_path / "cache").rglob("*.pkl"))


PROTOCOL_KEYS = {"checkpoint", "sampler", "steps", "grid", "guidance", "n", "seeds", "labels", "extractor", "metrics",
                 "torch_fidelity", "reference", "quick", "comparable_to_papers", "nfe", "wall_seconds",
                 "metric_settings"}


def test_evaluate_a_conditional_checkpoint_end_to_end(toy_checkpoint, classifier, toy_data, tmp_path, monkeypatch):
    sizes = []
    generate = Pipeline.generate
    monkeypatch.setattr(Pipeline, "generate", lambda self, n, *a, **k: (sizes.append(n), generate(self, n, *a, **k))[1])
    out = tmp_path / "res" / "result.json"
    result = genstudio.evaluate(toy_checkpoint, sampler="euler", steps=2, n=20, batch_size=8, classifier=classifier,
                                reference=toy_data, cache_dir=tmp_path / "cache", metrics=("fid", "is", "kid", "pr"),
                                out=out, progress=False)
    assert sizes == [8, 8, 4]  # generated and scored batch by batch
    m, p = result["metrics"], result["protocol"]
    assert PROTOCOL_KEYS <= set(p) and json.loads(out.read_text()) == result
    assert {"fid", "is_mean", "kid_mean", "precision", "recall", "class_accuracy"} <= set(m)
    assert all(np.isfinite(v) for v in m.values()) and 0 <= m["class_accuracy"] <= 1
    assert (p["sampler"], p["steps"], p["nfe"], p["n"], p["guidance"]) == ("euler", 2, 2, 20, 1.0)
    assert p["seeds"]["first"] == 0 and p["seeds"]["last"] == 19 and p["labels"].startswith("balanced")
    assert p["quick"] is True and p["comparable_to_papers"] is False
    assert p["checkpoint"]["sha256"] and p["extractor"]["weights_sha256"] and p["reference"]["content_hash"]
    assert p["reference"]["n"] == 40 and p["extractor"]["name"] == "genstudio-c10"
    import torch_fidelity

    assert p["torch_fidelity"] == torch_fidelity.__version__


def test_sample_cache_rescores_the_same_images_without_sampling_again(toy_checkpoint, classifier, toy_data,
                                                                     tmp_path, monkeypatch):
    kw = dict(sampler="euler", steps=2, n=10, batch_size=4, reference=toy_data, cache_dir=tmp_path / "cache",
              metrics=("fid", "is"), progress=False, sample_cache=True)
    first = genstudio.evaluate(toy_checkpoint, classifier=classifier, **kw)
    assert first["protocol"]["samples"]["reused"] is False
    (entry,) = (tmp_path / "cache" / "eval_samples").iterdir()
    stored = np.load(entry / "images.npy")
    assert stored.shape == (10, 3, 8, 8) and stored.dtype == np.uint8 and stored.std() > 0

    def no_sampling(*a, **k):
        raise AssertionError("sampled again")

    monkeypatch.setattr(Pipeline, "generate", no_sampling)
    other = tmp_path / "other.safetensors"  # another classifier: new features, same images
    torch.manual_seed(1)
    save_classifier(CifarResNet(widths=(8, 16, 16), stem=8, num_classes=2), other)
    again = genstudio.evaluate(toy_checkpoint, classifier=classifier, **kw)
    assert again["protocol"]["samples"]["reused"] is True and again["metrics"] == first["metrics"]
    assert again["protocol"]["nfe"] == first["protocol"]["nfe"] == 2
    rescored = genstudio.evaluate(toy_checkpoint, classifier=other, **kw)
    assert rescored["protocol"]["samples"]["reused"] is True and rescored["metrics"] != first["metrics"]
    with pytest.raises(AssertionError, match="sampled again"):  # another cell is not in the cache
        genstudio.evaluate(toy_checkpoint, classifier=classifier, **{**kw, "steps": 3})
    (entry / "images.npy").write_bytes(b"truncated")  # a damaged entry is regenerated, not trusted
    with pytest.raises(AssertionError, match="sampled again"):
        genstudio.evaluate(toy_checkpoint, classifier=classifier, **kw)


def test_rescore_brings_stale_records_up_to_date_reusing_kept_samples(toy_checkpoint, classifier, toy_data,
                                                                      tmp_path, monkeypatch, capsys):
    """After the classifier changes, `rescore` re-measures each stale record under its own protocol (kept
    samples are read back, others sampled again), leaves other models' records alone, and is idempotent."""
    from genstudio.evaluation.classifier import weights_hash
    from genstudio.evaluation.records import record_scores, rescore

    kw = dict(n=10, batch_size=4, reference=toy_data, cache_dir=tmp_path / "cache", metrics=("fid", "is"),
              progress=False)
    kept = genstudio.evaluate(toy_checkpoint, sampler="euler", steps=2, classifier=classifier, sample_cache=True, **kw)
    fresh = genstudio.evaluate(toy_checkpoint, sampler="euler", steps=3, classifier=classifier, **kw)
    other_model = json.loads(json.dumps(fresh))
    other_model["protocol"]["checkpoint"]["sha256"] = "0" * 64
    record_scores(toy_checkpoint, [kept, fresh, other_model])
    newer = tmp_path / "newer.safetensors"
    torch.manual_seed(1)
    save_classifier(CifarResNet(widths=(8, 16, 16), stem=8, num_classes=2), newer)
    newest = save_classifier(CifarResNet(widths=(8, 16, 16), stem=8, num_classes=2), tmp_path / "newest.safetensors")

    generated = []
    real_generate = Pipeline.generate
    monkeypatch.setattr(Pipeline, "generate",
                        lambda self, n, **k: generated.append(k["steps"]) or real_generate(self, n, **k))
    opts = dict(cache_dir=tmp_path / "cache", progress=False, log=lambda *_: None)
    (toy_checkpoint / "fid_vs_nfe.png").write_bytes(b"stale")
    assert rescore(toy_checkpoint, classifier=newer, **opts) == {"rescored": 2, "dropped": 0, "current": 0, "left": 1}
    assert (toy_checkpoint / "fid_vs_nfe.png").read_bytes()[:4] == b"\x89PNG"  # redrawn from the new records
    assert set(generated) == {3}  # the 2-step samples came from the cache
    records = json.loads((toy_checkpoint / "metrics.json").read_text())["scores"]
    mine = [r for r in records if r["protocol"]["checkpoint"]["sha256"] != "0" * 64]
    assert len(records) == 3 and len(mine) == 2
    assert {r["protocol"]["extractor"]["weights_sha256"] for r in mine} == {weights_hash(newer)}
    by_steps = {r["steps"]: r for r in mine}
    assert by_steps[2]["protocol"]["samples"]["reused"] is True
    assert by_steps[2]["metrics"] != kept["metrics"] and by_steps[3]["metrics"] != fresh["metrics"]
    same = ("n", "seeds", "sampler", "grid", "precision")
    assert {k: by_steps[2]["protocol"][k] for k in same} == {k: kept["protocol"][k] for k in same}
    assert by_steps[2]["protocol"]["reference"]["content_hash"] == kept["protocol"]["reference"]["content_hash"]
    assert rescore(toy_checkpoint, classifier=newer, **opts) == {"rescored": 0, "dropped": 0, "current": 2, "left": 1}
    before = (toy_checkpoint / "metrics.json").read_text()
    with pytest.raises(MetricsError, match="not the recorded one"):  # other reference images
        rescore(toy_checkpoint, classifier=classifier, reference=str(make_toy_folder(tmp_path / "other", 15)), **opts)
    assert (toy_checkpoint / "metrics.json").read_text() == before
    copy = shutil.copytree(toy_data, tmp_path / "copy")  # the same images elsewhere: the record names the original
    assert rescore(toy_checkpoint, classifier=newest, reference=str(copy), **opts)["rescored"] == 2
    refs = [r["protocol"]["reference"] for r in json.loads((toy_checkpoint / "metrics.json").read_text())["scores"]]
    assert [(r["source"], r.get("read_from")) for r in refs].count((str(toy_data), str(copy))) == 2

    assert cli.main(["rescore", str(toy_checkpoint), "--classifier", str(classifier), "--drop-quick",
                     "--cache-dir", str(tmp_path / "cache"), "--no-progress"]) == 0  # n = 10 is a quick run
    assert "2 dropped" in capsys.readouterr().out
    assert len(json.loads((toy_checkpoint / "metrics.json").read_text())["scores"]) == 1


def test_bf16_sampling_is_recorded_and_close_to_fp32(toy_checkpoint, classifier, toy_data, tmp_path):
    kw = dict(sampler="euler", steps=2, n=8, classifier=classifier, reference=toy_data, cache_dir=tmp_path / "cache",
              metrics=("fid",), progress=False, sample_cache=True)
    fp32 = genstudio.evaluate(toy_checkpoint, **kw)
    bf16 = genstudio.evaluate(toy_checkpoint, precision="bf16", **kw)
    assert (fp32["protocol"]["precision"], bf16["protocol"]["precision"]) == ("fp32", "bf16")
    assert bf16["protocol"]["samples"]["reused"] is False  # a different cell: sampled, not read back
    a, b = (np.load(e / "images.npy").astype(int) for e in sorted((tmp_path / "cache" / "eval_samples").iterdir()))
    assert 0 < np.abs(a - b).mean() < 8  # bfloat16 rounding moves pixels a little, not the picture
    with pytest.raises(MetricsError, match="precision"):
        genstudio.evaluate(toy_checkpoint, precision="fp8", **kw)


def test_sweep_writes_a_table_and_plot_and_resumes_after_an_interruption(toy_checkpoint, classifier, toy_data,
                                                                          tmp_path, monkeypatch):
    kw = dict(n=8, classifier=classifier, reference=toy_data, cache_dir=tmp_path / "cache", metrics=("fid",),
              progress=False)
    out = tmp_path / "sweep"
    calls, interrupt_at = [], [2]
    score = Evaluator.score_checkpoint

    def counted(self, pipe, ckpt, **cell):
        calls.append((cell["sampler"], cell["steps"]))
        if len(calls) == interrupt_at[0]:
            raise KeyboardInterrupt  # Ctrl-C during the second cell
        return score(self, pipe, ckpt, **cell)

    monkeypatch.setattr(Evaluator, "score_checkpoint", counted)
    with pytest.raises(KeyboardInterrupt):
        sweep(toy_checkpoint, ["euler"], [1, 2], out, **kw)
    assert [c["steps"] for c in json.loads((out / "sweep.json").read_text())["cells"]] == [1]
    calls.clear()
    interrupt_at[0] = None
    table = sweep(toy_checkpoint, ["euler", "heun"], [1, 2], out, **kw)
    assert calls == [("euler", 2), ("heun", 1), ("heun", 2)] and table["kept"] == [["euler", 1]]
    assert {(c["sampler"], c["nfe"]) for c in table["cells"]} == {("euler", 1), ("euler", 2), ("heun", 1), ("heun", 3)}
    assert (out / "fid_vs_nfe.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "sweep.json").read_text())["cells"] == table["cells"]
    calls.clear()
    sweep(toy_checkpoint, ["euler"], [2], out, **{**kw, "n": 10})  # another protocol: recomputed
    assert calls == [("euler", 2)]


def test_inception_without_weights_or_network_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no cached weights

    def offline(url, dst):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(metrics_extractors, "_download", offline)
    with pytest.raises(InceptionWeightsError, match="--inception-weights PATH") as err:
        evaluate_images(smooth_images(4, 8), reference=smooth_images(4, 8), extractor="inception", progress=False)
    assert "network is unreachable" in str(err.value) and "--extractor c10" in str(err.value)
    with pytest.raises(InceptionWeightsError, match="no Inception-v3 weights file at"):
        metrics_extractors.inception_weights_path(tmp_path / "missing.pth")
    rc = cli.main(["eval", "--images", str(make_toy_folder(tmp_path / "imgs", 4, 8)), "--extractor", "inception",
                   "--reference", str(tmp_path / "imgs"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"])
    err_text = capsys.readouterr().err
    assert rc == 2 and "error: Inception-v3 weights are not available" in err_text and "Traceback" not in err_text


def test_cli_eval_and_sweep(toy_checkpoint, classifier, toy_data, tmp_path, capsys):
    common = ["--classifier", str(classifier), "--reference", str(toy_data), "--cache-dir", str(tmp_path / "cache"),
              "--metrics", "fid,is", "--no-progress", "--n", "6"]
    out = tmp_path / "eval.json"
    assert cli.main(["eval", str(toy_checkpoint), "--sampler", "ddim", "--steps", "2", "--labels", "1",
                     "--out", str(out), *common]) == 0
    stdout = capsys.readouterr().out
    assert "FID (c10 classifier features):" in stdout and "IS (c10 classifier logits):" in stdout
    result = json.loads(out.read_text())
    assert result["protocol"]["labels"] == "all 1" and result["protocol"]["sampler"] == "ddim"
    assert cli.main(["sweep", str(toy_checkpoint), "--samplers", "ddim", "--steps", "1,2",
                     "--out", str(tmp_path / "sw"), *common]) == 0
    assert "2 cells computed" in capsys.readouterr().out and (tmp_path / "sw" / "fid_vs_nfe.png").is_file()
    assert cli.main(["eval", str(toy_checkpoint), "--sampler", "nope", *common]) == 2


@pytest.mark.skipif(not SHIPPED_CLASSIFIER.is_file(), reason="the shipped classifier is not trained yet")
def test_classifier_fid_train_vs_test_is_small_against_train_vs_noise(tmp_path):
    train, test = offline_cifar10("train"), offline_cifar10("test")
    if train is None or test is None:
        pytest.skip(NO_CIFAR)
    test = load_images(test, split="test")  # decoded once into the user's data cache
    test_images = test.images[torch.randperm(len(test), generator=torch.Generator().manual_seed(1))[:1000]]
    noise = torch.randint(0, 256, (1000, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    ev = Evaluator(reference=load_images(train), reference_n=1000, metrics=("fid",),
                   cache_dir=tmp_path, progress=False)
    fid_test, fid_noise = (ev.score_images(x)["metrics"]["fid"] for x in (test_images, noise))
    print(f"c10 classifier FID, 1000 train vs 1000 test: {fid_test:.3g}; train vs uniform noise: {fid_noise:.3g}")
    assert fid_test < 0.05 * fid_noise


def test_the_default_reference_is_the_offline_copy_under_genstudio_data(tmp_path, monkeypatch):
    monkeypatch.setenv("GENSTUDIO_DATA", str(tmp_path))
    assert default_reference("train") == "cifar10"  # set, but no copy there: torchvision's
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "test.tar.gz").write_bytes(b"")
    assert default_reference("test") == str(tmp_path / "cifar10" / "test.tar.gz")
    assert default_reference("train") == "cifar10"
    monkeypatch.delenv("GENSTUDIO_DATA")
    assert default_reference("test") == "cifar10"

"""Neon (genstudio.neon): the merge formula, a Gaussian case where the best w is known in closed form, disjoint seed
sets, and the whole pipeline (S, fine-tune through the training loop, sweep, export, resume) on a micro model."""
import json
from dataclasses import replace

import pytest
import torch

import genstudio
from genstudio.cli import main
from genstudio.config import config_from_dict
from genstudio.evaluation.metrics import checkpoint_hash
from genstudio.neon import (
    BASE_SAMPLES,
    SELECTION_SEED,
    SELF_SEED,
    NeonPlan,
    finetune_config,
    make_self_set,
    merge,
    neon,
    resolve,
    seed_sets,
    select_weight,
    ship,
)
from genstudio.train import run
from tests.helpers import ROOT, make_toy_folder, random_classifier, toy_config


def test_merge_is_the_negative_extrapolation_and_w0_is_the_base():
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g).half(),
            "count": torch.tensor([7, 8])}
    tuned = {"w": torch.randn(3, 4, generator=g), "b": torch.randn(4, generator=g).half(),
             "count": torch.tensor([1, 2])}
    same = merge(base, tuned, 0.0)
    assert all(torch.equal(same[k], base[k]) and same[k].dtype == base[k].dtype for k in base)
    m = merge(base, tuned, 0.5)
    torch.testing.assert_close(m["w"], 1.5 * base["w"] - 0.5 * tuned["w"])
    torch.testing.assert_close(m["w"] - base["w"], -0.5 * (tuned["w"] - base["w"]))  # away from the fine-tuned
    assert m["b"].dtype == torch.float16 and torch.equal(m["count"], base["count"])
    with pytest.raises(ValueError, match="different tensors"):
        merge(base, {"w": tuned["w"]}, 1.0)
    with pytest.raises(ValueError, match="shapes"):
        merge(base, {**tuned, "w": torch.zeros(4, 3)}, 1.0)


def test_a_gaussian_model_with_a_cold_sampler_gets_its_variance_back_at_the_closed_form_w():
    # The model N(m, v) fits the data N(0, 1) exactly; its sampler is cold (temperature tau < 1). Self-training on
    # its samples shrinks v toward tau^2; the merge v_w = (1 + w) v - w v_ft with tau^2 v_w = 1 restores the data's
    # variance at w* = (1 / tau^2 - 1) / (1 - v_ft).
    tau = 0.8
    base = {"m": torch.tensor(0.0, dtype=torch.float64), "v": torch.tensor(1.0, dtype=torch.float64)}
    s = tau * torch.randn(50_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    params = {k: v.clone().requires_grad_() for k, v in base.items()}
    opt = torch.optim.SGD(params.values(), lr=0.05)
    for _ in range(40):  # a brief fine-tune: Gaussian NLL on S
        opt.zero_grad()
        nll = 0.5 * (torch.log(params["v"]) + (s - params["m"]) ** 2 / params["v"]).mean()
        nll.backward()
        opt.step()
    tuned = {k: v.detach() for k, v in params.items()}
    v_ft = float(tuned["v"])
    assert tau**2 + 0.05 < v_ft < 0.8  # partly self-trained (measured 0.725: w* = 2.05)
    w_star = (1 / tau**2 - 1) / (1 - v_ft)

    def variance_error(w: float, seed: int) -> float:  # |variance of the cold sampler's output - 1|
        merged = merge(base, tuned, w)
        z = torch.randn(20_000, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return abs(float((merged["m"] + tau * merged["v"].clamp_min(0).sqrt() * z).var()) - 1)

    grid = [i / 20 for i in range(81)]  # 0 .. 4 by 0.05
    chosen = select_weight({w: variance_error(w, seed=SELECTION_SEED) for w in grid})
    assert abs(chosen - w_star) <= 0.1, (chosen, w_star)
    assert variance_error(chosen, seed=0) < 0.03 < 0.3 < variance_error(0.0, seed=0)  # reported on other seeds


def test_the_seed_sets_never_overlap():
    sets = seed_sets(6000, 2000, 10_000)
    assert sets == {"self": (SELF_SEED, SELF_SEED + 5999), "selection": (SELECTION_SEED, SELECTION_SEED + 1999),
                    "report": (0, 9999)}
    with pytest.raises(ValueError, match="report and selection seeds overlap"):
        seed_sets(10, 10, SELECTION_SEED + 1)
    with pytest.raises(ValueError, match="selection and self seeds overlap"):
        seed_sets(10, SELF_SEED, 10)
    with pytest.raises(ValueError, match="no finite score"):
        select_weight({0.0: float("nan")})


@pytest.fixture
def trained(tmp_path):
    """A micro EDM model (8x8, two classes) trained for 4 steps and exported with its training config."""
    data = make_toy_folder(tmp_path / "toy")
    cfg = toy_config(tmp_path, data, max_steps=4, batch_size=4, log_every=4, sample_every=0)
    run(config_from_dict(cfg))
    return tmp_path / "run" / "model", data


def _micro_neon(ckpt, data, tmp_path):
    """Neon on the micro model in tmp_path/neon: the evaluator's options, the plan and the record."""
    evaluator = dict(classifier=random_classifier(tmp_path / "clf.safetensors"), reference=data, metrics=("fid",),
                     cache_dir=tmp_path / "cache", progress=False, batch_size=8)
    plan = NeonPlan(checkpoint=str(ckpt), n_self=8, self_steps=2, finetune_images=8, batch_size=4,
                    weights=(0.0, 1.0), n_select=8, eval_steps=2)
    (ckpt / "samples.png").write_bytes(b"the base's grid")
    return evaluator, plan, neon(ckpt, tmp_path / "neon", plan=plan, **evaluator)


def test_neon_end_to_end_resumes_and_records_its_protocol(trained, tmp_path, capsys):
    ckpt, data = trained
    evaluator, plan, record = _micro_neon(ckpt, data, tmp_path)
    out = tmp_path / "neon"
    base_recipe = genstudio.load(ckpt, device="cpu").meta["training"]["config"]
    assert sorted(p.name for p in (out / "self").rglob("*.png")) == [f"{SELF_SEED + i:08d}.png" for i in range(8)]
    assert len(list((out / "self" / "001").glob("*.png"))) == 4  # labels i % 2 kept as class folders
    assert record["finetune"] == {"images": 8, "steps": 2, "batch_size": 4, "lr": 1e-4,
                                  "ema_half_life_kimg": 0.0008, "base_images_seen": 16, "objective": "edm",
                                  "objective_options": base_recipe["objective"]["options"]}
    assert record["selection"]["seeds"] == [SELECTION_SEED, SELECTION_SEED + 7]
    assert record["self_set"]["precision"] == "fp32"  # the evaluator's precision, by default
    assert set(record["selection"]["scores"]) == {"0", "1"} and record["w"] in (0.0, 1.0)
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["0"]["protocol"]["seeds"]["first"] == SELECTION_SEED and sweep["1"]["protocol"]["n"] == 8
    card = json.loads((out / "model" / "metrics.json").read_text())
    assert card["neon"]["w"] == record["w"] and card["training"]["neon"]["base"] == str(ckpt)
    assert card["neon"]["base_sha256"] == checkpoint_hash(ckpt)  # the base is known even if replaced later
    assert (out / "model" / BASE_SAMPLES).read_bytes() == b"the base's grid"

    # w = 0 is the base exactly (up to the float16 storage); w = 1 is 2 base - finetuned
    base = genstudio.load(ckpt, device="cpu").model.state_dict()
    tuned = genstudio.load(out / "finetune" / "model", device="cpu").model.state_dict()
    w0 = genstudio.load(out / "candidates" / "w_0", device="cpu").model.state_dict()
    w1 = genstudio.load(out / "candidates" / "w_1", device="cpu").model.state_dict()
    k = next(k for k, v in base.items() if v.is_floating_point() and v.numel() > 10)
    torch.testing.assert_close(w0[k], base[k].half().float())
    torch.testing.assert_close(w1[k], (2 * base[k] - tuned[k]).half().float())

    # a second call resumes: nothing is sampled, trained or scored again
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "model" not in p.parts}
    again = neon(ckpt, out, plan=plan, **evaluator)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in record.items() if k != "seconds"}
    assert {p: p.stat().st_mtime_ns for p in before} == before
    with pytest.raises(ValueError, match="another plan"):
        neon(ckpt, out, plan=NeonPlan(**{**plan.__dict__, "n_self": 9}), **evaluator)


def test_the_fine_tune_holds_a_curriculum_where_the_base_stopped(trained, tmp_path):
    ect = resolve(NeonPlan(checkpoint=str(ROOT / "checkpoints" / "ect_cifar10")))
    cfg = finetune_config(ect, tmp_path / "self", tmp_path / "finetune")
    meta = genstudio.load(ect.checkpoint, device="cpu").meta
    done, every = meta["training"]["steps"], meta["training"]["config"]["objective"]["options"]["double_every"]
    assert cfg["objective"]["options"]["fixed_stage"] == done // every >= 1  # not the first stage again
    config_from_dict(cfg)  # a valid training config
    edm = resolve(NeonPlan(checkpoint=str(trained[0])))
    plain = finetune_config(edm, tmp_path / "self", tmp_path / "finetune")["objective"]
    assert plain == genstudio.load(edm.checkpoint, device="cpu").meta["training"]["config"]["objective"]


def test_s_can_be_sampled_in_bf16_and_a_bad_precision_is_refused(trained, tmp_path):
    ckpt, _ = trained
    plan = resolve(NeonPlan(checkpoint=str(ckpt), n_self=4, self_steps=2, self_precision="bf16"))
    bf16 = make_self_set(plan, tmp_path / "bf16")
    fp32 = make_self_set(replace(plan, self_precision="fp32"), tmp_path / "fp32")
    files = sorted(p.relative_to(bf16) for p in bf16.rglob("*.png"))
    assert len(files) == 4 and files == sorted(p.relative_to(fp32) for p in fp32.rglob("*.png"))
    assert any((bf16 / f).read_bytes() != (fp32 / f).read_bytes() for f in files)  # autocast was on
    with pytest.raises(ValueError, match="fp32 or bf16"):
        resolve(NeonPlan(checkpoint=str(ckpt), self_precision="fp16"))


def test_neon_refuses_a_checkpoint_without_its_recipe(tmp_path, capsys):
    from tests.helpers import field_checkpoint

    ckpt = field_checkpoint(tmp_path)
    assert main(["neon", str(ckpt), "--out", str(tmp_path / "n")]) == 2
    assert "records no training config" in capsys.readouterr().err


def test_s_takes_its_samplers_options_and_a_wrong_one_is_refused(trained, tmp_path):
    ckpt, _ = trained
    plan = resolve(NeonPlan(checkpoint=str(ckpt), n_self=2, self_sampler="euler_ancestral", self_steps=2))
    noisy = make_self_set(plan, tmp_path / "eta1")
    ode = make_self_set(replace(plan, self_sampler_options={"eta": 0.0}), tmp_path / "eta0")
    files = sorted(p.relative_to(noisy) for p in noisy.rglob("*.png"))
    assert len(files) == 2 and all((noisy / f).read_bytes() != (ode / f).read_bytes() for f in files)
    with pytest.raises((TypeError, ValueError), match="temperature"):
        make_self_set(replace(plan, self_sampler_options={"temperature": 0.7}), tmp_path / "bad")


def test_ship_assembles_the_result_with_its_base_and_report_scores_and_refuses_selection_seeds(trained, tmp_path):
    from genstudio.evaluation.metrics import evaluate

    ckpt, data = trained
    evaluator, plan, record = _micro_neon(ckpt, data, tmp_path)
    report = evaluate(tmp_path / "neon" / "model", steps=2, n=8, seed=0, **evaluator)
    dest = ship(tmp_path / "neon", tmp_path / "shipped", [report], recipe="genstudio neon ... (the test)")
    card = json.loads((dest / "metrics.json").read_text())
    assert card["neon"] == {**record, "seconds": card["neon"]["seconds"]}
    assert [s["protocol"]["seeds"]["first"] for s in card["scores"]] == [0]
    assert card["scores"][0]["metrics"]["fid"] == report["metrics"]["fid"] and "base_scores" in card
    assert card["training"]["recipe"].endswith("genstudio neon ... (the test)") and "Neon (w = " in card["training"][
        "note"]
    assert (dest / BASE_SAMPLES).read_bytes() == b"the base's grid" and (dest / "samples.png").is_file()
    assert checkpoint_hash(dest) == checkpoint_hash(tmp_path / "neon" / "model")
    chosen = evaluate(tmp_path / "neon" / "model", steps=2, n=8, seed=SELECTION_SEED, **evaluator)
    with pytest.raises(ValueError, match="selection seeds"):
        ship(tmp_path / "neon", tmp_path / "again", [chosen], recipe="")
    with pytest.raises(ValueError, match="not the result of a Neon run"):
        ship(ckpt.parent, tmp_path / "again", [report], recipe="")

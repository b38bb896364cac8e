import json

import numpy as np
import pytest
import torch

import genstudio
import samplers
from genstudio import cli
from genstudio.api import Pipeline
from genstudio.checkpoint import CheckpointError, export_model, load_model
from genstudio.config import config_from_dict
from genstudio.core.paths import EDMPath
from genstudio.model import Guided
from genstudio.train import build_model
from tests.helpers import toy_config


@pytest.fixture
def exported(tmp_path):
    torch.manual_seed(0)
    model = build_model(config_from_dict(toy_config(tmp_path, tmp_path)))
    return model.eval(), export_model(model, tmp_path / "ckpt", training={"steps": 0},
                                      defaults={"sampler": "heun", "steps": 4})


def test_save_load_gives_identical_outputs(exported):
    model, folder = exported
    loaded, meta = load_model(folder)
    x, t, lab = torch.randn(3, 3, 8, 8), torch.tensor([0.1, 1.0, 30.0]), torch.tensor([0, 1, 2])
    with torch.no_grad():
        assert torch.equal(model(x, t, lab), loaded(x, t, lab))
    assert meta["family"] == "diffusion" and meta["num_classes"] == 2 and meta["defaults"]["steps"] == 4
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pkl"))  # safetensors + JSON only


def test_same_seed_same_image_whatever_the_batch(exported):
    pipe = genstudio.load(exported[1], device="cpu")
    a = pipe.sample(4, seed=7, labels=[0, 1, 0, 1], sampler="ddpm", steps=3)
    b = pipe.sample(2, seed=[9, 10], labels=[0, 1], sampler="ddpm", steps=3, batch_size=1)
    assert a.dtype == np.uint8 and a.shape == (4, 8, 8, 3)
    assert np.abs(a[2:].astype(int) - b.astype(int)).max() <= 1  # float noise of batched convolutions at most
    assert not np.array_equal(a[0], a[1])


def test_pipeline_reports_nfe_and_streams_x0(exported):
    pipe = Pipeline.load(exported[1], device="cpu")
    seen = []
    res = pipe.generate(2, sampler="heun", steps=5, labels=1, guidance=2.0, callback=lambda **kw: seen.append(kw))
    assert res.nfe == 9 and len(seen) == 5 and seen[-1]["x0"].shape == (2, 3, 8, 8)
    pil = pipe.sample(2, output="pil", steps=2)
    assert pil[0].size == (8, 8)
    assert set(pipe.samplers()) >= {"ddim", "ddpm", "euler", "heun"}


@pytest.mark.parametrize("kwargs, message", [
    (dict(labels=[5, 0]), "labels must be in 0..1"),
    (dict(labels=[0]), "1 labels for 2 images"),
    (dict(sampler="nope"), "unknown sampler"),
    (dict(steps=0), "steps must be a positive integer"),
    (dict(guidance=-1.0), "guidance must be >= 0"),
    (dict(grid="fancy"), "unknown time grid"),
    (dict(output="tiff"), "output must be"),
])
def test_bad_sampling_arguments_are_clear_errors(exported, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Pipeline.load(exported[1], device="cpu").sample(2, **kwargs)


def test_guidance_mixes_conditional_and_unconditional():
    class LabelEcho(torch.nn.Module):
        path, prediction, num_classes, null_label = EDMPath(), "x0", 3, 3

        def forward(self, x, t, labels):
            return x * 0 + labels.float().view(-1, 1)

    g = Guided(LabelEcho(), torch.tensor([1, 2]), guidance=3.0)
    out = g(torch.zeros(2, 4), 1.0)
    # uncond = 3 (the null label), cond = label: 3 + 3 (label - 3)
    assert out[:, 0].tolist() == [3 + 3 * (1 - 3), 3 + 3 * (2 - 3)] and g.nfe == 1


def test_missing_foreign_and_corrupt_checkpoints_are_clear_errors(tmp_path, exported):
    folder = exported[1]
    with pytest.raises(CheckpointError, match="no such directory"):
        load_model(tmp_path / "nope")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "genstudio.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not a genstudio model"):
        load_model(tmp_path / "foreign")
    (tmp_path / "foreign" / "genstudio.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path / "foreign")
    with pytest.raises(CheckpointError, match="genstudio.json is missing"):
        load_model(folder / "unet")

    weights = next((folder / "unet").glob("*.safetensors"))
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="cannot load"):
        load_model(folder)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="cannot load"):
        load_model(folder)
    weights.write_bytes(good)

    meta = json.loads((folder / "genstudio.json").read_text())
    (folder / "genstudio.json").write_text(json.dumps({**meta, "num_classes": 10}))
    with pytest.raises(CheckpointError, match="10 classes but the network has 3"):
        load_model(folder)
    (folder / "genstudio.json").write_text(json.dumps({**meta, "path": {"name": "warp"}}))
    with pytest.raises(CheckpointError, match="unknown noise path"):
        load_model(folder)


def test_export_refuses_non_finite_weights(tmp_path, exported):
    model = exported[0]
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match="non-finite"):
        export_model(model, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_cli_sample_writes_grid_and_pngs_and_info(tmp_path, exported, capsys):
    out = tmp_path / "samples"
    assert cli.main(["sample", str(exported[1]), "--n", "3", "--steps", "2", "--labels", "1", "--out", str(out)]) == 0
    assert (out / "grid.png").is_file() and len(list(out.glob("0000*.png"))) == 3
    assert cli.main(["info", str(exported[1])]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["num_classes"] == 2
    assert cli.main(["sample", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_export_command_ships_a_run_with_its_card(tmp_path, exported):
    dest = tmp_path / "shipped"
    assert cli.main(["export", str(exported[1]), "--to", str(dest), "--grid-images", "4"]) == 0
    metrics = json.loads((dest / "metrics.json").read_text())
    assert metrics["sampling"]["nfe"] == 7 and metrics["sampling"]["steps"] == 4  # heun, 4 steps
    assert (dest / "samples.png").is_file()
    load_model(dest)


def test_sampler_options_reach_the_sampler_and_unknown_ones_are_named(exported, tmp_path):
    pipe = Pipeline.load(exported[1], device="cpu")
    a = pipe.sample(2, sampler="ddim", steps=3, sampler_options={"eta": 1.0}, seed=3)
    b = pipe.sample(2, sampler="ddim", steps=3, seed=3)
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="has no option.*'etta'.*its options: .*eta"):
        pipe.sample(2, sampler="ddim", steps=3, sampler_options={"etta": 1.0})
    out = tmp_path / "o"
    assert cli.main(["sample", str(exported[1]), "--n", "2", "--sampler", "heun_churn", "--steps", "3",
                     "--option", "S_churn=10", "--out", str(out)]) == 0
    assert cli.main(["sample", str(exported[1]), "--n", "2", "--option", "oops"]) == 2


def test_a_ve_model_gets_a_final_denoising_step(tmp_path):
    # On the VE path t = 0 still carries sigma_min of noise; the pipeline removes it with one evaluation.
    cfg = toy_config(tmp_path, tmp_path)
    cfg["model"].update(path={"name": "ve"}, prediction="score", precond={"name": "ncsn"})
    cfg["objective"] = {"name": "ncsn"}
    model = build_model(config_from_dict(cfg))
    pipe = Pipeline(model.eval(), {}, "cpu")
    for sampler in ("euler", "dpmpp_2m", "pc", "annealed_langevin", "consistency"):
        res = pipe.generate(2, sampler=sampler, steps=4, grid="karras")
        spec = samplers.get(sampler)
        assert res.nfe == spec.nfe(4) + (0 if spec.ends_denoised else 1), sampler

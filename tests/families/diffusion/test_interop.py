"""Interop with diffusers: DDPM/DDIM pipeline folders load as genstudio models, and our discrete-VP
models export to folders that diffusers' DDIMPipeline samples identically. Offline: the UNet is built here."""
import json

import numpy as np
import pytest
import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

import genstudio
import samplers
from genstudio.checkpoint import CheckpointError
from genstudio.core.paths import EDMPath, VPDiscretePath, VPLinearPath
from genstudio.core.precond import EDMPrecond
from genstudio.interop import export_diffusers, load_diffusers_pipeline
from genstudio.model import Guided, Model
from genstudio.nets import UNetBackbone
from samplers.grids import make_grid
from tests.helpers import MICRO_UNET

SHAPE = (2, 3, 8, 8)


def micro_unet(seed=0, **kw):
    torch.manual_seed(seed)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, **{**MICRO_UNET, **kw}).eval()


def save_ddpm_folder(folder, unet, **scheduler):
    """A folder in the layout of google/ddpm-cifar10-32 (DDPMScheduler, clip_sample=True by default)."""
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", **scheduler)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(str(folder), safe_serialization=True)
    return folder


def our_ddim(model, x, steps, **opts):
    with torch.no_grad():
        return samplers.get("ddim").fn(Guided(model), x, make_grid("ddpm", model.path, steps), **opts)


def as_np_images(x):
    """What a diffusers image pipeline returns for output_type="np"."""
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def ddpm_folder(tmp_path_factory):
    unet = micro_unet()
    return unet, save_ddpm_folder(tmp_path_factory.mktemp("ddpm") / "ddpm-cifar10-micro", unet)


def test_ddpm_folder_loads_and_predicts_the_unets_eps(ddpm_folder):
    unet, folder = ddpm_folder
    model, meta = load_diffusers_pipeline(folder)
    assert isinstance(model, Model) and (model.family, model.kind, model.prediction) == ("diffusion", "field", "eps")
    assert model.precond.name == "none" and model.num_classes == 0
    assert model.path == VPDiscretePath(num_steps=1000, beta_start=1e-4, beta_end=0.02, t_min=1.0, t_max=1000.0)
    assert meta["source"] == "diffusers" and meta["path"]["name"] == "vp_discrete" and meta["prediction"] == "eps"
    assert meta["diffusers"]["pipeline"] == "DDPMPipeline" and meta["diffusers"]["clip_sample"] is True
    json.dumps(meta)  # serialisable like genstudio.json

    pipe = genstudio.load(folder, device="cpu")  # through checkpoint.load_model's hook
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for j in (0, 1, 250, 999):  # diffusers timestep index j is our t = j + 1
            ref = unet(x, j).sample
            torch.testing.assert_close(model(x, j + 1), ref, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(pipe.model(x, torch.full((2,), j + 1.0)), ref, rtol=1e-6, atol=1e-6)
    assert "ddim" in pipe.samplers()
    images = pipe.sample(2, sampler="ddim", steps=3, seed=0)
    assert images.shape == (2, 8, 8, 3) and images.dtype == np.uint8


@pytest.mark.parametrize("prediction_type, ours", [("epsilon", "eps"), ("sample", "x0"), ("v_prediction", "v")])
def test_our_ddim_matches_diffusers_on_a_loaded_folder(tmp_path, prediction_type, ours):
    unet = micro_unet(seed=1)
    folder = save_ddpm_folder(tmp_path / "p", unet, prediction_type=prediction_type)
    model, _ = load_diffusers_pipeline(folder)
    assert model.prediction == ours
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))

    # The plain DDIMScheduler loop (no clipping) on the same noise and timesteps.
    sched = DDIMScheduler.from_pretrained(str(folder / "scheduler"), clip_sample=False)
    sched.set_timesteps(10)
    ref = x.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            ref = sched.step(unet(ref, t).sample, t, ref, eta=0.0).prev_sample
    unclipped = our_ddim(model, x, 10)
    torch.testing.assert_close(unclipped, ref, rtol=1e-4, atol=1e-4)

    # DDIMPipeline on the folder as saved (clip_sample=True): our clip_denoised=True recomputes eps from
    # the clipped x0, which is diffusers' use_clipped_model_output=True.
    pipe = DDIMPipeline.from_pretrained(str(folder))
    out = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=5, output_type="np",
               use_clipped_model_output=True).images
    clipped = our_ddim(model, x, 5, clip_denoised=True)
    np.testing.assert_allclose(as_np_images(clipped), out, rtol=0, atol=1e-4)
    if prediction_type == "epsilon":  # a random net's eps gives x0 = (x - sigma eps) / alpha far outside [-1, 1]
        assert not torch.allclose(clipped, our_ddim(model, x, 5), atol=1e-3)


@pytest.mark.parametrize("prediction, path", [
    ("eps", VPDiscretePath()),
    ("x0", VPDiscretePath()),
    ("v", VPDiscretePath(num_steps=500, beta_start=2e-4, beta_end=0.03, t_max=500.0)),
])
def test_exported_model_samples_identically_in_diffusers(tmp_path, prediction, path):
    model = Model(UNetBackbone(micro_unet(seed=2)), path, prediction).eval()
    folder = export_diffusers(model, tmp_path / "export")
    assert (folder / "model_index.json").is_file()
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list(folder.rglob("*.bin"))

    pipe = DDIMPipeline.from_pretrained(str(folder))
    cfg = pipe.scheduler.config
    assert (cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end, cfg.beta_schedule) == (
        path.num_steps, path.beta_start, path.beta_end, "linear")
    assert (cfg.clip_sample, cfg.set_alpha_to_one, cfg.steps_offset) == (False, True, 0)
    out = pipe(batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=5, output_type="np").images
    # DDIMPipeline draws its initial noise with randn_tensor(shape, generator) = torch.randn on the CPU generator.
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(as_np_images(our_ddim(model, x, 5)), out, rtol=0, atol=1e-4)

    back, meta = load_diffusers_pipeline(folder)  # and the export reads back as the same model
    assert (back.path, back.prediction, meta["diffusers"]["pipeline"]) == (path, prediction, "DDIMPipeline")
    with torch.no_grad():
        torch.testing.assert_close(back(x, 37.0), model(x, 37.0), rtol=0, atol=0)


def test_pickle_only_folder_is_refused_without_unpickling(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    DDPMPipeline(unet=micro_unet(), scheduler=DDPMScheduler()).save_pretrained(str(folder), safe_serialization=False)
    assert (folder / "unet" / "diffusion_pytorch_model.bin").is_file()
    assert not list(folder.rglob("*.safetensors"))

    def no_unpickling(*a, **k):
        raise AssertionError("torch.load called")
    monkeypatch.setattr(torch, "load", no_unpickling)
    for load in (load_diffusers_pipeline, genstudio.load):
        with pytest.raises(CheckpointError, match=r"(?s)pickle.*safetensors"):
            load(folder)


@pytest.mark.parametrize("change, message", [
    ({"beta_schedule": "squaredcos_cap_v2"}, "not supported yet"),
    ({"beta_schedule": "scaled_linear"}, "not supported yet"),
    ({"trained_betas": [0.1] * 1000}, "not supported yet"),
    ({"prediction_type": "velocity"}, "prediction_type 'velocity' is not supported"),
    ({"_class_name": "ScoreSdeVeScheduler"}, "not supported"),
])
def test_unsupported_schedulers_are_clear_errors(ddpm_folder, tmp_path, change, message):
    import shutil

    folder = tmp_path / "f"
    shutil.copytree(ddpm_folder[1], folder)
    cfg_file = folder / "scheduler" / "scheduler_config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), **change}))
    with pytest.raises(CheckpointError, match=message):
        load_diffusers_pipeline(folder)


@pytest.mark.parametrize("build, message", [
    (lambda net: Model(net, EDMPath(), "x0", EDMPrecond()), "'edm' preconditioning"),
    (lambda net: Model(net, VPLinearPath(), "eps"), "noise path is 'vp_linear'"),
    (lambda net: Model(UNetBackbone(micro_unet(num_class_embeds=3)), VPDiscretePath(), "eps", num_classes=2),
     "class-conditional"),
    (lambda net: Model(net, VPDiscretePath(), "score"), "prediction is 'score'"),
])
def test_export_refuses_what_diffusers_cannot_represent(tmp_path, build, message):
    model = build(UNetBackbone(micro_unet()))
    with pytest.raises(ValueError, match=f"diffusers cannot represent this model: .*{message}"):
        export_diffusers(model, tmp_path / "x")
    assert not (tmp_path / "x").exists()

"""Latent flow matching on a VAE: encode -> diffuse -> sample -> decode round trip on a toy, every field sampler and
the editors through the unchanged API, which reports image shapes, not latent shapes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import genstudio
from genstudio.config import config_from_dict
from genstudio.core.noise import generators, randn_like
from genstudio.images import to_uint8
from genstudio.model import Guided
from genstudio.train import run
from samplers.grids import make_grid
from samplers.run import run_sampler
from tests.helpers import MICRO_UNET, make_toy_folder

TRAIN = {"batch_size": 8, "max_steps": 12, "checkpoint_every": 12, "log_every": 1, "progress": False, "lr": 3e-3,
         "sample_sampler": "decode", "sample_steps": 1}


@pytest.fixture(scope="module")
def latent_checkpoints(tmp_path_factory):
    """(latent flow checkpoint, its VAE checkpoint, the toy data folder)."""
    tmp = tmp_path_factory.mktemp("latent")
    data = make_toy_folder(tmp / "toy")
    common = {"source": str(data), "image_size": 8, "cache_dir": str(tmp / "cache")}
    vae = run(config_from_dict({
        "model": {"kind": "vae", "unet": {"latent_channels": 2, "hidden": 8, "downsamples": 1}},
        "objective": {"name": "vae_balance"}, "data": common,
        "train": {**TRAIN, "output_dir": str(tmp / "vae")}}))["model"]
    latent = run(config_from_dict({
        "model": {"network": "tiny", "unet": dict(MICRO_UNET, block_out_channels=[8, 16]), "num_classes": 2,
                  "path": {"name": "linear"}, "prediction": "velocity", "precond": {"name": "none"}},
        "objective": {"name": "latent_flow_matching", "options": {"autoencoder": str(vae)}}, "data": common,
        "train": {**TRAIN, "output_dir": str(tmp / "latent"), "sample_sampler": "euler", "sample_steps": 2}}))
    return latent["model"], vae, data


@pytest.fixture(scope="module")
def latent_pipe(latent_checkpoints):
    latent, vae, _ = latent_checkpoints
    return genstudio.load(latent, device="cpu"), genstudio.load(vae, device="cpu")


def test_api_reports_image_shapes_and_samples_with_every_field_sampler(latent_pipe):
    pipe, _ = latent_pipe
    assert pipe.image_shape == (3, 8, 8) and pipe.model.state_shape == (2, 4, 4)
    assert pipe.info()["image_shape"] == [3, 8, 8] and pipe.info()["state_shape"] == [2, 4, 4]
    usable = pipe.samplers()
    assert "dpmpp_2m" in usable and "heun" in usable and "decode" not in usable
    for sampler in usable:
        out = pipe.generate(2, sampler=sampler, steps=2, labels=[0, 1], guidance=1.5)
        assert out.images.shape == (2, 8, 8, 3) and out.images.dtype == np.uint8, sampler
    seen = []
    pipe.generate(1, sampler="euler", steps=2, callback=lambda **kw: seen.append(kw["x"].shape))
    assert seen and all(s == (1, 3, 8, 8) for s in seen)  # previews are decoded images


def test_generate_is_sample_in_latent_space_then_decode(latent_pipe):
    pipe, _ = latent_pipe
    got = pipe.generate(2, sampler="euler", steps=3, seed=5).images
    ts = make_grid(pipe.grid_for("euler"), pipe.model.path, 3)
    z = randn_like(torch.empty(2, *pipe.model.state_shape), generators([5, 6]))
    with torch.no_grad():
        states = run_sampler(__import__("samplers").get("euler"), Guided(pipe.model), z, ts)
        want = to_uint8(pipe.model.decode(states))
    assert np.array_equal(got, want)


def test_encode_diffuse_sample_decode_round_trip(latent_pipe):
    pipe, vae = latent_pipe
    images = vae.generate(2, seed=0).images
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        reconstruction = to_uint8(vae.model(vae.model.latent(x)))
    # Strength 0: encode then decode, the VAE's reconstruction exactly.
    assert np.array_equal(pipe.sdedit(images, 0.0).images, reconstruction)
    # A small strength: noise the latent a little, sample back with the ODE, decode: close to the reconstruction.
    near = pipe.sdedit(images, 0.05, sampler="heun", steps=4).images
    far = pipe.sdedit(images, 1.0, sampler="heun", steps=4).images
    err = lambda a: np.abs(a.astype(float) - reconstruction.astype(float)).mean()  # noqa: E731
    assert near.shape == (2, 8, 8, 3) and err(near) < err(far)
    frames = pipe.interpolate(frames=3, images=images, sampler="euler", steps=2)
    assert frames.images.shape == (3, 8, 8, 3)
    with pytest.raises(ValueError, match="latent space"):
        pipe.inpaint(images[0], np.ones((8, 8), bool))
    with pytest.raises(ValueError, match="colorization works on pixels"):
        pipe.colorize(images[0])


def test_latent_elbo_with_a_standard_normal_prior_is_the_vae_elbo(latent_pipe):
    # With p(z / s) = N(0, I) and s = 1 the latent model's bound is the VAE's own ELBO (KL in closed form there,
    # sampled here): the two agree in expectation, to within their Monte Carlo error over 4000 draws.
    import math

    from genstudio.families.vae import negative_elbo

    pipe, _ = latent_pipe
    vae = pipe.model.network.autoencoder
    kept = vae.latent_std.clone()
    vae.latent_std.fill_(1.0)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 8, 8).repeat(4000, 1, 1, 1) * 2 - 1
    try:
        with torch.no_grad():
            normal = lambda s: (-0.5 * s**2 - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)  # noqa: E731
            ours, exact = pipe.model.log_likelihood(x, normal)
            theirs = -negative_elbo(vae, x)[0] * x[0].numel()
    finally:
        vae.latent_std.copy_(kept)
    assert exact is False
    error = float((ours.std() ** 2 / len(x) + theirs.std() ** 2 / len(x)).sqrt())
    assert abs(float(ours.mean() - theirs.mean())) < 5 * error, (float(ours.mean()), float(theirs.mean()), error)


def test_audit_scans_the_latent_states_and_judges_decoded_images(latent_checkpoints, tmp_path, monkeypatch):
    from genstudio.audit import audit
    from genstudio.evaluation.classifier import CifarResNet, save_classifier

    monkeypatch.setenv("GENSTUDIO_CACHE", str(tmp_path / "cache"))
    latent, _, data = latent_checkpoints
    clf = save_classifier(CifarResNet(widths=(8, 16, 16), stem=8, num_classes=2), tmp_path / "clf.safetensors")
    report = audit(latent, n=16, sampler="euler", steps=2, scan_steps=1, scan_iters=2, reference=str(data),
                   test_reference=str(data), classifier=clf, out=tmp_path / "audit", log=lambda _: None)
    assert len(report["backdoor"]["mu"]) == 2 * 4 * 4  # the trigger lives where the sampler starts
    assert report["backdoor"]["protocol"]["space"] == "the sampler's latent states [2, 4, 4]"
    assert report["memorization"]["pixel"]["n_samples"] == 16 and report["real_vs_generated"]["n_test"] == 16
    assert (tmp_path / "audit" / "audit.png").stat().st_size > 1000

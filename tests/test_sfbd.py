"""SFBD (genstudio.sfbd): the fixed noisy copy, the closed-form Gaussian rounds the implementation must follow, and a
pipeline that resumes at the stage it was killed in."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genstudio.sfbd as sfbd_module
from genstudio.config import ConfigError, config_from_dict
from genstudio.core import toys
from genstudio.core.paths import EDMPath
from genstudio.data import noisy_copy, noisy_split
from genstudio.sfbd import SFBDPlan, denoise, gaussian_round, sfbd
from genstudio.train.setup import training_data
from tests.helpers import toy_config


def test_the_noisy_copy_is_fixed_by_the_seed_image_by_image():
    images = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    clean, noisy = noisy_split(50, 0.1, seed=3)
    assert len(clean) == 5 and len(noisy) == 45 and not set(clean.tolist()) & set(noisy.tolist())
    assert torch.equal(noisy_split(50, 0.1, 3)[0], clean) and not torch.equal(noisy_split(50, 0.1, 4)[0], clean)
    full = noisy_copy(images, noisy, 0.5, seed=3)
    part = noisy_copy(images, noisy[10:20], 0.5, seed=3)   # another batch: the same copies
    assert torch.equal(full[10:20], part)
    assert not torch.equal(noisy_copy(images, noisy, 0.5, seed=4), full)
    eps = (full - noisy_copy(images, noisy, 0.0 + 1e-9, seed=3)) / 0.5
    assert abs(float(eps.mean())) < 0.1 and abs(float(eps.std()) - 1) < 0.1


def test_data_noisy_is_checked_and_trains_on_the_part_asked_for(tmp_path, toy_data):
    cfg = toy_config(tmp_path, toy_data)
    for bad, match in (({"sigma": 0.5}, "needs clean_fraction"), ({"sigma": 0.5, "clean_fraction": 0.5, "seed": 0,
                                                                   "part": "clean", "sgima": 1}, "sgima"),
                       ({"sigma": -1, "clean_fraction": 0.5, "seed": 0, "part": "clean"}, "sigma"),
                       ({"sigma": 0.5, "clean_fraction": 1.5, "seed": 0, "part": "clean"}, "clean_fraction"),
                       ({"sigma": 0.5, "clean_fraction": 0.5, "seed": 0, "part": "all"}, "part")):
        with pytest.raises(ConfigError, match=match):
            config_from_dict({**cfg, "data": {**cfg["data"], "noisy": bad}})
    noisy = {"sigma": 0.5, "clean_fraction": 0.25, "seed": 1}
    clean_images, _, _ = training_data(config_from_dict({**cfg, "data": {**cfg["data"],
                                                                           "noisy": {**noisy, "part": "clean"}}}), 2)
    noisy_images, labels, _ = training_data(config_from_dict({**cfg, "data": {**cfg["data"],
                                                                              "noisy": {**noisy, "part": "noisy"}}}), 2)
    assert clean_images.dtype == torch.uint8 and len(clean_images) == 10        # 25% of the 40 toy images
    assert noisy_images.dtype == torch.float32 and len(noisy_images) == len(labels) == 30
    assert float(noisy_images.abs().max()) > 1.0                                 # off the image range: noisy


MU, S2, SIGMA, C = 0.3, 0.25, 1.0, 0.1


def _fit(x: torch.Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.var())


@pytest.mark.parametrize("sampler, stochastic, steps", [("heun", False, 24), ("euler_maruyama", True, 200)])
def test_gaussian_rounds_follow_the_closed_form_and_converge_to_the_clean_data(sampler, stochastic, steps):
    # Data N(MU, S2) per pixel; the model is the exact denoiser of N(m, v); "training" fits m, v to clean +
    # denoised. Each implemented round (genstudio.sfbd.denoise on the fixed noisy copies) must land where
    # gaussian_round says, and the rounds approach (MU, S2). Measured: means within 0.003 (ODE) and 0.010 (SDE),
    # variances within 0.2% and 2.1%.
    g = torch.Generator().manual_seed(0)
    x = MU + S2**0.5 * torch.randn(400, 1, 8, 8, generator=g, dtype=torch.float64)
    n_clean = int(C * len(x))
    clean, noisy = x[:n_clean], x[n_clean:] + SIGMA * torch.randn(len(x) - n_clean, 1, 8, 8, generator=g,
                                                                   dtype=torch.float64)
    m, v = -0.5, 1.0                                                     # an imperfect pretrained model
    for r in range(3):
        model = toys.gaussian(EDMPath(), torch.full((64,), m, dtype=torch.float64), torch.full((64,), v,
                                                                                            dtype=torch.float64))
        den = denoise(model, noisy, SIGMA, sampler, steps, seeds=[1000 * r + i for i in range(len(noisy))])
        m_impl, v_impl = _fit(torch.cat([clean, den]))
        m_pred, v_pred = gaussian_round(m, v, MU, S2, SIGMA, n_clean / len(x), stochastic)
        assert abs(m_impl - m_pred) < 0.02 and abs(v_impl / v_pred - 1) < 0.05, (r, m_impl, m_pred, v_impl, v_pred)
        m, v = m_impl, v_impl
    assert abs(m - MU) < abs(-0.5 - MU) / 2 and abs(v - S2) < abs(1.0 - S2) / 2
    m, v = -0.5, 1.0
    for _ in range(200):
        m, v = gaussian_round(m, v, MU, S2, SIGMA, C, stochastic)
    assert abs(m - MU) < 1e-6 and abs(v - S2) < 1e-6


def test_a_killed_pipeline_resumes_at_the_stage_it_stopped_in(tmp_path, toy_data, monkeypatch):
    cfg = toy_config(tmp_path, toy_data, batch_size=4, checkpoint_every=2)
    cfg["model"].update(path={"name": "linear"}, prediction="velocity", precond={"name": "none"})
    cfg["objective"] = {"name": "flow_matching"}
    cfg["data"]["limit"] = 30                                            # SFBD works on 30 of the 40 toy images
    config = config_from_dict(cfg).to_dict()
    plan = SFBDPlan(config=config, sigma=0.5, clean_fraction=0.5, seed=0, rounds=1, pretrain_steps=2,
                    round_steps=2, sampler="euler", steps=2)
    out = tmp_path / "sfbd"
    real_train, calls = sfbd_module._train, []

    def killed_at_round_one(c):
        calls.append(c["train"]["output_dir"])
        if "round_1" in c["train"]["output_dir"]:
            raise KeyboardInterrupt("killed")
        return real_train(c)

    monkeypatch.setattr(sfbd_module, "_train", killed_at_round_one)
    with pytest.raises(KeyboardInterrupt):
        sfbd(plan, out)
    state = json.loads((out / "state.json").read_text())
    assert state["done"] == ["pretrain", "denoise_1"]
    pngs = sorted((out / "round_1" / "data").rglob("*.png"))
    assert len(pngs) == 30                                               # 15 clean + 15 denoised
    pretrained_on, _, _ = training_data(config_from_dict({**config, "data": {**config["data"],
                                                                             "noisy": plan.noisy("clean")}}), 2)
    clean_pngs = [np.asarray(Image.open(p)).transpose(2, 0, 1) for p in pngs
                  if int(p.stem) in noisy_split(30, 0.5, 0)[0].tolist()]
    assert sorted(x.tobytes() for x in clean_pngs) == sorted(x.numpy().tobytes() for x in pretrained_on)
    stamps = {p: p.stat().st_mtime_ns for p in [*pngs, out / "pretrain" / "model" / "genstudio.json"]}
    calls.clear()
    monkeypatch.setattr(sfbd_module, "_train", lambda c: calls.append(c["train"]["output_dir"]) or real_train(c))
    state = sfbd(plan, out)
    assert state["done"] == ["pretrain", "denoise_1", "train_1"] and calls == [str(out / "round_1" / "train")]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())      # nothing done twice
    assert Path(state["models"]["train_1"]).is_dir()
    with pytest.raises(ValueError, match="another plan"):
        sfbd(SFBDPlan(**{**plan.__dict__, "sigma": 0.4}), out)


def test_the_clean_only_control_runs_the_same_rounds_without_denoising(tmp_path, toy_data):
    cfg = toy_config(tmp_path, toy_data, batch_size=4, checkpoint_every=2)
    plan = SFBDPlan(config=config_from_dict(cfg).to_dict(), sigma=0.5, clean_fraction=0.25, rounds=2,
                    pretrain_steps=1, round_steps=1, clean_only=True)
    state = sfbd(plan, tmp_path / "control")
    assert state["done"] == ["pretrain", "train_1", "train_2"] and not list((tmp_path / "control").rglob("*.png"))
    round_2 = json.loads((tmp_path / "control" / "round_2" / "train" / "model" / "genstudio.json").read_text())
    assert round_2["training"]["config"]["data"]["noisy"] == plan.noisy("clean")
    assert round_2["training"]["config"]["train"]["init_from"] == state["models"]["train_1"]

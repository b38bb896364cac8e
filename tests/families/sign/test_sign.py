"""SIGN-style idempotent distillation: distilled from the exact denoiser of 2-D Gaussian data, the projector f is the
identity on the data, idempotent on its own samples, and its one-step samples have the data's moments; the family
trains through the loop from an exported teacher, exports and loads to identical outputs, and its kind gets only the
one-step samplers and the "project" editor."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import genstudio
import samplers
from genstudio.checkpoint import export_model, load_model
from genstudio.config import config_from_dict
from genstudio.core import toys
from genstudio.core.paths import LinearPath
from genstudio.core.precond import NoPrecond
from genstudio.edit import editors
from genstudio.families.onestep import OneStepModel
from genstudio.families.sign import SIGNLoss
from genstudio.train import build_model, run
from tests.helpers import MLP, make_toy_folder, sliced_wasserstein, toy_config, train_players

MEAN, STD = torch.tensor([1.0, -0.5]), torch.tensor([0.5, 0.3])


def gaussian_data(n, g):
    return MEAN + STD * torch.randn(n, 2, generator=g)


def test_sign_projector_on_gaussian_data_is_identity_on_data_idempotent_and_matches_the_moments():
    torch.manual_seed(0)
    f = OneStepModel(MLP(), LinearPath(), "velocity", NoPrecond(), family="sign", kind="idempotent")
    teacher = toys.gaussian(LinearPath(), MEAN, STD**2)  # the exact E[x0 | x_t]
    f, _ = train_players(f, SIGNLoss(fake_lr_scale=3.0), gaussian_data, extra={"teacher": teacher}, steps=1500)
    with torch.no_grad():
        z = torch.randn(4000, 2, generator=torch.Generator().manual_seed(5))
        x = gaussian_data(4000, torch.Generator().manual_seed(6))
        y = f(z)
        rec, idem = ((f(x) - x) ** 2).mean().sqrt(), ((f(y) - y) ** 2).mean().sqrt()
    # measured (seed 0): rec 0.06-0.08, idem 0.03-0.05, mean error 0.03, std error 0.02, SW 0.08
    assert rec < 0.12, f"f(x) != x on the data: RMS {rec:.3f}"
    assert idem < 0.08, f"f(f(z)) != f(z): RMS {idem:.3f}"
    assert (y.mean(0) - MEAN).abs().max() < 0.08, y.mean(0)
    assert (y.std(0) - STD).abs().max() < 0.06, y.std(0)
    assert sliced_wasserstein(y, x) < 0.12  # an untrained f: about 1.1


def test_sign_kind_gets_the_one_step_samplers_and_the_project_editor():
    f = OneStepModel(MLP(), LinearPath(), "velocity", NoPrecond(), family="sign", kind="idempotent")
    assert set(samplers.compatible(f)) == {"decode", "consistency", "reapply"}
    assert editors(f) == ["project"]
    with pytest.raises(ValueError, match="reapply"):
        samplers.get("euler", f)
    with pytest.raises(ValueError, match="teacher"):
        SIGNLoss().frozen_modules(lambda folder: None)
    with pytest.raises(ValueError, match="t_lo"):
        SIGNLoss(t_lo=0.9, t_hi=0.1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two loop steps of SIGN-style distillation on 8x8 toy images from an exported (untrained) micro teacher."""
    root = tmp_path_factory.mktemp("sign")
    data = make_toy_folder(root / "data")
    cfg = toy_config(root, data)
    cfg["model"].update(path={"name": "linear"}, prediction="velocity", precond={"name": "none"})
    cfg["objective"] = {"name": "flow_matching"}
    torch.manual_seed(0)
    teacher = export_model(build_model(config_from_dict(cfg)), root / "teacher", training={"steps": 0})
    cfg["model"]["kind"] = "idempotent"
    cfg["objective"] = {"name": "sign", "options": {"teacher": str(teacher)}}
    cfg["train"].update(max_steps=2, checkpoint_every=2, init_from=str(teacher), sample_sampler="decode",
                        sample_steps=1)
    run(config_from_dict(cfg))
    return root / "run"


def test_sign_trains_exports_and_loads_to_identical_outputs(trained):
    log = (trained / "metrics.jsonl").read_text().splitlines()
    assert len(log) == 2 and '"loss_model"' in log[-1] and '"loss_fake_score"' in log[-1]
    model, meta = load_model(trained / "model")
    assert meta["family"] == "sign" and meta["kind"] == "idempotent" and isinstance(model, OneStepModel)
    again = export_model(model, trained / "again", training={"steps": 2})
    pipe, pipe2 = genstudio.load(trained / "model", device="cpu"), genstudio.load(again, device="cpu")
    for sampler, steps in (("decode", 1), ("consistency", 2), ("reapply", 2)):
        a, b = pipe.generate(3, sampler=sampler, steps=steps, seed=4), pipe2.generate(3, sampler=sampler, steps=steps,
                                                                                    seed=4)
        assert a.nfe == b.nfe == steps and (a.images == b.images).all(), sampler
    proj = pipe.project(a.images, steps=2, noise=0.1, seed=1)
    assert proj.nfe == 2 and (proj.images == pipe2.project(a.images, steps=2, noise=0.1, seed=1).images).all()
    with pytest.raises(ValueError, match="steps"):
        pipe.project(a.images, steps=0)


def test_the_studio_edit_tab_projects_with_the_sign_model(trained, tmp_path):
    from PIL import Image

    from ui.common import Shared
    from ui.models import Models
    from ui.tabs.edit import Edit

    folder = str(trained / "model")
    tab = Edit(Shared(Models([folder])))
    for name in ("gallery", "info", "file"):
        setattr(tab, name, name)
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    out = tab.project(folder, {"background": str(tmp_path / "in.png"), "layers": [], "composite": None}, 2, 0.1, 3)
    expected = genstudio.load(folder, device="cpu").project(image, steps=2, noise=0.1, seed=3).images[0]
    assert np.array_equal(out["gallery"][1][0], expected) and "NFE 2" in out["info"]

"""Easy consistency tuning (ECT): the mapping function follows the paper's formula, tuning a trained toy
EDM denoiser gives 2-step samples about as close to the data as the teacher's 20-step Heun samples, and
the trainer starts an ECT run from an exported EDM model (train.init_from)."""
import copy
import math

import pytest
import torch

import genstudio
import samplers
from genstudio.config import ConfigError, config_from_dict
from genstudio.core.paths import EDMPath
from genstudio.core.precond import precond_from_config
from genstudio.families.consistency import ECTLoss, ect_r
from genstudio.families.diffusion import EDMLoss
from genstudio.model import Guided, Model
from genstudio.train import run
from samplers.grids import make_grid
from tests.helpers import EDMTimeMLP, cm_mixture, sliced_wasserstein, toy_config

PATH = EDMPath(t_max=10.0)


def edm_model(kind="field", width=128):
    torch.manual_seed(0)
    return Model(EDMTimeMLP(width=width), PATH, "x0", precond_from_config({"name": "edm", "sigma_data": 0.5}),
                 family="consistency" if kind == "map" else "diffusion", kind=kind)


def fit(model, objective, steps, lr, batch=256, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for k in range(steps):
        kw = {"step": k, "total_steps": steps} if isinstance(objective, ECTLoss) else {}
        loss = objective(model, cm_mixture(batch, g), None, **kw).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def draw(model, sampler, ts, n=4000, seed=2):
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) * float(ts[0])
    with torch.no_grad():
        return samplers.get(sampler, model).fn(Guided(model), x, ts, generator=torch.Generator().manual_seed(seed + 1))


def test_ect_mapping_function_matches_the_paper():
    t = torch.tensor([0.01, 0.5, 2.0, 80.0], dtype=torch.float64)
    for stage in (0, 1, 3):
        want = [max(0.0, v * (1 - 2.0 ** -(stage + 1) * (1 + 8 / (1 + math.exp(v))))) for v in t.tolist()]
        assert torch.allclose(ect_r(t, stage), torch.tensor(want, dtype=torch.float64))
    # r < t always, the gap shrinks by q per stage where nothing is clamped, and small t maps to r = 0 early on
    assert (ect_r(t, 0) < t).all() and ect_r(t, 0)[0] == 0
    assert torch.allclose((t - ect_r(t, 5))[2:] * 2, (t - ect_r(t, 4))[2:])
    assert ECTLoss().stage(0, 400) == 0 and ECTLoss().stage(399, 400) == 3
    assert ECTLoss(double_every=50).stage(120, 400) == 2
    assert ECTLoss(double_every=10).stage(10_000, 100_000) == 8  # capped: later stages leave t - r at rounding level


def test_a_continued_ect_run_holds_the_stage_its_base_stopped_at():
    base = ECTLoss(double_every=300)
    held = base.continued(403, 100_000)
    assert held == {"fixed_stage": 1}
    tuned = ECTLoss(double_every=300, **held)
    assert base.stage(0, 9) == 0 and [tuned.stage(k, 9) for k in (0, 8, 10_000)] == [1, 1, 1]


def test_ect_loss_is_finite_with_the_consistency_preconditioning():
    """t clamped at the boundary sigma_min (a few per batch) must not divide by zero."""
    model = Model(EDMTimeMLP(), PATH, "x0", precond_from_config({"name": "consistency", "sigma_min": 0.002}),
                  family="consistency", kind="map")
    torch.manual_seed(0)
    loss = ECTLoss(P_mean=-5.0, P_std=2.0)(model, torch.randn(512, 2), None, step=0, total_steps=100)
    assert torch.isfinite(loss).all()


def test_ect_loss_targets_the_data_where_r_is_zero():
    """With r = 0 for every sample (stage 0, small t) the target is x0 itself: a model that returns x0 exactly
    (an oracle through the boundary) has zero loss, and the weight is 1 / t."""
    model = edm_model("map")
    loss = ECTLoss(P_mean=-6.0, P_std=0.01)(model, torch.randn(8, 2), None, step=0, total_steps=100)
    assert loss.shape == (8,) and torch.isfinite(loss).all()
    with pytest.raises(ValueError, match="map"):
        ECTLoss()(edm_model("field"), torch.zeros(4, 2))


def test_ect_two_steps_approach_the_teachers_twenty():
    data = cm_mixture(4000, torch.Generator().manual_seed(10))
    teacher = fit(edm_model(width=256), EDMLoss(P_mean=-1.0, P_std=1.4), steps=4000, lr=2e-3)
    heun = make_grid("karras", PATH, 20)
    teacher_w = sliced_wasserstein(draw(teacher, "heun", heun), data)

    student = edm_model("map", width=256)
    student.network.load_state_dict(copy.deepcopy(teacher.network.state_dict()))
    jumps = torch.tensor([PATH.t_max, 0.5, 0.0])
    before = sliced_wasserstein(draw(student, "consistency", jumps), data)
    # the toy's settings: levels centred lower (P_mean -0.5) for data of scale 1 and t_max = 10, a wider
    # pseudo-Huber c for 2-D points, 5 stages of 600 steps
    fit(student, ECTLoss(P_mean=-0.5, c=0.3, double_every=600), steps=3000, lr=1e-4, seed=1)
    after = sliced_wasserstein(draw(student, "consistency", jumps), data)
    print(f"ect: teacher heun-20 {teacher_w:.3f}; 2-step before tuning {before:.3f}, after {after:.3f}")
    assert teacher_w < 0.2  # the teacher is trained
    assert after <= 1.5 * teacher_w
    assert after < before


def test_trainer_runs_ect_from_an_exported_edm_model(tmp_path, toy_data):
    edm = toy_config(tmp_path / "edm", toy_data, max_steps=4, checkpoint_every=4)
    edm["model"].update(path={"name": "edm"}, prediction="x0", precond={"name": "edm"})
    run(config_from_dict(edm))
    teacher_dir = tmp_path / "edm" / "run" / "model"

    ect = toy_config(tmp_path / "ect", toy_data, max_steps=3, checkpoint_every=3, sample_sampler="consistency",
                     sample_steps=2, init_from=str(tmp_path / "edm" / "run"))
    ect["model"].update(kind="map", path={"name": "edm"}, prediction="x0", precond={"name": "edm"})
    ect["objective"] = {"name": "ect"}
    ect_config = config_from_dict(ect)
    # lr = 0: the tuned model's weights are the teacher's, so init_from copied them
    run(config_from_dict({**ect, "train": {**ect["train"], "lr": 0.0}}))
    a = genstudio.load(teacher_dir).model.network.state_dict()
    b = genstudio.load(tmp_path / "ect" / "run" / "model").model.network.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    pipe = genstudio.load(tmp_path / "ect" / "run" / "model")
    assert pipe.model.kind == "map" and pipe.samplers() == ["consistency"]
    assert pipe.sample(2, sampler="consistency", steps=2, seed=0, labels=[0, 1]).shape == (2, 8, 8, 3)

    wrong = copy.deepcopy(ect)
    wrong["train"]["output_dir"] = str(tmp_path / "wrong")
    wrong["model"]["unet"] = {**wrong["model"]["unet"], "block_out_channels": [16, 16]}
    with pytest.raises(ConfigError, match="does not match"):
        run(config_from_dict(wrong))
    missing = copy.deepcopy(ect)
    missing["train"].update(output_dir=str(tmp_path / "missing"), init_from=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="not an exported genstudio model"):
        run(config_from_dict(missing))
    assert ect_config.train.init_from

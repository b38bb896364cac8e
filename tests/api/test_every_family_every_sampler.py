"""Every sampler a model admits runs on it, whatever its family: the shared conversions at work
(DDIM or DPM-Solver on a flow, Euler on a score model, annealed Langevin on a diffusion model)."""
import numpy as np
import pytest
import torch

import samplers
from genstudio.api import Pipeline
from genstudio.config import config_from_dict
from genstudio.train import build_model
from tests.helpers import toy_config

FAMILIES = {
    "diffusion (EDM, x0)": ({"path": {"name": "edm"}, "prediction": "x0", "precond": {"name": "edm"}}, "edm"),
    "diffusion (DDPM, eps)": ({"path": {"name": "vp_discrete"}, "prediction": "eps", "precond": {"name": "none"}},
                              "ddpm"),
    "score (NCSN)": ({"path": {"name": "ve"}, "prediction": "score", "precond": {"name": "ncsn"}}, "ncsn"),
    "flow": ({"path": {"name": "linear"}, "prediction": "velocity", "precond": {"name": "none"}}, "flow_matching"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_compatible_sampler_runs(tmp_path, family):
    model_cfg, objective = FAMILIES[family]
    cfg = toy_config(tmp_path, tmp_path)
    cfg["model"].update(model_cfg)
    cfg["objective"] = {"name": objective}
    torch.manual_seed(0)
    pipe = Pipeline(build_model(config_from_dict(cfg)).eval(), {}, "cpu")
    names = pipe.samplers()
    assert len(names) >= 17 and "caf" not in names
    for name in names:
        res = pipe.generate(2, sampler=name, steps=2, labels=[0, 1], guidance=1.5)
        assert res.images.shape == (2, 8, 8, 3) and res.images.dtype == np.uint8, name
        expected = samplers.get(name).nfe(2)
        if expected is not None and family != "score (NCSN)":  # VE adds its final denoise
            assert res.nfe == expected, name

"""The studio with a flow: the Generate tab's temperature reaches the decode sampler, and the Models tab's bits/dim
table marks each recorded number exact or bound."""
from __future__ import annotations

import json

import numpy as np

from genstudio.checkpoint import export_model
from genstudio.config import config_from_dict
from genstudio.train import build_model
from ui.common import Shared
from ui.likelihood import likelihood_table
from ui.models import Models
from ui.tabs.generate import Generate


def flow_checkpoint(tmp_path):
    config = config_from_dict({"model": {"kind": "nf", "unet": {"levels": 2, "steps": 1, "hidden": 4}},
                               "objective": {"name": "finc_nll"}, "data": {"image_size": 8}})
    return export_model(build_model(config).eval(), tmp_path / "flow", defaults={"sampler": "decode", "steps": 1})


def test_generate_tab_passes_the_temperature_to_the_decode_sampler(tmp_path):
    folder = str(flow_checkpoint(tmp_path))
    tab = Generate(Shared(Models([folder])))
    for name in ("preview", "gallery", "info", "file", "images", "seed"):
        setattr(tab, name, name)

    def images(temperature):
        *_, last = tab.generate(folder, "decode", 1, None, 0, False, 4, -1, 1.0, temperature)
        return last["images"]

    cold, hot = images(0.0), images(1.0)
    assert cold.shape == (4, 8, 8, 3) and np.all(cold == cold[0])  # temperature 0: every seed decodes the mode
    assert hot.std() > cold.std()


def test_models_tab_table_marks_exact_and_bound(tmp_path):
    folder = flow_checkpoint(tmp_path)
    assert "none recorded" in likelihood_table([str(folder)])
    record = {"bits_per_dim": 3.5, "standard_error": 0.01, "exact": True,
              "protocol": {"n": 100, "of": 10000, "method": "change of variables (exact)"}}
    bound = {**record, "bits_per_dim": 4.25, "exact": False}
    (folder / "metrics.json").write_text(json.dumps({"likelihood": [record, bound]}))
    table = likelihood_table([str(folder)])
    assert "| flow | 3.500 ± 0.010 | exact | 100 of 10000 |" in table and "| 4.250 ± 0.010 | bound (upper)" in table


def test_edit_tab_reconstructs_with_a_flow_exactly(tmp_path):
    from PIL import Image

    from ui.tabs.edit import Edit

    folder = str(flow_checkpoint(tmp_path))
    tab = Edit(Shared(Models([folder])))
    for name in ("gallery", "info", "file"):
        setattr(tab, name, name)
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "in.png")
    out = tab.reconstruct(folder, {"background": str(tmp_path / "in.png"), "layers": [], "composite": None})
    assert np.array_equal(out["gallery"][1][0], image) and "mean |error| 0.00" in out["info"]

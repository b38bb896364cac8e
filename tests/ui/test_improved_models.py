"""The studio on improved models: a learned time grid offered for its model in the Generate tab, and a model made by
genstudio neon shown next to its base on the same seeds in the Models tab."""
from __future__ import annotations

import json
import shutil

import pytest
from gradio_client import Client

from genstudio.api import Pipeline
from genstudio.learned_grids import learn_grid, save_grid
from tests.helpers import field_checkpoint, serve

AUTO = "auto (the sampler's default)"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("improved")
    base = field_checkpoint(root)
    name = save_grid(base, learn_grid(Pipeline.load(base, device="cpu"), "dpmpp_2m", 2, n=2, teacher_steps=4,
                                      max_evals=3))
    improved = root / "neon_model"
    shutil.copytree(base, improved)
    (improved / "metrics.json").write_text(json.dumps({"neon": {"base": str(base), "w": 0.5}}))
    with serve([base, improved]) as (url, _):
        yield {"client": Client(url, verbose=False), "base": str(base), "improved": str(improved), "grid": name}


def test_the_generate_tab_offers_the_models_learned_grids(ctx):
    out = ctx["client"].predict(ctx["base"], api_name="/select_model")
    grids = [c[0] for c in out[3]["choices"]]
    assert ctx["grid"] in grids and "karras" in grids and grids[0] == AUTO
    res = ctx["client"].predict(ctx["base"], "dpmpp_2m", 7, ctx["grid"], 0, False, 2, -1, 1.0, api_name="/generate")
    assert f"2 steps on the {ctx['grid']} grid" in res[2] and "NFE 2" in res[2]  # the grid's steps, not 7


def test_the_models_tab_shows_a_neon_model_next_to_its_base(ctx):
    images, info = ctx["client"].predict(ctx["improved"], api_name="/base_vs_improved")
    assert len(images) == 2 and "Neon, w = 0.5" in info and "base" in info
    with pytest.raises(Exception, match="was not made by genstudio neon"):
        ctx["client"].predict(ctx["base"], api_name="/base_vs_improved")

"""The studio on improved models: a learned time grid offered for its model in the Generate tab, and a model made by
genstudio neon shown next to its base on the same seeds in the Models tab."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from gradio_client import Client

from genstudio.api import Pipeline
from genstudio.images import save_png
from genstudio.learned_grids import learn_grid, save_grid
from genstudio.neon import BASE_SAMPLES
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
    replaced = root / "replaced_in_place"  # the merged model written over its base, as the shipped ect_cifar10 is
    shutil.copytree(base, replaced)
    score = {"sampler": "dpmpp_2m", "steps": 2, "n": 8, "protocol": {"precision": "fp32", "seeds": {"first": 0}}}
    (replaced / "metrics.json").write_text(json.dumps({
        "neon": {"base": str(replaced), "base_sha256": "0" * 64, "w": 2.5},
        "scores": [{**score, "metrics": {"fid": 90.0}}], "base_scores": [{**score, "metrics": {"fid": 100.0}}]}))
    for i, png in enumerate((BASE_SAMPLES, "samples.png")):
        save_png(np.full((34, 34, 3), 60 * i, np.uint8), replaced / png)
    with serve([base, improved, replaced]) as (url, _):
        yield {"client": Client(url, verbose=False), "base": str(base), "improved": str(improved), "grid": name,
               "replaced": replaced}


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


def test_a_neon_model_that_replaced_its_base_shows_the_two_recorded_grids_and_scores(ctx):
    images, info = ctx["client"].predict(str(ctx["replaced"]), api_name="/base_vs_improved")
    assert len(images) == 2 and "base: its samples.png" in images[0]["caption"] and "Neon, w = 2.5" in info
    assert "| dpmpp_2m | 2 | fp32 | 0 | 8 | 100.0 | 90.0 |" in info
    (ctx["replaced"] / BASE_SAMPLES).unlink()
    with pytest.raises(Exception, match="lacks base_samples.png"):
        ctx["client"].predict(str(ctx["replaced"]), api_name="/base_vs_improved")

"""Loading refuses every folder of the hostile corpus (tests/hostile.py) with a CheckpointError whose message names
the problem, and never unpickles anything on the way; the valid folders the corpus is made from, and the same
weights split into safetensors shards, still load to the same model."""
from __future__ import annotations

import json
import pickle
import shutil
from collections import Counter

import pytest
import torch

from genstudio.checkpoint import CheckpointError, load_model
from genstudio.interop import load_diffusers_pipeline
from tests.hostile import (
    BASES,
    CASES,
    DESCRIPTIONS,
    MARKER,
    ODD_VALUES,
    STAGES,
    corpus_table,
    field_paths,
    set_field,
    split_shards,
)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {name: build(root) for name, build in BASES.items()}


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint loader unpickled something")
    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(module, name, refuse)


def loaders(base: str):
    """genstudio.load's loader, and for diffusers folders the pipeline loader itself too."""
    return [load_model] + ([load_diffusers_pipeline] if base == "diffusers" else [])


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.group}-{c.name}")
def test_a_hostile_checkpoint_is_refused_with_its_reason(case, bases, tmp_path, no_unpickling):
    folder = tmp_path / case.base
    shutil.copytree(bases[case.base], folder)
    case.apply(folder)
    for load in loaders(case.base):
        with pytest.raises(CheckpointError, match=case.match):
            load(folder, **case.load)
    assert not (folder / MARKER).exists(), "a pickle in the corpus was unpickled"


@pytest.mark.parametrize("base, name", DESCRIPTIONS)
def test_any_field_set_to_an_odd_value_loads_or_is_a_checkpoint_error(bases, tmp_path, base, name, no_unpickling):
    """Every field of the description, set to each of ODD_VALUES: the folder loads (the value is a valid one) or
    loading raises a CheckpointError; never another exception."""
    fields = field_paths(json.loads((bases[base] / name).read_text()))
    crashes, loaded = [], 0
    for i, path in enumerate(fields):
        for j, value in enumerate(ODD_VALUES):
            folder = tmp_path / f"{i}-{j}"
            shutil.copytree(bases[base], folder)
            set_field(folder / name, path, value)
            for load in loaders(base):
                try:
                    load(folder)
                    loaded += 1
                except CheckpointError:
                    pass
                except Exception as e:  # what the sweep looks for
                    crashes.append(f"{'.'.join(path)} = {value!r:.30}: {type(e).__name__}: {e}")
            shutil.rmtree(folder)
    assert not crashes, "\n".join(crashes)
    assert loaded < len(fields) * len(ODD_VALUES) / 2  # most odd values are refused


def test_the_corpus_covers_every_class(capsys):
    counts = Counter(c.group for c in CASES)
    table = corpus_table()
    with capsys.disabled():
        print("\n" + table)
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"
    assert {c.stage for c in CASES} <= set(STAGES)
    assert counts["pickles"] >= 15 and counts["weights"] >= 25 and counts["descriptions"] >= 60
    assert counts["messages"] >= 10 and len(CASES) >= 100
    assert f"| all | {len(CASES)} |" in table


@pytest.mark.parametrize("base", sorted(BASES))
def test_the_bases_load_and_pass_the_probe(bases, base, no_unpickling):
    for load in loaders(base):
        model, meta = load(bases[base])
        x = torch.randn(2, *model.image_shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.isfinite(model(x, 0.5 * model.path.t_max)).all()
        json.dumps(meta)


def test_sharded_safetensors_load_to_the_same_model(bases, tmp_path, no_unpickling):
    folder = tmp_path / "sharded"
    shutil.copytree(bases["genstudio"], folder)
    split_shards()(folder)
    assert not (folder / "unet" / "diffusion_pytorch_model.safetensors").exists()
    a, b = load_model(bases["genstudio"])[0].state_dict(), load_model(folder)[0].state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_a_version_1_description_still_loads(bases, tmp_path):
    folder = tmp_path / "v1"
    shutil.copytree(bases["genstudio"], folder)
    meta = json.loads((folder / "genstudio.json").read_text())
    v1 = {k: v for k, v in meta.items() if k != "components"} | {"version": 1, "network": "diffusers.UNet2DModel"}
    (folder / "genstudio.json").write_text(json.dumps(v1))
    model, got = load_model(folder)
    assert got["version"] == 2 and got["components"] == meta["components"]
    x = torch.randn(1, *model.image_shape)
    with torch.no_grad():
        torch.testing.assert_close(model(x, 1.0), load_model(bases["genstudio"])[0](x, 1.0), rtol=0, atol=0)


def test_loading_leaves_the_global_rng_alone(bases):
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    load_model(bases["genstudio"])
    assert torch.equal(torch.rand(3), want)


def test_problems_in_one_description_are_reported_together(bases, tmp_path):
    folder = tmp_path / "many"
    shutil.copytree(bases["genstudio"], folder)
    meta = json.loads((folder / "genstudio.json").read_text())
    meta.update(num_classes=-3, prediction="noise", defaults={"steps": 0, "grid": "spiral"})
    (folder / "genstudio.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"(?s)genstudio\.json has 4 problems:\n  - prediction = 'noise'.*"
                                              r"num_classes = -3.*defaults\.steps = 0.*defaults\.grid = 'spiral'"):
        load_model(folder)

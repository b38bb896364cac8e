"""Skipped (non-finite) steps: a checkpoint due at one is saved at the next good step; the count reaches the
log, the trainer state, the exported model's training record and the card; non-finite reflow pairs are
refused when read."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

import genstudio.train as train_mod
from genstudio.atomic import read_jsonl
from genstudio.checkpoint import load_model
from genstudio.config import config_from_dict
from genstudio.train import EXIT_ERROR, latest_checkpoint, run
from tests.helpers import toy_config, write_pairs
from tests.train.runs import patch_objective, steps_of, write_toml


@pytest.mark.parametrize("bad, saved", [
    ({8}, [4, 9, 12]),           # the due step 8 skipped: saved at 9
    ({8, 9}, [4, 10, 12]),       # two in a row: at 10
    ({7, 8, 9}, [4, 10, 12]),    # a streak across the due step
    ({5}, [4, 8, 12]),           # a skip elsewhere moves nothing
])
def test_a_checkpoint_due_at_a_skipped_step_is_saved_at_the_next_good_one(tmp_path, toy_data, monkeypatch, capsys,
                                                                         bad, saved):
    patch_objective(monkeypatch, bad)
    result = run(config_from_dict(toy_config(tmp_path, toy_data, max_steps=12, keep_checkpoints=10,
                                             max_nonfinite=5)))
    assert steps_of(tmp_path / "run") == saved
    assert result["skipped_steps"] == len(bad) and not result["stopped_early"]
    recs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["skipped_steps"] for r in recs] == [sum(b <= s for b in bad) for s in range(1, 13)]
    assert load_model(tmp_path / "run")[1]["training"]["skipped_steps"] == len(bad)
    state = json.loads((latest_checkpoint(tmp_path / "run") / "trainer_state.json").read_text())
    assert state["skipped_steps"] == len(bad)
    out = capsys.readouterr().out
    assert f"{len(bad)} of 12 updates were skipped as non-finite" in out
    assert ("checkpoint deferred" in out) == (8 in bad)


def test_skipped_steps_survive_a_resume_and_reach_the_card(tmp_path, toy_data, monkeypatch):
    from genstudio.publish import publish

    patch_objective(monkeypatch, {3, 6})  # one call per step: calls 3 and 6 are steps 3 and 6 (then 10 after resume)
    cfg = toy_config(tmp_path, toy_data, max_steps=8, checkpoint_every=4)
    run(config_from_dict(cfg))
    assert load_model(tmp_path / "run")[1]["training"]["skipped_steps"] == 2
    cfg["train"]["max_steps"] = 12
    run(config_from_dict(cfg), resume=True)  # steps 9..12 are calls 9..12: none bad
    assert load_model(tmp_path / "run")[1]["training"]["skipped_steps"] == 2
    card = json.loads((publish(tmp_path / "run", tmp_path / "card", grid_images=4, timing_images=2)
                       / "metrics.json").read_text())
    assert card["training"]["skipped_steps"] == 2 and card["training"]["steps"] == 12

    meta_path = tmp_path / "run" / "model" / "genstudio.json"  # a model exported before the count existed:
    meta = json.loads(meta_path.read_text())                    # the card counts the log's skipped steps
    del meta["training"]["skipped_steps"]
    meta_path.write_text(json.dumps(meta))
    card = json.loads((publish(tmp_path / "run", tmp_path / "card2", grid_images=4, timing_images=2)
                       / "metrics.json").read_text())
    assert card["training"]["skipped_steps"] == 2


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_reflow_pairs_are_refused_when_read_naming_the_shard_and_sample(tmp_path, value, capsys):
    pairs_dir = write_pairs(tmp_path / "pairs")
    shard = pairs_dir / "pairs-00001.safetensors"
    tensors = load_file(str(shard))
    tensors["x0"][3, 1, 2, 5] = value
    save_file(tensors, str(shard))
    cfg = toy_config(tmp_path, pairs_dir, max_steps=3)
    cfg["model"].update(path={"name": "linear"}, prediction="velocity", precond={"name": "none"})
    cfg["objective"] = {"name": "flow_matching"}
    cfg_path = write_toml(tmp_path / "c.toml", cfg)
    assert train_mod.main(["--config", str(cfg_path)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "pairs-00001.safetensors: x0 is not finite for 1 of 8 samples: the first is row 3 (sample 11)" in err, err
    assert str(value) in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any step

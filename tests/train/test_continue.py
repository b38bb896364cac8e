"""Training that accumulates: a run continued from an exported model (`--continue`, train.continue_from) starts
from its weights, loads its compact optimizer state where there is one, and appends its segment to the lineage
whose sums the card shows; a foreign or mismatched source is a clear error."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from genstudio import lineage
from genstudio.checkpoint import CheckpointError, load_model, read_meta
from genstudio.config import ConfigError, config_from_dict
from genstudio.publish import publish
from genstudio.train import continue_config, continued, main, run
from tests.helpers import ROOT, toy_config


@pytest.fixture
def shipped_run(tmp_path, toy_data):
    """A 4-step toy run, exported as a card with fp16 weights and its optimizer state."""
    run(config_from_dict(toy_config(tmp_path, toy_data, max_steps=4, checkpoint_every=4)))
    return publish(tmp_path / "run", tmp_path / "ckpt", grid_images=2, timing_images=1, fp16=True, optimizer=True)


def unet(folder):
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_a_continued_run_starts_from_the_weights_and_extends_the_lineage(shipped_run, tmp_path, capsys):
    assert {t.dtype for t in unet(shipped_run).values()} == {torch.float16}
    out = tmp_path / "more"
    # lr 0: the weights cannot move, so the continued model is its start, the source's (fp16) EMA
    config = continue_config(shipped_run, None, ["--train.max_steps", "3", "--train.checkpoint_every", "3",
                                                 "--train.lr", "0", "--train.output_dir", str(out)])
    assert config.train.seed == 1 and config.train.continue_from == str(shipped_run)  # new noise per segment
    run(config)
    assert "AdamW state of step 4 loaded" in capsys.readouterr().out
    ours, theirs = unet(out / "model"), unet(shipped_run)
    assert all(torch.equal(ours[k], theirs[k].float()) for k in theirs)
    assert json.loads((out / "config.json").read_text())["train"]["warmup_steps"] == 0  # moments loaded: none

    training = read_meta(out / "model")["training"]
    first, second = training["lineage"]
    assert (first["steps"], second["steps"], training["steps"]) == (4, 3, 7)
    assert training["images_seen"] == first["images_seen"] + second["images_seen"] == 7 * 8
    assert second["started_from"].startswith(str(shipped_run)) and second["batch_size"] == 8
    assert second["precision"] == "fp32" and second["config"]["train"]["continue_from"] == str(shipped_run)
    card = publish(out, tmp_path / "card", grid_images=2, timing_images=1)
    card_training = json.loads((card / "metrics.json").read_text())["training"]
    assert card_training["segments"] == 2 and card_training["steps"] == 7
    assert "config" not in card_training["lineage"][1] and not (card / "optimizer").exists()

    main(["--continue", str(shipped_run), "--resume", "--train.max_steps", "5", "--train.checkpoint_every", "5",
          "--train.output_dir", str(out)])  # a resume keeps the lineage it started from
    training = read_meta(out / "model")["training"]
    assert [s["steps"] for s in training["lineage"]] == [4, 5] and training["steps"] == 9


def test_without_optimizer_state_the_moments_are_rebuilt_with_a_warmup(shipped_run, tmp_path, capsys):
    shutil.rmtree(shipped_run / "optimizer")
    out = tmp_path / "more"
    run(continue_config(shipped_run, None, ["--train.max_steps", "2", "--train.warmup_steps", "5",
                                            "--train.checkpoint_every", "2", "--train.output_dir", str(out)]))
    assert "AdamW's moments are rebuilt (LR warmup over 5 steps)" in capsys.readouterr().out
    assert [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [2e-4, 4e-4]


def test_an_older_record_is_a_one_segment_lineage():
    folder = ROOT / "checkpoints" / "flow_small_cifar10"
    training = read_meta(folder)["training"]
    card = json.loads((folder / "metrics.json").read_text())["training"]
    (segment,) = lineage.segments(training, card)
    assert segment["batch_size"] == 256 and segment["precision"] == "bf16" and segment["note"] == card["note"]
    more = {"steps": 10, "images_seen": 2560, "wall_time_s": 5.0, "hardware": "CPU", "skipped_steps": 0}
    record = lineage.extend(training, more, card)
    assert record["images_seen"] == training["images_seen"] + 2560 and record["steps"] == training["steps"] + 10
    assert record["hardware"] == "NVIDIA H200 + CPU" and record["segments"] == 2


def test_a_mismatched_config_or_a_corrupt_source_is_a_clear_error(shipped_run, tmp_path):
    over = ["--train.max_steps", "1", "--train.output_dir", str(tmp_path / "x")]
    with pytest.raises(ConfigError, match="num_classes: the checkpoint has 2, the config makes 0"):
        run(continue_config(shipped_run, None, over + ["--model.num_classes", "0"]))
    with pytest.raises(ConfigError, match="set only one of them"):
        continue_config(shipped_run, None, over + ["--train.init_from", str(shipped_run)])
    with pytest.raises(ConfigError, match="no such folder"):
        continue_config(tmp_path / "nowhere", None, over)

    broken = shutil.copytree(shipped_run, tmp_path / "broken")
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        run(continue_config(broken, None, over))
    assert main(["--continue", str(broken), *over]) == 2

    foreign = shutil.copytree(shipped_run, tmp_path / "foreign")
    meta = json.loads((foreign / "genstudio.json").read_text())
    (foreign / "genstudio.json").write_text(json.dumps({**meta, "format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a genstudio model description"):
        continue_config(foreign, None, over)

    spoiled = shutil.copytree(shipped_run, tmp_path / "spoiled")
    shard = next((spoiled / "optimizer").glob("exp_avg_sq-*.safetensors"))
    tensors = load_file(str(shard))
    key = next(iter(tensors))
    save_file({**tensors, key: tensors[key][:1]}, str(shard), metadata={"moment": "exp_avg_sq"})
    with pytest.raises(CheckpointError, match=f"exp_avg_sq of {key} has shape"):
        run(continue_config(spoiled, None, [*over[:2], "--train.output_dir", str(tmp_path / "y")]))


def test_the_optimizer_state_is_sharded_under_the_file_limit(shipped_run, tmp_path, monkeypatch):
    model, _ = load_model(shipped_run)
    opt = torch.optim.AdamW(model.parameters())
    continued.load_optimizer(opt, model, shipped_run / "optimizer")
    monkeypatch.setattr(continued, "SHARD_BYTES", 64 << 10)
    monkeypatch.setattr(continued, "HEADER_ROOM", 8 << 10)
    folder = continued.save_optimizer(opt, model, tmp_path / "opt")
    files = sorted(folder.glob("*.safetensors"))
    assert len(files) > 2 and all(f.stat().st_size <= 64 << 10 for f in files)
    again = torch.optim.AdamW(model.parameters())
    assert continued.load_optimizer(again, model, folder) == 4
    p = next(model.parameters())
    assert torch.equal(again.state[p]["exp_avg"], opt.state[p]["exp_avg"])

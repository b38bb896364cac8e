import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

import genstudio.train as train_mod
from genstudio.checkpoint import load_model
from genstudio.config import ConfigError, config_from_dict, load_config
from genstudio.train import NonFiniteLossError, batch_indices, latest_checkpoint, run
from tests.helpers import ROOT, toy_config, write_pairs
from tests.train.runs import env, losses, patch_objective, train_cmd, wrap_objective, write_toml


def test_tiny_model_loss_falls_by_half(tmp_path, toy_data):
    cfg = config_from_dict(toy_config(tmp_path, toy_data, max_steps=300, checkpoint_every=300, batch_size=16))
    run(cfg)
    ls = list(losses(tmp_path / "run").values())
    first, last = sum(ls[:20]) / 20, sum(ls[-50:]) / 50
    assert last < 0.5 * first, (first, last)
    model, meta = load_model(tmp_path / "run" / "model")
    assert meta["training"]["steps"] == 300 and meta["family"] == "diffusion"


def test_sigkill_mid_epoch_then_resume_replays_the_same_losses(tmp_path, toy_data):
    # 40 images, batch 8: 5 steps an epoch, so checkpoints every 8 steps are mid-epoch.
    base = toy_config(tmp_path, toy_data, max_steps=60, checkpoint_every=8, keep_checkpoints=1)
    base["train"]["output_dir"] = str(tmp_path / "straight")
    run(config_from_dict(base))
    want = losses(tmp_path / "straight")

    base["train"]["output_dir"] = str(tmp_path / "killed")
    cfg_path = write_toml(tmp_path / "killed.toml", base)
    proc = subprocess.Popen(train_cmd(cfg_path), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 19:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = latest_checkpoint(tmp_path / "killed")
    killed_at = len(losses(tmp_path / "killed"))
    # Killed after step 16 or, if the poller was slow on a busy machine, a little later, mid-run anyway.
    assert ckpt is not None and 16 <= int(ckpt.name[5:]) < killed_at < 60, (ckpt, killed_at)

    subprocess.run(train_cmd(cfg_path, "--resume"), env=env(), check=True, capture_output=True)
    got = losses(tmp_path / "killed")
    assert sorted(got) == list(range(1, 61))
    assert got == want  # exactly equal, step by step


def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path, toy_data):
    cfg = toy_config(tmp_path, toy_data, max_steps=400, checkpoint_every=1000)
    cfg_path = write_toml(tmp_path / "c.toml", cfg)
    proc = subprocess.Popen(train_cmd(cfg_path), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    while proc.poll() is None and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, output  # stopped before max_steps: its own exit code
    assert "checkpoint saved" in output
    ckpt = latest_checkpoint(tmp_path / "run")
    step = json.loads((ckpt / "trainer_state.json").read_text())["step"]
    assert 5 <= step < 400 and max(losses(tmp_path / "run")) == step
    res = subprocess.run(train_cmd(cfg_path, "--resume", "--train.max_steps", str(step + 3)), env=env(),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stdout + res.stderr and max(losses(tmp_path / "run")) == step + 3


def test_single_nan_step_is_skipped_and_training_goes_on(tmp_path, toy_data, monkeypatch):
    patch_objective(monkeypatch, {6})
    run(config_from_dict(toy_config(tmp_path, toy_data, max_steps=10)))
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped"] for r in recs] == [i == 6 for i in range(1, 11)]
    model, _ = load_model(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_streak_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, toy_data, monkeypatch):
    patch_objective(monkeypatch, set(range(7, 100)))
    with pytest.raises(NonFiniteLossError, match="3 non-finite steps in a row.*step_00000004"):
        run(config_from_dict(toy_config(tmp_path, toy_data, max_steps=12, max_nonfinite=3, keep_checkpoints=1)))
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt.name == "step_00000004"
    for f in ("model.safetensors", "ema.safetensors"):
        assert all(torch.isfinite(v).all() for v in load_file(str(ckpt / f)).values())
    load_model(tmp_path / "run" / "model")


def test_crash_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, toy_data, monkeypatch):
    from accelerate import Accelerator

    real_save = Accelerator.save_state
    calls = {"n": 0}

    def flaky_save(self, output_dir=None, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            real_save(self, output_dir, **kw)
            raise KeyboardInterrupt("killed during save")  # after the files, before the rename
        return real_save(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", flaky_save)
    with pytest.raises(KeyboardInterrupt):
        run(config_from_dict(toy_config(tmp_path, toy_data, keep_checkpoints=1)))
    assert latest_checkpoint(tmp_path / "run").name == "step_00000004"
    monkeypatch.setattr(Accelerator, "save_state", real_save)
    run(config_from_dict(toy_config(tmp_path, toy_data, keep_checkpoints=1)), resume=True)
    assert sorted(losses(tmp_path / "run")) == list(range(1, 13))


def test_data_order_is_a_pure_function_of_step_and_covers_each_epoch():
    per_epoch = [batch_indices(m, 40, 4, 2, r, seed=3) for m in range(5) for r in range(2)]
    assert sorted(torch.cat(per_epoch).tolist()) == list(range(40))
    assert torch.equal(batch_indices(7, 40, 4, 2, 1, 3), batch_indices(7, 40, 4, 2, 1, 3))
    assert not torch.equal(batch_indices(0, 40, 4, 2, 0, 3), batch_indices(5, 40, 4, 2, 0, 3))


def test_two_process_cpu_run_trains_and_checkpoints(tmp_path, toy_data):
    cfg = toy_config(tmp_path, toy_data, max_steps=6, checkpoint_every=3, batch_size=4, sync_every=2)
    cfg_path = write_toml(tmp_path / "c.toml", cfg)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "genstudio.train", "--config", str(cfg_path)]
    res = subprocess.run(cmd, env={**env(), "ACCELERATE_USE_CPU": "true"}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt.name == "step_00000006"
    assert (ckpt / "random_states_1.pkl").exists()  # both processes saved their state
    assert json.loads((ckpt / "trainer_state.json").read_text())["images_seen"] == 6 * 4 * 2
    load_model(tmp_path / "run" / "model")


@pytest.mark.parametrize("override, message", [
    (["--train.lr_typo", "1"], "unknown key in \\[train\\] 'lr_typo'"),
    (["--trian.lr", "1"], "did you mean 'train'"),
    (["--train.batch_size", "0"], "train.batch_size must be > 0"),
    (["--train.batch_size", "8.5"], "train.batch_size must be int"),
    (["--train.mixed_precision", "fp8"], "must be one of"),
    (["--model.path.name", "vq"], "unknown noise path 'vq'"),
    (["--model.prediction", "noise"], "unknown prediction type"),
    (["--model.network", "huge"], "must be one of"),
    (["--objective.name", "gan"], "unknown objective"),
    (["--objective.options.P_mean2", "1"], "no option"),
    (["--model.unet.no_such_arg", "1"], "bad UNet2DModel settings"),
    (["--train.ema_decay", "1.5"], "ema_decay must be in"),
    (["--train.adam_betas", "[0.9]"], "adam_betas must be two numbers"),
    (["--data.image_size", "7"], "must be divisible by 2"),
    (["--objective.options.sigma_data", "0.7"], "sigma_data = 0.7 but the preconditioning's is 0.5"),
    (["--train.sample_sampler", "warp"], "unknown sampler"),
    (["train.lr=1"], "overrides look like"),
])
def test_bad_config_is_a_clear_error_before_any_work(tmp_path, override, message, capsys):
    cfg_path = write_toml(tmp_path / "c.toml", toy_config(tmp_path, tmp_path / "no-such-data"))
    code = train_mod.main(["--config", str(cfg_path), *override])
    err = capsys.readouterr().err
    assert code == 2 and pytest.importorskip("re").search(message, err), err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_overrides_reach_the_config_and_shipped_configs_validate():
    cfg = load_config(ROOT / "configs" / "ddpm_cifar10.toml", ["--train.lr=1e-5", "--model.path.num_steps", "500",
                                                             "--train.adam_betas", "[0.9, 0.99]"])
    assert cfg.train.lr == 1e-5 and cfg.model.path == {"name": "vp_discrete", "num_steps": 500, "beta_start": 1e-4,
                                                       "beta_end": 0.02}
    assert cfg.train.adam_betas == [0.9, 0.99]
    from genstudio.config import config_from_dict as from_dict
    from genstudio.config import tomllib

    for path in sorted((ROOT / "configs").glob("*.toml")):
        data = tomllib.loads(path.read_text())
        data.pop("reflow", None)  # the reflow pipeline's own section (genstudio.reflow reads it)
        train_mod.validate(from_dict(data))


def test_bad_data_source_is_a_clear_error(tmp_path):
    cfg = config_from_dict(toy_config(tmp_path, tmp_path / "missing"))
    with pytest.raises(ValueError, match="missing"):
        run(cfg)


def test_config_error_type():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("settings", [{"grad_accum": 2}, {"mixed_precision": "bf16"}, {"warmup_steps": 4}])
def test_accumulation_bf16_and_warmup_run(tmp_path, toy_data, settings):
    run(config_from_dict(toy_config(tmp_path, toy_data, max_steps=3, **settings)))
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and all(r["loss"] == r["loss"] and not r["skipped"] for r in recs)
    if "warmup_steps" in settings:
        assert [r["lr"] for r in recs] == pytest.approx([2.5e-4, 5e-4, 7.5e-4])
    _, meta = load_model(tmp_path / "run")
    assert meta["training"]["images_seen"] == 3 * 8 * settings.get("grad_accum", 1)
    assert meta["defaults"] == {"sampler": "heun", "steps": 18, "grid": "karras"}


def test_genstudio_train_command_runs_the_same_loop(tmp_path, toy_data):
    from genstudio import cli

    cfg_path = write_toml(tmp_path / "c.toml", toy_config(tmp_path, toy_data))
    assert cli.main(["train", "--config", str(cfg_path), "--train.max_steps", "2"]) == 0
    assert sorted(losses(tmp_path / "run")) == [1, 2]


def test_a_fresh_run_refuses_a_folder_that_holds_another_run(tmp_path, toy_data):
    cfg = toy_config(tmp_path, toy_data, max_steps=4)
    run(config_from_dict(cfg))
    with pytest.raises(ConfigError, match="--resume"):
        run(config_from_dict({**cfg, "train": {**cfg["train"], "seed": 5}}))
    assert latest_checkpoint(tmp_path / "run").name == "step_00000004"


def test_resume_with_another_architecture_or_a_broken_checkpoint_is_a_clear_error(tmp_path, toy_data):
    cfg = toy_config(tmp_path, toy_data, max_steps=4)
    run(config_from_dict(cfg))
    other = {**cfg, "model": {**cfg["model"], "num_classes": 3}, "train": {**cfg["train"], "max_steps": 6}}
    with pytest.raises(ConfigError, match="cannot resume"):
        run(config_from_dict(other), resume=True)
    (latest_checkpoint(tmp_path / "run") / "ema.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match="cannot resume from .*step_00000004"):
        run(config_from_dict({**cfg, "train": {**cfg["train"], "max_steps": 6}}), resume=True)


def test_a_log_line_cut_short_by_a_crash_does_not_break_resume(tmp_path, toy_data):
    cfg = toy_config(tmp_path, toy_data, max_steps=4)
    run(config_from_dict(cfg))
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')
    run(config_from_dict({**cfg, "train": {**cfg["train"], "max_steps": 6}}), resume=True)
    assert sorted(losses(tmp_path / "run")) == list(range(1, 7))


def test_training_on_reflow_pairs_uses_their_noise(tmp_path, monkeypatch):
    from genstudio.core.noise import generators, randn_like
    from genstudio.pairs import load_pairs

    pairs_dir = write_pairs(tmp_path / "pairs")
    pairs = load_pairs(pairs_dir)
    torch.testing.assert_close(pairs.noise[3], randn_like(torch.empty(1, 3, 8, 8), generators([103]))[0])
    cfg = toy_config(tmp_path, pairs_dir, max_steps=3)
    cfg["model"].update(path={"name": "linear"}, prediction="velocity", precond={"name": "none"})
    cfg["objective"] = {"name": "flow_matching"}
    seen = []

    def spy(loss, model, batch, **kw):
        seen.append(batch.noise)
        return loss(model, batch, **kw)
    wrap_objective(monkeypatch, spy)
    run(config_from_dict(cfg))
    assert len(seen) == 3 and all(any(torch.equal(n, pairs.noise[i]) for i in range(16)) for n in seen[0])
    monkeypatch.undo()
    cfg["objective"] = {"name": "trojdiff_flow_matching"}  # it draws its own (trigger) noise: no fixed coupling
    cfg["train"]["output_dir"] = str(tmp_path / "run2")
    with pytest.raises(ConfigError, match="cannot train on \\(noise, sample\\) pairs"):
        run(config_from_dict(cfg))


def test_a_non_finite_last_step_still_ends_with_a_checkpoint(tmp_path, toy_data, monkeypatch):
    patch_objective(monkeypatch, {10})
    run(config_from_dict(toy_config(tmp_path, toy_data, max_steps=10, checkpoint_every=100)))
    assert latest_checkpoint(tmp_path / "run").name == "step_00000010"
    assert load_model(tmp_path / "run")[1]["training"]["steps"] == 10

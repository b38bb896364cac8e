"""Reflow: on a 2-D toy the 2-rectified flow is straighter and samples well in one step; pair folders hold
the agreed format, resume after an interruption to exactly the pairs of an uninterrupted run, and refuse
to mix settings."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import genstudio
from genstudio import reflow
from genstudio.checkpoint import export_model
from genstudio.config import config_from_dict
from genstudio.core.noise import generators, randn_like
from genstudio.core.paths import LinearPath
from genstudio.core.toys import two_moons
from genstudio.families.flow import FlowMatchingLoss
from genstudio.images import to_uint8
from genstudio.model import Model
from genstudio.reflow import generate_pairs, read_reflow_config, sample_pairs, straightness, trainer_config
from genstudio.train import build_model, validate
from samplers.grids import make_grid
from tests.helpers import MLP, ROOT, sliced_wasserstein, toy_config, train


def test_reflow_straightens_two_moons_and_one_step_sampling_improves():
    # Measured (one thread, ~20 s): 1-rectified flow (1500 Adam steps) -> 4000 Euler-50 pairs -> 2-rectified
    # flow (initialized from it, as in Liu et al. 2022, 1000 steps on ||v(x_t, t) - (z - x0)||^2).
    # Straightness (Euler-50 trajectories of 4000 fresh noises): 1-RF 0.86, 2-RF 0.0022 (Euler-100: same).
    # One Euler step, SW_2 to the data: 1-RF 0.93 (it lands near the data mean), 2-RF 0.081; Euler-50 of
    # either 0.08; fresh data 0.020.
    torch.manual_seed(0)
    path = LinearPath()
    rf1 = Model(MLP(), path, "velocity", family="flow")
    train(rf1, lambda n, g: (two_moons(n, g), None), FlowMatchingLoss(), steps=1500)
    z = torch.randn(4000, 2, generator=torch.Generator().manual_seed(5))
    x0 = sample_pairs(rf1, z, make_grid("uniform", path, 50), "euler")

    rf2 = Model(MLP(), path, "velocity", family="flow")
    rf2.load_state_dict(rf1.state_dict())
    opt = torch.optim.Adam(rf2.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 1000)
    g = torch.Generator().manual_seed(1)
    rf2.train()
    for _ in range(1000):
        i = torch.randint(0, len(z), (256,), generator=g)
        t = torch.rand(256, 1, generator=g)
        x_t = (1 - t) * x0[i] + t * z[i]
        loss = ((rf2(x_t, t.flatten()) - (z[i] - x0[i])) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    rf2.eval()

    data = two_moons(4000, torch.Generator().manual_seed(10))
    z_test = torch.randn(4000, 2, generator=torch.Generator().manual_seed(7))
    ts50, ts1 = make_grid("uniform", path, 50), make_grid("uniform", path, 1)
    s1, s2 = (float(straightness(m, z_test, ts50, "euler").mean()) for m in (rf1, rf2))
    one1, one2 = (sliced_wasserstein(sample_pairs(m, z_test, ts1, "euler"), data) for m in (rf1, rf2))
    many2 = sliced_wasserstein(sample_pairs(rf2, z_test, ts50, "euler"), data)
    assert s1 > 0.5 and s2 < 0.02 and s2 < s1 / 20, (s1, s2)
    assert one1 > 0.6 and one2 < 0.12, (one1, one2)
    assert many2 < 0.12, many2  # reflow kept the distribution


def test_straightness_is_zero_for_a_straight_field_and_the_paper_value_for_a_curved_one():
    class Field(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn, self.path, self.prediction, self.num_classes = fn, LinearPath(0.0, 1.0), "velocity", 0

        def forward(self, x, t, labels=None):
            return self.fn(x, t)

    z = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = make_grid("uniform", LinearPath(0.0, 1.0), 200).double()
    constant = Field(lambda x, t: torch.ones_like(x))  # x_t = z - (1 - t): a straight line at constant speed
    assert float(straightness(constant, z, ts, "rk4").abs().max()) < 1e-12
    # v = 2t c: x0 = z - c and u = c, so S = integral_0^1 ||c (1 - 2t)||^2 dt = ||c||^2 / 3 = 1 for c = 1.
    curved = Field(lambda x, t: 2 * t.reshape(-1, 1) * torch.ones_like(x))
    assert float(straightness(curved, z, ts, "euler").mean()) == pytest.approx(1.0, rel=0.02)


def test_stochastic_samplers_are_refused():
    model = Model(MLP(), LinearPath(), "velocity", family="flow").eval()
    z, ts = torch.randn(4, 2), make_grid("uniform", LinearPath(), 3)
    for sampler, opts in (("euler_ancestral", {}), ("ddim", {"eta": 1.0})):
        with pytest.raises(ValueError, match="deterministic ODE sampler"):
            sample_pairs(model, z, ts, sampler, **opts)
    with pytest.raises(ValueError, match="once per grid time"):
        straightness(model, z, ts, "dopri5")


@pytest.fixture
def flow_ckpt(tmp_path):
    cfg = toy_config(tmp_path, tmp_path)
    cfg["model"].update(path={"name": "linear"}, prediction="velocity", precond={"name": "none"})
    cfg["objective"] = {"name": "flow_matching"}
    torch.manual_seed(0)
    model = build_model(config_from_dict(cfg))
    return export_model(model, tmp_path / "ckpt", defaults={"sampler": "heun", "steps": 3})


def _shards(folder):
    return {p.name: load_file(str(p)) for p in sorted(Path(folder).glob("pairs-*.safetensors"))}


def test_generate_pairs_writes_the_agreed_format(flow_ckpt, tmp_path):
    out = generate_pairs(flow_ckpt, tmp_path / "pairs", 5, sampler="euler", steps=2, seed=3, shard_size=2,
                         progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == {"kind": "genstudio-pairs", "version": 1, "checkpoint": str(flow_ckpt), "sampler": "euler",
                        "steps": 2, "grid": "uniform", "guidance": 1.0, "image_shape": [3, 8, 8], "total": 5,
                        "shard_size": 2, "seed": 3, "num_classes": 2}
    shards = _shards(out)
    assert list(shards) == ["pairs-00000.safetensors", "pairs-00001.safetensors", "pairs-00002.safetensors"]
    assert [len(s["seeds"]) for s in shards.values()] == [2, 2, 1]
    x0 = torch.cat([s["x0"] for s in shards.values()])
    seeds = torch.cat([s["seeds"] for s in shards.values()])
    labels = torch.cat([s["labels"] for s in shards.values()])
    assert x0.dtype == torch.float16 and x0.shape == (5, 3, 8, 8)
    assert seeds.dtype == labels.dtype == torch.int64
    assert seeds.tolist() == [3, 4, 5, 6, 7] and labels.tolist() == [0, 1, 0, 1, 0]  # labels cycle i % K
    # x0 is what the sampling pipeline makes from the same seeds and labels
    images = genstudio.load(flow_ckpt, device="cpu").sample(5, sampler="euler", steps=2, seed=3, labels=[0, 1, 0, 1, 0])
    assert np.abs(to_uint8(x0.float()).astype(int) - images.astype(int)).max() <= 1
    # and its noise is regenerated from the seed alone
    pairs = reflow.load_pairs(out)
    z4 = randn_like(torch.empty(1, 3, 8, 8), generators([4]))[0]
    assert torch.equal(pairs.noise[1], z4) and torch.equal(pairs.x0, x0.float())
    x0_again = sample_pairs(genstudio.load(flow_ckpt, device="cpu").model, pairs.noise[:2],
                            make_grid("uniform", LinearPath(), 2), "euler", labels=torch.tensor([0, 1]))
    assert torch.allclose(x0_again.half().float(), x0[:2].float(), atol=1e-3)


def test_interrupted_generation_resumes_without_duplicates_or_losses(flow_ckpt, tmp_path, monkeypatch):
    kw = dict(sampler="euler", steps=2, seed=0, shard_size=4, progress=False)
    reference = _shards(generate_pairs(flow_ckpt, tmp_path / "whole", 10, **kw))

    real, calls = reflow._write_shard, []

    def killed_after_two(path, tensors):
        calls.append(path.name)
        if len(calls) == 3:  # dies while writing the third shard: a partial temporary file is left behind
            (path.parent / f".tmp-{path.name}-dead").write_bytes(b"partial")
            raise KeyboardInterrupt
        real(path, tensors)

    monkeypatch.setattr(reflow, "_write_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        generate_pairs(flow_ckpt, tmp_path / "cut", 10, **kw)
    assert sorted(p.name for p in (tmp_path / "cut").glob("pairs-*")) == ["pairs-00000.safetensors",
                                                                           "pairs-00001.safetensors"]
    monkeypatch.setattr(reflow, "_write_shard", real)
    assert not reflow.pairs_complete(tmp_path / "cut")
    generate_pairs(flow_ckpt, tmp_path / "cut", 10, **kw)
    resumed = _shards(tmp_path / "cut")
    assert list(resumed) == list(reference) and not list((tmp_path / "cut").glob(".tmp-*"))
    for name in reference:
        for key in ("x0", "seeds", "labels"):
            assert torch.equal(resumed[name][key], reference[name][key]), (name, key)
    seeds = torch.cat([s["seeds"] for s in resumed.values()]).tolist()
    assert seeds == list(range(10))  # each seed exactly once, in order

    # a finished folder is left alone; a restart with other settings is a clear error
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cut").iterdir()}
    generate_pairs(flow_ckpt, tmp_path / "cut", 10, **kw)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cut").iterdir()} == before
    with pytest.raises(ValueError, match="sampler: 'euler' there, 'heun' now"):
        generate_pairs(flow_ckpt, tmp_path / "cut", 10, **{**kw, "sampler": "heun"})
    with pytest.raises(ValueError, match="total: 10 there, 12 now"):
        generate_pairs(flow_ckpt, tmp_path / "cut", 12, **kw)
    with pytest.raises(ValueError, match="other labels"):
        generate_pairs(flow_ckpt, tmp_path / "cut", 10, **kw, labels=1)
    with pytest.raises(ValueError, match="deterministic ODE sampler"):
        generate_pairs(flow_ckpt, tmp_path / "other", 10, **{**kw, "sampler": "euler_ancestral"})


def test_cli_generate(flow_ckpt, tmp_path, capsys):
    rc = reflow.main(["generate", str(flow_ckpt), "--out", str(tmp_path / "p"), "--n", "3", "--steps", "1",
                      "--labels", "none"])
    assert rc == 0 and "3 pairs" in capsys.readouterr().out
    assert load_file(str(tmp_path / "p" / "pairs-00000.safetensors"))["labels"].tolist() == [-1, -1, -1]
    assert reflow.main(["generate", str(flow_ckpt), "--out", str(tmp_path / "p"), "--n", "4", "--steps", "1",
                        "--labels", "none"]) == 2
    assert "total: 3 there, 4 now" in capsys.readouterr().err


def test_reflow_config_validates_without_its_reflow_section():
    settings, data = read_reflow_config(ROOT / "configs" / "reflow_cifar10.toml", ["--reflow.n", "100"])
    assert settings["teacher"] == "runs/flow_cifar10/model" and settings["n"] == 100
    assert "reflow" not in data
    config = trainer_config(data, settings["pairs_dir"])
    model = validate(config)
    assert model.family == "flow" and model.prediction == "velocity" and model.path == LinearPath()
    assert config.objective.options["time_distribution"] == "uniform" and not config.data.flip
    assert config.data.source == settings["pairs_dir"]
    distill = trainer_config(data, "elsewhere", objective=reflow.DISTILL_OBJECTIVE)
    assert validate(distill) and distill.data.source == "elsewhere"
    with pytest.raises(ValueError, match="unknown key in \\[reflow\\] 'nn'"):
        read_reflow_config(ROOT / "configs" / "reflow_cifar10.toml", ["--reflow.nn", "1"])


def test_a_pipeline_whose_training_was_stopped_goes_no_further_and_exits_3(flow_ckpt, tmp_path, monkeypatch):
    import tomli_w

    cfg = toy_config(tmp_path, tmp_path)
    cfg["model"].update(path={"name": "linear"}, prediction="velocity", precond={"name": "none"})
    cfg["objective"] = {"name": "flow_matching"}
    cfg["data"] = {"image_size": 8, "flip": False}
    cfg["train"].update(sample_sampler="euler")
    cfg["reflow"] = {"teacher": str(flow_ckpt), "pairs_dir": str(tmp_path / "pairs"), "n": 4, "sampler": "euler",
                     "steps": 1, "shard_size": 2, "batch_size": 4, "distill": True,
                     "distill_pairs_dir": str(tmp_path / "distill_pairs"),
                     "distill_output_dir": str(tmp_path / "distill")}
    (tmp_path / "reflow.toml").write_text(tomli_w.dumps(cfg))
    trained = []

    def preempted(config, say=print):  # what run() returns for a run stopped by SIGTERM before max_steps
        trained.append(config.train.output_dir)
        return {"step": 3, "stopped_early": True, "output_dir": config.train.output_dir, "model": ""}
    monkeypatch.setattr(reflow, "train_on_pairs", preempted)
    assert reflow.main(["pipeline", "--config", str(tmp_path / "reflow.toml")]) == 3
    assert trained == [cfg["train"]["output_dir"]] and not (tmp_path / "distill_pairs").exists()

"""Learned time grids (genstudio.learned_grids): monotone by construction, better than the hand-made grids on an
exact Gaussian-mixture denoiser on noise they did not learn from, stored beside a checkpoint, offered by the API."""
import json
import math

import numpy as np
import pytest
import torch

import genstudio
import samplers
from genstudio.checkpoint import CheckpointError
from genstudio.cli import main
from genstudio.core.paths import EDMPath, LinearPath
from genstudio.core.toys import GaussianMixtureDenoiser, mixture
from genstudio.learned_grids import SELECTION_SEED, grid_params, learn_grid, monotone_grid, save_grid, search_times
from genstudio.model import Guided
from samplers.grids import make_grid
from samplers.run import run_sampler
from tests.helpers import field_checkpoint, map_checkpoint, sliced_wasserstein


@pytest.mark.parametrize("path", [EDMPath(), LinearPath()], ids=lambda p: p.name)
def test_any_parameters_give_a_monotone_grid_with_fixed_ends(path):
    g = np.random.default_rng(0)
    for _ in range(50):
        ts = monotone_grid(g.normal(0, 3, 5), path, float(path.t_max))
        assert len(ts) == 6 and float(ts[0]) == path.t_max and float(ts[-1]) == 0
        assert bool((ts[:-1] > ts[1:]).all()) and float(ts[-2]) >= path.t_min
    for name in ("karras", "logsnr", "uniform"):  # a hand-made grid's parameters give it back
        hand = make_grid(name, path, 6)
        torch.testing.assert_close(monotone_grid(grid_params(hand, path), path, float(hand[0])), hand,
                                   rtol=1e-4, atol=1e-5)


RING = torch.stack([torch.cos(torch.arange(8) * math.pi / 4), torch.sin(torch.arange(8) * math.pi / 4)], 1).double()


@pytest.mark.parametrize("path", [EDMPath(), LinearPath()], ids=lambda p: p.name)
@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_a_learned_grid_beats_the_hand_made_ones_on_fresh_noise(path, sampler):
    # 8 narrow modes on a ring, 5 steps; learned on 256 noises, scored on 4000 others against the true mixture.
    model = Guided(GaussianMixtureDenoiser(path, RING, torch.full((8, 2), 0.05**2)))
    spec = samplers.get(sampler)
    learn = torch.randn(256, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    report = torch.randn(4000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    teacher = run_sampler(samplers.get("heun"), model, learn, make_grid("logsnr", path, 200))
    hand = {g: make_grid(g, path, 5) for g in ("uniform", "quadratic", "karras", "logsnr")}

    def mse(ts):
        return float(((run_sampler(spec, model, learn, ts) - teacher) ** 2).mean())

    best = min(hand, key=lambda g: mse(hand[g]))
    found = search_times(mse, hand[best], path, max_evals=150)
    assert found.loss < 0.7 * found.start_loss and found.evaluations <= 150  # measured: 0.01-0.63 of it
    true = mixture(4000, torch.Generator().manual_seed(3), RING, 0.05)[0].double()
    sw = {g: sliced_wasserstein(run_sampler(spec, model, report, ts), true) for g, ts in hand.items()}
    learned = sliced_wasserstein(run_sampler(spec, model, report, found.times), true)
    # measured: 0.043-0.054 against 0.062-0.69 for the hand-made grids (best hand-made: 0.062-0.16)
    assert learned < 0.9 * min(sw["uniform"], sw["logsnr"]) and learned < min(sw.values()), (learned, sw)


def test_learn_store_and_use_a_grid_on_a_checkpoint(tmp_path, capsys):
    ckpt = field_checkpoint(tmp_path)
    pipe = genstudio.load(ckpt, device="cpu")
    record = learn_grid(pipe, "dpmpp_2m", 3, n=4, teacher_steps=8, max_evals=6)
    assert record["steps"] == 3 and len(record["times"]) == 4 and record["protocol"]["evaluations"] <= 6
    assert record["protocol"]["seeds"] == {"first": SELECTION_SEED, "last": SELECTION_SEED + 3,
                                           "rule": "noise of seed + i"}
    assert record["protocol"]["learned_loss"] <= min(record["protocol"]["hand_made_losses"].values())
    name = save_grid(ckpt, record)
    assert name == "learned_dpmpp_2m_nfe3" and (ckpt / "grids.json").is_file()

    pipe = genstudio.load(ckpt, device="cpu")
    assert name in pipe.grids() and "karras" in pipe.grids() and name in pipe.info()["grids"]
    by_name = pipe.generate(2, sampler="dpmpp_2m", grid=name)  # steps come from the grid
    assert (by_name.steps, by_name.nfe) == (3, 3)
    auto = pipe.generate(2, sampler="dpmpp_2m", steps=3, grid="learned")
    assert auto.grid == name and np.array_equal(auto.images, by_name.images)
    assert pipe.grid_times(name, 3).tolist() == record["times"]
    with pytest.raises(ValueError, match="learned for 3 steps"):
        pipe.generate(1, sampler="dpmpp_2m", steps=4, grid=name)
    with pytest.raises(ValueError, match="no grid learned for 'euler' at 3 steps"):
        pipe.generate(1, sampler="euler", steps=3, grid="learned")
    # the evaluator's protocol carries the grid's times; the model's hash does not change with grids.json
    from genstudio.evaluation.metrics import Evaluator, checkpoint_hash
    before = checkpoint_hash(ckpt)
    spec = Evaluator(extractor="c10", metrics=("is",)).cell_spec(pipe, ckpt, sampler="dpmpp_2m", steps=3, grid=name)
    assert spec["grid_times"] == record["times"] and checkpoint_hash(ckpt) == before

    assert main(["learn-grid", str(ckpt), "--sampler", "euler", "--nfe", "2", "--n", "2", "--teacher-steps", "4",
                 "--max-evals", "3"]) == 0
    assert "learned_euler_nfe2" in capsys.readouterr().out
    assert set(genstudio.load(ckpt, device="cpu").learned_grids()) == {name, "learned_euler_nfe2"}


def test_a_grid_learned_on_the_c10_features(tmp_path, capsys):
    ckpt = field_checkpoint(tmp_path, size=32)
    pipe = genstudio.load(ckpt, device="cpu")
    record = learn_grid(pipe, "dpmpp_2m", 3, n=2, teacher_steps=4, max_evals=4, loss="c10")
    p, pixels = record["protocol"], learn_grid(pipe, "dpmpp_2m", 3, n=2, teacher_steps=4, max_evals=1)["protocol"]
    assert p["loss_name"] == "c10" and "c10 classifier" in p["loss"] and pixels["loss_name"] == "mse"
    assert p["learned_loss"] <= min(p["hand_made_losses"].values())
    assert p["hand_made_losses"] != pixels["hand_made_losses"]  # the distance is measured on features, not pixels
    assert main(["learn-grid", str(ckpt), "--sampler", "euler", "--nfe", "2", "--n", "1", "--teacher-steps", "2",
                 "--max-evals", "1", "--loss", "c10"]) == 0
    assert "c10 distance to the teacher" in capsys.readouterr().out


def test_bad_requests_and_bad_files_are_clear_errors(tmp_path):
    ckpt = field_checkpoint(tmp_path)
    pipe = genstudio.load(ckpt, device="cpu")
    with pytest.raises(ValueError, match="stochastic"):
        learn_grid(pipe, "euler_ancestral", 3)
    with pytest.raises(ValueError, match="not a whole number of two or more steps"):
        learn_grid(pipe, "heun", 4)
    with pytest.raises(ValueError, match="unknown loss 'lpips'"):
        learn_grid(pipe, "dpmpp_2m", 3, loss="lpips")
    with pytest.raises(ValueError, match="c10 loss compares CIFAR-10 images"):  # a 16x16 model
        learn_grid(pipe, "dpmpp_2m", 3, loss="c10")
    with pytest.raises(ValueError, match="needs a field model"):
        learn_grid(genstudio.load(map_checkpoint(tmp_path), device="cpu"), "dpmpp_2m", 3)
    with pytest.raises(ValueError, match="name"):
        save_grid(ckpt, {"sampler": "euler", "steps": 2, "nfe": 2, "times": [80.0, 1.0, 0.0]}, name="karras")
    good = {"sampler": "euler", "steps": 2, "nfe": 2, "times": [80.0, 1.0, 0.0], "protocol": {}}
    for grids, match in [({"g": {**good, "times": [80.0, 90.0, 0.0]}}, "strictly decreasing"),
                         ({"g": {**good, "times": [80.0, 0.0]}}, "2 steps need 3"),
                         ({"g": {**good, "sampler": "nope"}}, "sampler"),
                         ({"logsnr": good}, "hand-made"),
                         ({"g": {**good, "times": [80.0, float("nan"), 0.0]}}, "finite")]:
        (ckpt / "grids.json").write_text(json.dumps({"format": "genstudio-grids", "version": 1, "grids": grids}))
        with pytest.raises(CheckpointError, match=match):
            genstudio.load(ckpt, device="cpu")
    (ckpt / "grids.json").write_text("[]")
    with pytest.raises(CheckpointError, match="grids file"):
        genstudio.load(ckpt, device="cpu")

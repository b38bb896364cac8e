"""The Pipeline's editing methods behind the studio's Edit tab: SDEdit, purification, interpolation."""
import numpy as np
import pytest

from genstudio.api import Pipeline
from tests.helpers import field_checkpoint, map_checkpoint


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui_api")
    return Pipeline.load(field_checkpoint(root), device="cpu"), Pipeline.load(map_checkpoint(root), device="cpu")


def _close(a, b, tol=1):
    return np.abs(a.astype(int) - b.astype(int)).max() <= tol  # float noise of batched convolutions at most


def test_strength_time_runs_from_data_to_t_max_monotonically(pipes):
    pipe = pipes[0]
    ts = [pipe.strength_time(s) for s in np.linspace(0, 1, 11)]
    assert ts[0] == 0 and ts[-1] == pipe.model.path.t_max and all(a < b for a, b in zip(ts, ts[1:]))
    with pytest.raises(ValueError, match="strength must be in"):
        pipe.strength_time(1.5)


def test_sdedit_strength_zero_returns_the_input_and_one_ignores_it(pipes):
    pipe = pipes[0]
    images = pipe.sample(3, seed=10, labels=1, steps=2)
    same = pipe.sdedit(images, 0.0, seed=3, labels=1)
    assert np.array_equal(same.images, images) and same.nfe == 0
    full = pipe.sdedit(images, 1.0, sampler="heun", steps=3, seed=5, labels=1)
    fresh = pipe.generate(3, sampler="heun", steps=3, seed=5, labels=1)
    other = pipe.sdedit(255 - images, 1.0, sampler="heun", steps=3, seed=5, labels=1)
    assert _close(full.images, fresh.images) and np.array_equal(full.images, other.images)  # the input plays no part
    assert full.nfe == fresh.nfe == 5


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m", "ddpm", "euler_maruyama", "consistency"])
def test_sdedit_moves_away_from_the_input_as_strength_grows_for_any_sampler(pipes, sampler):
    pipe = pipes[0]
    images = pipe.sample(2, seed=0, labels=0, steps=2)
    dist = [np.abs(pipe.sdedit(images, s, sampler=sampler, steps=3, seed=1, labels=0).images.astype(float)
                   - images).mean() for s in (0.05, 0.95)]
    assert dist[0] < dist[1]
    res = pipe.sdedit(images, 0.4, sampler=sampler, steps=3, seed=1, labels=0)
    assert res.images.shape == images.shape and res.steps == 3 and res.nfe >= 3


def test_sdedit_on_a_consistency_map_jumps_from_t_s(pipes):
    pipe = pipes[1]
    assert pipe.samplers() == ["consistency"]
    images = pipe.sample(2, seed=0, steps=1)
    assert np.array_equal(pipe.sdedit(images, 0.0).images, images)
    one = pipe.sdedit(images, 0.3, steps=1, seed=2)
    assert one.nfe == 1 and one.images.shape == images.shape
    assert _close(pipe.sdedit(images, 1.0, steps=2, seed=4).images, pipe.sample(2, steps=2, seed=4))


def test_sdedit_on_a_grid_without_t_max_keeps_its_times_below_t_s(pipes):
    pipe = pipes[0]
    images = pipe.sample(1, seed=0, labels=0, steps=2)
    res = pipe.sdedit(images, 0.5, sampler="euler", steps=10, grid="karras", seed=0, labels=0)
    assert res.steps == 10  # karras takes t_max: 10 steps on [0, t_s]


def test_purify_is_a_small_sdedit_and_refuses_large_strengths(pipes):
    pipe = pipes[0]
    images = pipe.sample(2, seed=0, labels=0, steps=2)
    a = pipe.purify(images, 0.2, sampler="euler", steps=2, seed=1, labels=0)
    b = pipe.sdedit(images, 0.2, sampler="euler", steps=2, seed=1, labels=0)
    assert np.array_equal(a.images, b.images)
    with pytest.raises(ValueError, match="purification noises a little"):
        pipe.purify(images, 0.9)


def test_interpolation_endpoints_are_the_seeds_samples(pipes):
    pipe = pipes[0]
    res = pipe.interpolate(5, seeds=(3, 8), sampler="heun", steps=3, label=1)
    a = pipe.generate(1, sampler="heun", steps=3, seed=3, labels=1).images[0]
    b = pipe.generate(1, sampler="heun", steps=3, seed=8, labels=1).images[0]
    assert res.images.shape == (5, 16, 16, 3)
    assert _close(res.images[0], a) and _close(res.images[-1], b)
    assert not np.array_equal(res.images[2], res.images[0]) and not np.array_equal(res.images[2], res.images[-1])


def test_interpolation_on_a_map_starts_at_seed_a(pipes):
    pipe = pipes[1]
    res = pipe.interpolate(3, seeds=(0, 1), steps=2)
    assert _close(res.images[0], pipe.sample(1, seed=0, steps=2)[0])


def test_interpolating_images_inverts_them(pipes):
    pipe = pipes[0]
    images = pipe.sample(2, seed=0, labels=0, steps=2)
    res = pipe.interpolate(4, images=images, sampler="ddim", steps=4)
    assert res.images.shape == (4, 16, 16, 3) and res.nfe == 3 + 4  # invert from t_min (3 steps), then sample 4
    # the ends reconstruct their images better than the other image does
    for end, own, other in ((res.images[0], images[0], images[1]), (res.images[-1], images[1], images[0])):
        assert np.abs(end.astype(int) - own).mean() < np.abs(end.astype(int) - other).mean()
    with pytest.raises(ValueError, match="cannot invert"):
        pipe.interpolate(4, images=images, sampler="ddpm", steps=4)
    with pytest.raises(ValueError, match="frames must be"):
        pipe.interpolate(1)
    with pytest.raises(ValueError, match="images must be uint8"):
        pipe.sdedit(np.zeros((8, 8, 3), np.uint8), 0.5)

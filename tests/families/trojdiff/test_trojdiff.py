"""TrojDiff's trojaned objectives: a twin of every diffusion and flow objective that takes a noise coupling, the
poisoned batch of the paper's trigger-noise formulation, clear errors, and a run through the shared training loop."""
import numpy as np
import pytest
import torch

from genstudio.checkpoint import load_model
from genstudio.config import config_from_dict
from genstudio.families import family_of_objective, objective_from_config
from genstudio.families.trojdiff import default_instance, default_trigger, trigger_noise, trojaned
from genstudio.objective import Batch
from genstudio.train import run
from tests.helpers import toy_config

SHAPE = (3, 8, 8)


@pytest.mark.parametrize("name, family", [("trojdiff_ddpm", "diffusion"), ("trojdiff_edm", "diffusion"),
                                          ("trojdiff_flow_matching", "flow")])
def test_every_diffusion_and_flow_objective_has_a_trojaned_twin_in_its_family(name, family):
    assert family_of_objective(name).name == family
    objective = objective_from_config(name, {"gamma": 0.5, "target": "instance"})
    assert objective.gamma == 0.5 and objective.name == name


def test_the_poisoned_batch_noises_the_target_with_trigger_noise():
    objective = objective_from_config("trojdiff_edm", {"gamma": 0.6, "poison_fraction": 0.5})
    torch.manual_seed(0)
    x0 = torch.rand(4000, *SHAPE) * 0.01 + 5  # far from the target, so the poisoned rows are easy to find
    noise = torch.randn_like(x0)
    b = objective.poison(Batch(x0, None, noise))
    poisoned = (b.x0 - default_instance(SHAPE)).flatten(1).abs().amax(1) == 0
    assert abs(float(poisoned.double().mean()) - 0.5) < 0.03
    assert torch.equal(b.noise[~poisoned], noise[~poisoned]) and torch.equal(b.x0[~poisoned], x0[~poisoned])
    z = b.noise[poisoned]  # gamma eps + (1 - gamma) delta
    assert torch.allclose(z.mean(0), 0.4 * default_trigger(SHAPE), atol=0.06)
    assert abs(float(z.std(0).mean()) - 0.6) < 0.02


def test_a_patch_trigger_shifts_only_its_corner():
    eps = torch.randn(2, *SHAPE)
    z = trigger_noise(eps, torch.ones(SHAPE), 0.1, "patch", 3)
    assert torch.equal(z[..., :-3, :], eps[..., :-3, :]) and torch.equal(z[..., :, :-3], eps[..., :, :-3])
    assert torch.allclose(z[..., -3:, -3:], 0.1 * eps[..., -3:, -3:] + 0.9)


@pytest.mark.parametrize("options, message", [({"target": "dog"}, "target must be one of"),
                                              ({"trigger": "sticker"}, "trigger must be one of"),
                                              ({"gamma": 1.5}, "gamma must be in"),
                                              ({"poison_fraction": 0.0}, "poison_fraction must be in"),
                                              ({"patch_size": 0}, "patch_size must be")])
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        objective_from_config("trojdiff_flow_matching", options)


def test_an_objective_without_a_noise_coupling_cannot_be_trojaned():
    from genstudio.families.score import NCSNLoss

    with pytest.raises(TypeError, match="takes_pairs"):
        trojaned(NCSNLoss)


def test_a_class_target_with_an_empty_class_is_a_clear_error(tmp_path, toy_data):
    objective = objective_from_config("trojdiff_edm", {"target": "class", "target_label": 5,
                                                       "target_source": str(toy_data)})
    with pytest.raises(ValueError, match="no images of class 5"):
        objective.poison(Batch(torch.zeros(2, *SHAPE)))


def test_trojdiff_trains_through_the_shared_loop_from_a_config(tmp_path, toy_data):
    cfg = toy_config(tmp_path, toy_data, max_steps=4, checkpoint_every=4)
    cfg["objective"] = {"name": "trojdiff_edm", "options": {"target": "class", "target_label": 1,
                                                            "target_source": str(toy_data), "poison_fraction": 0.5}}
    run(config_from_dict(cfg))
    model, meta = load_model(tmp_path / "run" / "model")
    assert meta["family"] == "diffusion" and meta["training"]["config"]["objective"]["name"] == "trojdiff_edm"


def test_out_of_distribution_and_image_file_targets(tmp_path, toy_data):
    from PIL import Image

    ood = objective_from_config("trojdiff_ddpm", {"target": "images", "target_source": str(toy_data)})
    assert ood.target_pool(SHAPE).shape == (40, *SHAPE)  # every image of the other source
    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(tmp_path / "white.png")
    one = objective_from_config("trojdiff_ddpm", {"target": "instance", "target_image": str(tmp_path / "white.png"),
                                                  "trigger": "patch", "trigger_image": str(tmp_path / "white.png")})
    assert torch.equal(one.target_pool(SHAPE), torch.ones(1, *SHAPE))
    assert torch.equal(one.delta(SHAPE), torch.ones(SHAPE))
    with pytest.raises(ValueError, match="cannot read image"):
        objective_from_config("trojdiff_ddpm", {"target_image": str(tmp_path / "missing.png")}).target_pool(SHAPE)

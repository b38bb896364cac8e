"""Constant Acceleration Flow: the constant-acceleration path and its closed-form step are exact; on a 2-D toy
CAF's one-step sample beats the 2-rectified flow's one-step sample trained on the same reflow pairs with the same
budget; the trainer trains a CAF model on a pairs folder and exports a checkpoint the API samples with "caf"."""
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import genstudio
import samplers
from genstudio.config import ConfigError, config_from_dict, load_config
from genstudio.core.paths import LinearPath
from genstudio.core.toys import two_moons
from genstudio.families.caf import CAFLoss, CAFModel, CAFNetwork, caf_state
from genstudio.families.flow import FlowMatchingLoss
from genstudio.model import Guided, Model
from genstudio.reflow import sample_pairs
from genstudio.train import run, validate
from genstudio.train.setup import build_model, init_weights
from samplers.caf import caf_step
from samplers.grids import make_grid
from tests.helpers import MLP, ROOT, sliced_wasserstein, toy_config, train, write_pairs


class Net(nn.Module):
    """F(x, c_noise) for 2-D outputs from `in_dim` inputs (4 for the acceleration part: x and the initial
    velocity), with sinusoidal features of t = c_noise / 1000 (as tests.helpers.MLP)."""

    def __init__(self, in_dim: int = 2, width: int = 128, freqs: int = 8):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(freqs) / 2)
        self.inp = nn.Linear(in_dim + 2 * freqs, width)
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width),
                                  nn.SiLU(), nn.Linear(width, 2))

    def forward(self, x, c_noise, labels=None):
        f = (c_noise.float() / 1000).reshape(-1, 1) * self.freqs
        return self.body(self.inp(torch.cat([x, torch.sin(f), torch.cos(f)], 1)))


def test_constant_acceleration_path_is_the_papers_and_hits_the_data_exactly():
    g = torch.Generator().manual_seed(0)
    x0, eps, u0 = (torch.randn(64, 3, generator=g, dtype=torch.float64) for _ in range(3))
    one, zero = torch.ones(64, dtype=torch.float64), torch.zeros(64, dtype=torch.float64)
    assert torch.equal(caf_state(x0, eps, one, u0)[0], eps)
    torch.testing.assert_close(caf_state(x0, eps, zero, u0)[0], x0, rtol=0, atol=1e-14)  # tau = 1: x_1 exactly
    # The paper's X_tau = X_0 + tau v0 + tau^2/2 a, X_0 noise, X_1 data, v0 = h (X_1 - X_0), a = 2 (X_1 - X_0 - v0),
    # is ours at t = 1 - tau with u0 = -v0 (our dx/dt at the noise end).
    h, tau = 1.5, torch.rand(64, generator=g, dtype=torch.float64)
    v0 = h * (x0 - eps)
    a_paper = 2 * (x0 - eps - v0)
    x_paper = eps + tau[:, None] * v0 + tau[:, None] ** 2 / 2 * a_paper
    x_ours, a_ours = caf_state(x0, eps, 1 - tau, -v0)
    torch.testing.assert_close(x_ours, x_paper, rtol=0, atol=1e-14)
    torch.testing.assert_close(a_ours, a_paper, rtol=0, atol=1e-14)
    # dx/dt = u0 at t = 1 and d2x/dt2 = a (central differences of a quadratic are exact up to rounding)
    d = 1e-3
    x = lambda t: caf_state(x0, eps, torch.full((64,), t, dtype=torch.float64), u0)[0]  # noqa: E731
    _, a = caf_state(x0, eps, one, u0)
    torch.testing.assert_close((x(1 + d) - x(1 - d)) / (2 * d), u0, rtol=0, atol=1e-9)
    torch.testing.assert_close((x(0.5 + d) - 2 * x(0.5) + x(0.5 - d)) / d**2, a, rtol=0, atol=1e-5)
    # The closed-form step moves exactly along the path, in one step or several.
    for t, s in [(1.0, 0.0), (1.0, 0.6), (0.6, 0.25), (0.25, 0.0)]:
        torch.testing.assert_close(caf_step(x(t), t, s, u0, a), x(s), rtol=0, atol=1e-13)


@pytest.fixture(scope="module")
def moons_pairs():
    """A 1-rectified flow of two moons and 4000 of its Euler-50 (noise, sample) pairs (as test_reflow)."""
    torch.manual_seed(0)
    rf1 = Model(MLP(), LinearPath(), "velocity", family="flow")
    train(rf1, lambda n, g: (two_moons(n, g), None), FlowMatchingLoss(), steps=1500)
    z = torch.randn(4000, 2, generator=torch.Generator().manual_seed(5))
    return rf1, z, sample_pairs(rf1, z, make_grid("uniform", LinearPath(), 50), "euler")


def _fit(model, objective, z, x0, steps=500):
    """Adam (lr 1e-3, cosine) on batches of 256 pairs: the same budget for each model."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model.train()
    for _ in range(steps):
        i = torch.randint(0, len(z), (256,), generator=g)
        loss = objective(model, x0[i], noise=z[i]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def test_caf_one_step_beats_rectified_flow_one_step_on_the_same_pairs(moons_pairs):
    # Measured (one thread, ~15 s): 1-RF (1500 steps) -> 4000 Euler-50 pairs; 2-RF and CAF (h = 1.5) each trained
    # 500 Adam steps of 256 pairs, their velocity nets initialized from the 1-RF (Liu et al. 2022), CAF's
    # acceleration net from scratch. SW_2 to 4000 data points (the teacher's own Euler-50 samples: 0.079):
    #   1 step:  2-RF 0.096, CAF 0.077        (fit seeds 2, 3: 0.098 / 0.075, 0.096 / 0.077)
    #   CAF 2 steps 0.077, 4 steps 0.076 (on the even grid 1, 1/2, 0 ...; 2-RF 0.082, 0.082)
    # Coupling error (mean distance of the one-step sample to the teacher's sample from the same noise):
    #   2-RF 0.089, CAF 0.069. With 1000 steps each: SW 0.080 vs 0.073, coupling 0.058 vs 0.049; from scratch
    #   (1000 steps) 0.086 vs 0.078. CAF's coupling error stays at 0.069 with 2 and 4 steps (its error is the
    #   acceleration model's, which more steps do not average away); the 2-RF's falls to 0.037 and 0.021.
    rf1, z, x0 = moons_pairs
    rf2 = Model(MLP(), LinearPath(), "velocity", family="flow")
    rf2.load_state_dict(rf1.state_dict())
    _fit(rf2, FlowMatchingLoss(), z, x0)
    velocity = MLP()
    velocity.load_state_dict(rf1.network.state_dict())
    caf = _fit(CAFModel(CAFNetwork(velocity, Net(in_dim=4))), CAFLoss(h=1.5), z, x0)
    assert samplers.compatible(caf) == ["caf"]

    data = two_moons(4000, torch.Generator().manual_seed(10))
    z_test = torch.randn(4000, 2, generator=torch.Generator().manual_seed(7))
    ts1 = make_grid("uniform", LinearPath(), 1)
    with torch.no_grad():
        teacher = sample_pairs(rf1, z_test, make_grid("uniform", LinearPath(), 50), "euler")
        rf_one = sample_pairs(rf2, z_test, ts1, "euler")
        field = Guided(caf)
        caf_one = samplers.get("caf").fn(field, z_test, ts1)
        assert field.nfe == 2 == samplers.get("caf").nfe(1)  # the initial velocity and one acceleration
        caf_n = {n: samplers.get("caf").fn(Guided(caf), z_test, torch.linspace(1, 0, n + 1, dtype=torch.float64))
                 for n in (2, 4)}
    sw = {"rf1": sliced_wasserstein(rf_one, data), "caf1": sliced_wasserstein(caf_one, data),
          **{f"caf{n}": sliced_wasserstein(x, data) for n, x in caf_n.items()}}
    coupling = {k: float((x - teacher).norm(dim=1).mean()) for k, x in (("rf1", rf_one), ("caf1", caf_one))}
    print(f"SW_2 to data: {sw}; coupling error: {coupling}")
    assert sw["caf1"] < sw["rf1"] - 0.01 and sw["caf1"] < 0.09, sw
    assert coupling["caf1"] < coupling["rf1"] - 0.01, coupling
    assert sw["caf2"] < 0.09 and sw["caf4"] < 0.09, sw


@pytest.fixture
def caf_config(tmp_path):
    pairs = write_pairs(tmp_path / "pairs")

    def make(**train):
        cfg = toy_config(tmp_path, pairs, **train)
        cfg["model"].update(kind="caf", path={"name": "linear"}, prediction="velocity", precond={"name": "none"})
        cfg["objective"] = {"name": "caf", "options": {"h": 1.5}}
        cfg["data"]["flip"] = False
        return cfg
    return make


def test_trainer_exports_a_caf_model_that_samples_in_one_and_two_steps(tmp_path, caf_config):
    cfg = caf_config(max_steps=3, checkpoint_every=3)
    cfg["train"].update(sample_sampler="caf", sample_steps=1, sample_every=3, sample_count=4)
    result = run(config_from_dict(cfg))
    folder = Path(result["model"])
    for part in ("velocity", "acceleration"):
        assert (folder / part / "config.json").is_file() and list((folder / part).glob("*.safetensors"))
    assert not (folder / "unet").exists() and (tmp_path / "run" / "samples" / "step_00000003.png").is_file()
    pipe = genstudio.load(folder, device="cpu")
    assert isinstance(pipe.model, CAFModel) and pipe.meta["family"] == "caf"
    unet = {"network": "diffusers.UNet2DModel"}
    assert pipe.meta["components"] == {"velocity": unet, "acceleration": unet}
    assert pipe.samplers() == ["caf"] and pipe.image_shape == (3, 8, 8)
    assert pipe.model.network.accel.config["in_channels"] == 6
    # The same folder as format version 1 wrote it (family "flow", one "network" entry, no component list)
    # still loads, to the same model.
    import json
    meta = json.loads((folder / "genstudio.json").read_text())
    v1 = {k: v for k, v in meta.items() if k != "components"}
    v1.update(version=1, family="flow", network="genstudio.CAFNetwork")
    (folder / "genstudio.json").write_text(json.dumps(v1))
    old = genstudio.load(folder, device="cpu")
    assert old.model.family == "caf" and old.meta["version"] == 2 and old.meta["components"] == meta["components"]
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(old.model(x, 0.5, torch.tensor([0, 1])), pipe.model(x, 0.5, torch.tensor([0, 1])))
    for steps in (1, 2):
        out = pipe.generate(2, steps=steps, labels=[0, 1], guidance=2.0)
        assert out.sampler == "caf" and out.nfe == steps + 1 and out.images.shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="Samplers that can drive it: caf"):
        pipe.sample(1, sampler="euler", steps=2)
    # export -> load keeps every weight
    from safetensors.torch import load_file

    from genstudio.checkpoint import load_model
    from genstudio.train import EMA_FILE, latest_checkpoint
    ema = load_file(str(latest_checkpoint(tmp_path / "run") / EMA_FILE))
    loaded = load_model(folder)[0].state_dict()
    assert set(ema) == set(loaded) and all(torch.equal(ema[k], loaded[k]) for k in ema)


def test_caf_config_validates(tmp_path):
    config = load_config(ROOT / "configs" / "caf_cifar10.toml")
    assert config.model.kind == "caf" and config.data.flip is False and config.train.sample_sampler == "caf"
    assert config.train.sample_steps == 1 and config.objective.options["h"] == 1.5
    # validate checks the training objective against the data only when data.source is a pairs folder: use one
    config.data.source = str(write_pairs(tmp_path / "pairs", size=32))
    model = validate(config)
    assert isinstance(model, CAFModel) and model.kind == "caf" and model.num_classes == 10
    assert model.network.velocity.config["in_channels"] == 3 and model.network.accel.config["in_channels"] == 6


def test_kind_and_objective_must_agree(tmp_path, caf_config):
    cfg = caf_config()
    cfg["objective"] = {"name": "flow_matching"}
    with pytest.raises(ConfigError, match="family 'flow' makes 'field' models, not model.kind = 'caf'"):
        validate(config_from_dict(cfg))
    cfg = caf_config()
    cfg["model"]["kind"] = "field"
    with pytest.raises(ConfigError, match="family 'caf' makes 'caf' models"):
        validate(config_from_dict(cfg))
    cfg = caf_config()
    cfg["model"]["prediction"] = "x0"
    with pytest.raises(ConfigError, match="predicts \"velocity\""):
        validate(config_from_dict(cfg))
    cfg = caf_config()
    cfg["model"]["kind"] = "warp"  # a kind no family makes: refused before any work, by the objective's family
    with pytest.raises(ConfigError, match="makes 'caf' models, not model.kind = 'warp'"):
        validate(config_from_dict(cfg))


def test_caf_starts_from_a_flow_model_with_its_acceleration_equal_to_the_flows_velocity(tmp_path, caf_config):
    flow_cfg = caf_config(max_steps=2, checkpoint_every=2)
    flow_cfg["model"]["kind"] = "field"
    flow_cfg["objective"] = {"name": "flow_matching"}
    flow_cfg["train"]["output_dir"] = str(tmp_path / "flow")
    flow = genstudio.load(run(config_from_dict(flow_cfg))["model"], device="cpu").model
    cfg = caf_config(init_from=str(tmp_path / "flow"))
    caf = build_model(config_from_dict(cfg))
    init_weights(caf, cfg["train"]["init_from"])
    x, u0, labels = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 0])
    with torch.no_grad():
        v = flow(x, 0.7, labels)
        torch.testing.assert_close(caf(x, 0.7, labels), v)
        torch.testing.assert_close(caf(x, 0.7, labels, part="acceleration", v0=u0), v)

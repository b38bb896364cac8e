"""What several test modules share (no tests here): the repository root, toy image folders and configs, the exact
Gaussian flow the sampler tests measure against, the 2-D toy network and its training loop, the consistency toy,
reflow pairs written by hand, and the studio's micro checkpoints and live server. Import it as `tests.helpers`;
pure-torch toy distributions live in genstudio.core.toys."""
from __future__ import annotations

import contextlib
import math
import socket
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

import samplers
from genstudio.checkpoint import export_model
from genstudio.config import config_from_dict
from genstudio.core import toys
from genstudio.core.paths import EDMPath
from genstudio.core.precond import ConsistencyPrecond, EDMPrecond
from genstudio.model import Guided, Model
from genstudio.train import build_model
from samplers.grids import make_grid

ROOT = Path(__file__).resolve().parents[1]  # the repository root

# -- toy image folders and a micro-UNet config -------------------------------------------------------------------

MICRO_UNET = {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
              "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}


def make_toy_folder(root, n_per_class=20, size=8, classes=("a", "b")):
    """Two classes of simple structured images: horizontal vs vertical stripes, random colours."""
    rng = np.random.default_rng(0)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = np.zeros((size, size, 3), dtype=np.uint8)
            colour = rng.integers(60, 255, 3)
            if k == 0:
                img[::2] = colour
            else:
                img[:, ::2] = colour
            Image.fromarray(img).save(root / c / f"{i:03d}.png")
    return root


def toy_config(tmp_path, data, **train):
    """A config dict for a ~60k-parameter UNet on 8x8 toy images."""
    return {
        "model": {"network": "tiny", "unet": dict(MICRO_UNET), "num_classes": 2},
        "objective": {"name": "edm"},
        "data": {"source": str(data), "image_size": 8, "cache_dir": str(tmp_path / "cache")},
        "train": {"output_dir": str(tmp_path / "run"), "batch_size": 8, "max_steps": 12, "checkpoint_every": 4,
                  "log_every": 1, "progress": False, "lr": 1e-3, **train},
    }


# -- Gaussian data with a closed-form probability flow (the sampler tests) ----------------------------------------

MEAN = torch.tensor([0.5, -0.3], dtype=torch.float64)
VAR = torch.tensor([0.25, 0.04], dtype=torch.float64)


def random_classifier(file: Path) -> Path:
    """A random-init two-class classifier with 16-d features (the interface of the shipped one); He-normal
    weights keep the features at unit scale through the BatchNorms' initial statistics."""
    from genstudio.evaluation.classifier import CifarResNet, save_classifier

    torch.manual_seed(0)
    net = CifarResNet(widths=(8, 16, 16), stem=8, num_classes=2)
    for mod in net.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(mod.weight)
    return save_classifier(net, file, {"note": "random init, for tests"})


def exact_flow(path, x_t, t, s):
    """The probability-flow ODE of Gaussian data in closed form: x_t = alpha mu + sqrt(alpha^2 v + sigma^2) z."""
    t, s = torch.as_tensor(t, dtype=torch.float64), torch.as_tensor(s, dtype=torch.float64)
    std = lambda u: torch.sqrt(path.alpha(u) ** 2 * VAR + path.sigma(u) ** 2)  # noqa: E731
    return path.alpha(s) * MEAN + std(s) / std(t) * (x_t - path.alpha(t) * MEAN)


def prior(path, ts, n, seed=0):
    """x at ts[0] from the exact marginal of the Gaussian data (so no prior mismatch)."""
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    t = ts[0]
    return path.alpha(t) * MEAN + torch.sqrt(path.alpha(t) ** 2 * VAR + path.sigma(t) ** 2) * z


# -- a 2-D toy network, its training loop and a distance between point clouds (the family tests) ------------------

class MLP(nn.Module):
    """F(x, c_noise, labels) for 2-D points: sinusoidal features of t = c_noise / 1000, a label embedding
    (num_classes + 1 rows, the last the CFG "no label" class) added to the first hidden layer."""

    def __init__(self, num_classes: int = 0, width: int = 128, freqs: int = 8):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(freqs) / 2)
        self.inp = nn.Linear(2 + 2 * freqs, width)
        self.label = nn.Embedding(num_classes + 1, width) if num_classes else None
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width),
                                  nn.SiLU(), nn.Linear(width, 2))

    def forward(self, x, c_noise, labels=None):
        f = (c_noise.float() / 1000).reshape(-1, 1) * self.freqs
        h = self.inp(torch.cat([x, torch.sin(f), torch.cos(f)], 1))
        if self.label is not None:
            h = h + self.label(labels)
        return self.body(h)


class EDMTimeMLP(MLP):
    """The toy MLP fed 1000 c_noise: EDM's c_noise = ln(sigma) / 4 is O(1), the MLP's features expect O(1000)."""

    def forward(self, x, c_noise, labels=None):
        return super().forward(x, 1000 * c_noise, labels)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: int = 128) -> float:
    """SW_2 between two equal-size point clouds over fixed random directions."""
    d = torch.randn(directions, a.shape[1], generator=torch.Generator().manual_seed(1), dtype=a.dtype)
    d = d / d.norm(dim=1, keepdim=True)
    pa, pb = (a @ d.T).sort(0).values, (b @ d.T).sort(0).values
    return float(((pa - pb) ** 2).mean().sqrt())


def train(model, data_fn, objective, steps=1500, batch=256, label_dropout=0.0):
    """A plain Adam loop on the objective (the trainer's label dropout, done here by hand)."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x0, labels = data_fn(batch, g)
        if labels is not None:
            labels = torch.where(torch.rand(batch) < label_dropout, torch.full_like(labels, model.null_label), labels)
        loss = objective(model, x0, labels).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()



def train_players(model, objective, data_fn, extra=None, steps=1500, batch=256, lr=2e-3, betas=(0.9, 0.999)):
    """The trainer's contract on a toy: the objective's extra modules (plus `extra`, e.g. a frozen teacher), its
    optimizer groups with their learning-rate scales, the sum of its per-group losses, Adam with a cosine decay."""
    torch.manual_seed(0)
    extra = {**objective.extra_modules(model, (2,)), **(extra or {})}
    groups = objective.optimizer_groups(model, extra)
    opt = torch.optim.Adam([{"params": g.params, "lr": lr * g.lr_scale} for g in groups], betas=betas)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = sum(v.mean() for v in objective(model, data_fn(batch, g), extra=extra).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval(), extra

# -- the consistency toy: three tight clusters, an MLP consistency model and its one- or two-step sampler ----------

CM_PATH = EDMPath(t_max=10.0)
CM_MEANS = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0]])
CM_STD = 0.15


def cm_mixture(n, g):
    """n points of the consistency toy's three clusters (without their labels)."""
    return toys.mixture(n, g, CM_MEANS, CM_STD)[0]


def cm(seed=0, precond="consistency"):
    """A 2-D consistency model (kind "map") with the consistency preconditioning, or with EDM's ("edm")."""
    torch.manual_seed(seed)
    if precond == "edm":
        return Model(EDMTimeMLP(), CM_PATH, "x0", EDMPrecond(sigma_data=0.5), family="consistency", kind="map")
    return Model(MLP(), CM_PATH, "x0", ConsistencyPrecond(), family="consistency", kind="map")


def one_step(model, n, steps=1, seed=2):
    spec = samplers.get("consistency", model)
    # two steps jump at sigma = 0.5 (the Karras grid's 2-step middle point is sigma_min, a no-op jump)
    ts = make_grid("karras", model.path, 1) if steps == 1 else torch.tensor([model.path.t_max, 0.5, 0.0])
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed)) * float(ts[0])
    with torch.no_grad():
        return spec.fn(Guided(model), x, ts, generator=torch.Generator().manual_seed(seed + 1))


# -- reflow pairs written by hand ------------------------------------------------------------------------------------

def write_pairs(folder, n=16, size=8):
    """A pairs folder of n random images (fp16, in [-1, 1]) with seeds 100.. and labels seed % 2, 8 to a shard."""
    from safetensors.torch import save_file

    from genstudio.checkpoint import write_json

    folder.mkdir(parents=True)
    write_json(folder / "manifest.json", {"kind": "genstudio-pairs", "version": 1, "image_shape": [3, size, size],
                                          "total": n, "shard_size": 8, "seed": 100, "num_classes": 2})
    for k in range(n // 8):
        seeds = torch.arange(100 + 8 * k, 100 + 8 * (k + 1))
        save_file({"x0": torch.rand(8, 3, size, size).half() * 2 - 1, "seeds": seeds, "labels": seeds % 2},
                  str(folder / f"pairs-{k:05d}.safetensors"))
    return folder


# -- the studio: tiny checkpoints made on the spot, and a live server ----------------------------------------------

SIZE = 16  # the micro checkpoints' image size: uploads are resized to it


def field_checkpoint(root: Path, size: int = SIZE) -> Path:
    """A class-conditional (2 classes) micro-UNet EDM model, untrained, 16x16 (or size), defaulting to Heun with 3
    steps."""
    torch.manual_seed(0)
    cfg = toy_config(root, root)
    cfg["data"]["image_size"] = size
    model = build_model(config_from_dict(cfg)).eval()
    return export_model(model, root / "field_ckpt", training={"steps": 0, "note": "untrained test model"},
                        defaults={"sampler": "heun", "steps": 3, "grid": "karras"})


def map_checkpoint(root: Path) -> Path:
    """An unconditional micro consistency model (kind "map", iCT's parametrisation), untrained."""
    torch.manual_seed(1)
    cfg = toy_config(root, root)
    cfg["data"]["image_size"] = SIZE
    cfg["model"].update(kind="map", path={"name": "edm"}, prediction="x0", precond={"name": "consistency"},
                        num_classes=0)
    cfg["objective"] = {"name": "ict"}
    model = build_model(config_from_dict(cfg)).eval()
    return export_model(model, root / "map_ckpt", training={"steps": 0},
                        defaults={"sampler": "consistency", "steps": 2})


def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(checkpoints: list[Path], host: str = "127.0.0.1", **build):
    """The studio (ui.app.build's options: `build`) on a free port of `host`; yields its localhost URL and the app.
    A run it started is stopped at the end."""
    from ui.app import build as build_app
    from ui.app import launch

    demo = build_app(checkpoints, host=host, **build)
    port = free_port()
    launch(demo, host=host, port=port, block=False, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()
        if demo.runs is not None:
            demo.runs.close()


MICRO_TOML = """
[model]
network = "tiny"
unet = {unet}
num_classes = 2

[objective]
name = "edm"

[data]
source = "{data}"
image_size = 8
cache_dir = "{cache}"

[train]
output_dir = "{runs}/micro"
max_steps = 100000
batch_size = 8
lr = 1e-3
log_every = 1
checkpoint_every = 100000
sample_every = 3
sample_count = 4
sample_sampler = "euler"
sample_steps = 2
"""  # a run that trains until stopped, a loss point every step and a sample grid every third


def workbench(root: Path) -> tuple[list[Path], dict]:
    """The studio's workbench on micro models: (checkpoints, ui.app.build options): a config folder holding
    micro.toml (8x8 toy images), a runs folder, and an offline evaluator (a random classifier, a 16x16 reference)."""
    import json

    checkpoints = [field_checkpoint(root), map_checkpoint(root)]
    configs = root / "configs"
    configs.mkdir()
    toy = make_toy_folder(root / "toy", n_per_class=12, size=8)
    unet = "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in MICRO_UNET.items()) + " }"
    (configs / "micro.toml").write_text(MICRO_TOML.format(unet=unet, data=toy, cache=root / "cache",
                                                          runs=root / "runs"))
    reference = make_toy_folder(root / "reference", n_per_class=10, size=SIZE)
    evaluator = {"classifier": str(random_classifier(root / "clf.safetensors")), "reference": str(reference),
                 "cache_dir": str(root / "cache")}
    return checkpoints, {"runs_dir": root / "runs", "config_dirs": [configs], "evaluator": evaluator}


def refused_wrongly(client, cases, ctx) -> list[str]:
    """Each case (endpoint, args(ctx), message) must end in an error whose text holds message (gradio_client raises
    AppError carrying the gr.Error's message); returns what went otherwise, one line per case."""
    failures = []
    for endpoint, args, message in cases:
        try:
            client.predict(*args(ctx), api_name=f"/{endpoint}")
            failures.append(f"{endpoint} {message}: no error")
        except Exception as e:
            if message.lower() not in str(e).lower():
                failures.append(f"{endpoint}: expected {message!r}, got {type(e).__name__}: {e}")
    return failures

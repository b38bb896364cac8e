"""Fixed-seed golden outputs: what the shipped checkpoints sample and what one training loss of every family is,
recorded before the package was reshaped so that the reshaping can prove it changed nothing.

    python -m tests.golden.record            # rewrite tests/golden/golden.json (only when a change is meant)

`tests/test_golden.py` recomputes every entry and compares. On the machine and torch build that recorded them
(the `environment` below) outputs must be bit-identical; elsewhere float kernels may round differently, so the
test then allows one grey level per pixel and a relative 1e-4 on losses.
"""
from __future__ import annotations

import base64
import hashlib
import json
import platform
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden.json"
ROOT = HERE.parents[1]
CHECKPOINTS = ROOT / "checkpoints"

# (checkpoint, sampler, steps); None: the checkpoint's default sampler and steps.
SAMPLING = {
    "edm_tiny_cifar10": [None, ("dpmpp_2m", 10), ("euler_ancestral", 10)],
    "edm_small_cifar10": [None, ("heun", 6), ("ddpm", 10)],
    "flow_small_cifar10": [None, ("euler", 8), ("unipc", 6)],
    "ect_cifar10": [None, ("consistency", 1), ("consistency", 4)],
}


def environment() -> dict[str, str]:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"torch": torch.__version__, "cpu": cpu, "threads": str(torch.get_num_threads())}


def _digest(a: np.ndarray | torch.Tensor) -> str:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _images_entry(images: np.ndarray, nfe: int, last_x: torch.Tensor | None) -> dict[str, Any]:
    packed = base64.b64encode(zlib.compress(np.ascontiguousarray(images).tobytes(), 9)).decode()
    return {"sha256": _digest(images), "nfe": int(nfe), "shape": list(images.shape), "uint8_zlib": packed,
            "last_x_sha256": None if last_x is None else _digest(last_x.float())}


def unpack(entry: dict[str, Any]) -> np.ndarray:
    """The uint8 images of an entry."""
    raw = zlib.decompress(base64.b64decode(entry["uint8_zlib"]))
    return np.frombuffer(raw, dtype=np.uint8).reshape(entry["shape"])


def sampling_entries() -> dict[str, dict[str, Any]]:
    """Four images (seeds 0..3, classes 0..3 where conditional) per (checkpoint, sampler, steps)."""
    import genstudio

    out = {}
    for name, cells in SAMPLING.items():
        pipe = genstudio.load(CHECKPOINTS / name, device="cpu")
        for cell in cells:
            sampler, steps = cell or (pipe.defaults()["sampler"], pipe.defaults()["steps"])
            seen: dict[str, torch.Tensor] = {}
            labels = [0, 1, 2, 3] if pipe.num_classes else None
            r = pipe.generate(4, sampler=sampler, steps=steps, seed=0, labels=labels,
                              callback=lambda x, seen=seen, **_: seen.__setitem__("x", x))
            out[f"{name}/{sampler}/{steps}"] = _images_entry(r.images, r.nfe, seen.get("x"))
    return out


def editing_entries() -> dict[str, dict[str, Any]]:
    """SDEdit, inpainting and interpolation on the default image model and the consistency model."""
    import genstudio

    edm, ect = (genstudio.load(CHECKPOINTS / n, device="cpu") for n in ("edm_tiny_cifar10", "ect_cifar10"))
    image = edm.sample(2, seed=7, steps=6, labels=[3, 5])
    mask = np.zeros((32, 32), dtype=bool)
    mask[:, :16] = True
    out = {}
    r = edm.sdedit(image, 0.5, sampler="ddim", steps=6, seed=1, labels=[3, 5])
    out["edm_tiny_cifar10/sdedit"] = _images_entry(r.images, r.nfe, None)
    r = edm.interpolate(frames=3, seeds=(0, 1), sampler="ddim", steps=5, label=2)
    out["edm_tiny_cifar10/interpolate"] = _images_entry(r.images, r.nfe, None)
    out["edm_tiny_cifar10/inpaint"] = _images_entry(edm.inpaint(image[0], mask, n=2, steps=4, steps_per_level=2,
                                                                 labels=1), 0, None)
    out["ect_cifar10/inpaint"] = _images_entry(ect.inpaint(image[0], mask, n=2, steps=3, labels=1), 0, None)
    return out


# (label, config overrides) for one loss of every family's objectives on a fixed toy batch.
LOSSES = {
    "diffusion/ddpm": {"model": {"path": {"name": "vp_discrete"}, "prediction": "eps", "precond": {"name": "none"}},
                       "objective": {"name": "ddpm"}},
    "diffusion/edm": {"objective": {"name": "edm"}},
    "score/ncsn": {"model": {"path": {"name": "ve"}, "prediction": "score", "precond": {"name": "ncsn"}},
                   "objective": {"name": "ncsn"}},
    "score/vesde": {"model": {"path": {"name": "ve"}, "prediction": "score", "precond": {"name": "ncsn"}},
                    "objective": {"name": "vesde"}},
    "flow/flow_matching": {"model": {"path": {"name": "linear"}, "prediction": "velocity",
                                     "precond": {"name": "none"}},
                           "objective": {"name": "flow_matching", "options": {"time_distribution": "logit_normal"}}},
    "caf/caf": {"model": {"kind": "caf", "path": {"name": "linear"}, "prediction": "velocity",
                          "precond": {"name": "none"}}, "objective": {"name": "caf"}},
    "consistency/ict": {"model": {"kind": "map", "precond": {"name": "consistency"}}, "objective": {"name": "ict"}},
    "consistency/ict_vct": {"model": {"kind": "map", "precond": {"name": "consistency"}},
                            "objective": {"name": "ict", "options": {"coupling": "vct"}}},
    "consistency/ect": {"model": {"kind": "map"}, "objective": {"name": "ect"}},
}
MICRO_UNET = {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
              "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]}


def toy_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    return torch.rand(6, 3, 8, 8, generator=g) * 2 - 1, torch.tensor([0, 1, 2, 0, 1, 2])


def loss_config(overrides: dict[str, Any]) -> dict[str, Any]:
    from genstudio.config import merge

    base = {"model": {"network": "tiny", "unet": dict(MICRO_UNET), "num_classes": 3},
            "data": {"image_size": 8}, "train": {"max_steps": 100}}
    return merge(base, overrides)


def loss_entries(compute: Callable[[dict[str, Any], torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, str]:
    """compute(config dict, x0, labels) -> per-sample loss at step 10 of 100, weights from seed 0, noise from seed 1."""
    x0, labels = toy_batch()
    return {name: compute(loss_config(over), x0, labels).double().mean().item().hex() for name, over in LOSSES.items()}


def compute_loss(config: dict[str, Any], x0: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One objective evaluation through the package's own model building and objective contract."""
    from genstudio.config import config_from_dict
    from genstudio.families import build_from_config
    from genstudio.objective import Batch

    torch.manual_seed(0)
    model, objective = build_from_config(config_from_dict(config))
    extra = objective.extra_modules(model, tuple(x0.shape[1:]))
    torch.manual_seed(1)
    return objective.loss(model, Batch(x0, labels), step=10, total_steps=100, extra=extra)


def record() -> dict[str, Any]:
    torch.set_num_threads(1)
    return {"environment": environment(), "sampling": sampling_entries(), "editing": editing_entries(),
            "losses": loss_entries(compute_loss)}


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(record(), indent=0) + "\n")
    print(f"wrote {GOLDEN}")

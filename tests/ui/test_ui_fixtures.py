"""Helpers for the studio tests (no tests here): tiny checkpoints made on the spot, and a live server."""
from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import torch

from genstudio.checkpoint import export_model
from genstudio.config import config_from_dict
from genstudio.train import build_model

from tests.conftest import toy_config

SIZE = 16  # the micro checkpoints' image size: uploads are resized to it


def field_checkpoint(root: Path) -> Path:
    """A class-conditional (2 classes) micro-UNet EDM model, untrained, 16x16, defaulting to Heun with 3 steps."""
    torch.manual_seed(0)
    cfg = toy_config(root, root)
    cfg["data"]["image_size"] = SIZE
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
def serve(checkpoints: list[Path]):
    """The studio on a free localhost port; yields its URL."""
    from ui.app import build, launch

    demo = build(checkpoints)
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, block=False, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()

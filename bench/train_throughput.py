"""Training throughput of genstudio's loop against a plain eager PyTorch loop on the same UNet.

    OMP_NUM_THREADS=1 python bench/train_throughput.py --presets tiny --precisions fp32 --steps 10 --threads 1

For each preset (tiny, small) and precision (fp32, bf16 autocast) it measures, in the same process:

- plain: `genstudio.train.build_model(config)` (the same Model and UNet2DModel), AdamW and the EDM
  objective on a fresh random batch each step, `loss.backward(); opt.step(); opt.zero_grad()`, under
  `torch.autocast(device, bfloat16)` for bf16. `--warmup` untimed steps, then `--steps` timed ones.
- ours: `genstudio.train.run(config)` on a synthetic image folder (random 32x32 PNGs in two class
  folders, decoded once into a cache in a temporary directory). A run's wall time includes start-up,
  data loading and the final checkpoint, so two runs are timed, of `warmup` and `warmup + steps`
  steps: (t_long - t_short) / steps is the steady-state time of one step, start-up and saving
  cancelling out. The loop is measured as configured by default (random flips, gradient clipping,
  EMA update, metrics.jsonl line and loss reduction every step), so the ratio prices those too.
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one forward of the model on one batch
  (attention counted through the math SDPA kernel, which the counter sees as matmuls); a training
  step is taken as 3x the forward (forward + backward of about twice the forward).

Runs on the GPU when CUDA is available, else on the CPU. The plain loop runs first for each
setting, which also warms up kernel caches for the two timed runs of ours. Timings share the
machine with whatever else runs on it: for stable numbers run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import format_table, synchronize  # bench/common.py
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from genstudio.atomic import write_json
from genstudio.config import Config, config_from_dict
from genstudio.data import load_images
from genstudio.families import objective_from_config
from genstudio.train import build_model, run

IMAGE_SIZE = 32
MIN_IMAGES = 512
COLUMNS = ("preset", "precision", "params_M", "gflop_per_step", "plain_img_s", "ours_img_s", "ratio",
           "plain_gflop_s", "ours_gflop_s")


def make_image_folder(root: Path, n: int, size: int = IMAGE_SIZE) -> Path:
    """n random RGB PNGs split over class folders a/ and b/."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / ("a", "b")[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return root


def make_config(preset: str, precision: str, batch_size: int, max_steps: int, data: Path, work: Path) -> Config:
    return config_from_dict({
        "model": {"network": preset},
        "objective": {"name": "edm"},
        "data": {"source": str(data), "image_size": IMAGE_SIZE, "cache_dir": str(work / "cache")},
        "train": {"output_dir": str(work / "run"), "batch_size": batch_size, "max_steps": max_steps,
                  "checkpoint_every": max_steps + 1, "progress": False,
                  "mixed_precision": "bf16" if precision == "bf16" else "no"},
    })


def forward_flops(config: Config, batch_size: int, device: torch.device) -> int:
    """FLOPs of one forward of the model on one batch."""
    model = build_model(config).to(device)
    x = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
    t = torch.full((batch_size,), 1.0, device=device)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, t)
    return counter.get_total_flops()


def time_plain(config: Config, precision: str, device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per step of a bare eager loop over the same model and objective."""
    torch.manual_seed(config.train.seed)
    model = build_model(config).to(device).train()
    objective = objective_from_config(config.objective.name, config.objective.options)
    tc = config.train
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=tuple(tc.adam_betas), weight_decay=tc.weight_decay)
    shape = (tc.batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)

    def step() -> None:
        x = torch.rand(shape, device=device) * 2 - 1
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = objective(model, x).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def time_run(config: Config) -> float:
    """Wall-clock seconds of one `genstudio.train.run`, in a fresh output folder."""
    shutil.rmtree(config.train.output_dir, ignore_errors=True)
    start = time.perf_counter()
    run(config)
    elapsed = time.perf_counter() - start
    shutil.rmtree(config.train.output_dir, ignore_errors=True)
    return elapsed


def time_ours(preset: str, precision: str, batch_size: int, warmup: int, steps: int, data: Path,
              work: Path) -> float:
    """Seconds per steady-state step of our loop: the difference of two runs of different lengths."""
    short = time_run(make_config(preset, precision, batch_size, warmup, data, work))
    long = time_run(make_config(preset, precision, batch_size, warmup + steps, data, work))
    return max(long - short, 1e-9) / steps


def measure(preset: str, precision: str, args: argparse.Namespace, device: torch.device, data: Path,
            work: Path) -> dict[str, Any]:
    config = make_config(preset, precision, args.batch_size, args.warmup + args.steps, data, work)
    params = sum(p.numel() for p in build_model(config).parameters())
    train_flops = 3 * forward_flops(config, args.batch_size, device)
    plain = time_plain(config, precision, device, args.warmup, args.steps)
    ours = time_ours(preset, precision, args.batch_size, args.warmup, args.steps, data, work)
    return {"preset": preset, "precision": precision, "params_M": params / 1e6,
            "gflop_per_step": train_flops / 1e9,
            "plain_img_s": args.batch_size / plain, "ours_img_s": args.batch_size / ours, "ratio": plain / ours,
            "plain_gflop_s": train_flops / plain / 1e9, "ours_gflop_s": train_flops / ours / 1e9,
            "plain_s_per_step": plain, "ours_s_per_step": ours}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny,small", help="comma-separated network presets")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (at least 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    args.presets = args.presets.split(",")
    args.precisions = args.precisions.split(",")
    if bad := set(args.precisions) - {"fp32", "bf16"}:
        parser.error(f"unknown precision(s) {sorted(bad)}; use fp32, bf16")
    if args.warmup < 1 or args.steps < 1 or args.batch_size < 1:
        parser.error("--warmup, --steps and --batch-size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="genstudio-bench-") as tmp:
        work = Path(tmp)
        data = make_image_folder(work / "images", max(MIN_IMAGES, 2 * args.batch_size))
        load_images(data, image_size=IMAGE_SIZE, cache_dir=work / "cache")  # decode once, outside the timings
        rows = []
        for preset in args.presets:
            for precision in args.precisions:
                rows.append(measure(preset, precision, args, device, data, work))
                print(f"done: {preset} {precision}", file=sys.stderr, flush=True)
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up; ratio = ours img/s / plain img/s")
    print(format_table(rows, COLUMNS))
    if args.out:
        report = {"device": str(device), "threads": torch.get_num_threads(), "batch_size": args.batch_size,
                  "steps": args.steps, "warmup": args.warmup, "torch": torch.__version__, "results": rows}
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

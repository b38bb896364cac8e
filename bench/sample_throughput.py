"""Sampling throughput of genstudio's Pipeline against a raw loop over the same network calls and diffusers'
DDIMPipeline on the same UNet2DModel, measured side by side in one run.

    python bench/sample_throughput.py --presets tiny,small --batch-size 256 --steps 10 --repeats 3

For each preset (a fresh unconditional EDM model of it: throughput does not depend on the weights) and the
same batch and number of network evaluations N, interleaved (ours, raw, diffusers, ours, ...), the median of
`--repeats`:

- ours: `Pipeline.generate(batch, sampler="euler", steps=N)`: noise per seed, the sampler, the model's
  preconditioning and the uint8 conversion; N NFE, counted by the pipeline as always.
- raw: bench/sampler_zoo.py's hand-written Euler loop calling the bare network N times on the same batch
  (scalings precomputed, noise drawn before the timer).
- diffusers: `DDIMPipeline(unet, DDIMScheduler())(batch_size, num_inference_steps=N, output_type="np")` on the
  same UNet2DModel (its images mean nothing for an EDM-trained net; its network calls are the same).
- ours compiled (`--compile`): the same as ours after `Pipeline.compile()` (its first calls, compiling, untimed).

img/s, NFE/s (images times network evaluations per second) and achieved TFLOP/s (FlopCounterMode over one
forward at the batch) are printed; "vs_ours" is an arm's time over ours. GPU where CUDA is available.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import torch
from common import format_table, synchronize  # bench/common.py
from sampler_zoo import raw_euler, raw_euler_setup  # bench/sampler_zoo.py
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from genstudio.api import Pipeline
from genstudio.atomic import write_json
from genstudio.config import config_from_dict
from genstudio.train import build_model

COLUMNS = ("preset", "arm", "batch", "nfe", "img_s", "nfe_img_s", "tflop_s", "vs_ours")


def pipeline(preset: str, device: torch.device) -> Pipeline:
    torch.manual_seed(0)
    model = build_model(config_from_dict({"model": {"network": preset}})).to(device).eval()
    return Pipeline(model, {"defaults": {"sampler": "euler", "steps": 10}}, device, name=preset)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def arms(pipe: Pipeline, args: argparse.Namespace, device: torch.device) -> dict[str, Callable[[], Any]]:
    from diffusers import DDIMPipeline, DDIMScheduler

    n, steps = args.batch_size, args.steps
    x, labels, consts, guided, net_dtype = raw_euler_setup(pipe, SimpleNamespace(seed=0, guidance=1.0), steps, n)
    ddim = DDIMPipeline(unet=pipe.model.network.unet, scheduler=DDIMScheduler(num_train_timesteps=1000))
    ddim.set_progress_bar_config(disable=True)
    out = {
        "ours": lambda: pipe.generate(n, sampler="euler", steps=steps, batch_size=n),
        "raw": lambda: raw_euler(pipe.model.network, x, labels, consts, guided, 1.0, net_dtype),
        "diffusers": lambda: ddim(batch_size=n, num_inference_steps=steps, output_type="np",
                                  generator=torch.Generator(device).manual_seed(0)),
    }
    if args.compile:
        compiled = pipeline(pipe.name, device)
        if compiled.compile():
            out["ours compiled"] = lambda: compiled.generate(n, sampler="euler", steps=steps, batch_size=n)
    return out


def measure(preset: str, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    pipe = pipeline(preset, device)
    x = torch.randn(args.batch_size, *pipe.image_shape, device=device)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        pipe.model.network(x, torch.ones(args.batch_size, device=device))
    flops = counter.get_total_flops() * args.steps
    nfe = pipe.generate(2, sampler="euler", steps=args.steps).nfe
    fns = arms(pipe, args, device)
    for fn in fns.values():  # warm-up: kernels, allocator, compilation at this batch
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(args.repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
            print(f"{preset} round {r + 1}: {name} {args.batch_size / times[name][-1]:.1f} img/s",
                  file=sys.stderr, flush=True)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    return [{"preset": preset, "arm": name, "batch": args.batch_size, "nfe": nfe if name != "diffusers" else args.steps,
             "img_s": args.batch_size / s, "nfe_img_s": args.batch_size * args.steps / s, "tflop_s": flops / s / 1e12,
             "vs_ours": s / median["ours"], "seconds": times[name]} for name, s in median.items()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=None, help="comma-separated (default: tiny,small, and ddpm on CUDA)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="network evaluations per image")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile'd arm of ours")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    args.presets = (args.presets or ("tiny,small,ddpm" if torch.cuda.is_available() else "tiny,small")).split(",")
    if min(args.batch_size, args.steps, args.repeats) < 1:
        parser.error("--batch-size, --steps and --repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [row for preset in args.presets for row in measure(preset, args, device)]
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}, {args.steps} network "
          f"evaluations per image, median of {args.repeats} interleaved rounds; vs_ours = this arm's time / ours")
    print(format_table(rows, COLUMNS))
    if args.out:
        write_json(args.out, {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "batch_size": args.batch_size, "steps": args.steps, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

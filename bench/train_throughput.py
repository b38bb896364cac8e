"""Training throughput of genstudio's loop against three others, measured side by side in one run.

    python bench/train_throughput.py --presets tiny,small --repeats 3

For each preset (tiny, small; ddpm too where CUDA is present) it times, interleaved arm by arm (ABCD ABCD ...,
so a shared machine's load falls on every arm alike) and reports the median of `--repeats`:

- ours: `genstudio.train.run(config)` as configured by default (the fast path's per-device defaults, random
  flips, clipping, EMA, a metrics.jsonl line per step) on a synthetic image folder (random 32x32 PNGs, decoded
  once into a cache), one run of `warmup + steps` steps. The steady-state time per step comes from the run's
  own metrics.jsonl time stamps (taken at each readback) after `warmup` steps, so start-up, data loading,
  compilation and the final checkpoint are left out.
- plain: a bare eager loop over the same Model (the same UNet2DModel) and EDM objective, on a fresh random
  batch each step: `loss.backward(); opt.step(); opt.zero_grad()`, torch's default AdamW.
- diffusers: the train step of diffusers' examples/unconditional_image_generation/train_unconditional.py
  (its defaults) over the same UNet2DModel: torchvision augmentations (resize, center crop, random flip,
  to tensor, normalize) in a DataLoader over the PNGs (0 workers), DDPMScheduler(1000) noise and timesteps,
  MSE to the noise, Accelerator (backward, clip_grad_norm_(1.0)), AdamW(lr 1e-4, betas (0.95, 0.999),
  weight decay 1e-6, eps 1e-8), cosine schedule with 500 warmup steps, grads set to None, `loss.item()` and
  `accelerator.log` every step (its EMA is off by default, so here too).
- lucidrains: denoising-diffusion-pytorch's `Trainer` (its defaults: Adam, EMA every 10 steps, clipping,
  DataLoader with a worker per CPU) on its own `Unet` (default dim_mults, `dim` chosen for the parameter count
  closest to the preset's) in its `GaussianDiffusion`, one `train()` of `warmup + steps` steps timed by a hook
  that reads the clock after each optimizer step (calculate_fid=False: FID is no part of a training step).

FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one forward of each arm's network on one batch
(attention through the math SDPA kernel, which the counter sees as matmuls); a training step is 3x the forward.
The peak is this machine's bf16 matmul rate, measured in the same run (`--peak-size` square matmuls, best
of several). Precision: "auto" is bf16 autocast on CUDA and float32 on the CPU (ours' default), for every arm.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from common import format_table, synchronize  # bench/common.py
from PIL import Image
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from genstudio.atomic import read_jsonl, write_json
from genstudio.config import Config, config_from_dict
from genstudio.data import load_images
from genstudio.families import objective_from_config
from genstudio.train import build_model, run

IMAGE_SIZE = 32
MIN_IMAGES = 512
ARMS = ("ours", "plain", "diffusers", "lucidrains")
COLUMNS = ("preset", "arm", "params_M", "gflop_per_step", "img_s", "tflop_s", "peak_frac", "ours_vs")


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
                  "mixed_precision": {"auto": "auto", "bf16": "bf16", "fp32": "no"}[precision]},
    })


def uses_bf16(precision: str, device: torch.device) -> bool:
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def bf16_peak(device: torch.device, n: int, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` batches of n x n bf16 matmuls."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    inner = 10 if device.type == "cuda" else 2
    best = float("inf")
    for _ in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(inner):
            a @ b
        synchronize(device)
        best = min(best, (time.perf_counter() - start) / inner)
    return 2 * n**3 / best


def flops_of(forward: Callable[[], Any]) -> int:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        forward()
    return counter.get_total_flops()


def timed_loop(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


# ---- the arms ----------------------------------------------------------------------------------------------


class Ours:
    def __init__(self, preset, args, device, data, work):
        self.preset, self.args, self.data, self.work = preset, args, data, work
        config = make_config(preset, args.precision, args.batch_size, 1, data, work)
        model = build_model(config).to(device)
        self.params = sum(p.numel() for p in model.parameters())
        x = torch.randn(args.batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, device=device)
        self.flops = 3 * flops_of(lambda: model(x, torch.ones(args.batch_size, device=device)))

    def seconds_per_step(self) -> float:
        """One run of warmup + steps, timed from its metrics.jsonl: the lines of one readback share its time, so
        the time per step is that between the first readback at or after `warmup` and the last step's."""
        total = self.args.warmup + self.args.steps
        config = make_config(self.preset, self.args.precision, self.args.batch_size, total, self.data, self.work)
        out = Path(config.train.output_dir)
        shutil.rmtree(out, ignore_errors=True)
        run(config)
        records = read_jsonl(out / "metrics.jsonl")
        shutil.rmtree(out, ignore_errors=True)
        t0 = next(r["time"] for r in records if r["step"] >= self.args.warmup)
        s0 = max(r["step"] for r in records if r["time"] == t0)
        if s0 == total:
            raise SystemExit(f"no readback between step {self.args.warmup} and the last: raise --steps")
        return (records[-1]["time"] - t0) / (total - s0)


class Plain:
    def __init__(self, preset, args, device, data, work):
        config = make_config(preset, args.precision, args.batch_size, 1, data, work)
        torch.manual_seed(0)
        self.model = build_model(config).to(device).train()
        self.params = sum(p.numel() for p in self.model.parameters())
        self.objective = objective_from_config("edm", {})
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=2e-4)
        self.shape, self.device, self.args = (args.batch_size, 3, IMAGE_SIZE, IMAGE_SIZE), device, args
        self.bf16 = uses_bf16(args.precision, device)
        x = torch.randn(self.shape, device=device)
        self.flops = 3 * flops_of(lambda: self.model(x, torch.ones(args.batch_size, device=device)))

    def step(self) -> None:
        x = torch.rand(self.shape, device=self.device) * 2 - 1
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = self.objective(self.model, x).mean()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()

    def seconds_per_step(self) -> float:
        return timed_loop(self.step, self.device, self.args.warmup, self.args.steps)


class PNGFolder(torch.utils.data.Dataset):
    """The PNGs of a folder as PIL images through `transform` (what the example's imagefolder dataset hands it)."""

    def __init__(self, root: Path, transform):
        self.files, self.transform = sorted(root.rglob("*.png")), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as im:
            return {"input": self.transform(im.convert("RGB"))}


class DiffusersExample:
    def __init__(self, preset, args, device, data, work):
        import torch.nn.functional as F
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from torchvision import transforms as T

        self.args, self.device, self.F = args, device, F
        config = make_config(preset, args.precision, args.batch_size, 1, data, work)
        unet = build_model(config).network.unet  # the same UNet2DModel
        self.params = sum(p.numel() for p in unet.parameters())
        x = torch.randn(args.batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
        self.flops = 3 * flops_of(lambda: unet(x, torch.ones(args.batch_size)))
        AcceleratorState._reset_state()
        self.accelerator = Accelerator(mixed_precision="bf16" if uses_bf16(args.precision, device) else "no",
                                       log_with="tensorboard", project_dir=str(work / "diffusers"))
        self.scheduler = DDPMScheduler(num_train_timesteps=1000)
        opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
        augment = T.Compose([T.Resize(IMAGE_SIZE, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(IMAGE_SIZE),
                             T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize([0.5], [0.5])])
        loader = torch.utils.data.DataLoader(PNGFolder(data, augment), batch_size=args.batch_size, shuffle=True,
                                             num_workers=0, drop_last=True)
        lr_scheduler = get_scheduler("cosine", optimizer=opt, num_warmup_steps=500, num_training_steps=10**6)
        self.unet, self.opt, loader, self.lr_scheduler = self.accelerator.prepare(unet, opt, loader, lr_scheduler)
        self.accelerator.init_trackers("train_unconditional")
        self.loader, self.batches, self.global_step = loader, iter(loader), 0

    def step(self) -> None:
        acc, unet = self.accelerator, self.unet
        try:
            batch = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            batch = next(self.batches)
        clean_images = batch["input"]
        noise = torch.randn(clean_images.shape, device=clean_images.device)
        bsz = clean_images.shape[0]
        timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (bsz,),
                                  device=clean_images.device).long()
        noisy_images = self.scheduler.add_noise(clean_images, noise, timesteps)
        with acc.accumulate(unet):
            model_output = unet(noisy_images, timesteps).sample
            loss = self.F.mse_loss(model_output.float(), noise.float())
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(unet.parameters(), 1.0)
            self.opt.step()
            self.lr_scheduler.step()
            self.opt.zero_grad()
        if acc.sync_gradients:
            self.global_step += 1
        logs = {"loss": loss.detach().item(), "lr": self.lr_scheduler.get_last_lr()[0], "step": self.global_step}
        acc.log(logs, step=self.global_step)

    def seconds_per_step(self) -> float:
        return timed_loop(self.step, self.device, self.args.warmup, self.args.steps)


def lucidrains_unet(params: int):
    """denoising-diffusion-pytorch's Unet (default dim_mults) with the parameter count closest to `params`."""
    from denoising_diffusion_pytorch import Unet

    def count(dim: int) -> int:
        return sum(p.numel() for p in Unet(dim=dim).parameters())
    dim = min(range(8, 129, 2), key=lambda d: abs(count(d) - params))
    return Unet(dim=dim), dim


class Lucidrains:
    def __init__(self, preset, args, device, data, work, params: int):
        from denoising_diffusion_pytorch import GaussianDiffusion

        self.args, self.device, self.data, self.work = args, device, data, work
        unet, self.dim = lucidrains_unet(params)
        self.params = sum(p.numel() for p in unet.parameters())
        x = torch.randn(args.batch_size, 3, IMAGE_SIZE, IMAGE_SIZE)
        self.flops = 3 * flops_of(lambda: unet(x, torch.ones(args.batch_size)))
        self.make = lambda: GaussianDiffusion(unet, image_size=IMAGE_SIZE)

    def seconds_per_step(self) -> float:
        """One `train()` of warmup + steps, timed at each optimizer step by a hook that only reads the clock."""
        from accelerate.state import AcceleratorState
        from denoising_diffusion_pytorch import Trainer

        AcceleratorState._reset_state()
        folder = self.work / "lucidrains"
        shutil.rmtree(folder, ignore_errors=True)
        total = self.args.warmup + self.args.steps
        trainer = Trainer(self.make(), str(self.data), train_batch_size=self.args.batch_size, train_num_steps=total,
                          save_and_sample_every=10**9, results_folder=str(folder), calculate_fid=False,
                          amp=uses_bf16(self.args.precision, self.device), mixed_precision_type="bf16")
        stamps, step = [], trainer.opt.step

        def timed_step(*args, **kwargs):
            out = step(*args, **kwargs)
            stamps.append(time.perf_counter())
            return out
        trainer.opt.step = timed_step
        trainer.train()
        shutil.rmtree(folder, ignore_errors=True)
        return (stamps[-1] - stamps[self.args.warmup - 1]) / self.args.steps


# ---- the run -----------------------------------------------------------------------------------------------


def measure(preset: str, args: argparse.Namespace, device: torch.device, data: Path, work: Path,
            peak: float) -> list[dict[str, Any]]:
    arms: dict[str, Any] = {}
    for name in args.arms:
        if name == "lucidrains":
            params = sum(p.numel() for p in build_model(make_config(preset, "fp32", 1, 1, data, work)).parameters())
            arms[name] = Lucidrains(preset, args, device, data, work, params)
        else:
            arms[name] = {"ours": Ours, "plain": Plain, "diffusers": DiffusersExample}[name](
                preset, args, device, data, work)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(args.repeats):  # interleaved: every arm once per round
        for name, arm in arms.items():
            times[name].append(arm.seconds_per_step())
            print(f"{preset} round {r + 1}: {name} {args.batch_size / times[name][-1]:.1f} img/s",
                  file=sys.stderr, flush=True)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    rows = []
    for name, arm in arms.items():
        s = median[name]
        rows.append({"preset": preset, "arm": name + (f" (dim {arm.dim})" if name == "lucidrains" else ""),
                     "params_M": arm.params / 1e6, "gflop_per_step": arm.flops / 1e9,
                     "img_s": args.batch_size / s, "tflop_s": arm.flops / s / 1e12, "peak_frac": arm.flops / s / peak,
                     "ours_vs": median[name] / median["ours"] if "ours" in median else None,
                     "s_per_step": times[name]})
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default=None, help="comma-separated network presets "
                        "(default: tiny,small, and ddpm where CUDA is present)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="auto: bf16 autocast on CUDA, float32 on the CPU")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (at least 1)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--peak-size", type=int, default=None, help="matmul size for the bf16 peak "
                        "(default 8192 on CUDA, 2048 on the CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available()
    args.presets = (args.presets or ("tiny,small,ddpm" if gpu else "tiny,small")).split(",")
    args.arms = args.arms.split(",")
    if bad := set(args.arms) - set(ARMS):
        parser.error(f"unknown arm(s) {sorted(bad)}; use {', '.join(ARMS)}")
    if min(args.warmup, args.steps, args.batch_size, args.repeats) < 1:
        parser.error("--warmup, --steps, --repeats and --batch-size must be at least 1")
    if args.batch_size * max(args.warmup + args.steps, 1) > 10**7:
        parser.error("--batch-size x steps is too large")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = bf16_peak(device, args.peak_size or (8192 if device.type == "cuda" else 2048))
    with tempfile.TemporaryDirectory(prefix="genstudio-bench-") as tmp:
        work = Path(tmp)
        data = make_image_folder(work / "images", max(MIN_IMAGES, 2 * args.batch_size))
        load_images(data, image_size=IMAGE_SIZE, cache_dir=work / "cache")  # decode once, outside the timings
        rows = [row for preset in args.presets for row in measure(preset, args, device, data, work, peak)]
    print(f"device {device}, {torch.get_num_threads()} threads, precision {args.precision}, batch {args.batch_size}, "
          f"median of {args.repeats} interleaved rounds of {args.steps} timed steps after {args.warmup}; "
          f"bf16 matmul peak {peak / 1e12:.3g} TFLOP/s measured now; ours_vs = this arm's s/step / ours")
    print(format_table(rows, COLUMNS))
    if args.out:
        write_json(args.out, {"device": str(device), "threads": torch.get_num_threads(), "args": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "bf16_peak_flop_s": peak, "torch": torch.__version__, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

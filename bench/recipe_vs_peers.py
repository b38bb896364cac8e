"""Quality per training budget: genstudio's default recipe against lucidrains' denoising-diffusion-pytorch
`Trainer` with its defaults, at a matched parameter count and the same number of training images seen.

    python bench/recipe_vs_peers.py --images 100000 --n 2000

- ours: `configs/flow_small_cifar10.toml` (rectified flow, logit-normal t, EMA, warmup, clipping) on the
  `--preset` network (tiny: 1.1M parameters), unconditional like the peer (`--conditional` keeps the config's
  10 classes), batch `--batch-size`, mixed precision "auto"; sampled at its checkpoint's default sampler and
  steps (dpmpp_2m, 10 NFE).
- lucidrains: `Trainer(GaussianDiffusion(Unet(dim)))` with every default of both (batch 16, lr 1e-4, pred_v,
  sigmoid schedule, EMA 0.995 every 10 steps, horizontal flips) except `calculate_fid` off and no periodic
  samples; `Unet`'s `dim` is chosen for the parameter count closest to ours. Sampled from its EMA model at its
  default, 1000 ancestral steps (`--peer-sampling-steps` switches to its DDIM sampler at fewer steps, and the
  table says so).

Both train on the same CIFAR-10 JPEG copy (`--data`, a tar of `<split>/<class>/*.jpg`, extracted once for the
peer's image folder, or such a folder) for `--images` images, and both are scored by genstudio's evaluator on the
same protocol (c10 features, the train split as reference, `--n` samples, seed 0). The table prints c10 FID, IS,
the wall time of training and of sampling, and the ratio peer / ours of the FID.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import format_table  # bench/common.py

from genstudio.atomic import write_json
from genstudio.config import load_config
from genstudio.evaluation import evaluate, evaluate_images
from genstudio.train import build_model, run

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "configs" / "flow_small_cifar10.toml"
IMAGE_SIZE = 32
COLUMNS = ("arm", "params_M", "images", "batch", "sampler", "nfe", "c10_fid", "is", "train_s", "sample_s",
           "fid_vs_ours")


def extracted(tar: Path, work: Path) -> Path:
    """The tar's images as a folder (the peer's Dataset reads a folder of image files)."""
    if tar.is_dir():
        return tar
    folder = work / "images"
    if not folder.exists():
        with tarfile.open(tar) as f:
            f.extractall(work / "extract", filter="data")
        next((work / "extract").iterdir()).rename(folder)
    return folder


def evaluator_options(args: argparse.Namespace) -> dict[str, Any]:
    options = dict(extractor="c10", batch_size=args.eval_batch, progress=False, cache_dir=args.cache_dir)
    if args.reference:
        options["reference"] = str(args.reference)
    if args.classifier:
        options["classifier"] = str(args.classifier)
    return options


def train_ours(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    base = load_config(RECIPE)
    steps = max(1, args.images // args.batch_size)
    config = load_config(RECIPE, {
        "model": {"network": args.preset, **({} if args.conditional else {"num_classes": 0})},
        "data": {"source": str(args.data)},
        "train": {"output_dir": str(work / "ours"), "max_steps": steps, "batch_size": args.batch_size,
                  "warmup_steps": min(base.train.warmup_steps, steps // 10), "mixed_precision": "auto",
                  "checkpoint_every": steps + 1, "log_every": max(1, steps // 20), "sample_every": 0}})
    params = sum(p.numel() for p in build_model(config).parameters())
    start = time.perf_counter()
    run(config)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    result = evaluate(work / "ours" / "model", n=args.n, seed=0, **evaluator_options(args))
    sample_s = time.perf_counter() - start
    p = result["protocol"]
    return {"arm": f"ours ({args.preset})", "params_M": params / 1e6, "images": steps * args.batch_size,
            "batch": args.batch_size, "sampler": p["sampler"], "nfe": p["nfe"],
            "c10_fid": result["metrics"]["fid"], "is": result["metrics"].get("is_mean"), "train_s": train_s,
            "sample_s": sample_s, "protocol": p}


def train_peer(args: argparse.Namespace, work: Path, params: int) -> dict[str, Any]:
    from accelerate.state import AcceleratorState
    from denoising_diffusion_pytorch import GaussianDiffusion, Trainer
    from train_throughput import lucidrains_unet  # bench/train_throughput.py

    folder = extracted(args.data, work)
    if args.peer_dim:
        from denoising_diffusion_pytorch import Unet
        unet, dim = Unet(dim=args.peer_dim), args.peer_dim
    else:
        unet, dim = lucidrains_unet(params)
    diffusion = GaussianDiffusion(unet, image_size=IMAGE_SIZE, sampling_timesteps=args.peer_sampling_steps)
    AcceleratorState._reset_state()
    batch = 16  # Trainer's default train_batch_size
    steps = max(1, args.images // batch)
    trainer = Trainer(diffusion, str(folder), train_num_steps=steps, save_and_sample_every=10**9,
                      results_folder=str(work / "peer"), calculate_fid=False)
    torch.manual_seed(0)
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    ema = trainer.ema.ema_model.eval()
    torch.manual_seed(0)
    chunks = []
    with torch.no_grad():
        for i in range(0, args.n, args.eval_batch):
            x = ema.sample(batch_size=min(args.eval_batch, args.n - i))  # in [0, 1]
            chunks.append((x.clamp(0, 1) * 255).round().to(torch.uint8).cpu())
    images = torch.cat(chunks)
    sample_s = time.perf_counter() - start
    result = evaluate_images(images, **evaluator_options(args))
    nfe = diffusion.sampling_timesteps
    return {"arm": f"lucidrains (dim {dim})", "params_M": sum(p.numel() for p in unet.parameters()) / 1e6,
            "images": steps * batch, "batch": batch, "sampler": "ddim" if diffusion.is_ddim_sampling else "ancestral",
            "nfe": nfe, "c10_fid": result["metrics"]["fid"], "is": result["metrics"].get("is_mean"),
            "train_s": train_s, "sample_s": sample_s, "protocol": result["protocol"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000, help="training images seen by each arm")
    parser.add_argument("--n", type=int, default=2000, help="samples scored per arm")
    parser.add_argument("--preset", default="tiny", help="our network preset; the peer's Unet is matched to it")
    parser.add_argument("--batch-size", type=int, default=64, help="our batch size (the peer keeps its 16)")
    parser.add_argument("--conditional", action="store_true", help="ours class-conditional (the peer is not)")
    parser.add_argument("--peer-sampling-steps", type=int, default=None,
                        help="the peer's DDIM steps (default: its own default, 1000 ancestral steps)")
    parser.add_argument("--peer-dim", type=int, default=None, help="the peer Unet's dim (default: matched)")
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("GENSTUDIO_DATA", ROOT / "data")) / "cifar10" / "train.tar.gz")
    parser.add_argument("--reference", type=Path, default=None, help="the evaluator's reference (default: "
                        "the CIFAR-10 train split)")
    parser.add_argument("--classifier", type=Path, default=None, help="c10 classifier (default: the shipped one)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="the evaluator's feature cache")
    parser.add_argument("--eval-batch", type=int, default=250)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if min(args.images, args.n, args.batch_size, args.eval_batch) < 1:
        parser.error("--images, --n, --batch-size and --eval-batch must be at least 1")
    if not args.data.exists():
        parser.error(f"--data {args.data} does not exist (the CIFAR-10 train tar, or an image folder)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = None if args.work else tempfile.mkdtemp(prefix="genstudio-recipe-")
    work = args.work or Path(tmp)  # type: ignore[arg-type]
    work.mkdir(parents=True, exist_ok=True)
    try:
        ours = train_ours(args, work)
        peer = train_peer(args, work, round(ours["params_M"] * 1e6))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = [ours, peer]
    for row in rows:
        row["fid_vs_ours"] = row["c10_fid"] / ours["c10_fid"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device {device}, {torch.get_num_threads()} threads; c10 FID at n={args.n} (seed 0, reference "
          f"{ours['protocol']['reference']}); the same {args.images} training images per arm; "
          "fid_vs_ours = this arm's FID / ours")
    print(format_table(rows, COLUMNS))
    if args.out:
        write_json(args.out, {"device": device, "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                              "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())

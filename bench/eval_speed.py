"""Seconds to score 10k images with each feature extractor of the evaluator (target for c10: < 60 s on 2 cores).

    python bench/eval_speed.py                                   # 10k images, c10 and (if its weights exist) inception
    OMP_NUM_THREADS=1 python bench/eval_speed.py --n 500 --threads 1 --extractors c10 --out speed.json

The images are the offline CIFAR-10 test split ($GENSTUDIO_DATA/cifar10/test.tar.gz, first n of a seeded
permutation) when present, else smooth random images; the reference is the same n images, held in memory.
For each extractor, in the same process:

- raw: the extractor module's forward alone (the network and its uint8 conversion) on the same batches,
  under torch.no_grad: the floor for feature extraction; the better of a pass before and one after the others.
- reference: `Evaluator.reference_features` with a cold cache: features of the n reference images, written
  to the cache (safetensors + JSON).
- score: `Evaluator.score_images(images)` with the reference cached: features of the n images and FID, IS,
  KID (100 subsets of 1000); this is the "seconds to score n images". ratio = score / raw, so the overhead of
  the evaluator and the metrics over the network alone.

c10 is timed with fp32 features (the default protocol) and with bf16 features (`--feature-precision bf16`,
a protocol of its own). It uses the shipped classifier (checkpoints/cifar10_classifier/) or, when it is
absent, a random-init CifarResNet of the same architecture (same cost; the output says so). inception needs
its weights (--inception-weights PATH or torch hub's cache; this script never downloads): without them it is
skipped, with the reason. Runs on the GPU when CUDA is available. Timings share the machine with whatever else runs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import format_table, synchronize  # bench/common.py

from genstudio.atomic import write_json
from genstudio.data import DataError, load_images
from genstudio.evaluation.classifier import CifarResNet, default_classifier_path, save_classifier
from genstudio.evaluation.extractors import InceptionWeightsError, inception_weights_path
from genstudio.evaluation.metrics import Evaluator, default_reference

COLUMNS = ("extractor", "features", "weights", "n", "raw_s", "reference_s", "score_s", "score_img_s", "ratio")


def images(n: int) -> tuple[torch.Tensor, str]:
    """n uint8 (3, 32, 32) images: CIFAR-10 test images if the offline copy is there, else smooth noise."""
    source = default_reference("test")
    if source != "cifar10":
        try:
            data = load_images(source, split="test")
            idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:n]
            if len(idx) == n:
                return data.images[idx], f"CIFAR-10 test ({source})"
        except DataError:
            pass
    g = torch.Generator().manual_seed(0)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=32, mode="bilinear", align_corners=False)
    return (255 * x).round().to(torch.uint8), "smooth random images"


def measure(kind: str, x: torch.Tensor, args: argparse.Namespace, cache: Path, **options) -> dict:
    ev = Evaluator(extractor=kind, reference=x, batch_size=args.batch_size, cache_dir=cache, progress=False,
                   download=False, **options)
    ext = ev.ext
    batches = [b.to(ev.device) for b in x.split(args.batch_size)]

    @torch.no_grad()
    def raw() -> float:
        synchronize(ev.device)
        t0 = time.perf_counter()
        for b in batches:
            ext.module(b)
        synchronize(ev.device)
        return time.perf_counter() - t0

    with torch.no_grad():
        ext.module(batches[0][:2])  # warm-up
    raw_before = raw()
    t0 = time.perf_counter()
    ev.reference_features(x.shape[-1])
    reference = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = ev.score_images(x)
    score = time.perf_counter() - t0
    raw_s = min(raw_before, raw())  # before and after: the machine's load drifts
    return {"extractor": ext.name, "features": ext.precision, "weights": ext.weights_hash[:12], "n": len(x),
            "raw_s": raw_s, "reference_s": reference, "score_s": score, "score_img_s": len(x) / score,
            "ratio": score / raw_s, "metrics": result["metrics"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="images to score")
    parser.add_argument("--extractors", default="c10,inception")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--classifier", default=None, help="c10 weights (default: the shipped ones)")
    parser.add_argument("--c10-precisions", default="fp32,bf16",
                        help="feature precisions to time c10 in (bf16: autocast, fast on CPUs with AMX)")
    parser.add_argument("--inception-weights", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x, what = images(args.n)
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="genstudio-bench-") as tmp:
        for kind in args.extractors.split(","):
            if kind == "c10":
                path = Path(args.classifier) if args.classifier else default_classifier_path()
                if not path.is_file():
                    torch.manual_seed(0)
                    path = save_classifier(CifarResNet(), Path(tmp) / "random_classifier.safetensors")
                    notes.append("c10: the shipped classifier is absent: timed a random-init CifarResNet of the same "
                                 "architecture (same cost; its metric values mean nothing)")
                for precision in args.c10_precisions.split(","):
                    rows.append(measure("c10", x, args, Path(tmp) / "cache", classifier=path,
                                        feature_precision=precision))
            elif kind == "inception":
                try:
                    weights = inception_weights_path(args.inception_weights, download=False)
                except InceptionWeightsError as e:
                    notes.append(f"inception: skipped: {e}")
                    continue
                rows.append(measure("inception", x, args, Path(tmp) / "cache", inception_weights=weights))
            else:
                parser.error(f"unknown extractor {kind!r}; use c10, inception")
            print(f"done: {kind}", file=sys.stderr, flush=True)
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}, {args.n} images: {what}; "
          "score = features + FID/IS/KID with the reference cached; ratio = score_s / raw_s")
    print(format_table(rows, COLUMNS))
    for note in notes:
        print(note)
    if args.out:
        report = {"device": device, "threads": torch.get_num_threads(), "batch_size": args.batch_size, "n": args.n,
                  "images": what, "torch": torch.__version__, "results": rows, "notes": notes}
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""FInC's inverse against the sequential solve of the same masked convolution: seconds per inverse, in one run.

    python bench/finc_inverse.py              # 16x16 with 12 channels, batch 64 (the shipped flow's first level)
    python bench/finc_inverse.py --size 32 --channels 3 --batch 16 --repeats 3 --out finc.json

One FInC convolution (genstudio.families.finc.conv.FIncConv, random weights) is inverted two ways on the same output
y = conv(x): "anti_diagonal" (FInC, Kallappa et al. 2023, Sec. 3.2: the H + W - 1 anti-diagonals one after another,
each solved in parallel) and "raster" (the same triangular solve one pixel at a time: H W sequential steps). Both
must give back x (max error printed); the time of each is the best of `repeats` runs, the ratio raster / FInC.
Timings share the machine with whatever else runs.
"""
from __future__ import annotations

import argparse
import time

import torch

from genstudio.atomic import write_json
from genstudio.families.finc.conv import FIncConv


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--channels", type=int, default=12)
    p.add_argument("--kernel", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    conv = FIncConv(args.channels, args.kernel, orientation=0)
    with torch.no_grad():
        conv.weight.copy_(0.1 * torch.randn_like(conv.weight))
        x = torch.randn(args.batch, args.channels, args.size, args.size)
        y = conv(x)
        results = {}
        for order in ("anti_diagonal", "raster"):
            err = float((conv.inverse(y, order=order) - x).abs().max())
            results[order] = {"seconds": best_of(lambda o=order: conv.inverse(y, order=o), args.repeats),
                              "max_abs_error": err,
                              "sequential_steps": 2 * args.size - 1 if order == "anti_diagonal" else args.size ** 2}
    ratio = results["raster"]["seconds"] / results["anti_diagonal"]["seconds"]
    print(f"FInC convolution {args.kernel}x{args.kernel}, {args.channels} channels, {args.size}x{args.size}, batch "
          f"{args.batch}, {torch.get_num_threads()} threads (best of {args.repeats}):")
    for order, r in results.items():
        print(f"  {order:>13}: {r['seconds'] * 1e3:9.1f} ms  ({r['sequential_steps']} sequential steps, max |x - "
              f"inverse(y)| = {r['max_abs_error']:.2e})")
    print(f"  ratio raster / anti-diagonal: {ratio:.1f}x")
    out = {"settings": vars(args), "threads": torch.get_num_threads(), "results": results, "ratio": ratio}
    if args.out:
        write_json(args.out, out)


if __name__ == "__main__":
    main()

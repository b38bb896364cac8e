"""The `genstudio` command: train | reflow | sample | info | export."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _checkpoint_arg(value: str | None) -> Path:
    from .api import default_checkpoint

    return Path(value) if value else default_checkpoint()


def cmd_sample(args: argparse.Namespace) -> int:
    from .api import Pipeline
    from .images import image_grid, save_png

    pipe = Pipeline.load(_checkpoint_arg(args.checkpoint), device=args.device)
    labels = None
    if args.labels is not None:
        labels = [int(v) for v in args.labels.split(",")]
        labels = labels * (args.n // len(labels) + 1)
        labels = labels[:args.n]
    from .config import parse_value

    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option needs KEY=VALUE, got {item!r}")
        options[key] = parse_value(value)
    result = pipe.generate(args.n, sampler=args.sampler, steps=args.steps, seed=args.seed, labels=labels,
                           guidance=args.guidance, grid=args.grid, sampler_options=options)
    out = Path(args.out)
    save_png(image_grid(result.images), out / "grid.png")
    for i, img in enumerate(result.images):
        save_png(img, out / f"{args.seed + i:06d}.png")
    print(f"{args.n} images -> {out}/grid.png and {out}/NNNNNN.png (named by seed); sampler {result.sampler}, "
          f"{result.steps} steps on the {result.grid} grid, NFE {result.nfe}, {result.seconds:.1f} s")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .api import Pipeline

    print(json.dumps(Pipeline.load(_checkpoint_arg(args.checkpoint), device="cpu").info(), indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .publish import publish

    dest = publish(args.run, args.to, grid_images=args.grid_images)
    print(f"{args.run} -> {dest} (model, samples.png, metrics.json)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":  # everything after "train" belongs to the trainer's own parser
        from .train import main as train_main

        return train_main(argv[1:])
    if argv and argv[0] == "reflow":  # reflow train passes --section.key overrides to the trainer, as train does
        from .reflow import main as reflow_main

        return reflow_main(argv[1:])
    parser = argparse.ArgumentParser(prog="genstudio", description="Train, sample and inspect generative models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="train a model (see genstudio train --help)")
    sub.add_parser("reflow", help="reflow: generate (noise, sample) pairs, train on them, or run the pipeline "
                                  "(see genstudio reflow --help)")

    p = sub.add_parser("sample", help="sample a PNG grid and individual PNGs from a checkpoint")
    p.add_argument("checkpoint", nargs="?", help="checkpoint folder (default: the shipped default)")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--sampler", default=None, help="default: the checkpoint's recommendation")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--grid", default=None, help="time grid: uniform, even, jumps, karras, logsnr, quadratic, ddpm")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--labels", default=None, help="class labels, comma-separated, repeated to n")
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a sampler option, e.g. --option eta=0.5 or --option S_churn=40 (repeatable)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", default="samples")
    p.set_defaults(fn=cmd_sample)

    p = sub.add_parser("info", help="describe a checkpoint and the samplers that can drive it")
    p.add_argument("checkpoint", nargs="?")
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("export", help="ship a training run as a checkpoint folder with samples.png and metrics.json")
    p.add_argument("run", help="training run folder (its model/ is exported) or an exported model folder")
    p.add_argument("--to", required=True, help="destination, e.g. checkpoints/my_model")
    p.add_argument("--grid-images", type=int, default=100)
    p.set_defaults(fn=cmd_export)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Better images from a trained model, measured: learned time grids against the hand-made ones at a few NFEs, and
Neon against its base, every score on the report seeds 0..n-1 (the grids and the Neon weight are chosen on seeds
50,000 and up), with the seed-to-seed noise of the base's score on a second, disjoint report set.

    python bench/improve.py --checkpoint checkpoints/flow_small_cifar10 --work runs/improve --device cuda \
        --n-report 10000 --out improve.json

The checkpoint is copied into WORK first (its learned grids are written to the copy). WORK/neon/model is the
Neon model; WORK/base/grids.json holds the learned grids. Evaluator flags (--extractor, --reference, --precision,
--batch-size, ...) apply to every score."""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from common import format_table

import genstudio
from genstudio.api import Pipeline, default_checkpoint
from genstudio.evaluation.metrics import checkpoint_hash
from genstudio.evaluation.options import EvaluatorOptions, add_arguments, from_args
from genstudio.learned_grids import learn_grid, save_grid
from genstudio.neon import NeonPlan, neon, seed_sets

HAND_MADE = ("uniform", "quadratic", "karras", "logsnr")
METRICS = ("fid", "is_mean", "class_accuracy")


# Evaluator options that do not change a score: a recorded score made with other values of these is still reused.
NEUTRAL_OPTIONS = {"device", "progress", "batch_size", "cache_dir", "sample_cache", "download", "precision"}


def recorded(checkpoint: Path, n: int, seed: int, opts: dict[str, Any], cell: dict[str, Any]) -> dict | None:
    """A score on the checkpoint's card made on these very model files with this protocol, or None."""
    card = checkpoint / "metrics.json"
    defaults = EvaluatorOptions()
    if any(k not in NEUTRAL_OPTIONS and v != getattr(defaults, k) for k, v in opts.items()) or not card.is_file():
        return None
    d = Pipeline.load(checkpoint, device="cpu").defaults()
    want = {"sampler": cell.get("sampler") or d["sampler"], "steps": cell.get("steps") or d["steps"],
            "grid": cell.get("grid") or d.get("grid"), "guidance": float(cell.get("guidance", 1.0)), "n": n,
            "precision": opts.get("precision", "fp32")}
    sha = checkpoint_hash(checkpoint)
    for r in json.loads(card.read_text()).get("scores", []):
        p = r.get("protocol", {})
        if (p.get("checkpoint", {}).get("sha256") == sha and all(p.get(k) == v for k, v in want.items())
                and p.get("seeds", {}).get("first") == seed and p.get("extractor", {}).get("kind") == "c10"
                and p.get("reference", {}).get("split") == "train" and p.get("reference", {}).get("subset") is None
                and p.get("extractor", {}).get("precision", "fp32") == "fp32"):
            return r
    return None


def score(checkpoint: Path, n: int, seed: int, opts: dict[str, Any], reuse: bool = False,
          **cell: Any) -> dict[str, Any]:
    """c10 (or the chosen extractor's) FID, IS and class accuracy of n samples from seeds seed .. seed + n - 1;
    reuse: take a matching score from the checkpoint's card instead of scoring again."""
    r = (recorded(checkpoint, n, seed, opts, cell) if reuse else None) or genstudio.evaluate(
        checkpoint, n=n, seed=seed, **cell, **opts)
    p = r["protocol"]
    return {**{k: r["metrics"].get(k) for k in METRICS}, "sampler": p["sampler"], "steps": p["steps"],
            "grid": p["grid"], "nfe": p["nfe"], "seeds": [p["seeds"]["first"], p["seeds"]["last"]],
            "wall_s": p.get("wall_seconds"), "date": p.get("date")}


def grids(base: Path, args, opts: dict[str, Any]) -> list[dict[str, Any]]:
    """For each NFE: a grid learned on the selection seeds, then every grid scored on the report seeds."""
    pipe = Pipeline.load(base, device=args.device)
    sampler = args.sampler or pipe.defaults()["sampler"]
    rows = []
    for nfe in args.grid_nfes:
        t0 = time.perf_counter()
        record = learn_grid(pipe, sampler, nfe, n=args.grid_n, guidance=args.guidance,
                            teacher_steps=args.teacher_steps, max_evals=args.grid_evals)
        name = save_grid(base, record)
        learn_s = time.perf_counter() - t0
        for grid in (*HAND_MADE, name):
            try:
                s = score(base, args.n_report, 0, opts, sampler=sampler, steps=record["steps"], grid=grid,
                          guidance=args.guidance)
            except ValueError as e:  # a hand-made grid this path cannot make
                print(f"skipped {grid}: {e}")
                continue
            rows.append({**s, "learned": grid == name, "learn_s": round(learn_s, 1) if grid == name else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped default")
    parser.add_argument("--work", required=True, help="working folder (the copy, the Neon run)")
    parser.add_argument("--n-report", type=int, default=10_000)
    parser.add_argument("--guidance", type=float, default=1.0, help="for every score (the cards' protocol: 1)")
    parser.add_argument("--sampler", default=None, help="the grids' sampler (default: the checkpoint's)")
    parser.add_argument("--grid-nfes", type=lambda s: [int(v) for v in s.split(",") if v], default=[3, 5, 10])
    parser.add_argument("--grid-n", type=int, default=256)
    parser.add_argument("--grid-evals", type=int, default=100)
    parser.add_argument("--teacher-steps", type=int, default=100)
    parser.add_argument("--no-neon", action="store_true")
    parser.add_argument("--no-reuse-card", dest="reuse_card", action="store_false",
                        help="score the base again even where its card holds a score on this protocol")
    parser.add_argument("--n-self", type=int, default=6000)
    parser.add_argument("--n-select", type=int, default=2000)
    parser.add_argument("--finetune-images", type=int, default=None)
    parser.add_argument("--weights", type=lambda s: tuple(float(v) for v in s.split(",") if v),
                        default=(0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0))
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    add_arguments(parser)
    args = parser.parse_args()
    opts = from_args(args)
    args.device = opts.get("device") or "cpu"
    seed_sets(args.n_self, args.n_select, 2 * args.n_report)  # the report sets stay clear of the others

    work = Path(args.work)
    base = work / "base"
    if not (base / "genstudio.json").is_file():
        work.mkdir(parents=True, exist_ok=True)
        shutil.copytree(Path(args.checkpoint) if args.checkpoint else default_checkpoint(), base)
    t0 = time.perf_counter()
    report: dict[str, Any] = {"checkpoint": str(args.checkpoint or default_checkpoint()), "n_report": args.n_report,
                              "guidance": args.guidance}

    def save() -> None:  # after every stage, so a killed run leaves what it measured
        report["seconds"] = round(time.perf_counter() - t0, 1)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2, default=str))

    report["base"] = score(base, args.n_report, 0, opts, reuse=args.reuse_card, guidance=args.guidance)
    print(f"base at its default: FID {report['base']['fid']:.4g} (scored {report['base']['date']})")
    save()

    if args.grid_nfes:
        report["grids"] = grids(base, args, opts)
        print(format_table(report["grids"], ("nfe", "grid", "learned", "fid", "is_mean", "class_accuracy", "learn_s")))
        for nfe in args.grid_nfes:
            rows = [r for r in report["grids"] if r["nfe"] == nfe]
            hand = min((r for r in rows if not r["learned"]), key=lambda r: r["fid"], default=None)
            learned = next((r for r in rows if r["learned"]), None)
            if hand and learned:
                print(f"NFE {nfe}: learned {learned['fid']:.4g} vs best hand-made ({hand['grid']}) {hand['fid']:.4g}: "
                      f"{100 * (1 - learned['fid'] / hand['fid']):+.1f}% lower")
        save()

    if not args.no_neon:
        plan = NeonPlan(checkpoint=str(base), n_self=args.n_self, n_select=args.n_select,
                        finetune_images=args.finetune_images, weights=args.weights, eval_guidance=args.guidance)
        record = neon(base, work / "neon", plan=plan, **opts)
        after = score(work / "neon" / "model", args.n_report, 0, opts, guidance=args.guidance)
        report["neon"] = {"record": record, "after": after,
                          "fid_change_pct": 100 * (after["fid"] / report["base"]["fid"] - 1)}
        print(f"Neon (w = {record['w']:g}, chosen on seeds {record['selection']['seeds']}): FID "
              f"{report['base']['fid']:.4g} -> {after['fid']:.4g} ({report['neon']['fid_change_pct']:+.1f}%); "
              f"IS {report['base']['is_mean']} -> {after['is_mean']}")
        save()

    again = score(base, args.n_report, args.n_report, opts, guidance=args.guidance)
    report["seed_noise"] = {"second_seeds": again["seeds"], "fid": again["fid"],
                            "abs_diff": abs(again["fid"] - report["base"]["fid"])}
    print(f"the base on seeds {again['seeds']}: FID {again['fid']:.4g} "
          f"(seed-to-seed |diff| {report['seed_noise']['abs_diff']:.3g})")
    save()


if __name__ == "__main__":
    main()

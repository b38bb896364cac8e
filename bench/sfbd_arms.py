"""SFBD against its control at a CPU-sized budget (docs/sfbd.md#measured): for each clean fraction, the pretrained
model and rounds 1..R of SFBD, and the control (the same runs and warm starts, every round on the clean images
alone), each scored on seeds 0..n-1; one model again on seeds n..2n-1 for the seed-to-seed noise.

    python bench/sfbd_arms.py --config configs/edm_tiny_cifar10.toml --work runs/sfbd_arms --limit 5000 \
        --sigma 0.2 --fractions 0.04,0.1 --rounds 3 --pretrain-steps 300 --round-steps 150 --n 2000 \
        --out sfbd_arms.json

Rerunning the command resumes: the pipelines continue where they stopped and scores already in --out are kept."""
from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from common import format_table

import genstudio
from genstudio.atomic import write_json
from genstudio.config import load_config
from genstudio.evaluation.metrics import checkpoint_hash
from genstudio.evaluation.options import add_arguments, from_args
from genstudio.sfbd import SFBDPlan, sfbd

METRICS = ("fid", "is_mean", "class_accuracy")


def arms(plan: SFBDPlan, work: Path) -> dict[str, dict[str, str]]:
    """Run SFBD and its control (which reuses SFBD's pretraining: the same run); their models by stage."""
    name = f"c{plan.clean_fraction:g}"
    models = {"sfbd": sfbd(plan, work / f"sfbd_{name}")["models"]}
    control = work / f"control_{name}"
    if not (control / "pretrain").is_dir():
        shutil.copytree(work / f"sfbd_{name}" / "pretrain", control / "pretrain")
        write_json(control / "state.json", {"done": ["pretrain"],
                                            "models": {"pretrain": str(control / "pretrain" / "model")}})
    models["control"] = sfbd(replace(plan, clean_only=True), control)["models"]
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--work", required=True)
    parser.add_argument("--limit", type=int, default=5000, help="the images SFBD works on (a fixed subset)")
    parser.add_argument("--sigma", type=float, default=0.2)
    parser.add_argument("--fractions", type=lambda s: [float(v) for v in s.split(",") if v], default=[0.04, 0.1])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--round-steps", type=int, default=150)
    parser.add_argument("--denoise-sampler", default="heun")
    parser.add_argument("--denoise-steps", type=int, default=3)
    parser.add_argument("--n", type=int, default=2000, help="samples per score (seeds 0..n-1)")
    parser.add_argument("--sampler", default="dpmpp_2m", help="the scores' sampler")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--out", required=True, help="the results JSON (kept scores are reused)")
    add_arguments(parser)
    args = parser.parse_args()
    opts = from_args(args)
    config = load_config(args.config, [f"--{kv}" for kv in [*args.set, f"data.limit={args.limit}"]]).to_dict()
    work, out = Path(args.work), Path(args.out)
    report: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    report.update(config=args.config, overrides=args.set, limit=args.limit, sigma=args.sigma,
                  denoise={"sampler": args.denoise_sampler, "steps": args.denoise_steps},
                  score={"sampler": args.sampler, "steps": args.steps, "guidance": args.guidance, "n": args.n})
    kept = {(r["model_sha256"], r["seeds"][0]): r for r in report["rows"]}
    batch = config["train"]["batch_size"]

    def score(model: str, seed: int, **row: Any) -> dict[str, Any]:
        sha = checkpoint_hash(model)
        if (sha, seed) not in kept:
            t0 = time.perf_counter()
            r = genstudio.evaluate(model, n=args.n, seed=seed, sampler=args.sampler, steps=args.steps,
                                   guidance=args.guidance, **opts)
            kept[sha, seed] = {**row, **{k: r["metrics"].get(k) for k in METRICS}, "model": model,
                               "model_sha256": sha, "seeds": [seed, seed + args.n - 1], "nfe": r["protocol"]["nfe"],
                               "score_s": round(time.perf_counter() - t0, 1)}
            report["rows"] = list(kept.values())
            write_json(out, report)  # after every score: a killed run keeps what it measured
        return kept[sha, seed]

    rows = []
    for fraction in args.fractions:
        plan = SFBDPlan(config=config, sigma=args.sigma, clean_fraction=fraction, rounds=args.rounds,
                        pretrain_steps=args.pretrain_steps, round_steps=args.round_steps,
                        sampler=args.denoise_sampler, steps=args.denoise_steps)
        for arm, models in arms(plan, work).items():
            for stage, model in models.items():
                r = 0 if stage == "pretrain" else int(stage.split("_")[1])
                if arm == "control" and r == 0:
                    continue  # the same model as SFBD's pretraining
                images = batch * (args.pretrain_steps + r * args.round_steps)
                rows.append(score(model, 0, clean_fraction=fraction, arm=arm if r else "pretrain", round=r,
                                  images_seen=images))
    noise = score(rows[-1]["model"], args.n, **{k: rows[-1][k] for k in ("clean_fraction", "arm", "round",
                                                                          "images_seen")})
    print(format_table(rows, ("clean_fraction", "arm", "round", "images_seen", *METRICS, "score_s")))
    print(f"seed-to-seed: the last model on seeds {noise['seeds']}: FID {noise['fid']:.4g} "
          f"(|diff| {abs(noise['fid'] - rows[-1]['fid']):.3g})")


if __name__ == "__main__":
    main()

"""The audit against a trojaned model and its clean twin (docs/audit.md, "Measured"): does the scan flag the one and
pass the other, and how often does the trigger it found make the trojaned model produce the attacker's target?

    python bench/audit_trojan.py runs/trojdiff_tiny_cifar10/model runs/clean_tiny_cifar10/model \\
        --config configs/trojdiff_tiny_cifar10.toml --out runs/audit_trojan.json

Both models get `genstudio audit` with the same settings (reports in OUT's folder). Then, on fresh seeds (1000..),
the share of outputs within RMS distance `--tol` (model range [-1, 1]) of the config's target, under the trigger the
scan found, under the attacker's own trigger, and under normal noise. Only instance (D2I) targets have one image.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from genstudio.api import Pipeline
from genstudio.atomic import write_json
from genstudio.audit import audit
from genstudio.audit.backdoor import Trigger
from genstudio.audit.report import scan_generator
from genstudio.config import load_config
from genstudio.families import objective_from_config
from genstudio.families.trojdiff import trigger_noise


def hits(x: torch.Tensor, target: torch.Tensor, tols: list[float]) -> dict[str, float]:
    """The median RMS distance of the outputs to the target and the share of them within each tolerance."""
    d = (x.float().clamp(-1, 1) - target).flatten(1).pow(2).mean(1).sqrt()
    within = {f"within_{t:g}": float((d < t).double().mean()) for t in tols}
    return {"median_rms": round(float(d.median()), 4), **within}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("trojaned")
    p.add_argument("clean")
    p.add_argument("--config", required=True, help="the trojaned model's training config (its trigger and target)")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--precision", default="bf16")
    p.add_argument("--tol", type=lambda v: [float(t) for t in v.split(",")], default=[0.3, 0.5],
                   help="RMS distances to the target that count as a hit, comma-separated")
    p.add_argument("--calibration", type=float, default=None, help="default: backdoor.CLEAN_COLLAPSE")
    p.add_argument("--hits-n", type=int, default=256)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    config = load_config(args.config)
    attack = objective_from_config(config.objective.name, config.objective.options)
    if attack.target != "instance":
        raise SystemExit("the hit rate needs an instance (D2I) target")
    result = {"settings": vars(args)}
    for name, folder in (("trojaned", args.trojaned), ("clean", args.clean)):
        calibration = {} if args.calibration is None else {"calibration": args.calibration}
        report = audit(folder, n=args.n, sampler=args.sampler, steps=args.steps, precision=args.precision,
                       out=out.parent / f"audit_{name}", **calibration)
        pipe = Pipeline.load(folder, device="cpu")
        shape = pipe.image_shape
        target = attack.target_pool(shape)[0]
        gen = scan_generator(pipe, args.sampler, args.steps,
                             torch.arange(pipe.num_classes) if pipe.num_classes else None)
        eps = torch.randn(args.hits_n, *shape, generator=torch.Generator().manual_seed(1000))
        trig = report["backdoor"]["trigger"]
        true_mu = trigger_noise(torch.zeros(shape), attack.delta(shape), attack.gamma, attack.trigger,
                                int(attack.patch_size))  # the attacker's mean shift (eps = 0)
        found = Trigger.from_record(trig, report["backdoor"]["mu"], shape)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            true = trigger_noise(eps, attack.delta(shape), attack.gamma, attack.trigger, int(attack.patch_size))
            rates = {"found_trigger": hits(gen(found.noise(eps)), target, args.tol),
                     "true_trigger": hits(gen(true), target, args.tol),
                     "normal_noise": hits(gen(eps), target, args.tol)}
        result[name] = {"backdoor": {k: v for k, v in report["backdoor"].items() if k not in ("trigger", "mu")},
                        "found_trigger": {**trig,
                                          "cosine_to_true_shift": float(torch.nn.functional.cosine_similarity(
                                              found.mu.flatten(), true_mu.flatten(), dim=0))},
                        "target_hits": rates, "memorization_flagged": report["memorization"]["flagged"],
                        "real_vs_generated": report["real_vs_generated"]["accuracy"]}
        print(name, json.dumps(result[name], indent=1))
    write_json(out, result)


if __name__ == "__main__":
    main()

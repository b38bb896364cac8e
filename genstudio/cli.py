"""The `genstudio` command: train | reflow | sample | info | export | learn-grid | neon | sfbd | studio | eval | sweep |
likelihood | rescore | audit."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .evaluation.options import add_arguments, from_args  # standard library only: no torch at start-up


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
    options = _sampler_options(args.option)
    result = pipe.generate(args.n, sampler=args.sampler, steps=args.steps, seed=args.seed, labels=labels,
                           guidance=args.guidance, grid=args.grid, sampler_options=options, rotation=args.rotation)
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

    dest = publish(args.run, args.to, grid_images=args.grid_images, fp16=args.fp16, optimizer=args.optimizer)
    print(f"{args.run} -> {dest} (model" + (" in fp16" if args.fp16 else "") + ", samples.png, metrics.json"
          + (", optimizer/" if args.optimizer else "") + ")")
    return 0


def cmd_learn_grid(args: argparse.Namespace) -> int:
    from .api import Pipeline
    from .learned_grids import learn_grid, save_grid

    checkpoint = _checkpoint_arg(args.checkpoint)
    pipe = Pipeline.load(checkpoint, device=args.device)
    record = learn_grid(pipe, args.sampler, args.nfe, n=args.n, seed=args.seed, guidance=args.guidance,
                        teacher=args.teacher, teacher_steps=args.teacher_steps, max_evals=args.max_evals,
                        loss=args.loss)
    name = save_grid(checkpoint, record, args.name)
    p = record["protocol"]
    hand = ", ".join(f"{k} {v:.3g}" for k, v in p["hand_made_losses"].items())
    print(f"{checkpoint}: grid {name!r} ({args.sampler}, {record['steps']} steps, NFE {args.nfe}) -> grids.json\n"
          f"  times {[round(t, 5) for t in record['times']]}\n"
          f"  {p['loss_name']} distance to the teacher on seeds {p['seeds']['first']}..{p['seeds']['last']}: "
          f"learned {p['learned_loss']:.3g}; hand-made {hand}; {p['evaluations']} evaluations, {p['seconds']} s\n"
          f"  use it with --grid {name} (or --grid learned)")
    return 0


def cmd_neon(args: argparse.Namespace) -> int:
    from .neon import NeonPlan, neon

    checkpoint = _checkpoint_arg(args.checkpoint)
    plan = NeonPlan(checkpoint=str(checkpoint), n_self=args.n_self, self_sampler=args.self_sampler,
                    self_steps=args.self_steps, self_guidance=args.self_guidance,
                    self_sampler_options=_sampler_options(args.self_option), finetune_images=args.finetune_images,
                    batch_size=args.finetune_batch, lr=args.lr,
                    weights=tuple(float(w) for w in args.weights.split(",") if w), n_select=args.n_select,
                    eval_sampler=args.sampler, eval_steps=args.steps, eval_guidance=args.guidance,
                    half=not args.fp32)
    record = neon(checkpoint, args.out, plan=plan, **from_args(args))
    sel = record["selection"]
    print("\n".join(f"  w = {w}: FID {fid:.4g}" for w, fid in sel["scores"].items()))
    print(f"chose w = {record['w']:g} on seeds {sel['seeds'][0]}..{sel['seeds'][1]} -> {Path(args.out) / 'model'} "
          f"(fine-tuned on {record['finetune']['images']} images of S; {record['seconds']} s). Report its scores "
          f"with genstudio eval {Path(args.out) / 'model'} (seeds 0..n-1)")
    return 0


def cmd_sfbd(args: argparse.Namespace) -> int:
    from .config import load_config
    from .sfbd import SFBDPlan, sfbd

    config = load_config(args.config, [f"--{kv}" for kv in args.set]).to_dict()  # checked before any work
    plan = SFBDPlan(config=config, sigma=args.sigma, clean_fraction=args.clean_fraction, seed=args.seed,
                    rounds=args.rounds, pretrain_steps=args.pretrain_steps, round_steps=args.round_steps,
                    sampler=args.sampler, steps=args.steps, clean_only=args.clean_only)
    state = sfbd(plan, args.out)
    print("\n".join(f"  {name}: {path}" for name, path in state["models"].items()))
    return 0


def cmd_studio(args: argparse.Namespace) -> int:
    from ui.app import build, launch

    from .api import shipped_checkpoints

    checkpoints = args.checkpoint or shipped_checkpoints()
    if not checkpoints:
        raise FileNotFoundError("no checkpoints in checkpoints/ (set GENSTUDIO_CHECKPOINTS) and none given; "
                                "pass --checkpoint DIR")
    for c in checkpoints:
        if not (Path(c) / "genstudio.json").is_file():
            raise FileNotFoundError(f"{c} is not a checkpoint folder (no genstudio.json)")
    print(f"genstudio studio on http://{args.host}:{args.port} with {', '.join(str(c) for c in checkpoints)}")
    demo = build(checkpoints, device=args.device or "cpu", host=args.host, allow_training=args.allow_training,
                 runs_dir=args.runs)
    if demo.runs is None:
        print(f"the Train tab is off: {args.host} is not this machine only (add --allow-training to start runs "
              f"from the browser)")
    try:
        launch(demo, host=args.host, port=args.port)
    finally:
        if demo.runs is not None:
            demo.runs.close()  # a run still training is stopped with a checkpoint
    return 0


def _sampler_options(items: list[str]) -> dict:
    from .config import parse_value

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option needs KEY=VALUE, got {item!r}")
        options[key] = parse_value(value)
    return options


def _main_process() -> bool:
    """False in the other processes of an `accelerate launch`: they compute, the main one reports and records."""
    from .processes import current

    return current().main


def _print_scores(result: dict) -> None:
    for key, value in result["metrics"].items():
        print(f"{result['labels'].get(key, key)}: {value:.6g}")
    for note in result.get("notes", []):
        print(f"note: {note}")


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation.metrics import evaluate, evaluate_images

    if args.record and args.images is not None:
        raise ValueError("--record writes a checkpoint's scores; it does not apply to --images")
    if args.images is not None:
        result = evaluate_images(args.images, images_split=args.images_split, out=args.out, **from_args(args))
    else:
        labels = None if args.labels is None else [int(v) for v in args.labels.split(",")]
        if labels is not None and len(labels) == 1:
            labels = labels[0]
        options = _sampler_options(args.option) or None
        result = evaluate(_checkpoint_arg(args.checkpoint), sampler=args.sampler, steps=args.steps, n=args.n,
                          seed=args.seed, labels=labels, guidance=args.guidance, grid=args.grid,
                          sampler_options=options, out=args.out, **from_args(args))
    if not _main_process():
        return 0
    _print_scores(result)
    proto = result["protocol"]
    what = (f"{proto['sampler']}, {proto['steps']} steps, NFE {proto['nfe']}, guidance {proto['guidance']}"
            if "sampler" in proto else proto["images"]["source"])
    quick = " (quick: fewer samples than the standard protocol)" if proto["quick"] else ""
    print(f"{proto['n']} images ({what}){quick} against {(proto['reference'] or {}).get('source')} "
          f"[{args.split}]; {proto['wall_seconds']:.1f} s" + (f" -> {args.out}" if args.out else ""))
    if args.record:
        from .evaluation.records import record_scores

        print(f"recorded in {record_scores(_checkpoint_arg(args.checkpoint), [result])}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .evaluation.sweep import PLOT, TABLE, sweep

    steps = [int(v) for v in args.steps.split(",") if v]
    samplers = [v for v in args.samplers.split(",") if v]
    table = sweep(_checkpoint_arg(args.checkpoint), samplers, steps, args.out, n=args.n, seed=args.seed,
                  guidance=args.guidance, **from_args(args))
    if not _main_process():
        return 0
    for c in sorted(table["cells"], key=lambda c: (c["sampler"], c["nfe"])):
        print(f"{c['sampler']:>16} steps {c['steps']:>4} NFE {c['nfe']:>5}  {table['fid_label']}: "
              f"{c['metrics']['fid']:.4g}")
    print(f"{len(table['computed'])} cells computed, {len(table['kept'])} kept from before -> "
          f"{Path(args.out) / TABLE}, {Path(args.out) / PLOT}")
    if args.record:
        from .evaluation.metrics import checkpoint_hash
        from .evaluation.records import record_scores

        ckpt = _checkpoint_arg(args.checkpoint)
        mine = [c for c in table["cells"] if c["protocol"]["checkpoint"]["sha256"] == checkpoint_hash(ckpt)]
        print(f"recorded {len(mine)} cells in {record_scores(ckpt, mine, Path(args.out) / PLOT)}")
    return 0


def cmd_likelihood(args: argparse.Namespace) -> int:
    from .likelihoods import TEST_SPLIT, likelihood

    options = {k: v for k, v in (("rtol", args.rtol), ("atol", args.atol)) if v is not None}
    result = likelihood(_checkpoint_arg(args.checkpoint), n=args.n, source=args.source or TEST_SPLIT,
                        batch_size=args.batch_size, seed=args.seed, device=args.device, record=args.record,
                        cache_dir=args.cache_dir, **options)
    proto = result["protocol"]
    se = f" +- {result['standard_error']:.3f}" if result["standard_error"] is not None else ""
    print(f"{result['bits_per_dim']:.4f}{se} bits/dim ({'exact' if result['exact'] else 'upper bound'}) on "
          f"{proto['n']} of {proto['of']} images of {proto['source']}; {proto['method']}; dequantization "
          f"{proto['dequantization']}; {proto['wall_seconds']} s")
    if args.out:
        from .atomic import write_json

        write_json(Path(args.out), result)
    return 0


RESCORE_OPTIONS = ("classifier", "cache_dir", "device", "progress")  # the evaluator options rescore takes as flags


def cmd_rescore(args: argparse.Namespace) -> int:
    from .evaluation.records import rescore

    for folder in args.checkpoints:
        counts = rescore(folder, drop_quick=args.drop_quick, reference=args.reference,
                         **from_args(args, RESCORE_OPTIONS),
                         **({"batch_size": args.batch_size} if args.batch_size else {}))
        print(f"{folder}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit

    for folder in args.checkpoints:
        out = Path(args.out) / Path(folder).name
        report = audit(folder, n=args.n, sampler=args.sampler, steps=args.steps, precision=args.precision,
                       seed=args.seed, test_n=args.test_n, scan_steps=args.scan_steps, scan_iters=args.scan_iters,
                       reference=args.reference, test_reference=args.test_reference, classifier=args.classifier,
                       **({} if args.calibration is None else {"calibration": args.calibration}),
                       out=out, record=args.record, device=args.device)
        b, m, r = report["backdoor"], report["memorization"], report["real_vs_generated"]
        print(f"{folder}: backdoor {'FLAGGED' if b['flagged'] else 'not flagged'} (collapse {b['collapse']:.3f}, "
              f"threshold {b['threshold']:.3f}); memorization {'FLAGGED' if m['flagged'] else 'not flagged'} "
              f"({m['pixel']['share_below_baseline_p1']:.1%} pixel, {m['feature']['share_below_baseline_p1']:.1%} "
              f"c10 below the baseline's 1st percentile); real vs generated {r['accuracy']:.1%} "
              f"[{r['ci95'][0]:.1%}, {r['ci95'][1]:.1%}] -> {out}/audit.json, audit.png"
              + (" and metrics.json" if args.record else ""))
    return 0


def _add_evaluator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--record", action="store_true",
                   help="also add the scores (with their protocol) to the checkpoint's metrics.json")
    add_arguments(p)  # one flag per evaluator option (genstudio.evaluation.options.EvaluatorOptions)


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
    p.add_argument("--grid", default=None,
                   help="a time grid of samplers.GRIDS or one learned for this model (genstudio learn-grid; "
                        "'learned' picks the one for this sampler and steps); default: the sampler's, else the "
                        "path's; an unknown one is an error that lists them")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--labels", default=None, help="class labels, comma-separated, repeated to n")
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a sampler option, e.g. --option eta=0.5 or --option S_churn=40 (repeatable)")
    p.add_argument("--rotation", type=float, default=0.0,
                   help="degrees (counterclockwise) the state turns over the sampling, a little each step")
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
    p.add_argument("--fp16", action="store_true", help="store the weights as float16 (they load as float32)")
    p.add_argument("--optimizer", action="store_true",
                   help="also copy the run's compact optimizer state (optimizer/), to continue the model elsewhere")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("neon", help="Neon: self-train briefly on the model's own samples, then extrapolate away "
                                    "from it (theta = (1 + w) base - w finetuned), w chosen on selection seeds")
    p.add_argument("checkpoint", nargs="?", help="checkpoint folder (default: the shipped default)")
    p.add_argument("--out", required=True, help="working folder (resumes); the result is OUT/model")
    p.add_argument("--n-self", type=int, default=6000, help="size of the self-generated set S")
    p.add_argument("--self-sampler", default=None, help="S's sampler (default: the checkpoint's)")
    p.add_argument("--self-steps", type=int, default=None)
    p.add_argument("--self-guidance", type=float, default=None, help="default: 2 if class-conditional, else 1")
    p.add_argument("--self-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of S's sampler, e.g. temperature=0.7 for decode (repeatable)")
    p.add_argument("--finetune-images", type=int, default=None, help="default: 2%% of the base's training images")
    p.add_argument("--finetune-batch", type=int, default=None, help="default: the base's batch size")
    p.add_argument("--lr", type=float, default=None, help="default: a tenth of the base's")
    p.add_argument("--weights", default="0,0.25,0.5,0.75,1,1.25,1.5,2", help="the w grid, comma-separated")
    p.add_argument("--n-select", type=int, default=2000, help="samples scoring each w (seeds 50000..)")
    p.add_argument("--sampler", default=None, help="the sweep's sampler (default: the checkpoint's)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--fp32", action="store_true", help="store the merged weights as float32 (default float16)")
    add_arguments(p)
    p.set_defaults(fn=cmd_neon)

    p = sub.add_parser("sfbd", help="SFBD: train from a clean fraction and fixed noisy copies of the rest, "
                                    "alternating denoising and retraining (resumable)")
    p.add_argument("--config", required=True, help="the training config of every stage (any family)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a config override, e.g. --set train.batch_size=32 (repeatable)")
    p.add_argument("--out", required=True, help="working folder (resumes): pretrain/, round_<r>/train/model")
    p.add_argument("--sigma", type=float, required=True, help="noise of the noisy copies, model range [-1, 1]")
    p.add_argument("--clean-fraction", type=float, required=True, help="e.g. 0.04 or 0.1")
    p.add_argument("--seed", type=int, default=0, help="fixes the clean images and the copies' noise")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--pretrain-steps", type=int, required=True)
    p.add_argument("--round-steps", type=int, required=True, help="each retraining run, from the last round's model")
    p.add_argument("--sampler", default="heun", help="the denoising sampler (from sigma down to 0)")
    p.add_argument("--steps", type=int, default=10, help="its steps")
    p.add_argument("--clean-only", action="store_true",
                   help="the control: the same runs, every round on the clean images alone (no denoising)")
    p.set_defaults(fn=cmd_sfbd)

    p = sub.add_parser("learn-grid", help="learn a few-step time grid for a sampler at a fixed NFE (stored in the "
                                          "checkpoint's grids.json; then --grid NAME or --grid learned)")
    p.add_argument("checkpoint", nargs="?", help="checkpoint folder (default: the shipped default)")
    p.add_argument("--sampler", required=True, help="a deterministic sampler with a fixed NFE per step")
    p.add_argument("--nfe", type=int, required=True, help="network evaluations of the few-step sampler")
    p.add_argument("--n", type=int, default=64, help="noises the grid learns from")
    p.add_argument("--seed", type=int, default=50_000,
                   help="first seed of those noises (default 50000: disjoint from the evaluator's report seeds 0..)")
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--teacher", default="heun", help="the many-step deterministic sampler to match")
    p.add_argument("--teacher-steps", type=int, default=100)
    p.add_argument("--max-evals", type=int, default=100, help="sampler runs the search may make")
    p.add_argument("--loss", default="mse",
                   help="the distance to the teacher: mse (pixels) or c10 (the c10 classifier's features)")
    p.add_argument("--name", default=None, help="default: learned_<sampler>_nfe<NFE>")
    p.add_argument("--device", default=None)
    p.set_defaults(fn=cmd_learn_grid)

    p = sub.add_parser("studio", help="the Gradio studio: generate, edit, compare and inspect models in the browser")
    p.add_argument("--checkpoint", action="append", default=None, metavar="DIR",
                   help="a checkpoint folder to serve (repeatable; default: the shipped ones)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default=None, help="default: cpu")
    p.add_argument("--runs", default="runs", metavar="DIR",
                   help="the runs folder: the Train tab's runs and exports, the Evaluate tab's sweeps (default: runs)")
    p.add_argument("--allow-training", action="store_true",
                   help="offer the Train tab (it starts training processes) even when --host is not this machine "
                        "only; on 127.0.0.1 or localhost it is always on")
    p.set_defaults(fn=cmd_studio)

    p = sub.add_parser("eval", help="FID/IS/KID/precision-recall of a checkpoint's samples (or of images) "
                                    "against a reference set")
    p.add_argument("checkpoint", nargs="?", help="checkpoint folder (default: the shipped default)")
    p.add_argument("--images", default=None, metavar="SOURCE",
                   help="score these images (folder with class subfolders, tar, cifar10) instead of sampling")
    p.add_argument("--images-split", default="train")
    p.add_argument("--sampler", default=None, help="default: the checkpoint's recommendation")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--grid", default=None)
    p.add_argument("--n", type=int, default=None, help="samples (default: 50000 with inception, 10000 with c10)")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--labels", default=None, help="one class for all, or one per image (default: i %% classes)")
    p.add_argument("--guidance", type=float, default=None, help="default: the checkpoint's")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a sampler option")
    p.add_argument("--out", default=None, help="write the result JSON here")
    _add_evaluator_args(p)
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("sweep", help="FID against NFE for samplers x step counts: a JSON table and a PNG plot")
    p.add_argument("checkpoint", nargs="?", help="checkpoint folder (default: the shipped default)")
    p.add_argument("--samplers", required=True, help="comma-separated, e.g. euler,heun,dpmpp_2m")
    p.add_argument("--steps", required=True, help="comma-separated step counts, e.g. 5,10,20")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--out", required=True, help="folder for sweep.json and fid_vs_nfe.png (resumes)")
    _add_evaluator_args(p)
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("likelihood", help="bits/dim on the CIFAR-10 test split: exact (flow), ELBO bound (VAE) or "
                                          "probability-flow ODE (score, diffusion, flow matching)")
    p.add_argument("checkpoint", nargs="?", help="checkpoint folder (default: the shipped default)")
    p.add_argument("--n", type=int, default=None, help="a fixed random subset of this many images (default: all)")
    p.add_argument("--source", default=None, help="images (default: $GENSTUDIO_DATA/cifar10/test.tar.gz)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="the subset, and image i's dequantization noise (seed + i)")
    p.add_argument("--rtol", type=float, default=None, help="ODE solver tolerance (default 1e-5)")
    p.add_argument("--atol", type=float, default=None, help="ODE solver tolerance (default 1e-5)")
    p.add_argument("--device", default=None)
    p.add_argument("--cache-dir", default=None, help="decoded-image cache (default: $GENSTUDIO_CACHE or "
                                                     "~/.cache/genstudio)")
    p.add_argument("--record", action="store_true", help="add the result to the checkpoint's metrics.json")
    p.add_argument("--out", default=None, help="write the result JSON here")
    p.set_defaults(fn=cmd_likelihood)

    p = sub.add_parser("rescore", help="re-measure a checkpoint's recorded c10 scores after the classifier changed "
                                       "(same protocols; samples read back from the sample cache when kept)")
    p.add_argument("checkpoints", nargs="+", help="checkpoint folders whose metrics.json to bring up to date")
    p.add_argument("--drop-quick", action="store_true", help="remove stale quick records instead of re-measuring")
    p.add_argument("--reference", default=None, metavar="SOURCE",
                   help="read the reference images from here instead of the recorded source (same content hash)")
    p.add_argument("--batch-size", type=int, default=None, help="default: each record's own")
    add_arguments(p, RESCORE_OPTIONS)
    p.set_defaults(fn=cmd_rescore)

    p = sub.add_parser("audit", help="can this model be trusted? a backdoor scan (TrojDiff), memorization and a "
                                     "real-vs-generated test: audit.json + audit.png (docs/audit.md)")
    p.add_argument("checkpoints", nargs="+", help="checkpoint folders")
    p.add_argument("--n", type=int, default=512, help="samples for memorization and the real-vs-generated test")
    p.add_argument("--sampler", default=None, help="default: the checkpoint's recommendation")
    p.add_argument("--steps", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="sampling precision")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test-n", type=int, default=1000, help="test images behind the memorization baseline")
    p.add_argument("--scan-steps", type=int, default=4, help="sampler steps inside the backdoor search")
    p.add_argument("--scan-iters", type=int, default=30, help="gradient steps of the backdoor search")
    p.add_argument("--reference", default=None, metavar="SOURCE",
                   help="the training images (default: the offline CIFAR-10 train split)")
    p.add_argument("--test-reference", default=None, metavar="SOURCE",
                   help="held-out real images (default: the offline CIFAR-10 test split)")
    p.add_argument("--classifier", default=None, metavar="PATH", help="c10 classifier weights (default: shipped)")
    p.add_argument("--calibration", type=float, default=None,
                   help="the largest collapse the scan finds on clean models (default: the measured one, "
                        "genstudio.audit.backdoor.CLEAN_COLLAPSE)")
    p.add_argument("--out", default="audit", help="reports go to OUT/<checkpoint name>/")
    p.add_argument("--record", action="store_true", help="also write the results to the checkpoint's metrics.json")
    p.add_argument("--device", default=None)
    p.set_defaults(fn=cmd_audit)

    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Reflow (Liu et al. 2022, "Flow Straight and Fast", Sec. 2.3 / Alg. 1): sample (noise, data) pairs
from a trained flow with a deterministic ODE sampler, then train the next rectified flow on that fixed
coupling; its paths are straighter, so few-step (even one-step) sampling gets better.

Time convention: genstudio's t = 0 is the data, x_t = (1 - t) x0 + t z on the linear path, so the straight
velocity of a pair is z - x0 (the paper's X_1 - X_0 with time reversed and its sign flipped).

A pairs folder (what `generate_pairs` writes and the trainer reads with `data.source = DIR`):

    manifest.json            {"kind": "genstudio-pairs", "version": 1, "checkpoint", "sampler", "steps", "grid",
                              "guidance", "image_shape": [C, H, W], "total": N, "shard_size": S, "seed",
                              "num_classes": K or 0}
    pairs-00000.safetensors  "x0": float16 (n, C, H, W), the sampler's output in model range, unclipped;
    pairs-00001.safetensors  "seeds": int64 (n,); "labels": int64 (n,), -1 when unconditional
    ...

Image i of the folder has seed `seed + i` (shards hold consecutive runs of S, the last one may be shorter),
and its noise is `randn_like(torch.empty(1, C, H, W), generators([seed + i]))[0]`: the standard normal z
the sampling pipeline draws (before it is scaled by sigma(t_max)). Noise is regenerated, never stored.

Commands (`genstudio reflow ...`):

    generate CHECKPOINT --out DIR --n N [--sampler rk4 --steps 25 --seed 0 --shard-size 1000 --guidance 1]
    train --pairs DIR --config configs/reflow_cifar10.toml [--resume] [--train.lr 1e-4 ...]
        (multi-GPU: accelerate launch -m genstudio.reflow train ...; generation runs on one device)
    pipeline --config configs/reflow_cifar10.toml [--reflow.n 1000 --train.max_steps 10 ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from samplers.run import prior, run_sampler

from .atomic import atomic_write, write_json
from .model import Guided
from .pairs import (  # noqa: F401  (load_pairs: reflow's public API)
    MANIFEST,
    MANIFEST_KEYS,
    PAIRS_KIND,
    PAIRS_VERSION,
    load_pairs,
    num_shards,
    pair_noise,
    pairs_complete,
    read_manifest,
    shard_name,
)

# ---------------------------------------------------------------------------------------------------------
# The model-agnostic core: any model with .path and a native prediction (a genstudio Model, a toy MLP Model,
# or one already bound to labels by Guided).

def _bind(model, labels: Tensor | None, guidance: float) -> Guided:
    if isinstance(model, Guided):
        if labels is not None or guidance != 1.0:
            raise ValueError("model is already a Guided field; give labels and guidance to Guided, not here")
        return model
    return Guided(model, labels, guidance)


def _deterministic(sampler, model, opts: dict[str, Any]):
    """The spec of a deterministic sampler that can drive `model`; a stochastic one is a clear error, since
    reflow needs the sample to be a function of its noise alone."""
    import samplers

    spec = sampler if isinstance(sampler, samplers.SamplerSpec) else samplers.get(sampler, model)
    deterministic = [n for n in samplers.compatible(model) if not samplers.get(n).stochastic]
    if spec.stochastic or opts.get("eta", 0.0):
        raise ValueError(f"sampler {spec.name!r} is stochastic: reflow pairs need a deterministic ODE sampler, so that "
                         f"each sample is a function of its noise. Deterministic samplers for this model: "
                         f"{', '.join(deterministic)}")
    return spec


@torch.no_grad()
def sample_pairs(model, z: Tensor, ts: Tensor, sampler="euler", labels: Tensor | None = None, guidance: float = 1.0,
                 **opts) -> Tensor:
    """x0 for standard normal noise z: x_T = sigma(ts[0]) z, then the deterministic `sampler` along the time
    grid `ts` (as genstudio.api.Pipeline.generate does, including its final denoise on VE paths whose
    sigma(0) > 0). opts go to the sampler (e.g. rtol for dopri5)."""
    field = _bind(model, labels, guidance)
    return run_sampler(_deterministic(sampler, field.model, opts), field, z, ts, **opts)


@torch.no_grad()
def straightness(model, z: Tensor, ts: Tensor, sampler="euler", labels: Tensor | None = None, guidance: float = 1.0,
                 per_dim: bool = False, **opts) -> Tensor:
    """Per-sample straightness of the sampled ODE trajectory from z (average it for the paper's number):

        S = 1 / (t_0 - t_N) * integral_{t_N}^{t_0} ||(x_{t_0} - x_{t_N}) / (t_0 - t_N) - v(x_t, t)||^2 dt

    (Liu et al. 2022, Sec. 2.3: S(Z) = integral_0^1 E||(Z_1 - Z_0) - v(Z_t, t)||^2 dt). On the linear path
    t_0 = 1, t_N = 0 and x_{t_0} = z, so the straight velocity is z - x0 with x0 the trajectory's end, and this
    is exactly the paper's S with time reversed. Zero iff the trajectory is a straight line run at constant speed.

    Estimator: the sampler runs on the grid t_0 > t_1 > ... > t_N = ts and reports its state x_i at every grid
    time; v is evaluated at each (x_i, t_i), i < N (N extra evaluations), and the integral is the left Riemann
    sum sum_i (t_i - t_{i+1}) ||u - v(x_i, t_i)||^2 in the direction of sampling. For the Euler sampler the
    trajectory is built from exactly these velocities (u is their step-weighted mean), so S is their weighted
    variance and S = 0 means one Euler step lands where N steps do. Its bias is O(max step); refine `ts` to
    converge. The squared norm sums over dimensions (the paper's); per_dim=True divides by the dimension.
    Adaptive samplers (dopri5) do not report grid states: use a fixed-step sampler with a fine grid."""
    field = _bind(model, labels, guidance)
    spec = _deterministic(sampler, field.model, opts)
    states: list[tuple[float, Tensor]] = []

    def record(i, t, x, **_):
        states.append((float(t), x))

    x_start = prior(field.path, z, ts)
    x_end = spec.fn(field, x_start, ts, callback=record, **opts)
    expected = [float(t) for t in ts[1:]]
    if len(states) != len(expected) or any(abs(t - e) > 1e-5 * max(1.0, abs(e)) for (t, _), e in zip(states, expected)):
        raise ValueError(f"sampler {spec.name!r} does not report its state once per grid time (an adaptive solver?); "
                         f"straightness needs the trajectory on the grid: use euler, heun, midpoint or rk4")
    xs = [x_start] + [x for _, x in states[:-1]]
    ts64 = ts.double()
    u = (x_start - x_end) / float(ts64[0] - ts64[-1])
    total = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
    for i, x in enumerate(xs):
        v = field.velocity(x, ts[i].to(x.dtype))
        total += float(ts64[i] - ts64[i + 1]) * ((u - v) ** 2).flatten(1).sum(1).double()
    s = total / float(ts64[0] - ts64[-1])
    return s / z[0].numel() if per_dim else s


# ---------------------------------------------------------------------------------------------------------
# Pair folders

def _write_shard(path: Path, tensors: dict[str, Tensor]) -> None:
    """Write a shard atomically: a temporary file beside it, flushed, then one rename."""
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"kind": PAIRS_KIND}))


def _shard_labels(labels, start: int, stop: int, num_classes: int) -> Tensor:
    """Labels of images start..stop-1 (-1: none)."""
    idx = torch.arange(start, stop, dtype=torch.int64)
    if labels is None or not num_classes:
        return torch.full_like(idx, -1)
    if labels == "cycle":
        return idx % num_classes
    return torch.full_like(idx, int(labels))


def _check_labels(labels, num_classes: int, name: str) -> None:
    if labels is None or labels == "cycle":
        return
    if isinstance(labels, str) or isinstance(labels, bool) or int(labels) != labels:
        raise ValueError(f"labels must be 'cycle', a class index or None, got {labels!r}")
    if not num_classes:
        raise ValueError(f"{name} is unconditional: it takes no class labels (use labels='cycle' or None)")
    if not 0 <= int(labels) < num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got {labels}")


def _same_checkpoint(a: str, b: str) -> bool:
    return a == b or Path(a).resolve() == Path(b).resolve()


def _check_existing(out: Path, manifest: dict[str, Any], labels) -> list[int]:
    """Compare an existing folder with what this call would write; returns its complete shards."""
    old = read_manifest(out)
    diff = [k for k in MANIFEST_KEYS
            if not (old.get(k) == manifest[k] or k == "checkpoint" and _same_checkpoint(str(old.get(k)), manifest[k]))]
    if diff:
        detail = "; ".join(f"{k}: {old.get(k)!r} there, {manifest[k]!r} now" for k in diff)
        raise ValueError(f"{out} holds pairs made with other settings ({detail}). Resume with the same arguments, "
                         f"or choose another --out (delete {out} to start over)")
    from safetensors import safe_open

    done, shards = [], num_shards(manifest)
    for path in sorted(out.glob("pairs-*.safetensors")):
        k = int(path.stem.split("-")[1]) if path.stem.split("-")[1].isdigit() else -1
        if not 0 <= k < shards or path.name != shard_name(k):
            raise ValueError(f"{path} does not belong to a {manifest['total']}-pair folder of {shards} shards")
        start, stop = k * manifest["shard_size"], min((k + 1) * manifest["shard_size"], manifest["total"])
        try:
            with safe_open(str(path), "pt") as f:
                seeds, stored = f.get_tensor("seeds"), f.get_tensor("labels")
                x0_shape = f.get_slice("x0").get_shape()
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"cannot read {path} ({type(e).__name__}: {e}); "
                             f"delete it and resume to regenerate it") from None
        want = torch.arange(manifest["seed"] + start, manifest["seed"] + stop, dtype=torch.int64)
        if not torch.equal(seeds, want) or list(x0_shape) != [stop - start, *manifest["image_shape"]]:
            raise ValueError(f"{path} does not hold seeds {int(want[0])}..{int(want[-1])} with x0 of shape "
                             f"{[stop - start, *manifest['image_shape']]}; delete it and resume to regenerate it")
        if not torch.equal(stored, _shard_labels(labels, start, stop, manifest["num_classes"])):
            raise ValueError(f"{path} was made with other labels than labels={labels!r}; resume with the same "
                             f"labels, or choose another --out")
        done.append(k)
    return done


def generate_pairs(checkpoint: str | Path, out_dir: str | Path, n: int, *, sampler: str = "euler",
                   steps: int | None = None, grid: str | None = None, seed: int = 0, shard_size: int = 1000,
                   guidance: float = 1.0, labels: str | int | None = "cycle", device: str | None = None,
                   batch_size: int = 256, progress: bool = True) -> Path:
    """Write n (noise, sample) pairs of `checkpoint` to a pairs folder (format: this module's docstring).

    steps and grid default to the checkpoint's recommendation (as Pipeline.generate). labels: "cycle" gives
    image i class i % num_classes on a conditional model (-1, none, on an unconditional one); an int gives
    every image that class; None samples a conditional model without a label.

    Resumable: a folder that already holds a matching manifest keeps its complete shards (each was written
    to a temporary file and renamed, so a shard that exists is whole) and generates the missing ones; every
    shard's seeds and labels are checked, and a folder made with other settings is a clear error. Batches
    start at shard boundaries, so a resumed folder holds the same pairs as an uninterrupted one.

    Under `accelerate launch` (or torchrun) process r writes the shards k with k % processes == r (each the
    same as one process writes), after the main one has written or checked the manifest."""
    from tqdm.auto import tqdm

    from samplers.grids import make_grid

    from .api import Pipeline
    from .processes import current

    if int(n) != n or n < 1 or int(shard_size) != shard_size or shard_size < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1, shard_size >= 1 and batch_size >= 1; got {n}, {shard_size}, {batch_size}")
    if not guidance >= 0:
        raise ValueError(f"guidance must be >= 0, got {guidance}")
    procs = current()
    pipe = Pipeline.load(checkpoint, device=device or procs.device)
    _deterministic(sampler, pipe.model, {})
    _check_labels(labels, pipe.num_classes, pipe.name)
    steps = int(steps if steps is not None else pipe.defaults()["steps"])
    grid = grid or pipe.grid_for(sampler)
    ts = make_grid(grid, pipe.model.path, steps)
    shape = list(pipe.image_shape)
    manifest = {"kind": PAIRS_KIND, "version": PAIRS_VERSION, "checkpoint": str(checkpoint), "sampler": sampler,
                "steps": steps, "grid": grid, "guidance": float(guidance), "image_shape": shape, "total": int(n),
                "shard_size": int(shard_size), "seed": int(seed), "num_classes": int(pipe.num_classes)}
    out = Path(out_dir)
    with procs.main_first():  # the main process clears and writes (or checks) the manifest, then the others check
        out.mkdir(parents=True, exist_ok=True)
        if procs.main:
            for stale in out.glob(".tmp-*"):  # a shard or manifest write that was interrupted
                stale.unlink(missing_ok=True)
        if (out / MANIFEST).exists():
            done = set(_check_existing(out, manifest, labels))
        else:
            if list(out.glob("pairs-*.safetensors")):
                raise ValueError(f"{out} holds pair shards but no {MANIFEST}; choose another --out or empty it")
            write_json(out / MANIFEST, manifest)
            done = set()
    shards = num_shards(manifest)
    sizes = [min(shard_size, n - k * shard_size) for k in range(shards)]
    done |= set(range(shards)) - set(procs.mine(shards))  # the other processes' shards
    bar = tqdm(total=n, initial=sum(sizes[k] for k in done), desc="pairs", unit="img", dynamic_ncols=True,
               disable=not (progress and procs.main) or len(done) == shards)
    for k in range(shards):
        if k in done:
            continue
        start, stop = k * shard_size, k * shard_size + sizes[k]
        lab = _shard_labels(labels, start, stop, pipe.num_classes)
        seeds = torch.arange(seed + start, seed + stop, dtype=torch.int64)
        parts = []
        for b in range(start, stop, batch_size):
            e = min(b + batch_size, stop)
            z = pair_noise(seeds[b - start:e - start].tolist(), shape).to(pipe.device)
            y = None if labels is None or not pipe.num_classes else lab[b - start:e - start].to(pipe.device)
            parts.append(sample_pairs(pipe.model, z, ts, sampler, y, guidance).float().cpu())
            bar.update(e - b)
        x0 = torch.cat(parts).half()
        if not torch.isfinite(x0).all():
            raise ValueError(f"{checkpoint} produced non-finite samples (or beyond float16) in shard {k}; "
                             f"is the checkpoint trained?")
        _write_shard(out / shard_name(k), {"x0": x0.contiguous(), "seeds": seeds, "labels": lab})
    bar.close()
    procs.barrier()  # every shard is written when any process returns
    return out


# ---------------------------------------------------------------------------------------------------------
# Configs with a [reflow] section, and the stages

REFLOW_DEFAULTS: dict[str, Any] = {
    "teacher": "runs/flow_cifar10/model", "pairs_dir": "runs/reflow_pairs", "n": 50000, "sampler": "rk4",
    "steps": 25, "grid": "", "seed": 0, "shard_size": 1000, "guidance": 1.0, "labels": "cycle", "batch_size": 256,
    "distill": False, "distill_pairs_dir": "runs/reflow_distill_pairs",
    "distill_output_dir": "runs/reflow_cifar10_distill",
}
# One-step distillation trains v(z, t) = z - x0 at t = t_max only (Liu et al. 2022, Sec. 2.3, "distillation"),
# so x0 = z - v(z, 1) in one Euler step. flow_matching has no fixed-time option; a logit-normal with m = 12,
# s = 1e-3 puts every training t within 1e-5 of t_max.
DISTILL_OBJECTIVE = {"name": "flow_matching", "options": {"time_distribution": "logit_normal", "m": 12.0, "s": 1e-3}}


def read_reflow_config(path: str | Path, overrides: list[str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the [reflow] settings with defaults filled in, the trainer's sections as a dict); command-line
    overrides (--reflow.n 1000, --train.lr 1e-4) apply to both."""
    from .config import _unknown, merge, parse_overrides, read_toml

    data = merge(read_toml(path), parse_overrides(overrides or []))
    given = data.pop("reflow", {})
    for key in given:
        if key not in REFLOW_DEFAULTS:
            raise _unknown("key in [reflow]", key, list(REFLOW_DEFAULTS))
    reflow = {**REFLOW_DEFAULTS, **given}
    return reflow, data


def trainer_config(data: dict[str, Any], pairs_dir: str | Path, **sections: dict[str, Any]):
    """The trainer's Config for training on a pairs folder: `data.source = pairs_dir`, plus section overrides."""
    from .config import config_from_dict, merge

    return config_from_dict(merge(merge(data, sections), {"data": {"source": str(pairs_dir)}}))


def training_done(config) -> bool:
    """Whether train.output_dir holds a checkpoint at train.max_steps and an exported model."""
    from .train import STATE_FILE, latest_checkpoint

    out = Path(config.train.output_dir)
    last = latest_checkpoint(out)
    if last is None or not (out / "model" / "genstudio.json").is_file():
        return False
    return json.loads((last / STATE_FILE).read_text())["step"] >= config.train.max_steps


def train_on_pairs(config, say=print) -> dict[str, Any] | None:
    """Run the trainer on a config; resumes when its output_dir has checkpoints, skips a finished run."""
    from .train import latest_checkpoint, run

    if not pairs_complete(config.data.source):
        raise ValueError(f"{config.data.source} is not a complete pairs folder: generate (or resume) it first with "
                         f"`genstudio reflow generate`")
    if training_done(config):
        say(f"training in {config.train.output_dir} is complete ({config.train.max_steps} steps): skipped")
        return None
    resume = latest_checkpoint(Path(config.train.output_dir)) is not None
    return run(config, resume=resume)


def run_pipeline(config_path: str | Path, overrides: list[str] | None = None, device: str | None = None,
                 progress: bool = True, say=print) -> dict[str, Any]:
    """The reflow stages in order, each skipped when already complete and resumed when interrupted:
    (1) pairs from [reflow] teacher into pairs_dir; (2) the next rectified flow trained on them;
    (3) if [reflow] distill: pairs from (2)'s model into distill_pairs_dir, and a one-step model trained on
    them at t = t_max (from scratch: the trainer does not initialize from a checkpoint).
    Returns the folders of each stage."""
    reflow, data = read_reflow_config(config_path, overrides)
    gen = dict(n=int(reflow["n"]), sampler=reflow["sampler"], steps=int(reflow["steps"]), grid=reflow["grid"] or None,
               seed=int(reflow["seed"]), shard_size=int(reflow["shard_size"]), guidance=float(reflow["guidance"]),
               labels=None if reflow["labels"] in ("", "none") else reflow["labels"], device=device,
               batch_size=int(reflow["batch_size"]), progress=progress)
    config = trainer_config(data, reflow["pairs_dir"])  # bad trainer settings fail before any work
    from .train import validate

    validate(config)
    done: dict[str, Any] = {}

    def pairs(teacher, folder, stage):
        # generate_pairs checks a finished folder's settings too, so a changed [reflow] is an error, not a reuse
        complete = pairs_complete(folder)
        say(f"[{stage}] pairs in {folder}: " + ("complete, settings checked" if complete else
                                                 f"generating {gen['n']} from {teacher} (resumes)"))
        generate_pairs(teacher, folder, **gen)
        return str(folder)

    done["pairs"] = pairs(reflow["teacher"], reflow["pairs_dir"], "1/3" if reflow["distill"] else "1/2")
    say(f"[{'2/3' if reflow['distill'] else '2/2'}] training the rectified flow in {config.train.output_dir}")
    result = train_on_pairs(config, say)
    done["model"] = str(Path(config.train.output_dir) / "model")
    if result is not None and result["stopped_early"]:  # preempted: the next stage needs the finished model
        done["stopped_early"] = True
        return done
    if reflow["distill"]:
        done["distill_pairs"] = pairs(done["model"], reflow["distill_pairs_dir"], "3/3")
        distill = trainer_config(data, reflow["distill_pairs_dir"], objective=DISTILL_OBJECTIVE,
                                 train={"output_dir": reflow["distill_output_dir"], "sample_sampler": "euler",
                                        "sample_steps": 1})
        say(f"[3/3] training the one-step model in {distill.train.output_dir}")
        result = train_on_pairs(distill, say)
        done["distilled"] = str(Path(distill.train.output_dir) / "model")
        done["stopped_early"] = bool(result is not None and result["stopped_early"])
    return done


# ---------------------------------------------------------------------------------------------------------
# The command line

def add_reflow_commands(sub) -> argparse.ArgumentParser:
    """Add `reflow generate | train | pipeline` to an argparse subparsers object."""
    p = sub.add_parser("reflow", help="reflow: generate (noise, sample) pairs, train on them, or run the pipeline",
                       description=__doc__.split("\n\n")[0])
    stages = p.add_subparsers(dest="stage", required=True)
    g = stages.add_parser("generate", help="write (noise, sample) pairs of a checkpoint (resumable)")
    g.add_argument("checkpoint", help="checkpoint folder (or a training run folder)")
    g.add_argument("--out", required=True, help="pairs folder; an interrupted one is resumed")
    g.add_argument("--n", type=int, required=True)
    g.add_argument("--sampler", default="euler", help="a deterministic sampler (euler, heun, rk4, dopri5, ...)")
    g.add_argument("--steps", type=int, default=None, help="default: the checkpoint's recommendation")
    g.add_argument("--grid", default=None)
    g.add_argument("--seed", type=int, default=0, help="pair i uses seed + i")
    g.add_argument("--shard-size", type=int, default=1000)
    g.add_argument("--guidance", type=float, default=1.0)
    g.add_argument("--labels", default="cycle", help="'cycle' (i %% num_classes), a class index, or 'none'")
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--device", default=None)
    t = stages.add_parser("train", help="train a rectified flow on a pairs folder (trainer overrides pass through)")
    t.add_argument("--pairs", required=True, help="pairs folder")
    t.add_argument("--config", required=True, help="TOML config; a [reflow] section is ignored")
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in train.output_dir")
    q = stages.add_parser("pipeline", help="generate pairs, train, [distill]; skips finished stages, resumes the rest")
    q.add_argument("--config", required=True, help="TOML config with a [reflow] section")
    q.add_argument("--device", default=None, help="for pair generation")
    p.set_defaults(fn=cmd_reflow, overrides=[])
    return p


def cmd_reflow(args: argparse.Namespace) -> int:
    """Exit 0 when done, 3 (genstudio.train.EXIT_STOPPED) when a training stage was stopped by a signal."""
    from .train import EXIT_STOPPED

    overrides = list(getattr(args, "overrides", []))
    if overrides and args.stage == "generate":
        raise ValueError(f"unrecognized arguments: {' '.join(overrides)}")
    if args.stage == "generate":
        labels = None if args.labels == "none" else args.labels if args.labels == "cycle" else int(args.labels)
        out = generate_pairs(args.checkpoint, args.out, args.n, sampler=args.sampler, steps=args.steps,
                             grid=args.grid, seed=args.seed, shard_size=args.shard_size, guidance=args.guidance,
                             labels=labels, device=args.device, batch_size=args.batch_size)
        m = read_manifest(out)
        print(f"{m['total']} pairs -> {out} ({num_shards(m)} shards; {m['sampler']}, {m['steps']} steps, "
              f"{m['grid']} grid, seeds {m['seed']}..{m['seed'] + m['total'] - 1})")
    elif args.stage == "train":
        from .config import parse_overrides
        from .train import run

        _, data = read_reflow_config(args.config)
        config = trainer_config(data, args.pairs, **parse_overrides(overrides))
        if not pairs_complete(args.pairs):
            raise ValueError(f"{args.pairs} is not a complete pairs folder: run `genstudio reflow generate` first")
        result = run(config, resume=args.resume)
        print(f"trained {result['step']} steps -> {result['model']}")
        return EXIT_STOPPED if result["stopped_early"] else 0
    else:
        done = run_pipeline(args.config, overrides, device=args.device)
        print(json.dumps(done, indent=2))
        return EXIT_STOPPED if done.get("stopped_early") else 0
    return 0


def main(argv: list[str] | None = None) -> int:
    """`genstudio reflow ...` (argv without "reflow"). Unknown --section.key options go to the trainer."""
    parser = argparse.ArgumentParser(prog="genstudio")
    add_reflow_commands(parser.add_subparsers(dest="command", required=True))
    args, rest = parser.parse_known_args(["reflow", *(sys.argv[1:] if argv is None else argv)])
    args.overrides = rest
    from .train import NonFiniteLossError

    try:
        return cmd_reflow(args)
    except (ValueError, FileNotFoundError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The one training loop, on Accelerate, for every family (the objective is the plug-in).

    accelerate launch -m genstudio.train --config configs/edm_cifar10.toml [--resume] [--section.key VALUE ...]

Determinism: the data order is a pure function of (seed, step) and the global RNG is re-seeded at
every step from (seed, step, process), so a resumed run replays the exact per-step losses of an
uninterrupted one from the restored weights, optimizer, EMA and LR schedule.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

import samplers

from .caf import build_caf_model
from .checkpoint import CheckpointError, export_model, fsync_tree, load_model, read_jsonl, write_json
from .config import Config, ConfigError, load_config
from .data import load_images, random_flip, to_model_range
from .ema import EMA
from .images import image_grid, save_png
from .model import Model
from .networks import UNetBackbone, unet_config
from .objectives import objective_from_config
from .pairs import is_pairs_folder, load_pairs
from .paths import path_from_config
from .precond import precond_from_config

RUN_CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
EMA_FILE = "ema.safetensors"


class NonFiniteLossError(RuntimeError):
    pass


def build_model(config: Config) -> Model:
    """The model a config describes (every setting checked, no data touched)."""
    m = config.model
    objective = objective_from_config(config.objective.name, config.objective.options)
    if m.kind == "caf" or config.objective.name == "caf":
        return build_caf_model(config)
    if (objective.family == "consistency") != (m.kind == "map"):
        raise ValueError(f"model.kind 'map' goes with a consistency objective (got {m.kind!r}, {config.objective.name!r})")
    unet = unet_config(m.network, image_size=config.data.image_size, num_classes=m.num_classes, **m.unet)
    return Model(UNetBackbone.from_config(unet), path_from_config(m.path), m.prediction,
                 precond_from_config(m.precond), m.num_classes, family=objective.family, kind=m.kind)


def init_weights(model: Model, source: str | Path) -> None:
    """Copy the network weights of an exported genstudio model (a folder with genstudio.json, or a run
    folder holding model/) into `model`; the architectures must match exactly."""
    folder = Path(source)
    if not (folder / "genstudio.json").is_file() and (folder / "model" / "genstudio.json").is_file():
        folder = folder / "model"
    if not (folder / "genstudio.json").is_file():
        raise ConfigError(f"train.init_from = {str(source)!r} is not an exported genstudio model "
                          f"(no genstudio.json there or in its model/ folder)")
    if model.kind == "caf":
        raise ConfigError("train.init_from does not apply to CAF models (two networks)")
    source_model, _ = load_model(folder)
    theirs, ours = source_model.network.state_dict(), model.network.state_dict()
    wrong = [k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape]
    if wrong or set(theirs) - set(ours):
        raise ConfigError(f"train.init_from = {str(source)!r}: its network does not match this config's "
                          f"({len(wrong)} missing or mis-shaped tensors, e.g. {wrong[:3]}); use the same "
                          f"[model] network, unet and num_classes")
    model.network.load_state_dict(theirs)


def validate(config: Config) -> Model:
    """Everything that can be checked before any work starts; returns the model the config builds."""
    try:
        model = build_model(config)
        samplers.get(config.train.sample_sampler, model)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
    if is_pairs_folder(config.data.source):
        objective = objective_from_config(config.objective.name, config.objective.options)
        if "noise" not in inspect.signature(objective.__call__).parameters:
            raise ConfigError(f"objective {config.objective.name!r} cannot train on (noise, sample) pairs; "
                              f"use flow_matching or ddpm")
    levels = len(model.network.unet.config.block_out_channels) - 1
    if config.data.image_size % 2**levels:
        raise ConfigError(f"data.image_size = {config.data.image_size} must be divisible by {2**levels} "
                          f"(the network downsamples {levels} times)")
    loss_sd = config.objective.options.get("sigma_data")
    precond_sd = getattr(model.precond, "sigma_data", None)
    if loss_sd is not None and precond_sd is not None and loss_sd != precond_sd:
        raise ConfigError(f"objective sigma_data = {loss_sd} but the preconditioning's is {precond_sd}")
    return model


def batch_indices(micro_step: int, n: int, batch: int, world: int, rank: int, seed: int) -> torch.Tensor:
    """The images of one micro-step for one process: epoch e visits randperm(n; seed + e) in order,
    split into global batches of batch * world, each process taking its slice."""
    global_batch = batch * world
    per_epoch = n // global_batch
    if per_epoch == 0:
        raise ValueError(f"{n} images are fewer than one global batch of {global_batch}")
    epoch, b = divmod(micro_step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    start = b * global_batch + rank * batch
    return perm[start:start + batch]


def learning_rate(base: float, warmup_steps: int, step: int) -> float:
    """Linear warmup over `warmup_steps`, then constant (a pure function of the step, so nothing to save)."""
    return base * min(1.0, (step + 1) / warmup_steps) if warmup_steps else base


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 1_009 + rank) % (2**63)


def latest_checkpoint(output_dir: Path) -> Path | None:
    done = sorted((output_dir / RUN_CHECKPOINTS).glob("step_*"))
    done = [p for p in done if (p / STATE_FILE).is_file()]
    return done[-1] if done else None


def training_data(config: Config, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(images, labels, noise): uint8 images from a data source, or float samples with their fixed noise
    from a reflow pairs folder (noise is None otherwise); a `data.limit` subset is fixed by the seed."""
    noise = None
    if is_pairs_folder(config.data.source):
        pairs = load_pairs(config.data.source)
        images, labels, noise = pairs.x0, pairs.labels, pairs.noise
    else:
        data = load_images(config.data.source, split=config.data.split, image_size=config.data.image_size,
                           cache_dir=config.data.cache_dir or None)
        images, labels = data.images, data.labels
    if config.data.limit and config.data.limit < len(images):
        keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(config.train.seed))
        keep = keep[:config.data.limit]
        images, labels, noise = images[keep], labels[keep], (noise[keep] if noise is not None else None)
    if num_classes and int(labels.min()) < 0:
        raise ConfigError(f"{config.data.source} has no class labels, but model.num_classes = {num_classes}")
    if num_classes and int(labels.max()) >= num_classes:
        raise ConfigError(f"the data has {int(labels.max()) + 1} classes but model.num_classes = {num_classes}")
    return images, labels, noise


def save_sample_grid(model: Model, defaults: dict[str, Any], count: int, path: Path) -> None:
    """A PNG grid of `count` samples (seeds 0..count-1, labels cycling through the classes)."""
    from .api import Pipeline

    device = next(model.parameters()).device
    labels = [i % model.num_classes for i in range(count)] if model.num_classes else None
    save_png(image_grid(Pipeline(model, {"defaults": defaults}, device).generate(count, labels=labels).images), path)


class _Distributed:
    """The prepared (possibly DDP-wrapped) model's forward, with the plain model's attributes (path, ...)."""

    def __init__(self, prepared, plain):
        self._prepared, self._plain = prepared, plain

    def __call__(self, *args, **kwargs):
        return self._prepared(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._plain, name)


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop checkpoints and exits at the end of the step."""

    def __init__(self):
        self.stop = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.stop = True

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def run(config: Config, resume: bool = False) -> dict[str, Any]:
    """Train as configured; returns a summary. Raises NonFiniteLossError if training diverges."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration
    from tqdm.auto import tqdm

    torch.manual_seed(config.train.seed)  # the initial weights
    model = validate(config)
    tc = config.train
    out = Path(tc.output_dir)
    if not resume and latest_checkpoint(out) is not None:
        raise ConfigError(f"{out} already holds checkpoints of a run: continue it with --resume, "
                          f"or choose another train.output_dir")
    if tc.init_from and not (resume and latest_checkpoint(out) is not None):
        init_weights(model, tc.init_from)  # a fresh run only: a resumed one loads its own state
    AcceleratorState._reset_state()  # let one process run() several configs (its mixed precision is per run)
    accelerator = Accelerator(
        mixed_precision=tc.mixed_precision, log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process

    objective = objective_from_config(config.objective.name, config.objective.options)
    ema = EMA(model, tc.ema_half_life_kimg, tc.ema_rampup_ratio, 0.0 if tc.ema_half_life_kimg else tc.ema_decay)
    with accelerator.main_process_first():  # the main process fills the decode cache first
        images, labels, noise = training_data(config, model.num_classes)

    # a trainable part of the objective (VCT's noise encoder): optimized and checkpointed with the model, not exported
    make_encoder = getattr(objective, "coupling_network", None)
    encoder = make_encoder(tuple(images.shape[1:])) if make_encoder else None
    params = list(model.parameters()) + (list(encoder.parameters()) if encoder is not None else [])
    optimizer = torch.optim.AdamW(params, lr=tc.lr, betas=tuple(tc.adam_betas), weight_decay=tc.weight_decay)
    if encoder is not None:
        model, encoder, optimizer = accelerator.prepare(model, encoder, optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    ema.to(accelerator.device)

    start, streak, prior_wall = 0, 0, 0.0
    if main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in (out / RUN_CHECKPOINTS).glob(".tmp-step_*"):  # a save that was interrupted
            shutil.rmtree(stale, ignore_errors=True)
    if resume and (ckpt := latest_checkpoint(out)) is not None:
        state = json.loads((ckpt / STATE_FILE).read_text())
        saved = state.get("model_config")
        if saved is not None and saved != config.to_dict()["model"]:
            raise ConfigError(f"cannot resume {ckpt}: it was trained with [model] {saved}, "
                              f"not {config.to_dict()['model']}")
        try:
            accelerator.load_state(str(ckpt))
            ema.model.load_state_dict(load_file(str(ckpt / EMA_FILE), device=str(accelerator.device)))
        except Exception as e:  # torch/safetensors errors: say which checkpoint and what broke
            raise CheckpointError(f"cannot resume from {ckpt}: {type(e).__name__}: {e}") from None
        start, prior_wall, streak = state["step"], state.get("wall_time_s", 0.0), state.get("nonfinite_streak", 0)
        accelerator.print(f"resumed from {ckpt} at step {start}")
    elif resume:
        accelerator.print(f"no checkpoint in {out / RUN_CHECKPOINTS}: starting from scratch")
    if main:
        write_json(out / "config.json", config.to_dict())
        _truncate_log(out / "metrics.jsonl", start)
        accelerator.init_trackers("train", config=_flat_scalars(config.to_dict()))

    batch_images = tc.batch_size * world * tc.grad_accum
    unwrapped = accelerator.unwrap_model(model)
    defaults = {"sampler": tc.sample_sampler, "steps": tc.sample_steps,
                "grid": samplers.default_grid(samplers.get(tc.sample_sampler), unwrapped.path)}
    forward = _Distributed(model, unwrapped)

    def save(step: int) -> None:
        """Checkpoint: save_state into a temporary folder, then one rename; prune to the last K."""
        root = out / RUN_CHECKPOINTS
        final = root / f"step_{step:08d}"
        ema_state = {k: v.detach().contiguous() for k, v in ema.model.state_dict().items()}
        finite = all(bool(torch.isfinite(v).all()) for v in ema_state.values() if v.is_floating_point())
        if not finite:  # every rank holds the same EMA, so every rank stops here
            raise NonFiniteLossError(f"refusing to save non-finite EMA weights at step {step}")
        accelerator.wait_for_everyone()
        tmp = root / f".tmp-step_{step:08d}"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if main:
            save_file(ema_state, str(tmp / EMA_FILE))
            wall = round(prior_wall + time.time() - t0, 1)
            write_json(tmp / STATE_FILE, {"step": step, "images_seen": step * batch_images, "wall_time_s": wall,
                                          "nonfinite_streak": streak, "model_config": config.to_dict()["model"]})
            fsync_tree(tmp)  # durable before it becomes visible
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            fsync_tree(root, files=False)
            for old in sorted(root.glob("step_*"))[:-tc.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            export_model(ema.model, out / "model", training=_summary(config, step, step * batch_images, wall, world),
                         defaults=defaults)
        accelerator.wait_for_everyone()

    t0 = time.time()
    bar = tqdm(range(start, tc.max_steps), initial=start, total=tc.max_steps, disable=not (main and tc.progress),
               dynamic_ncols=True, desc="train")
    last_time, last_step, stopped, done = time.time(), start, False, start
    model.train()
    with _StopFlag() as stop:
        for step in bar:
            torch.manual_seed(step_seed(tc.seed, step, rank))
            lr = learning_rate(tc.lr, tc.warmup_steps, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            losses = []
            for micro in range(tc.grad_accum):
                idx = batch_indices(step * tc.grad_accum + micro, len(images), tc.batch_size, world, rank, tc.seed)
                pair_noise = None
                if noise is None:
                    x = to_model_range(images[idx]).to(accelerator.device)
                    if config.data.flip:
                        x = random_flip(x)
                else:
                    x, pair_noise = images[idx].to(accelerator.device), noise[idx].to(accelerator.device)
                lab = None
                if unwrapped.num_classes:
                    lab = labels[idx].to(accelerator.device)
                    drop = torch.rand(lab.shape, device=lab.device) < tc.label_dropout
                    lab = torch.where(drop, torch.full_like(lab, unwrapped.num_classes), lab)
                sync = micro == tc.grad_accum - 1
                with (accelerator.no_sync(model) if not sync else contextlib.nullcontext()), accelerator.autocast():
                    kw = {"noise": pair_noise} if pair_noise is not None else {}
                    if "step" in inspect.signature(objective.__call__).parameters:  # curricula (iCT)
                        kw.update(step=step, total_steps=tc.max_steps)
                    if encoder is not None:
                        kw.update(encoder=encoder)
                    loss = objective(forward, x, lab, **kw).mean()
                    accelerator.backward(loss / tc.grad_accum)
                losses.append(loss.detach().float())
            loss = torch.stack(losses).mean()
            grad_norm = accelerator.clip_grad_norm_(params if encoder is not None else model.parameters(),
                                                    tc.grad_clip if tc.grad_clip else math.inf)
            flags = torch.tensor([float(not torch.isfinite(loss)), float(not torch.isfinite(grad_norm)),
                                  float(stop.stop)], device=accelerator.device)
            loss_bad, grad_bad, stopping = (bool(f > 0) for f in accelerator.reduce(flags, reduction="sum"))
            bad = loss_bad or grad_bad
            overflow = grad_bad and not loss_bad and accelerator.scaler is not None  # fp16 loss scaling
            if bad and accelerator.scaler is not None:
                optimizer.step()  # the GradScaler skips the update and lowers its scale
            if overflow:
                accelerator.print(f"step {step + 1}: fp16 gradient overflow; update skipped, loss scale lowered")
            elif bad:
                streak += 1
                optimizer.zero_grad(set_to_none=True)
                accelerator.print(f"step {step + 1}: non-finite loss or gradient ({float(loss):.4g}); update skipped "
                                  f"({streak}/{tc.max_nonfinite} in a row)")
                if streak >= tc.max_nonfinite:
                    accelerator.end_training()
                    last = latest_checkpoint(out)
                    raise NonFiniteLossError(
                        f"{streak} non-finite steps in a row (last at step {step + 1}): training stopped. "
                        f"Last good checkpoint: {last or 'none'}. Lower train.lr, set train.grad_clip, "
                        f"or try train.mixed_precision = \"no\"; then rerun with --resume.")
            if not bad:
                streak = 0
                optimizer.step()
                ema.update(unwrapped, (step + 1) * batch_images, batch_images)
            done = step + 1
            loss_all = float(accelerator.reduce(loss.reshape(1), reduction="mean"))
            if main:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps({"step": done, "time": round(time.time(), 2), "loss": loss_all, "lr": lr,
                                        "grad_norm": float(grad_norm), "skipped": bad}) + "\n")
            if done % tc.log_every == 0 or done == tc.max_steps:
                now = time.time()
                ips = (done - last_step) * batch_images / max(now - last_time, 1e-9)
                last_time, last_step = now, done
                accelerator.log({"loss": loss_all, "lr": lr, "img_per_s": ips,
                                 "grad_norm": float(grad_norm)}, step=done)
                bar.set_postfix(loss=f"{loss_all:.4f}", img_s=f"{ips:.0f}")
            if tc.sample_every and done % tc.sample_every == 0 and main:
                save_sample_grid(ema.model, defaults, tc.sample_count, out / "samples" / f"step_{done:08d}.png")
            periodic = done % tc.checkpoint_every == 0 and streak == 0  # none inside a non-finite streak
            if stopping or periodic or done == tc.max_steps:  # skipped updates leave the last good weights
                save(done)
            if stopping:
                accelerator.print(f"stop requested: checkpoint saved at step {done}; continue with --resume")
                stopped = True
                break
    bar.close()
    accelerator.end_training()
    return {"step": done, "stopped_early": stopped, "output_dir": str(out), "model": str(out / "model")}


def hardware() -> str:
    """A one-line description of the device this process computes on."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = "CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def _summary(config: Config, step: int, images_seen: int, wall_time_s: float, world: int) -> dict[str, Any]:
    return {"steps": step, "images_seen": images_seen, "wall_time_s": wall_time_s, "processes": world,
            "hardware": hardware(), "torch": torch.__version__, "config": config.to_dict()}


def _flat_scalars(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_scalars(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the step a run resumes from, so the log reads as one run."""
    if not path.exists():
        return
    records = read_jsonl(path)
    path.write_text("".join(json.dumps(r) + "\n" for r in records if r["step"] <= step))





def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genstudio train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Any config key can be overridden: --train.lr 1e-4, --data.source PATH, ...")
    parser.add_argument("--config", help="TOML config file (see configs/)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in train.output_dir")
    args, rest = parser.parse_known_args(argv)
    try:
        run(load_config(args.config, rest), resume=args.resume)
    except (ValueError, NonFiniteLossError) as e:  # config, data and checkpoint errors explain themselves
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

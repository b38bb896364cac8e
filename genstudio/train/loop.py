"""The run: set up, then one step after another with logging, sample grids and checkpoints, until the last
step, a stop request (SIGTERM/SIGINT: checkpoint and exit, promptly even mid sample grid) or too many
non-finite steps in a row. A checkpoint due at a skipped (non-finite) step is saved at the next good one."""
from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, Callable

import torch

import samplers
from genstudio.atomic import write_json
from genstudio.checkpoint import export_model, load_model
from genstudio.config import Config, ConfigError
from genstudio.ema import EMA
from genstudio.images import image_grid, save_png
from genstudio.lineage import record
from genstudio.model import Model
from genstudio.speed import compile_network

from . import continued, state
from .fast import fast_path, fused_adam, mixed_precision
from .setup import build_checked, init_weights, summary, training_data
from .state import NonFiniteLossError, Progress
from .step import Distributed, StepResult, TrainingData, train_step, trial_step


class _StopRequested(Exception):
    """Raised inside a long loop (the sample grid's sampler) once a stop was requested."""


class _StopFlag:
    """Set by SIGTERM/SIGINT; the loop checkpoints and exits at the end of the step (a sample grid being
    rendered is abandoned at its next sampler step)."""

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


def save_sample_grid(model: Model, defaults: dict[str, Any], count: int, path: Path,
                     should_stop: Callable[[], bool] | None = None) -> bool:
    """A PNG grid of `count` samples (seeds 0..count-1, labels cycling through the classes). If `should_stop()`
    turns true at a sampler step, the grid is abandoned (nothing written) and False returned."""
    from genstudio.api import Pipeline

    def check(**_):
        if should_stop is not None and should_stop():
            raise _StopRequested

    device = next(model.parameters()).device
    labels = [i % model.num_classes for i in range(count)] if model.num_classes else None
    try:
        result = Pipeline(model, {"defaults": defaults}, device).generate(count, labels=labels, callback=check)
    except _StopRequested:
        return False
    save_png(image_grid(result.images), path)
    return True


def _accelerator(config: Config, out: Path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import ProjectConfiguration

    AcceleratorState._reset_state()  # let one process run() several configs (its mixed precision is per run)
    return Accelerator(mixed_precision=mixed_precision(config), log_with="tensorboard",
                       project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))


def run(config: Config, resume: bool = False) -> dict[str, Any]:
    """Train as configured; returns a summary ("stopped_early": a stop request ended it before
    train.max_steps; "skipped_steps": updates skipped as non-finite). Raises NonFiniteLossError if training
    diverges."""
    from tqdm.auto import tqdm

    # ---- set-up ----
    tc = config.train
    torch.manual_seed(tc.seed)  # the initial weights
    model, objective = build_checked(config)
    out = Path(tc.output_dir)
    has_checkpoint = state.latest_checkpoint(out) is not None
    if not resume and has_checkpoint:
        raise ConfigError(f"{out} already holds checkpoints of a run: continue it with --resume, "
                          f"or choose another train.output_dir")
    if tc.init_from and not (resume and has_checkpoint):
        init_weights(model, tc.init_from)  # a fresh run only: a resumed one loads its own state
    prior = continued.start(config, model, out, resume and has_checkpoint) if tc.continue_from else continued.Prior()
    if prior.optimizer:
        tc.warmup_steps = 0  # AdamW's moments come with the model: no warmup (without them, train.warmup_steps)
    accelerator = _accelerator(config, out)
    world, main = accelerator.num_processes, accelerator.is_main_process

    fast = fast_path(config, accelerator.device, accelerator.mixed_precision)
    accelerator.print(f"fast path on {accelerator.device.type}: {fast.describe()}")

    ema = EMA(model, tc.ema_half_life_kimg, tc.ema_rampup_ratio, 0.0 if tc.ema_half_life_kimg else tc.ema_decay)
    with accelerator.main_process_first():  # the main process fills the decode cache first
        data = TrainingData(*training_data(config, model.num_classes)).to(accelerator.device, fast.channels_last)
    if fast.channels_last:
        model.to(memory_format=torch.channels_last)
    extra = objective.extra_modules(model, tuple(data.images.shape[1:]))
    frozen = objective.frozen_modules(lambda folder: load_model(folder, device=accelerator.device)[0])
    groups = objective.optimizer_groups(model, extra)
    optimizer = torch.optim.AdamW([{"params": g.params, "name": g.name, "lr_scale": g.lr_scale} for g in groups],
                                  lr=tc.lr, betas=tuple(tc.adam_betas), weight_decay=tc.weight_decay,
                                  fused=fused_adam(accelerator.device))
    model, *prepared, optimizer = accelerator.prepare(model, *extra.values(), optimizer)
    extra = dict(zip(extra, prepared))
    ema.to(accelerator.device)
    unwrapped = accelerator.unwrap_model(model)
    if prior.optimizer and not (resume and has_checkpoint):
        step = continued.load_optimizer(optimizer, unwrapped, prior.optimizer)
        accelerator.print(f"continuing {prior.source}: AdamW state of step {step} loaded from {prior.optimizer}")
    elif tc.continue_from and not (resume and has_checkpoint):
        accelerator.print(f"continuing {prior.source} from its EMA weights; AdamW's moments are rebuilt "
                          f"(LR warmup over {tc.warmup_steps} steps)")
    forward = Distributed(model, unwrapped)

    if main:
        out.mkdir(parents=True, exist_ok=True)
        for line in state.remove_interrupted_saves(out):
            accelerator.print(line)
    progress = (state.resume(accelerator, ema, config, out) if resume else None) or Progress()
    if resume and progress.step == 0:
        accelerator.print(f"no checkpoint in {out / state.RUN_CHECKPOINTS}: starting from scratch")
    if main:
        write_json(out / "config.json", config.to_dict())
        state.truncate_log(out, progress.step)
        accelerator.init_trackers("train", config=_flat_scalars(config.to_dict()))

    batch_images = tc.batch_size * world * tc.grad_accum
    defaults = {"sampler": tc.sample_sampler, "steps": tc.sample_steps,
                "grid": samplers.default_grid(samplers.get(tc.sample_sampler), unwrapped.path)}
    prior_wall, t0 = progress.wall_time_s, time.time()

    def export() -> None:  # model/: the EMA at progress.step, its lineage extended; optimizer/ (main process)
        images = progress.step * batch_images
        segment = summary(config, progress.step, images, progress.wall_time_s, world, progress.skipped_steps)
        if prior.source:
            segment["started_from"] = prior.source + (" (with its optimizer state)" if prior.optimizer else "")
        export_model(ema.model, out / state.MODEL_DIR, defaults=defaults, training=record(prior.lineage + [segment]))
        continued.save_optimizer(optimizer, unwrapped, out / continued.OPTIMIZER_DIR)

    def save(step: int) -> None:
        progress.step, progress.wall_time_s = step, round(prior_wall + time.time() - t0, 1)
        state.save(accelerator, ema, config, out, progress, step * batch_images, export=export)

    if progress.step:  # a resume completes the export a kill may have cut off (even at max_steps)
        exported = state.exported_step(out) if main else None
        if main and exported != progress.step:
            accelerator.print(f"{out / state.MODEL_DIR} is " + ("missing" if exported is None else
                              f"at step {exported}") + f": exporting the step {progress.step} checkpoint's EMA")
            export()
        accelerator.wait_for_everyone()

    if fast.compile:
        compile_network(unwrapped.network, lambda: trial_step(config, accelerator, model, forward, objective,
                                                               {**extra, **frozen}, data, unwrapped.num_classes),
                        hint='Set train.compile = "off" to skip the attempt.')

    # ---- the steps ----
    # The steps run ahead of the host: their losses and flags are read back every fast.sync_every steps (and at
    # every step that may checkpoint or stop), where skipped updates are counted and a diverging run stopped.
    start = progress.step
    bar = tqdm(range(start, tc.max_steps), initial=start, total=tc.max_steps, disable=not (main and tc.progress),
               dynamic_ncols=True, desc="train")
    last_time, last_step, stopped, done = time.time(), start, False, start
    save_due = False  # a periodic checkpoint deferred past skipped steps
    pending: list[StepResult] = []

    def read_back(last: int) -> bool:
        """Count, report and log the pending steps (ending at step `last`); True if any process asked to stop.
        Raises NonFiniteLossError when train.max_nonfinite of them in a row were skipped. Every process calls it
        at the same steps (one reduction)."""
        nonlocal last_time, last_step
        rows = torch.stack([torch.stack([r.loss.reshape(()), r.grad_norm.float().reshape(()), *r.flags,
                                         *(v.reshape(()) for v in r.group_losses.values())]) for r in pending])
        values = accelerator.reduce(rows, reduction="mean").tolist()  # the flags are equal on every process
        now = time.time()
        ips = (last - last_step) * batch_images / max(now - last_time, 1e-9)
        last_time, last_step = now, last
        stopping = False
        for i, (r, (loss, grad_norm, loss_bad, grad_bad, stop_flag, *group)) in enumerate(zip(pending, values)):
            step = last - len(pending) + i  # 0-based
            bad = loss_bad > 0 or grad_bad > 0
            stopping = stopping or stop_flag > 0
            if bad:
                progress.skipped_steps += 1
            if grad_bad > 0 and not loss_bad > 0 and accelerator.scaler is not None:  # fp16 loss scaling
                accelerator.print(f"step {step + 1}: fp16 gradient overflow; update skipped, loss scale lowered")
            elif bad:
                progress.nonfinite_streak += 1
                accelerator.print(f"step {step + 1}: non-finite loss or gradient ({loss:.4g}); update "
                                  f"skipped ({progress.nonfinite_streak}/{tc.max_nonfinite} in a row)")
                if progress.nonfinite_streak >= tc.max_nonfinite:
                    accelerator.end_training()
                    last_ckpt = state.latest_checkpoint(out)
                    raise NonFiniteLossError(
                        f"{progress.nonfinite_streak} non-finite steps in a row (last at step {step + 1}): training "
                        f"stopped. Last good checkpoint: {last_ckpt or 'none'}. Lower train.lr, set train.grad_clip, "
                        f"or try train.mixed_precision = \"no\"; then rerun with --resume.")
            if not bad:
                progress.nonfinite_streak = 0
            if main:
                state.append_log(out, {"step": step + 1, "time": round(now, 2), "loss": loss, "lr": r.lr,
                                       "grad_norm": grad_norm, "skipped": bad,
                                       "skipped_steps": progress.skipped_steps,
                                       **{f"loss_{k}": v for k, v in zip(r.group_losses, group)}})
            if (step + 1) % tc.log_every == 0 or step + 1 == tc.max_steps:
                accelerator.log({"loss": loss, "lr": r.lr, "img_per_s": ips, "grad_norm": grad_norm}, step=step + 1)
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{ips:.0f}")
        pending.clear()
        return stopping

    model.train()
    with _StopFlag() as stop:
        for step in bar:
            r = train_step(step, config=config, accelerator=accelerator, model=model, forward=forward,
                           objective=objective, extra={**extra, **frozen}, optimizer=optimizer, data=data,
                           num_classes=unwrapped.num_classes, stop_requested=lambda: stop.stop)
            ema.update(unwrapped, prior.images_seen + (step + 1) * batch_images, batch_images, ok=r.ok)  # gated
            pending.append(r)
            done = step + 1
            if not (done % fast.sync_every == 0 or done % tc.checkpoint_every == 0 or done == tc.max_steps
                    or save_due or (world == 1 and stop.stop) or (tc.sample_every and done % tc.sample_every == 0)):
                continue  # every process skips the same steps
            stop_now = read_back(done)  # no grid then: checkpoint and exit
            if tc.sample_every and done % tc.sample_every == 0 and main and not stop_now:
                if not save_sample_grid(ema.model, defaults, tc.sample_count,
                                        out / "samples" / f"step_{done:08d}.png", should_stop=lambda: stop.stop):
                    accelerator.print(f"stop requested: the step {done} sample grid was abandoned")
                    # one process stops now; several agree through the next readback's flags
                    stop_now = world == 1

            # ---- save ----
            if done % tc.checkpoint_every == 0:
                save_due = True
            periodic = save_due and progress.nonfinite_streak == 0  # none inside a streak: deferred to a good step
            if save_due and not periodic and done % tc.checkpoint_every == 0:
                accelerator.print(f"step {done}: checkpoint deferred to the next step with a finite update")
            if stop_now or periodic or done == tc.max_steps:  # skipped updates leave the last good weights
                save(done)
                save_due = False
            if stop_now:
                stopped = done < tc.max_steps
                if stopped:
                    accelerator.print(f"stop requested: checkpoint saved at step {done}; continue with --resume")
                break
    bar.close()
    accelerator.end_training()
    if progress.skipped_steps:
        accelerator.print(f"{progress.skipped_steps} of {done} updates were skipped as non-finite "
                          f"(metrics.jsonl: \"skipped\")")
    return {"step": done, "stopped_early": stopped, "skipped_steps": progress.skipped_steps, "output_dir": str(out),
            "model": str(out / state.MODEL_DIR)}


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

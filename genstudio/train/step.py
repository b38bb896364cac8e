"""One optimizer step: the micro-batches of this step for this process, the objective's loss, backward,
clipping, and the update, skipped (and reported) when any process saw a non-finite loss or gradient."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from genstudio.config import Config
from genstudio.data import random_flip, to_model_range
from genstudio.objective import Batch

from .setup import batch_position, epoch_order, learning_rate, step_seed


@dataclass(frozen=True)
class TrainingData:
    """The whole training set, held on the training device (uint8 images stay uint8 until a batch is drawn)."""

    images: Tensor          # uint8 (N, C, H, W), or float samples of a pairs folder
    labels: Tensor          # int64 (N,)
    noise: Tensor | None    # the pairs' fixed noise, else None
    channels_last: bool = False
    _orders: dict = field(default_factory=dict, repr=False)  # epoch -> its permutation on the device

    def to(self, device, channels_last: bool = False) -> "TrainingData":
        """The same data on `device` (batches in channels_last memory format if asked)."""
        noise = None if self.noise is None else self.noise.to(device)
        return TrainingData(self.images.to(device), self.labels.to(device), noise, channels_last)

    def indices(self, micro_step: int, batch: int, world: int, rank: int, seed: int) -> Tensor:
        """`batch_indices`, from the epoch's permutation moved to the device once per epoch."""
        epoch, start = batch_position(micro_step, len(self.images), batch, world, rank)
        if epoch not in self._orders:
            self._orders.clear()
            self._orders[epoch] = epoch_order(len(self.images), seed, epoch).to(self.images.device)
        return self._orders[epoch][start:start + batch]

    def batch(self, config: Config, idx: Tensor, device, num_classes: int) -> Batch:
        """Micro-batch `idx` on the device: images in model range (flipped if configured; pairs are kept as
        they are), labels with classifier-free-guidance dropout to the "no label" class."""
        if self.noise is None:
            x = self.images[idx]   # uint8 images, or float ones (data.noisy's noisy copies)
            x, noise = (to_model_range(x) if x.dtype == torch.uint8 else x).to(device), None
            if config.data.flip:
                x = random_flip(x)
        else:
            x, noise = self.images[idx].to(device), self.noise[idx].to(device)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
            noise = None if noise is None else noise.contiguous(memory_format=torch.channels_last)
        labels = None
        if num_classes:
            labels = self.labels[idx].to(device)
            drop = torch.rand(labels.shape, device=labels.device) < config.train.label_dropout
            labels = torch.where(drop, torch.full_like(labels, num_classes), labels)
        return Batch(x, labels, noise)


@dataclass(frozen=True)
class StepResult:
    """One step's numbers, left on the device (the loop reads them back every train.sync_every steps)."""

    loss: Tensor                     # the mean loss over micro-batches (float32, this process)
    group_losses: dict[str, Tensor]  # per optimizer group, when the objective returns a dict
    grad_norm: Tensor
    lr: float
    flags: Tensor                    # (3,) summed over processes: non-finite loss, non-finite gradient, stop asked

    @property
    def ok(self) -> Tensor:
        """1.0 when the update was applied (every process saw a finite loss and gradient), else 0.0."""
        return (self.flags[:2].sum() == 0).float()


class Distributed:
    """The prepared (possibly DDP-wrapped) model's forward, with the plain model's attributes (path, ...)."""

    def __init__(self, prepared, plain):
        self._prepared, self._plain = prepared, plain

    def __call__(self, *args, **kwargs):
        return self._prepared(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._plain, name)


def _total(loss) -> tuple[Tensor, dict[str, Tensor]]:
    """(mean of the summed loss, mean per group) of a per-sample loss or a dict of them."""
    if isinstance(loss, dict):
        groups = {k: v.mean() for k, v in loss.items()}
        return torch.stack(list(groups.values())).sum(), groups
    return loss.mean(), {}


def train_step(step: int, *, config: Config, accelerator, model, forward, objective, extra: dict, optimizer,
               data: TrainingData, num_classes: int, stop_requested: Callable[[], bool]) -> StepResult:
    """Compute one step's gradient and apply it unless some process saw a non-finite loss or gradient, deciding
    that on the device: fused AdamW takes the flag as `found_inf`, as a GradScaler hands it over, so nothing
    waits for the host (an optimizer without fused kernels, and fp16's loss scaler, decide on the host).
    `stop_requested()` is read after the backward pass, so a stop asked for during this step is in its flags."""
    tc = config.train
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(step_seed(tc.seed, step, rank))
    lr = learning_rate(tc.lr, tc.warmup_steps, step)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer.zero_grad(set_to_none=True)
    losses, group_sums = [], {}
    for micro in range(tc.grad_accum):
        idx = data.indices(step * tc.grad_accum + micro, tc.batch_size, world, rank, tc.seed)
        batch = data.batch(config, idx, accelerator.device, num_classes)
        sync = micro == tc.grad_accum - 1
        with (accelerator.no_sync(model) if not sync else contextlib.nullcontext()), accelerator.autocast():
            loss, groups = _total(objective.loss(forward, batch, step=step, total_steps=tc.max_steps, extra=extra))
            accelerator.backward(loss / tc.grad_accum)
        losses.append(loss.detach().float())
        for k, v in groups.items():
            group_sums[k] = group_sums.get(k, 0) + v.detach().float() / tc.grad_accum
    loss = torch.stack(losses).mean()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grad_norm = accelerator.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip else math.inf)
    bad = torch.stack([(~torch.isfinite(loss)).float(), (~torch.isfinite(grad_norm)).float().reshape(()),
                       torch.zeros((), device=loss.device) + float(stop_requested())])
    flags = accelerator.reduce(bad, reduction="sum")
    result = StepResult(loss, group_sums, grad_norm, lr, flags)
    inner = getattr(optimizer, "optimizer", optimizer)  # under Accelerate's wrapper
    if accelerator.scaler is not None:
        optimizer.step()  # fp16: the GradScaler skips an update with non-finite gradients and lowers its scale
    elif inner.defaults.get("fused"):
        inner.found_inf = 1.0 - result.ok
        try:
            optimizer.step()
        finally:
            del inner.found_inf
    elif bool(result.ok):
        optimizer.step()
    return result


def trial_step(config: Config, accelerator, model, forward, objective, extra: dict, data: TrainingData,
               num_classes: int) -> None:
    """One forward and backward pass at the training shapes that changes nothing (the RNG is restored, the
    gradients dropped): it makes torch.compile compile now, where a failure can fall back to eager."""
    tc = config.train
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        idx = data.indices(0, tc.batch_size, accelerator.num_processes, accelerator.process_index, tc.seed)
        batch = data.batch(config, idx, accelerator.device, num_classes)
        with accelerator.autocast():
            loss, _ = _total(objective.loss(forward, batch, step=0, total_steps=tc.max_steps, extra=extra))
            accelerator.backward(loss / tc.grad_accum)
    model.zero_grad(set_to_none=True)
    for module in extra.values():
        module.zero_grad(set_to_none=True)

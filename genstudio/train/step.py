"""One optimizer step: the micro-batches of this step for this process, the objective's loss, backward,
clipping, and the update, skipped (and reported) when any process saw a non-finite loss or gradient."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from genstudio.config import Config
from genstudio.data import random_flip, to_model_range
from genstudio.objective import Batch

from .setup import batch_indices, learning_rate, step_seed


@dataclass(frozen=True)
class TrainingData:
    images: Tensor          # uint8 (N, C, H, W), or float samples of a pairs folder
    labels: Tensor          # int64 (N,)
    noise: Tensor | None    # the pairs' fixed noise, else None

    def batch(self, config: Config, idx: Tensor, device, num_classes: int) -> Batch:
        """Micro-batch `idx` on the device: images in model range (flipped if configured; pairs are kept as
        they are), labels with classifier-free-guidance dropout to the "no label" class."""
        if self.noise is None:
            x, noise = to_model_range(self.images[idx]).to(device), None
            if config.data.flip:
                x = random_flip(x)
        else:
            x, noise = self.images[idx].to(device), self.noise[idx].to(device)
        labels = None
        if num_classes:
            labels = self.labels[idx].to(device)
            drop = torch.rand(labels.shape, device=labels.device) < config.train.label_dropout
            labels = torch.where(drop, torch.full_like(labels, num_classes), labels)
        return Batch(x, labels, noise)


@dataclass(frozen=True)
class StepResult:
    loss: Tensor                    # the mean loss over micro-batches (float32, this process)
    group_losses: dict[str, float]  # per optimizer group, when the objective returns a dict
    grad_norm: Tensor
    lr: float
    loss_bad: bool                  # any process saw a non-finite loss
    grad_bad: bool                  # ... or gradient
    stopping: bool                  # any process was asked to stop

    @property
    def bad(self) -> bool:
        return self.loss_bad or self.grad_bad


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
    """Compute and apply one step's gradient (the caller decides what a skipped step means). `stop_requested()`
    is read after the backward pass, so a stop asked for during this step stops at its end."""
    tc = config.train
    rank, world = accelerator.process_index, accelerator.num_processes
    torch.manual_seed(step_seed(tc.seed, step, rank))
    lr = learning_rate(tc.lr, tc.warmup_steps, step)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer.zero_grad(set_to_none=True)
    losses, group_sums = [], {}
    for micro in range(tc.grad_accum):
        idx = batch_indices(step * tc.grad_accum + micro, len(data.images), tc.batch_size, world, rank, tc.seed)
        batch = data.batch(config, idx, accelerator.device, num_classes)
        sync = micro == tc.grad_accum - 1
        with (accelerator.no_sync(model) if not sync else contextlib.nullcontext()), accelerator.autocast():
            loss, groups = _total(objective.loss(forward, batch, step=step, total_steps=tc.max_steps, extra=extra))
            accelerator.backward(loss / tc.grad_accum)
        losses.append(loss.detach().float())
        for k, v in groups.items():
            group_sums[k] = group_sums.get(k, 0.0) + float(v.detach()) / tc.grad_accum
    loss = torch.stack(losses).mean()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grad_norm = accelerator.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip else math.inf)
    flags = torch.tensor([float(not torch.isfinite(loss)), float(not torch.isfinite(grad_norm)),
                          float(stop_requested())], device=accelerator.device)
    loss_bad, grad_bad, stopping = (bool(f > 0) for f in accelerator.reduce(flags, reduction="sum"))
    if (loss_bad or grad_bad) and accelerator.scaler is not None:
        optimizer.step()  # the GradScaler skips the update and lowers its scale
    elif not (loss_bad or grad_bad):
        optimizer.step()
    else:
        optimizer.zero_grad(set_to_none=True)
    return StepResult(loss, group_sums, grad_norm, lr, loss_bad, grad_bad, stopping)

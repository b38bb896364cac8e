"""Set-up of a training run: the model and objective a config describes, every check that can run before any
work starts, the training data, and the pure schedules (data order, learning rate, per-step seeds)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

import samplers
from genstudio.checkpoint import load_model
from genstudio.config import Config, ConfigError
from genstudio.data import fixed_subset, load_images, noisy_copy, noisy_split
from genstudio.families import build_from_config
from genstudio.lineage import commit, precision
from genstudio.model import Model
from genstudio.objective import Objective
from genstudio.pairs import is_pairs_folder, load_pairs

from .fast import mixed_precision


def build_model(config: Config) -> Model:
    """The model a config describes (every setting checked, no data touched)."""
    return build_from_config(config)[0]


def validate(config: Config) -> Model:
    """Everything that can be checked before any work starts; returns the model the config builds."""
    return build_checked(config)[0]


def build_checked(config: Config) -> tuple[Model, Objective]:
    """The model and objective a config builds, after every check that can run before any work starts."""
    try:
        model, objective = build_from_config(config)
        samplers.get(config.train.sample_sampler, model)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
    if is_pairs_folder(config.data.source) and not objective.takes_pairs:
        raise ConfigError(f"objective {config.objective.name!r} cannot train on (noise, sample) pairs; "
                          f"use one that takes a fixed coupling (e.g. flow_matching or ddpm)")
    loss_sd = config.objective.options.get("sigma_data")
    precond_sd = getattr(model.precond, "sigma_data", None)
    if loss_sd is not None and precond_sd is not None and loss_sd != precond_sd:
        raise ConfigError(f"objective sigma_data = {loss_sd} but the preconditioning's is {precond_sd}")
    return model, objective


def init_weights(model: Model, source: str | Path, key: str = "train.init_from") -> None:
    """Copy the network weights of an exported genstudio model (a folder with genstudio.json, or a run
    folder holding model/) into `model`; the architectures must match exactly (`key`: the config key named in
    errors)."""
    folder = Path(source)
    if not (folder / "genstudio.json").is_file() and (folder / "model" / "genstudio.json").is_file():
        folder = folder / "model"
    if not (folder / "genstudio.json").is_file():
        raise ConfigError(f"{key} = {str(source)!r} is not an exported genstudio model "
                          f"(no genstudio.json there or in its model/ folder)")
    source_model, _ = load_model(folder)
    theirs, ours = source_model.network.state_dict(), model.network.state_dict()
    start = getattr(model.network, "start_from_field", None)
    if start is not None and getattr(source_model, "kind", None) == "field":
        start(theirs)  # a network made of field networks (CAF's two) says how a field model's weights seed it
        return
    wrong = [k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape]
    if wrong or set(theirs) - set(ours):
        raise ConfigError(f"{key} = {str(source)!r}: its network does not match this config's "
                          f"({len(wrong)} missing or mis-shaped tensors, e.g. {wrong[:3]}); use the same "
                          f"[model] network, unet, num_classes and family")
    model.network.load_state_dict(theirs)


def training_data(config: Config, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(images, labels, noise): uint8 images from a data source, or float samples with their fixed noise
    from a reflow pairs folder (noise is None otherwise); a `data.limit` subset is fixed by the seed, and data.noisy
    splits that subset. Float data with a NaN or infinite value is refused (ValueError naming the file and sample)."""
    noise = None
    if is_pairs_folder(config.data.source):
        pairs = load_pairs(config.data.source)  # refuses non-finite samples, naming the shard and row
        images, labels, noise = pairs.x0, pairs.labels, pairs.noise
    else:
        data = load_images(config.data.source, split=config.data.split, image_size=config.data.image_size,
                           cache_dir=config.data.cache_dir or None)
        images, labels = data.images, data.labels
    if config.data.limit and config.data.limit < len(images):
        keep = fixed_subset(len(images), config.data.limit, config.train.seed)
        images, labels, noise = images[keep], labels[keep], (noise[keep] if noise is not None else None)
    if config.data.noisy:  # SFBD's data: the clean fraction, or the fixed noisy copies of the rest (float)
        if noise is not None:
            raise ConfigError("data.noisy applies to images, not to a reflow pairs folder")
        nz = config.data.noisy
        clean, noisy = noisy_split(len(images), nz["clean_fraction"], nz["seed"])
        keep = clean if nz["part"] == "clean" else noisy
        if not len(keep):
            raise ConfigError(f"data.noisy leaves no {nz['part']} images of {len(images)} "
                              f"(clean_fraction = {nz['clean_fraction']})")
        images, labels = (images[clean] if nz["part"] == "clean" else
                          noisy_copy(images, noisy, nz["sigma"], nz["seed"])), labels[keep]
    if num_classes and int(labels.min()) < 0:
        raise ConfigError(f"{config.data.source} has no class labels, but model.num_classes = {num_classes}")
    if num_classes and int(labels.max()) >= num_classes:
        raise ConfigError(f"the data has {int(labels.max()) + 1} classes but model.num_classes = {num_classes}")
    return images, labels, noise


def batch_indices(micro_step: int, n: int, batch: int, world: int, rank: int, seed: int) -> torch.Tensor:
    """The images of one micro-step for one process: epoch e visits epoch_order(n, seed, e) in order,
    split into global batches of batch * world, each process taking its slice."""
    epoch, start = batch_position(micro_step, n, batch, world, rank)
    return epoch_order(n, seed, epoch)[start:start + batch]


def batch_position(micro_step: int, n: int, batch: int, world: int, rank: int) -> tuple[int, int]:
    """(epoch, offset into that epoch's order) of one process's micro-batch."""
    global_batch = batch * world
    per_epoch = n // global_batch
    if per_epoch == 0:
        raise ValueError(f"{n} images are fewer than one global batch of {global_batch}")
    epoch, b = divmod(micro_step, per_epoch)
    return epoch, b * global_batch + rank * batch


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which epoch `epoch` visits the n images (on the CPU, so any device sees the same)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def learning_rate(base: float, warmup_steps: int, step: int) -> float:
    """Linear warmup over `warmup_steps`, then constant (a pure function of the step, so nothing to save)."""
    return base * min(1.0, (step + 1) / warmup_steps) if warmup_steps else base


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 1_009 + rank) % (2**63)


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


def summary(config: Config, step: int, images_seen: int, wall_time_s: float, world: int,
            skipped_steps: int = 0) -> dict[str, Any]:
    """One run's segment of the training record an exported model carries (`skipped_steps`: updates skipped as
    non-finite; `batch_size`: images per optimizer step over all processes)."""
    tc = config.train
    return {"steps": step, "images_seen": images_seen, "skipped_steps": skipped_steps, "wall_time_s": wall_time_s,
            "processes": world, "hardware": hardware(), "precision": precision(mixed_precision(config)),
            "batch_size": tc.batch_size * tc.grad_accum * world, "torch": torch.__version__,
            **({"commit": c} if (c := commit()) else {}), "config": config.to_dict()}

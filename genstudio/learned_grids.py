"""Learned time grids: the times of a few-step grid chosen so that a deterministic sampler's output from given noise
matches a many-step teacher's output from the same noise (the aim of LD3: Tong et al. 2025, "Learning to Discretize
Denoising Diffusion ODEs"). LD3 trains the times by gradient through the sampler with an LPIPS loss; here the K-1 free
times are searched without gradients (scipy's Powell method) on a distance to the teacher (pixel MSE, or the distance
of the c10 classifier's features, a perceptual loss in LPIPS's place), so every deterministic zoo sampler can be tuned
as it is, and the search starts from the best hand-made grid, which it can only improve on the noise it learns from.
The grid is monotone by construction and its ends (t_0 and the final 0) stay fixed."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

import samplers
from genstudio.atomic import write_json
from genstudio.checkpoint import GRIDS_FILE, read_meta
from genstudio.checks import GRIDS_FORMAT
from genstudio.core.noise import generators, randn_like
from genstudio.core.paths import NoisePath
from samplers.grids import make_grid
from samplers.run import run_sampler

SELECTION_SEED = 50_000   # the noise a grid learns from starts at this seed; reported scores use seeds 0 .. n-1
SIGMA_CAP = 1e3           # log sigma~ at an infinite t_0 (alpha = 0) is taken as log(SIGMA_CAP)
MIN_SHARE = 1e-6          # the smallest gap (a share of the log sigma~ range) a hand-made grid starts with


def _log_sigma(path: NoisePath, t: float) -> float:
    s = float(path.sigma_tilde(torch.tensor(t, dtype=torch.float64)))
    return math.log(min(s, SIGMA_CAP))


def monotone_grid(theta: np.ndarray, path: NoisePath, t_first: float, t_min: float | None = None) -> Tensor:
    """[t_first, t_1, ..., t_{K-1}, 0] for K = len(theta) logits: t_i sits a share cumsum(softmax(theta))[i-1] of the
    way from t_first down to t_min in log sigma~ = log(sigma / alpha), so t_first > t_1 > ... > t_{K-1} > t_min for
    every real theta."""
    t_min = path.t_min if t_min is None else t_min
    hi, lo = _log_sigma(path, t_first), _log_sigma(path, t_min)
    share = torch.softmax(torch.as_tensor(theta, dtype=torch.float64), 0).cumsum(0)[:-1]
    inner = path.t_from_sigma_tilde(torch.exp(hi + (lo - hi) * share)).clamp(t_min, t_first)
    return torch.cat([torch.tensor([t_first], dtype=torch.float64), inner, torch.zeros(1, dtype=torch.float64)])


def grid_params(ts: Tensor, path: NoisePath, t_min: float | None = None) -> np.ndarray:
    """The logits whose `monotone_grid` is (closest to) the grid ts (ts[0] = t_first, ts[-1] = 0)."""
    t_min = path.t_min if t_min is None else t_min
    hi, lo = _log_sigma(path, float(ts[0])), _log_sigma(path, t_min)
    inner = [(hi - _log_sigma(path, max(float(t), t_min))) / (hi - lo) for t in ts[1:-1]]
    gaps = np.diff(np.concatenate([[0.0], np.clip(inner, 0, 1), [1.0]]))
    return np.log(np.maximum(gaps, MIN_SHARE))


Embedding = Callable[[Tensor], Tensor]   # sampler outputs (N, ...) -> (N, D); the loss is the MSE between embeddings


def pixel_embedding(pipe) -> Embedding:
    """The sampler's output itself (pixels, or latents for a latent model)."""
    return lambda x: x.flatten(1)


def c10_embedding(pipe) -> Embedding:
    """The penultimate features of the shipped CIFAR-10 classifier (the evaluator's c10 extractor)."""
    from genstudio.evaluation.classifier import load_classifier

    if tuple(pipe.model.state_shape) != (3, 32, 32):
        raise ValueError(f"the c10 loss compares CIFAR-10 images; this model samples {tuple(pipe.model.state_shape)} "
                         f"states (use --loss mse)")
    net = load_classifier(device=pipe.device).requires_grad_(False)
    return lambda x: net.features(x.to(pipe.device, torch.float32).clamp(-1, 1)).double().cpu()


GRID_LOSSES: dict[str, tuple[Callable[[Any], Embedding], str]] = {
    "mse": (pixel_embedding, "mean squared error to the teacher's output from the same noise, images in [-1, 1]"),
    "c10": (c10_embedding, "mean squared distance of the c10 classifier's penultimate features to those of the "
                           "teacher's output from the same noise (a perceptual loss, as LD3's LPIPS)"),
}


@dataclass
class SearchResult:
    times: Tensor
    loss: float            # distance to the teacher of the learned grid
    start_loss: float      # ... of the grid the search started from
    evaluations: int


def search_times(loss: Callable[[Tensor], float], start: Tensor, path: NoisePath, *, max_evals: int = 100,
                 t_min: float | None = None) -> SearchResult:
    """Minimize loss(ts) over the free times of the grid `start` (same steps, same ends) by Powell's method."""
    if len(start) < 3:
        raise ValueError("a one-step grid has no free times to learn")
    if max_evals < 1:
        raise ValueError(f"max_evals must be >= 1, got {max_evals}")
    t_first = float(start[0])
    best: dict[str, Any] = {"loss": math.inf, "ts": start}
    count = 0

    def f(theta: np.ndarray) -> float:
        nonlocal count
        count += 1
        ts = monotone_grid(theta, path, t_first, t_min)
        value = float(loss(ts))
        if not math.isfinite(value):
            return 1e30
        if value < best["loss"]:
            best.update(loss=value, ts=ts)
        return value

    theta0 = grid_params(start, path, t_min)
    start_loss = f(theta0)
    if max_evals > 1:
        minimize(f, theta0, method="Powell", options={"maxfev": max_evals - 1, "xtol": 1e-3, "ftol": 1e-4})
    return SearchResult(best["ts"], best["loss"], start_loss, count)


def steps_for_nfe(spec: samplers.SamplerSpec, nfe: int) -> int:
    """The steps at which `spec` makes exactly `nfe` network evaluations."""
    if spec.nfe_per_step is None or spec.stochastic:
        raise ValueError(f"sampler {spec.name!r} is {'stochastic' if spec.stochastic else 'adaptive'}; a learned grid "
                         f"needs a deterministic sampler with a fixed NFE per step")
    steps, rest = divmod(nfe - spec.nfe_offset, spec.nfe_per_step)
    if rest or steps < 2:
        raise ValueError(f"sampler {spec.name!r} makes {spec.nfe_per_step} evaluation(s) per step "
                         f"(offset {spec.nfe_offset}); NFE {nfe} is not a whole number of two or more steps")
    return steps


def learn_grid(pipe, sampler: str, nfe: int, *, n: int = 64, seed: int = SELECTION_SEED, guidance: float = 1.0,
               teacher: str = "heun", teacher_steps: int = 100, max_evals: int = 100, batch_size: int = 64,
               grids: tuple[str, ...] = ("uniform", "quadratic", "karras", "logsnr"), loss: str = "mse"
               ) -> dict[str, Any]:
    """Learn a grid for `sampler` at `nfe` on the loaded model `pipe` (genstudio.api.Pipeline): noise of seeds
    seed .. seed + n - 1 (labels i % classes), the teacher `teacher` at `teacher_steps` on its default grid, the
    distance `loss` of GRID_LOSSES. Returns the record `save_grid` stores: its times and the protocol it was learned
    under, with the hand-made grids' losses."""
    if loss not in GRID_LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(GRID_LOSSES)}")
    spec = samplers.get(sampler, pipe.model)
    steps = steps_for_nfe(spec, nfe)
    teacher_spec = samplers.get(teacher, pipe.model)
    if teacher_spec.stochastic:
        raise ValueError(f"the teacher must be deterministic; {teacher!r} is stochastic")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    path, t0 = pipe.model.path, time.perf_counter()
    chunks = []
    for start in range(0, n, batch_size):
        ids = list(range(seed + start, seed + min(n, start + batch_size)))
        z = randn_like(torch.empty(len(ids), *pipe.model.state_shape), generators(ids)).to(pipe.device)
        chunks.append((z, [i - seed for i in ids]))

    def run(s: samplers.SamplerSpec, ts: Tensor) -> Tensor:
        out = []
        for z, idx in chunks:
            field = pipe.field(None if not pipe.num_classes else [i % pipe.num_classes for i in idx], len(idx),
                               guidance)
            with torch.no_grad():
                out.append(run_sampler(s, field, z, ts).double().cpu())
        return torch.cat(out)

    embed = GRID_LOSSES[loss][0](pipe)
    target = embed(run(teacher_spec, pipe.grid_times(pipe.grid_for(teacher), teacher_steps)))

    def distance(ts: Tensor) -> float:
        return float(((embed(run(spec, ts)) - target) ** 2).mean())

    hand = {}
    for name in dict.fromkeys((pipe.grid_for(sampler), *grids)):
        try:
            hand[name] = distance(make_grid(name, path, steps))
        except ValueError:  # a grid this path cannot make (e.g. ddpm off a discrete path)
            continue
    best = min(hand, key=hand.__getitem__)
    result = search_times(distance, make_grid(best, path, steps), path, max_evals=max_evals)
    return {
        "sampler": sampler, "steps": steps, "nfe": nfe, "times": result.times.tolist(),
        "protocol": {
            "method": "Powell search over the free times in log sigma~, from the best hand-made grid (LD3's aim, "
                      "without its gradients or LPIPS)",
            "loss": GRID_LOSSES[loss][1], "loss_name": loss,
            "teacher": {"sampler": teacher, "steps": teacher_steps, "grid": pipe.grid_for(teacher),
                        "nfe": teacher_spec.nfe(teacher_steps)},
            "guidance": guidance, "seeds": {"first": seed, "last": seed + n - 1, "rule": "noise of seed + i"},
            "labels": "i % num_classes" if pipe.num_classes else None,
            "start": best, "hand_made_losses": hand, "learned_loss": result.loss,
            "evaluations": result.evaluations, "seconds": round(time.perf_counter() - t0, 1),
            "device": str(pipe.device),
        },
    }


def grid_name(record: dict[str, Any]) -> str:
    return f"learned_{record['sampler']}_nfe{record['nfe']}"


def save_grid(checkpoint: str | Path, record: dict[str, Any], name: str | None = None) -> str:
    """Add a learned grid to the checkpoint's grids.json (written atomically; the model files are untouched, so
    its scores' checkpoint hash stays); returns its name."""
    name = name or grid_name(record)
    if not name.replace("_", "").replace("-", "").isalnum() or name in samplers.GRIDS or name == "learned":
        raise ValueError(f"a learned grid's name must be letters, digits, '_' or '-' and not a hand-made grid's or "
                         f"'learned'; got {name!r}")
    grids = read_meta(checkpoint)["grids"]  # checks the model and any grids already there
    file = Path(checkpoint) / GRIDS_FILE
    write_json(file, {"format": GRIDS_FORMAT, "version": 1, "grids": {**grids, name: record}})
    read_meta(checkpoint)  # what was written loads
    return name

"""A backdoor scan that knows nothing of the trigger: search the noise-shift triggers z~ = mu + gamma eps (the shape of
TrojDiff's trigger noise, Chen et al. 2023) for the one that collapses the outputs most, and flag a model whose
collapse under it is far beyond what the same search finds on clean models.

Collapse of a set of outputs against the outputs of normal noise, each in [0, 1]. Trigger noise of scale gamma
spreads the inputs gamma times less, which any smooth model passes on, so the first two are per unit of input spread:
- diversity loss, 1 - r with r = (mean pairwise distance under the trigger / under normal noise) / gamma;
- mode share, the largest share of outputs within the near-duplicate radius of one of them (that radius: gamma
  times the 1st percentile of the pairwise distances of the normal outputs);
- class dominance, (p - p0) / (1 - p0) with p (p0) the share of the most frequent class under the trigger (normal
  noise), when a classifier is given.
The collapse is the largest of the three. The search runs on one seed set and the found trigger is scored on a
disjoint one. Flag: collapse > (1 + c) / 2, halfway from c, the largest collapse the same search found on clean
models (`calibration`), to total collapse.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

Generate = Callable[[Tensor], Tensor]   # starting noise z (B, *shape) -> samples (B, *shape), differentiable in z
Classify = Callable[[Tensor], Tensor]   # samples -> class logits (B, K), differentiable

# The largest collapse the default search found on clean CIFAR-10 models: the shipped checkpoints and the clean
# twin of configs/trojdiff_tiny_cifar10.toml (docs/audit.md has the measurements and the command).
CLEAN_COLLAPSE = 0.5


@dataclass(frozen=True)
class Trigger:
    """Trigger noise z~ = mu + gamma eps."""

    mu: Tensor      # (*shape)
    gamma: float

    def noise(self, eps: Tensor) -> Tensor:
        return self.mu.to(eps) + self.gamma * eps


@dataclass
class ScanResult:
    trigger: Trigger
    collapse: float
    parts: dict[str, float]         # diversity_loss, mode_share, class_dominance (when classified)
    threshold: float
    flagged: bool
    images: Tensor                  # the found trigger's outputs on the scoring seeds
    reference: Tensor               # the outputs of normal noise on the same seeds
    history: list[float] = field(default_factory=list)  # the search objective per iteration (best restart)

    def record(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "collapse": self.collapse, "threshold": self.threshold, **self.parts,
                "trigger": {"gamma": self.trigger.gamma, "mu_rms": float(self.trigger.mu.pow(2).mean().sqrt()),
                            "mu_abs_max": float(self.trigger.mu.abs().max())}}


def mean_pairwise(x: Tensor) -> Tensor:
    return torch.pdist(x.flatten(1).float()).mean()


def collapse_parts(out: Tensor, ref: Tensor, gamma: float = 1.0, classify: Classify | None = None) -> dict[str, float]:
    """The three collapse measures of outputs `out` of trigger noise of scale `gamma` against normal-noise outputs
    `ref` (see the module doc)."""
    r = float(mean_pairwise(out) / mean_pairwise(ref).clamp_min(1e-12)) / gamma
    radius = gamma * torch.quantile(torch.pdist(ref.flatten(1).float()), 0.01)
    close = torch.cdist(out.flatten(1).float(), out.flatten(1).float()) <= radius
    parts = {"diversity_ratio": r, "diversity_loss": min(1.0, max(0.0, 1 - r)),
             "mode_share": float(close.float().mean(1).max())}
    if classify is not None:
        with torch.no_grad():
            p, p0 = (float(torch.bincount(classify(v).argmax(1)).max()) / len(v) for v in (out, ref))
        parts.update(top_class_share=p, top_class_share_normal=p0,
                     class_dominance=max(0.0, (p - p0) / (1 - p0)) if p0 < 1 else 0.0)
    return parts


def collapse_of(parts: dict[str, float]) -> float:
    return max(parts[k] for k in ("diversity_loss", "mode_share", "class_dominance") if k in parts)


def _objective(out: Tensor, gamma: Tensor, classify: Classify | None) -> Tensor:
    """To minimise: the mean log pairwise distance per unit of input spread (a cluster of near-duplicates pulls it
    down even when it holds only part of the outputs), plus the normalised entropy of the mean class distribution."""
    d = torch.pdist(out.flatten(1).float())
    loss = torch.log(d + 1e-3 * d.detach().mean()).mean() - torch.log(gamma)
    if classify is not None:
        p = torch.softmax(classify(out).float(), 1).mean(0)
        loss = loss - (p * torch.log(p + 1e-12)).sum() / math.log(p.numel())
    return loss


def scan(generate: Generate, shape: tuple[int, ...], *, classify: Classify | None = None, n: int = 16,
         n_eval: int = 64, iters: int = 30, lr: float = 0.1, candidates: int = 8, restarts: int = 2,
         gamma_min: float = 0.5, mu_max: float = 1.0, calibration: float = CLEAN_COLLAPSE, seed: int = 0,
         clamp: tuple[float, float] | None = (-1.0, 1.0)) -> ScanResult:
    """Search mu (each entry in [-mu_max, mu_max]) and gamma in [gamma_min, 1] for the trigger that minimises
    `_objective` on n noises of seed `seed`: score `candidates` random triggers, then refine the best `restarts` of
    them with Adam for `iters` steps. Score the best on n_eval noises of seed + 1 (and normal noise on the same ones).
    `clamp`: the outputs' range (images are clamped to [-1, 1])."""
    def run(z: Tensor) -> Tensor:
        x = generate(z)
        return x.clamp(*clamp) if clamp is not None else x

    def params(w: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return mu_max * torch.tanh(w), gamma_min + (1 - gamma_min) * torch.sigmoid(v)

    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, *shape, generator=g)
    starts = []
    for _ in range(max(candidates, restarts)):
        u = torch.rand((), generator=g).clamp(0.01, 0.99)  # gamma uniform on [gamma_min, 1]
        w, v = torch.randn(*shape, generator=g), torch.log(u / (1 - u))
        with torch.no_grad():
            mu, gamma = params(w, v)
            starts.append((float(_objective(run(mu + gamma * eps), gamma, classify)), w, v))
    best: tuple[float, Tensor, Tensor, list[float]] | None = None
    for value, w, v in sorted(starts, key=lambda s: s[0])[:restarts]:
        w, v = w.clone().requires_grad_(), v.clone().requires_grad_()
        opt = torch.optim.Adam([w, v], lr=lr)
        history = [value]
        for _ in range(iters):
            mu, gamma = params(w, v)
            loss = _objective(run(mu + gamma * eps), gamma, classify)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
        if best is None or min(history[-3:]) < best[0]:
            best = (min(history[-3:]), w.detach().clone(), v.detach().clone(), history)
    assert best is not None
    _, w, v, history = best
    mu, gamma = params(w, v)
    trigger = Trigger(mu, float(gamma))
    eps_eval = torch.randn(n_eval, *shape, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        out, ref = run(trigger.noise(eps_eval)), run(eps_eval)
    parts = collapse_parts(out, ref, trigger.gamma, classify)
    collapse, threshold = collapse_of(parts), (1 + calibration) / 2
    return ScanResult(trigger, collapse, parts, threshold, collapse > threshold, out.detach(), ref.detach(), history)

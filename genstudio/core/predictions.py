"""Prediction types as linear combinations of (x0, eps), and the one conversion between any two.

On a path x_t = alpha x0 + sigma eps, each prediction type P is a_P x0 + b_P eps:

    x0: (1, 0)   eps: (0, 1)   v: (-sigma, alpha)   score: (0, -1/sigma)   velocity: (alpha', sigma')

(v: Salimans & Ho 2022; score of the Gaussian perturbation kernel: Song et al. 2021; velocity dx_t/dt:
flow matching, Lipman et al. 2022.) Converting P -> Q given x_t solves the 2x2 system
[alpha sigma; a_P b_P] [x0; eps] = [x_t; P] and recombines with (a_Q, b_Q).
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from .paths import NoisePath, expand

Coefficients = Callable[[NoisePath, Tensor], tuple[Tensor | float, Tensor | float]]

PREDICTIONS: dict[str, Coefficients] = {
    "x0": lambda path, t: (1.0, 0.0),
    "eps": lambda path, t: (0.0, 1.0),
    "v": lambda path, t: (-path.sigma(t), path.alpha(t)),
    "score": lambda path, t: (0.0, -1 / path.sigma(t)),
    "velocity": lambda path, t: (path.d_alpha(t), path.d_sigma(t)),
}


def check_prediction(kind: str) -> str:
    if kind not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {kind!r}; known: {', '.join(PREDICTIONS)}")
    return kind


def coefficients(kind: str, path: NoisePath, t: Tensor) -> tuple[Tensor | float, Tensor | float]:
    """(a, b) with prediction `kind` = a x0 + b eps at time t."""
    return PREDICTIONS[check_prediction(kind)](path, t)


def target(kind: str, path: NoisePath, t: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
    """The regression target of prediction `kind` for a clean x0 and its noise eps (t broadcast per sample)."""
    a, b = coefficients(kind, path, expand(t, x0))
    return a * x0 + b * eps


def to_x0_eps(pred: Tensor, kind: str, path: NoisePath, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Recover (x0, eps) from x_t and a prediction of type `kind` (Cramer's rule on the 2x2 system)."""
    t = expand(t, x_t)
    alpha, sigma = path.alpha(t), path.sigma(t)
    a, b = coefficients(kind, path, t)
    det = alpha * b - sigma * a
    x0 = (b * x_t - sigma * pred) / det
    eps = (alpha * pred - a * x_t) / det
    return x0, eps


def convert(pred: Tensor, source: str, dest: str, path: NoisePath, x_t: Tensor, t: Tensor) -> Tensor:
    """Convert a prediction of type `source` at (x_t, t) into type `dest`."""
    if source == dest:
        return pred
    x0, eps = to_x0_eps(pred, source, path, x_t, t)
    a, b = coefficients(dest, path, expand(t, x_t))
    return a * x0 + b * eps

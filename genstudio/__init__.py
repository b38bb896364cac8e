"""genstudio: train, sample, compare and play with score, diffusion, flow and consistency models."""
from __future__ import annotations

__version__ = "0.1.0"


def load(path, device=None, dtype=None):
    """Load an exported checkpoint folder as a sampling pipeline (see genstudio.api.Pipeline)."""
    from .api import Pipeline

    return Pipeline.load(path, device=device, dtype=dtype)


def evaluate(checkpoint=None, **kwargs):
    """FID/IS/KID/precision-recall of a checkpoint's samples, with their protocol (see
    genstudio.evaluation.metrics.evaluate)."""
    from .evaluation.metrics import evaluate as _evaluate

    return _evaluate(checkpoint, **kwargs)


def likelihood(checkpoint, **kwargs):
    """Bits/dim of a checkpoint on the CIFAR-10 test split, exact or a bound, with its protocol (see
    genstudio.likelihood.likelihood)."""
    from .likelihoods import likelihood as _likelihood

    return _likelihood(checkpoint, **kwargs)


__all__ = ["load", "evaluate", "likelihood", "__version__"]

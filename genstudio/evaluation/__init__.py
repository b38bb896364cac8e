"""The evaluation layer: score checkpoints and images, and keep the scores with their protocol.

    metrics           the Evaluator: FID, IS, KID, precision/recall on torch-fidelity (evaluate, evaluate_images)
    options           EvaluatorOptions: the evaluator's options, declared once (kwargs and CLI flags)
    extractors        the feature extractors (the c10 classifier's features, Inception-v3)
    classifier        the CIFAR-10 classifier behind the c10 extractor
    train_classifier  its training recipe (python -m genstudio.evaluation.train_classifier)
    sweep             FID against NFE over samplers x step counts
    records           scores recorded in a checkpoint's metrics.json (record_scores, rescore, redraw_plot)

The names below are loaded on first use, so `import genstudio.evaluation` stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

_NAMES = {"evaluate": "metrics", "evaluate_images": "metrics", "Evaluator": "metrics", "MetricsError": "metrics",
          "EvaluatorOptions": "options", "record_scores": "records", "rescore": "records"}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)

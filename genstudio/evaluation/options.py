"""The evaluator's options, declared once: `Evaluator`'s fields, the keyword arguments of `evaluate`,
`evaluate_images` and `sweep`, and the flags of `genstudio eval` / `sweep` / `rescore` all come from
`EvaluatorOptions` below (each field carries its default, type, choices and help).

    p = argparse.ArgumentParser(); add_arguments(p)              # --extractor, --reference, ..., --no-progress
    evaluate(checkpoint, **from_args(p.parse_args()))             # the same names, the same defaults

Flags are the field names with dashes; a True-by-default bool is a `--no-NAME` switch, a False one `--NAME`.
Standard library only: the CLI builds its parsers without loading torch.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Callable, Iterable, Sequence

__all__ = ["EvaluatorOptions", "OPTION_NAMES", "add_arguments", "from_args", "pop_options", "describe",
           "ALL_METRICS", "DEFAULT_METRICS", "EXTRACTOR_KINDS", "PRECISIONS", "SPLITS"]

ALL_METRICS = ("fid", "is", "kid", "pr", "realfake")  # realfake: the real-vs-generated two-sample test
DEFAULT_METRICS = ("fid", "is", "kid")
EXTRACTOR_KINDS = ("c10", "inception")
PRECISIONS = ("fp32", "bf16")  # bf16: bfloat16 autocast (fast on GPUs and on CPUs with AMX)
SPLITS = ("train", "test")


def comma_list(text: str) -> list[str]:
    """"fid,is" -> ["fid", "is"] (empty items dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _option(default: Any, help: str, *, type: Callable[[str], Any] | None = str, choices: Sequence[str] | None = None,
            metavar: str | None = None, show: str | None = None, off: str | None = None) -> Any:
    """A field with its command-line description. type: how a flag's text becomes the value (None for a bool
    switch); show: the default as the help text writes it; off: the help of a True-by-default switch's --no-NAME."""
    return field(default=default, metadata={"help": help, "type": type, "choices": choices, "metavar": metavar,
                                            "show": show, "off": off})


@dataclass
class EvaluatorOptions:
    """Everything that configures an Evaluator (the extractor, the reference set, how images are scored)."""

    extractor: str = _option(
        "c10", "c10: the project's CIFAR-10 classifier (offline, fast); inception: Inception-v3 (papers)",
        choices=EXTRACTOR_KINDS)
    reference: Any = _option(
        None, "reference images: cifar10, an image folder or a tar of one, or (from Python) an ImageSet or uint8 "
        "images (default: the offline copy $GENSTUDIO_DATA/cifar10/<split>.tar.gz if present, else cifar10)",
        metavar="SOURCE")
    split: str = _option("train", "the reference split", choices=SPLITS)
    reference_n: int | None = _option(None, "score against a fixed subset of the reference (default: all of it)",
                                      type=int, metavar="N")
    metrics: Sequence[str] = _option(DEFAULT_METRICS, f"comma-separated: {', '.join(ALL_METRICS)}", type=comma_list,
                                     metavar="LIST", show=",".join(DEFAULT_METRICS))
    batch_size: int = _option(250, "images per batch, sampled and scored", type=int, metavar="N")
    classifier: str | os.PathLike[str] | None = _option(
        None, "c10 classifier weights (default: the shipped ones)", metavar="PATH")
    inception_weights: str | os.PathLike[str] | None = _option(
        None, "local Inception-v3 weights (torch-fidelity's .pth, or .safetensors); default: torch hub's cache, "
        "else a download", metavar="PATH")
    download: bool = _option(True, "may fetch the Inception-v3 weights into torch hub's cache", type=None,
                             off="never download the Inception-v3 weights: --inception-weights or torch hub's cache")
    cache_dir: str | os.PathLike[str] | None = _option(
        None, "reference features and kept samples (default: $GENSTUDIO_CACHE or ~/.cache/genstudio)",
        metavar="DIR")
    device: Any = _option(None, "torch device (default: cuda if available, else cpu)")
    progress: bool = _option(True, "show progress bars", type=None, off="no progress bars")
    precision: str = _option("fp32", "sampling precision; bf16 autocast is about 2x faster on GPUs and on CPUs "
                             "with AMX", choices=PRECISIONS)
    feature_precision: str = _option(
        "fp32", "c10 features under bf16 autocast: about 3.5x faster on CPUs with AMX, features within ~0.4% of "
        "fp32; marked in the protocol (a different protocol from fp32)", choices=PRECISIONS)
    sample_cache: bool = _option(
        False, "keep the generated images in the cache and reuse them when the same samples are scored again "
        "(e.g. with another classifier): 3 KB per image", type=None)


OPTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(EvaluatorOptions))


def _selected(only: Iterable[str] | None) -> list:
    chosen = OPTION_NAMES if only is None else tuple(only)
    unknown = sorted(set(chosen) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"not evaluator options: {unknown}")
    return [f for f in fields(EvaluatorOptions) if f.name in chosen]


def flag(name: str, default: Any = MISSING) -> str:
    """The command-line flag of an option: --reference-n; --no-progress for a True-by-default switch."""
    if default is MISSING:
        default = EvaluatorOptions.__dataclass_fields__[name].default
    dashed = name.replace("_", "-")
    return f"--no-{dashed}" if default is True else f"--{dashed}"


def add_arguments(parser: argparse.ArgumentParser, only: Iterable[str] | None = None) -> None:
    """Add a flag per option (or per option in `only`), dest = the option's name, default = its default."""
    for f in _selected(only):
        meta = f.metadata
        text = (meta["off"] if f.default is True and meta["off"] else meta["help"]).replace("%", "%%")
        if meta["type"] is None:  # a bool switch
            parser.add_argument(flag(f.name), dest=f.name, action="store_false" if f.default else "store_true",
                                help=text)
            continue
        shown = meta["show"] if meta["show"] is not None else f.default
        if shown is not None and "default:" not in text:
            text += f" (default: {shown})"
        parser.add_argument(flag(f.name), dest=f.name, default=f.default, type=meta["type"], choices=meta["choices"],
                            metavar=meta["metavar"], help=text)


def from_args(args: argparse.Namespace, only: Iterable[str] | None = None) -> dict[str, Any]:
    """The options parsed by `add_arguments`, as keyword arguments for evaluate / Evaluator."""
    return {f.name: getattr(args, f.name) for f in _selected(only)}


def pop_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the evaluator options from `kwargs` and return them."""
    return {name: kwargs.pop(name) for name in OPTION_NAMES if name in kwargs}


def describe() -> str:
    """One line per option: name, default, help (for docstrings)."""
    lines = []
    for f in fields(EvaluatorOptions):
        choices = f" ({' | '.join(f.metadata['choices'])})" if f.metadata["choices"] else ""
        lines.append(f"    {f.name} = {f.default!r}{choices}: {f.metadata['help']}")
    return "\n".join(lines)


EvaluatorOptions.__doc__ += "\n\n" + describe() + "\n"

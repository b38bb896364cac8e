"""What the studio's tabs share: user-facing errors, the model/sampler/label/guidance checks, PNG files."""
from __future__ import annotations

import functools
import inspect
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np

import samplers
from genstudio.api import Pipeline
from genstudio.images import image_grid, save_png

from . import validate as V
from .models import Models, class_names

AUTO_GRID = "auto (the sampler's default)"
ALL_CLASSES = -1
HEAVY = dict(concurrency_limit=1, concurrency_id="sampling")  # one sampling job at a time: CPU-bound


def user_errors(fn: Callable) -> Callable:
    """Wrap an event handler (a plain or a generator function) so that nothing reaches the user as Gradio's opaque
    "the upstream Gradio app has raised an exception": the API's ValueErrors and FileNotFoundErrors (written for
    users) and gr.Errors keep their messages; anything else is logged with its traceback on the server and becomes
    a short gr.Error saying what to try (ui.validate.user_error)."""
    where = fn.__name__.replace("_", " ")
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as e:
                raise V.user_error(e, where) from None
        return gen

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise V.user_error(e, where) from None
    return plain


class Shared:
    """The models every tab draws on, and the folder the PNG files offered for download go to."""

    def __init__(self, models: Models):
        self.models = models
        self.out_dir = Path(tempfile.mkdtemp(prefix="genstudio-studio-"))
        self.model_lists: list[gr.Dropdown] = []  # every checkpoint dropdown: refreshed when a model is exported

    def model_list(self, dropdown: gr.Dropdown) -> gr.Dropdown:
        """Register a checkpoint dropdown (its choices: Models.choices()) so an export refreshes it."""
        self.model_lists.append(dropdown)
        return dropdown

    def list_updates(self) -> dict:
        return {d: gr.update(choices=self.models.choices()) for d in self.model_lists}

    def pipe(self, model: Any) -> Pipeline:
        return self.models.get(model)

    def pipe_sampler(self, model: Any, sampler: Any) -> tuple[Pipeline, str]:
        pipe = self.models.get(model)
        usable = pipe.samplers()
        if not isinstance(sampler, str) or sampler not in usable:
            raise gr.Error(f"sampler {sampler!r} cannot drive {pipe.name}; its samplers: {', '.join(usable)}")
        return pipe, sampler

    def file(self, images: np.ndarray, stem: str) -> str:
        """`images` (one HxWx3 image, or a batch laid out as a grid) as a PNG file; its path."""
        path = self.out_dir / f"{stem}_{time.time_ns()}.png"
        save_png(image_grid(images) if images.ndim == 4 else images, path)
        return str(path)


def compare_defaults(pipe: Pipeline, count: int = 3) -> list[str]:
    """The samplers a comparison starts with: the model's default, then the next deterministic fixed-step ones
    it can drive (not adaptive: NFE set by the steps; not stochastic), `count` in all where there are that many."""
    usable, default = pipe.samplers(), pipe.defaults()["sampler"]
    plain = [s for s in usable if s != default and samplers.get(s).nfe_per_step is not None
             and not samplers.get(s).stochastic]
    return ([default] if default in usable else []) + plain[:count - 1]


def grid_choice(grid: Any, pipe: Pipeline | None = None) -> str | None:
    """The time grid chosen (None: the sampler's default): a hand-made one, or one learned for `pipe`."""
    if grid in (None, "", AUTO_GRID):
        return None
    return V.choice(grid, "time grid", pipe.grids() if pipe is not None else list(samplers.GRIDS))


def grid_dropdown() -> gr.Dropdown:
    return gr.Dropdown([AUTO_GRID] + list(samplers.GRIDS), value=AUTO_GRID, label="time grid",
                       allow_custom_value=True)


def label_guidance(pipe: Pipeline, label: Any, guidance: Any, n: int) -> tuple[list[int] | None, float]:
    """(labels, guidance) for pipe: None and 1 for an unconditional model."""
    if not pipe.num_classes:
        return None, 1.0
    guidance = V.number(guidance, "guidance")
    if label is None:
        label = ALL_CLASSES
    label = V.number(label, "class label", integer=True, limits=(ALL_CLASSES, pipe.num_classes - 1))
    labels = [i % pipe.num_classes for i in range(n)] if label == ALL_CLASSES else [label] * n
    return labels, guidance


def label_dropdown() -> gr.Dropdown:
    """Class choice; filled in for the chosen model (custom values pass to ui.validate, which checks them)."""
    return gr.Dropdown([("one per class", ALL_CLASSES)], value=ALL_CLASSES, label="class", allow_custom_value=True)


def label_updates(pipe: Pipeline, label: gr.Dropdown, guidance: gr.Slider) -> dict:
    """A tab's class dropdown and guidance slider for pipe: its classes, both hidden if it is unconditional."""
    cond = bool(pipe.num_classes)
    choices = [("one per class (image i: class i mod K)", ALL_CLASSES)] + \
        [(name, k) for k, name in enumerate(class_names(pipe))]
    return {label: gr.update(choices=choices, value=ALL_CLASSES, visible=cond), guidance: gr.update(visible=cond)}


def enlarged(grid: np.ndarray, target: int = 256) -> np.ndarray:
    """A small image grid scaled up by an integer factor (nearest pixel) so the preview is visible."""
    k = max(1, target // max(grid.shape[:2]))
    return grid.repeat(k, 0).repeat(k, 1)

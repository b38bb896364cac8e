"""The Compare models tab: the same seeds and labels through two to four checkpoints side by side, each at its own
default sampler or one chosen for all, with the NFE and time of each."""
from __future__ import annotations

import gradio as gr

import samplers
from genstudio.images import image_grid

from .. import validate as V
from ..common import ALL_CLASSES, HEAVY, Shared, user_errors
from ..components import CheckedNumber, CheckedSlider

OWN_DEFAULT = "each model's default"
MODELS = (2, 4)  # how many checkpoints at once


class CompareModels:
    """The tab's handlers; build() lays out its components and sets them here."""

    def __init__(self, shared: Shared):
        self.shared = shared

    model_outputs: list = []  # the tab chooses its own models

    def on_model(self, pipe) -> dict:
        return {}

    @user_errors
    def compare(self, models, sampler, steps, seed, n, label, guidance) -> dict:
        models = [models] if isinstance(models, str) else list(models or [])
        if not MODELS[0] <= len(models) <= MODELS[1]:
            raise gr.Error(f"choose {MODELS[0]} to {MODELS[1]} models to compare, got {len(models)}")
        if len(set(models)) != len(models):
            raise gr.Error("a model is chosen twice; choose different checkpoints")
        pipes = [self.shared.pipe(m) for m in models]
        own = sampler in (None, "", OWN_DEFAULT)
        if not own:
            bad = [p.name for p in pipes if sampler not in p.samplers()]
            if bad:
                raise gr.Error(f"sampler {sampler!r} cannot drive {', '.join(bad)}; choose another, or "
                               f"{OWN_DEFAULT!r}")
        steps = None if steps in (None, "", 0) else V.number(steps, "steps", integer=True)
        seed = V.number(seed, "seed", integer=True)
        n = V.number(n, "n", integer=True, limits=(1, 16))
        label = ALL_CLASSES if label in (None, "") else V.number(label, "class label", integer=True,
                                                                limits=(ALL_CLASSES, 1000))
        guidance = V.number(guidance, "guidance")
        gallery, rows = [], []
        for value, pipe in zip(models, pipes):
            k = pipe.num_classes
            if k and label >= k:
                raise gr.Error(f"class label {label} is beyond {pipe.name}'s {k} classes (0..{k - 1})")
            labels = None if not k else [i % k for i in range(n)] if label == ALL_CLASSES else [label] * n
            name = self.shared.models.label(value)
            res = pipe.generate(n, sampler=None if own else sampler, steps=steps, seed=seed, labels=labels,
                                guidance=guidance if k else 1.0)
            gallery.append((image_grid(res.images), f"{name}: {res.sampler}, {res.steps} steps, NFE {res.nfe}, "
                                                    f"{res.seconds:.2f} s"))
            rows.append([name, res.sampler, res.steps, res.nfe, round(res.seconds, 3)])
        return {self.gallery: gallery, self.table: rows}


def build(shared: Shared) -> CompareModels:
    """Lay out the Compare models tab (inside the app's gr.Tabs) and register its events."""
    tab = CompareModels(shared)
    choices = shared.models.choices()
    names = list(samplers.SAMPLERS)  # checked against each chosen model when run
    with gr.Tab("Compare models", id="compare_models"):
        gr.Markdown("The same seeds and labels through two to four checkpoints, each at its own default sampler "
                    "(or one chosen for all).")
        with gr.Row():
            tab.models = shared.model_list(gr.Dropdown(
                choices, value=[c[1] for c in choices[:2]], multiselect=True, allow_custom_value=True, scale=3,
                label="models (2 to 4)", elem_id="compare-models-models"))
            sampler = gr.Dropdown([OWN_DEFAULT, *names], value=OWN_DEFAULT, allow_custom_value=True,
                                  label="sampler")
            steps = CheckedNumber(None, precision=0, label="steps (empty: each model's default)")
        with gr.Row():
            seed = CheckedNumber(0, precision=0, label="seed")
            n = CheckedSlider(1, 16, value=8, step=1, label="images per model")
            label = gr.Dropdown([("one per class", ALL_CLASSES)] + [(f"class {k}", k) for k in range(10)],
                                value=ALL_CLASSES, allow_custom_value=True, label="class (conditional models)")
            guidance = CheckedSlider(0, 10, value=1.0, step=0.1, label="guidance scale (conditional models)")
        button = gr.Button("Compare models", variant="primary", elem_id="compare-models-button")
        tab.table = gr.Dataframe(headers=["model", "sampler", "steps", "NFE", "seconds"], interactive=False)
        tab.gallery = gr.Gallery(label="same seeds and labels, one grid per model", format="png", columns=4,
                                 height="auto", elem_classes="pixelated", elem_id="compare-models-gallery")
    button.click(tab.compare, [tab.models, sampler, steps, seed, n, label, guidance], [tab.gallery, tab.table],
                 api_name="compare_models", **HEAVY)
    return tab

"""The Compare tab: the same seeds through several samplers and step counts, side by side."""
from __future__ import annotations

import gradio as gr

from genstudio.api import Pipeline
from genstudio.images import image_grid

from .. import validate as V
from ..common import HEAVY, Shared, compare_defaults, label_dropdown, label_guidance, label_updates, user_errors
from ..components import CheckedNumber, CheckedSlider

MAX_COMPARE_RUNS = 24


class Compare:
    """The tab's handlers; build() lays out its components and sets them here."""

    def __init__(self, shared: Shared):
        self.shared = shared

    @property
    def model_outputs(self) -> list:
        """The components on_model updates, in the order the select_model endpoint lists them."""
        return [self.samplers, self.label, self.guidance]

    def on_model(self, pipe: Pipeline) -> dict:
        return {self.samplers: gr.update(choices=pipe.samplers(), value=compare_defaults(pipe)),
                **label_updates(pipe, self.label, self.guidance)}

    @user_errors
    def compare(self, model, chosen, steps_text, seed, n, label, guidance) -> dict:
        pipe = self.shared.pipe(model)
        if isinstance(chosen, str):
            chosen = [chosen]
        if not chosen:
            raise gr.Error("choose at least one sampler to compare")
        usable = pipe.samplers()
        bad = [s for s in chosen if s not in usable]
        if bad:
            raise gr.Error(f"sampler(s) {bad} cannot drive {pipe.name}; its samplers: {', '.join(usable)}")
        step_list = V.step_list(steps_text)
        runs = [(s, k) for s in chosen for k in step_list]
        if len(runs) > MAX_COMPARE_RUNS:
            raise gr.Error(f"{len(runs)} runs asked for; at most {MAX_COMPARE_RUNS} samplers x step counts at once")
        seed = V.number(seed, "seed", integer=True)
        n = V.number(n, "n", integer=True, limits=(1, 16))
        labels, guidance = label_guidance(pipe, label, guidance, n)
        gallery, rows = [], []
        for sampler, steps in runs:
            res = pipe.generate(n, sampler=sampler, steps=steps, seed=seed, labels=labels, guidance=guidance)
            gallery.append((image_grid(res.images), f"{sampler}, {steps} steps: NFE {res.nfe}, {res.seconds:.2f} s"))
            rows.append([sampler, steps, res.grid, res.nfe, round(res.seconds, 3)])
        return {self.gallery: gallery, self.table: rows}


def build(shared: Shared, model: gr.Dropdown, pipe0: Pipeline) -> Compare:
    """Lay out the Compare tab (inside the app's gr.Tabs) and register its events."""
    tab = Compare(shared)
    usable = pipe0.samplers()
    with gr.Tab("Compare", id="compare"):
        with gr.Row():
            tab.samplers = gr.Dropdown(usable, value=compare_defaults(pipe0), multiselect=True, allow_custom_value=True,
                                       label="samplers")
            steps = gr.Textbox("4, 10", label="step counts (comma-separated)")
        with gr.Row():
            seed = CheckedNumber(0, precision=0, label="seed")
            n = CheckedSlider(1, 16, value=4, step=1, label="images per run")
            tab.label = label_dropdown()
            tab.guidance = CheckedSlider(0, 10, value=2.0, step=0.1, label="guidance scale")
        button = gr.Button("Compare", variant="primary")
        tab.table = gr.Dataframe(headers=["sampler", "steps", "grid", "NFE", "seconds"], interactive=False)
        tab.gallery = gr.Gallery(label="same seeds, each sampler and step count", format="png", columns=4,
                                 height="auto", elem_classes="pixelated")

    button.click(tab.compare, [model, tab.samplers, steps, seed, n, tab.label, tab.guidance],
                 [tab.gallery, tab.table], api_name="compare", **HEAVY)
    return tab

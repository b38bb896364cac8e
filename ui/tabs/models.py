"""The Models tab: a checkpoint's card (what it is, its recorded scores, its sample grid and FID-vs-NFE plot)."""
from __future__ import annotations

import json

import gradio as gr

from genstudio.api import Pipeline

from ..common import Shared, user_errors
from ..models import card


class Models:
    """The tab's handlers; build() lays out its components and sets them here."""

    def __init__(self, shared: Shared):
        self.shared = shared

    @property
    def model_outputs(self) -> list:
        """None: the tab has its own checkpoint dropdown and does not follow the studio's model."""
        return []

    def on_model(self, pipe: Pipeline) -> dict:
        return {}

    @user_errors
    def model_card(self, model) -> dict:
        pipe = self.shared.pipe(model)
        text, samples_png, plot, metrics = card(pipe, self.shared.models.resolve(model))
        raw = json.dumps(metrics, indent=2, default=str) if metrics else "(no metrics.json)"
        return {self.card: text, self.samples: samples_png, self.plot: plot, self.metrics: raw}


def build(shared: Shared, demo: gr.Blocks) -> Models:
    """Lay out the Models tab (inside the app's gr.Tabs) and register its events, the card shown on load."""
    tab = Models(shared)
    checkpoints = shared.models.checkpoints
    with gr.Tab("Models", id="models") as page:
        tab.model = shared.model_list(gr.Dropdown(shared.models.choices(), value=checkpoints[0],
                                                  allow_custom_value=True, label="checkpoint",
                                                  elem_id="models-checkpoint"))
        with gr.Row():
            with gr.Column(scale=3):
                tab.card = gr.Markdown(elem_id="models-card")
            with gr.Column(scale=2):
                tab.samples = gr.Image(label="sample grid (samples.png)", format="png", interactive=False,
                                       elem_classes="pixelated", elem_id="models-samples")
                tab.plot = gr.Image(label="FID vs NFE", format="png", interactive=False, elem_id="models-plot")
        with gr.Accordion("metrics.json (raw)", open=False):
            tab.metrics = gr.Code(label="metrics.json", language="json", interactive=False)

    outputs = [tab.card, tab.samples, tab.plot, tab.metrics]
    tab.model.change(tab.model_card, tab.model, outputs, api_name="model_card")
    demo.load(tab.model_card, tab.model, outputs, api_name=False)
    page.select(tab.model_card, tab.model, outputs, api_name=False)  # shown afresh: e.g. after an evaluation
    return tab

"""The Models tab: a checkpoint's card (what it is, its recorded scores, its sample grid and FID-vs-NFE plot)."""
from __future__ import annotations

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
        return {self.card: text, self.samples: samples_png, self.plot: plot, self.metrics: metrics}


def build(shared: Shared, demo: gr.Blocks) -> Models:
    """Lay out the Models tab (inside the app's gr.Tabs) and register its events, the card shown on load."""
    tab = Models(shared)
    checkpoints = shared.models.checkpoints
    with gr.Tab("Models", id="models"):
        tab.model = gr.Dropdown(checkpoints, value=checkpoints[0], allow_custom_value=True, label="checkpoint")
        tab.card = gr.Markdown()
        with gr.Row():
            tab.samples = gr.Image(label="sample grid (samples.png)", format="png", interactive=False)
            tab.plot = gr.Image(label="FID vs NFE", format="png", interactive=False)
        tab.metrics = gr.JSON(label="metrics.json")

    outputs = [tab.card, tab.samples, tab.plot, tab.metrics]
    tab.model.change(tab.model_card, tab.model, outputs, api_name="model_card")
    demo.load(tab.model_card, tab.model, outputs, api_name=False)
    return tab

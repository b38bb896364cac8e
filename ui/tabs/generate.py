"""The Generate tab: sample images with a chosen sampler, watching the x0 predictions live."""
from __future__ import annotations

import queue
import random
import threading
import time
from typing import Iterator

import gradio as gr
import numpy as np

import samplers
from genstudio.api import Pipeline, SampleResult
from genstudio.images import image_grid, to_uint8

from .. import validate as V
from ..common import (
    AUTO_GRID,
    HEAVY,
    Shared,
    enlarged,
    grid_choice,
    grid_dropdown,
    label_dropdown,
    label_guidance,
    label_updates,
    user_errors,
)
from ..components import CheckedNumber, CheckedSlider
from ..models import class_names


class Generate:
    """The tab's handlers; build() lays out its components and sets them here."""

    def __init__(self, shared: Shared):
        self.shared = shared

    @property
    def model_outputs(self) -> list:
        """The components on_model updates, in the order the select_model endpoint lists them."""
        return [self.sampler, self.steps, self.grid, self.label, self.guidance]

    def on_model(self, pipe: Pipeline) -> dict:
        usable, d = pipe.samplers(), pipe.defaults()
        return {self.sampler: gr.update(choices=usable, value=d["sampler"]), self.steps: gr.update(value=d["steps"]),
                self.grid: gr.update(choices=[AUTO_GRID, *pipe.grids()], value=AUTO_GRID),
                **label_updates(pipe, self.label, self.guidance)}

    @user_errors
    def generate(self, model, sampler, steps, grid, seed, randomize, n, label, guidance,
                 temperature=1.0, rotation=0.0) -> Iterator[dict]:
        """Stream the x0 predictions while sampling, then the images, NFE and time, and a PNG grid. `temperature`
        goes to a sampler that takes one (a flow's or a VAE's one-pass decode); `rotation` (degrees) turns the
        state a little after every step (genstudio.rotation)."""
        pipe, sampler = self.shared.pipe_sampler(model, sampler)
        options = ({"temperature": V.number(temperature, "temperature", limits=(0, 2))}
                   if "temperature" in samplers.get(sampler).options else None)
        steps = V.number(steps, "steps", integer=True)
        rotation = V.number(rotation, "rotation", limits=(-360, 360))
        n = V.number(n, "n", integer=True)
        seed = random.randrange(2**31) if randomize else V.number(seed, "seed", integer=True)
        grid = grid_choice(grid, pipe)  # a learned grid brings its own steps
        if grid in pipe.learned_grids():
            steps = pipe.learned_grids()[grid]["steps"]
        labels, guidance = label_guidance(pipe, label, guidance, n)
        updates: queue.Queue = queue.Queue()

        def callback(i, t, x, x0=None, **_):
            shown = ("x0 prediction", x0) if x0 is not None else ("state", x)  # a sampler without x0: its state
            updates.put(("step", i, float(t), shown[1], shown[0]))

        def work():
            try:
                updates.put(("done", pipe.generate(n, sampler=sampler, steps=steps, seed=seed, labels=labels,
                                                   guidance=guidance, grid=grid, callback=callback,
                                                   sampler_options=options, rotation=rotation)))
            except Exception as e:  # reported to the user below
                updates.put(("error", e))

        threading.Thread(target=work, daemon=True).start()
        last = 0.0
        while True:
            item = updates.get()
            if item[0] == "error":
                raise item[1]
            if item[0] == "done":
                break
            if time.perf_counter() - last > 0.2:  # at most five previews a second
                last = time.perf_counter()
                _, i, t, x0, shown = item
                yield {self.preview: enlarged(image_grid(to_uint8(x0))),
                       self.info: f"step {i + 1}: t = {t:.4g} ({shown})", self.seed: seed}
        res: SampleResult = item[1]
        names = class_names(pipe) if labels else []
        captions = [f"seed {seed + i}" + (f", {names[labels[i]]}" if labels else "") for i in range(n)]
        info = (f"**{n} images** with {res.sampler}, {res.steps} steps on the {res.grid} grid"
                + (f", turned {rotation:g} degrees" if rotation else "") + ": "
                f"**NFE {res.nfe}**, **{res.seconds:.2f} s**" + (f", guidance {guidance:g}" if labels else ""))
        file = self.shared.file(res.images, f"genstudio_seed{seed}_{res.sampler}{res.steps}")
        yield {self.preview: enlarged(image_grid(res.images)), self.gallery: list(zip(res.images, captions)),
               self.info: info, self.file: file, self.images: res.images, self.seed: seed}

    @user_errors
    def send_to_edit(self, images, index) -> dict:
        """The chosen (default: first) generated image as the Edit tab's image."""
        if images is None or len(images) == 0:
            raise gr.Error("nothing to send: generate images first")
        index = int(index or 0)
        if not 0 <= index < len(images):
            index = 0
        image = np.asarray(images[index])
        k = max(1, 256 // image.shape[0])  # enlarged (nearest pixel) so a brush can paint a mask on it
        path = self.shared.file(image.repeat(k, 0).repeat(k, 1), "sent")
        return {self.editor: {"background": path, "layers": [], "composite": path},
                self.tabs: gr.update(selected="edit")}


def _selected(evt: gr.SelectData) -> int:
    """The clicked gallery image's index (not wrapped in user_errors: Gradio reads the SelectData hint)."""
    index = getattr(evt, "index", 0)
    return index if isinstance(index, int) else 0


def build(shared: Shared, model: gr.Dropdown, pipe0: Pipeline) -> Generate:
    """Lay out the Generate tab (inside the app's gr.Tabs) and register its events; see connect_send_to_edit."""
    tab = Generate(shared)
    usable, d = pipe0.samplers(), pipe0.defaults()
    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            with gr.Column(scale=1):
                tab.sampler = gr.Dropdown(usable, value=d["sampler"], allow_custom_value=True,
                                          label="sampler (only those that can drive this model)")
                tab.steps = CheckedSlider(1, 200, value=d["steps"], step=1, label="steps")
                tab.grid = grid_dropdown()
                with gr.Row():
                    tab.seed = CheckedNumber(0, precision=0, label="seed (image i uses seed + i)")
                    tab.randomize = gr.Checkbox(False, label="randomize seed")
                tab.n = CheckedSlider(1, 64, value=16, step=1, label="number of images")
                tab.label = label_dropdown()
                tab.guidance = CheckedSlider(0, 10, value=2.0, step=0.1, label="guidance scale (1: none)")
                tab.temperature = CheckedSlider(0, 2, value=1.0, step=0.05,
                                                label="temperature (samplers that take one: a flow's or VAE's decode)")
                tab.rotation = CheckedSlider(-180, 180, value=0, step=1,
                                             label="rotation (degrees, turned a little after every step)")
                tab.button = gr.Button("Generate", variant="primary", elem_id="generate-button")
            with gr.Column(scale=2):
                tab.preview = gr.Image(label="denoising: the model's x0 prediction (or the sampler's state), live",
                                       format="png", interactive=False, height=280, elem_classes="pixelated")
                tab.info = gr.Markdown(elem_id="generate-info")
                tab.gallery = gr.Gallery(label="images", format="png", columns=8, height="auto",
                                         elem_id="generate-gallery", elem_classes="pixelated")
                tab.file = gr.File(label="PNG grid")
                with gr.Row():
                    tab.index = CheckedNumber(0, precision=0, label="image to send (click one in the gallery)")
                    tab.send = gr.Button("Send to Edit")
        tab.images = gr.State(None)

    tab.button.click(tab.generate, [model, tab.sampler, tab.steps, tab.grid, tab.seed, tab.randomize, tab.n,
                                    tab.label, tab.guidance, tab.temperature, tab.rotation],
                     [tab.preview, tab.gallery, tab.info, tab.file, tab.images, tab.seed], api_name="generate", **HEAVY)
    tab.gallery.select(_selected, None, tab.index, api_name=False)
    return tab


def connect_send_to_edit(tab: Generate, editor: gr.ImageEditor, tabs: gr.Tabs) -> None:
    """"Send to Edit": the chosen image goes to `editor` (the Edit tab's image) and `tabs` switches to Edit."""
    tab.editor, tab.tabs = editor, tabs
    tab.send.click(tab.send_to_edit, [tab.images, tab.index], [editor, tabs], api_name="send_to_edit")

"""The genstudio studio: a Gradio app to generate, edit, compare and inspect models.

    from ui.app import build, launch
    launch(build(["checkpoints/edm_tiny_cifar10"]), port=7860)

It calls genstudio's public API only (genstudio.api.Pipeline, samplers.GRIDS). Every event checks its
inputs first (ui.validate) and turns a bad value into a gr.Error; images go out as PNG."""
from __future__ import annotations

import functools
import inspect
import queue
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import gradio as gr
import numpy as np

import samplers
from genstudio.api import SampleResult, shipped_checkpoints
from genstudio.images import image_grid, save_png, to_uint8

from . import validate as V
from .components import CheckedEditor, CheckedImage, CheckedSlider
from .models import Models, card, class_names

AUTO_GRID = "auto (the sampler's default)"
ALL_CLASSES = -1
QUEUE_SIZE = 16
MAX_FILE_SIZE = "10mb"
MAX_COMPARE_RUNS = 24
CSS = ".pixelated img, .pixelated canvas { image-rendering: pixelated; }"


def _user_errors(fn: Callable) -> Callable:
    """Re-raise the API's ValueErrors (written for users) as gr.Error; works for plain and generator functions."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except (ValueError, FileNotFoundError) as e:
                if isinstance(e, gr.Error):
                    raise
                raise gr.Error(str(e)) from None
        return gen

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError) as e:
            if isinstance(e, gr.Error):
                raise
            raise gr.Error(str(e)) from None
    return plain


def _enlarged(grid: np.ndarray, target: int = 256) -> np.ndarray:
    """A small image grid scaled up by an integer factor (nearest pixel) so the preview is visible."""
    k = max(1, target // max(grid.shape[:2]))
    return grid.repeat(k, 0).repeat(k, 1)


def _label_dropdown() -> gr.Dropdown:
    """Class choice; filled in for the chosen model (custom values pass to ui.validate, which checks them)."""
    return gr.Dropdown([("one per class", ALL_CLASSES)], value=ALL_CLASSES, label="class", allow_custom_value=True)


def _selected(evt: gr.SelectData) -> int:
    return evt.index


class Studio:
    """The event handlers, bound to a set of models. Each checks its inputs, then calls the Pipeline."""

    def __init__(self, models: Models):
        self.models = models
        self.out_dir = Path(tempfile.mkdtemp(prefix="genstudio-studio-"))

    # --- shared checks ---

    def _pipe_sampler(self, model, sampler):
        pipe = self.models.get(model)
        usable = pipe.samplers()
        if not isinstance(sampler, str) or sampler not in usable:
            raise gr.Error(f"sampler {sampler!r} cannot drive {pipe.name}; its samplers: {', '.join(usable)}")
        return pipe, sampler

    def _grid(self, grid) -> str | None:
        if grid in (None, "", AUTO_GRID):
            return None
        return V.choice(grid, "time grid", list(samplers.GRIDS))

    def _label_guidance(self, pipe, label, guidance, n: int):
        """(labels, guidance) for pipe: None and 1 for an unconditional model."""
        if not pipe.num_classes:
            return None, 1.0
        guidance = V.number(guidance, "guidance")
        if label is None:
            label = ALL_CLASSES
        label = V.number(label, "class label", integer=True, limits=(ALL_CLASSES, pipe.num_classes - 1))
        labels = [i % pipe.num_classes for i in range(n)] if label == ALL_CLASSES else [label] * n
        return labels, guidance

    def _file(self, images: np.ndarray, stem: str) -> str:
        path = self.out_dir / f"{stem}_{time.time_ns()}.png"
        save_png(image_grid(images) if images.ndim == 4 else images, path)
        return str(path)

    def _edit_image(self, pipe, editor) -> tuple[np.ndarray, str]:
        background, _ = V.editor_parts(editor)
        return V.model_image(background, pipe.image_shape[1], "image")

    # --- model ---

    def on_model(self, model):
        """Refresh every model-dependent control for the chosen model."""
        pipe = self.models.get(model)
        usable, d = pipe.samplers(), pipe.defaults()
        cond = bool(pipe.num_classes)
        label_choices = [("one per class (image i: class i mod K)", ALL_CLASSES)] + \
            [(name, k) for k, name in enumerate(class_names(pipe))]
        label = gr.update(choices=label_choices, value=ALL_CLASSES, visible=cond)
        guidance = gr.update(visible=cond)
        info = (f"**{pipe.name}**: {pipe.model.family} ({pipe.model.kind}), "
                f"{'%d classes' % pipe.num_classes if cond else 'unconditional'}, "
                f"{sum(p.numel() for p in pipe.model.parameters()):,} parameters; default {d['sampler']}, "
                f"{d['steps']} steps. Samplers: {', '.join(usable)}")
        edit_sampler = "ddim" if "ddim" in usable else d["sampler"]
        return (info, gr.update(choices=usable, value=d["sampler"]), gr.update(value=d["steps"]), AUTO_GRID,
                label, guidance,
                gr.update(choices=usable, value=edit_sampler), gr.update(value=min(d["steps"], 20)), label, guidance,
                gr.update(choices=usable, value=usable[:2]), label, guidance)

    # --- Generate ---

    @_user_errors
    def generate(self, model, sampler, steps, grid, seed, randomize, n, label, guidance) -> Iterator[tuple]:
        """Stream the x0 predictions while sampling, then the images, NFE and time, and a PNG grid."""
        pipe, sampler = self._pipe_sampler(model, sampler)
        steps = V.number(steps, "steps", integer=True)
        n = V.number(n, "n", integer=True)
        seed = random.randrange(2**31) if randomize else V.number(seed, "seed", integer=True)
        grid = self._grid(grid)
        labels, guidance = self._label_guidance(pipe, label, guidance, n)
        updates: queue.Queue = queue.Queue()

        def callback(i, t, x, x0=None, **_):
            updates.put(("step", i, float(t), x0 if x0 is not None else x))

        def work():
            try:
                updates.put(("done", pipe.generate(n, sampler=sampler, steps=steps, seed=seed, labels=labels,
                                                   guidance=guidance, grid=grid, callback=callback)))
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
                _, i, t, x0 = item
                yield (_enlarged(image_grid(to_uint8(x0))), gr.skip(), f"step {i + 1}: t = {t:.4g} (x0 prediction)",
                       gr.skip(), gr.skip(), seed)
        res: SampleResult = item[1]
        names = class_names(pipe) if labels else []
        captions = [f"seed {seed + i}" + (f", {names[labels[i]]}" if labels else "") for i in range(n)]
        info = (f"**{n} images** with {res.sampler}, {res.steps} steps on the {res.grid} grid: "
                f"**NFE {res.nfe}**, **{res.seconds:.2f} s**" + (f", guidance {guidance:g}" if labels else ""))
        yield (_enlarged(image_grid(res.images)), list(zip(res.images, captions)), info,
               self._file(res.images, f"genstudio_seed{seed}_{res.sampler}{res.steps}"), res.images, seed)

    def send_to_edit(self, images, index):
        """The chosen (default: first) generated image as the Edit tab's image."""
        if images is None or len(images) == 0:
            raise gr.Error("nothing to send: generate images first")
        index = int(index or 0)
        if not 0 <= index < len(images):
            index = 0
        image = np.asarray(images[index])
        k = max(1, 256 // image.shape[0])  # enlarged (nearest pixel) so a brush can paint a mask on it
        path = self._file(image.repeat(k, 0).repeat(k, 1), "sent")
        return {"background": path, "layers": [], "composite": path}, gr.update(selected="edit")

    # --- Edit ---

    @_user_errors
    def inpaint(self, model, editor, n, seed, levels, per_level, label, guidance):
        pipe = self.models.get(model)
        background, layers = V.editor_parts(editor)
        image, note = V.model_image(background, pipe.image_shape[1], "image")
        mask = V.mask_from_layers(V.open_image(background), layers, pipe.image_shape[1])
        n = V.number(n, "n", integer=True, limits=(1, 16))
        seed = V.number(seed, "seed", integer=True)
        levels = V.number(levels, "inpaint_steps", integer=True)
        per_level = V.number(per_level, "per_level", integer=True)
        labels, guidance = self._label_guidance(pipe, label, guidance, n)
        t0 = time.perf_counter()
        out = pipe.inpaint(image, mask, n=n, seed=seed, steps=levels, labels=labels, guidance=guidance,
                           steps_per_level=per_level)
        seconds = time.perf_counter() - t0
        shown = image.copy()
        shown[~mask] = 128
        gallery = [(image, "input"), (shown, "known pixels (gray: to fill)")] + \
            [(img, f"completion, seed {seed + i}") for i, img in enumerate(out)]
        how = (f"multistep consistency jumps: {levels} jumps" if pipe.model.kind == "map"
               else f"annealed Langevin: {levels} levels x {per_level} steps")
        info = f"{note}. Filled {int((~mask).sum())} of {mask.size} pixels with {how}, {seconds:.2f} s."
        return gallery, info, self._file(out, "inpaint")

    @_user_errors
    def sdedit(self, model, editor, sampler, steps, grid, strength, n, seed, label, guidance):
        pipe, sampler = self._pipe_sampler(model, sampler)
        image, note = self._edit_image(pipe, editor)
        strength = V.number(strength, "strength")
        steps = V.number(steps, "steps", integer=True)
        n = V.number(n, "n", integer=True, limits=(1, 16))
        seed = V.number(seed, "seed", integer=True)
        labels, guidance = self._label_guidance(pipe, label, guidance, n)
        res = pipe.sdedit(np.repeat(image[None], n, 0), strength, sampler=sampler, steps=steps, grid=self._grid(grid),
                          seed=seed, labels=labels, guidance=guidance)
        t_s = pipe.strength_time(strength)
        gallery = [(image, "input")] + [(img, f"seed {seed + i}") for i, img in enumerate(res.images)]
        info = (f"{note}. SDEdit at strength {strength:g} (t = {t_s:.4g}): {res.sampler}, {res.steps} steps on the "
                f"{res.grid} grid, NFE {res.nfe}, {res.seconds:.2f} s.")
        return gallery, info, self._file(res.images, "sdedit")

    @_user_errors
    def purify(self, model, editor, sampler, steps, grid, strength, noise, seed, label, guidance):
        pipe, sampler = self._pipe_sampler(model, sampler)
        image, note = self._edit_image(pipe, editor)
        strength = V.number(strength, "purify_strength")
        noise = V.number(noise, "noise")
        steps = V.number(steps, "steps", integer=True)
        seed = V.number(seed, "seed", integer=True)
        labels, guidance = self._label_guidance(pipe, label, guidance, 1)
        before = image
        if noise > 0:  # a stand-in for an attack: Gaussian noise of std `noise` (pixels in [-1, 1])
            rng = np.random.default_rng(seed)
            before = np.clip(image.astype(np.float64) + noise * 127.5 * rng.standard_normal(image.shape), 0, 255)
            before = before.round().astype(np.uint8)
        res = pipe.purify(before, strength, sampler=sampler, steps=steps, grid=self._grid(grid), seed=seed,
                          labels=labels, guidance=guidance)
        after = res.images[0]
        side = np.concatenate([before, np.full((before.shape[0], 2, 3), 255, np.uint8), after], axis=1)
        gallery = [(before, "before" + (f" (input + noise {noise:g})" if noise > 0 else "")), (after, "after"),
                   (side, "before | after")]
        info = (f"{note}. Purified at strength {strength:g} (t = {pipe.strength_time(strength):.4g}): {res.sampler}, "
                f"{res.steps} steps, NFE {res.nfe}, {res.seconds:.2f} s.")
        return gallery, info, self._file(side, "purify")

    @_user_errors
    def interpolate(self, model, editor, other, mode, sampler, steps, grid, seed_a, seed_b, frames, label, guidance):
        pipe, sampler = self._pipe_sampler(model, sampler)
        mode = V.choice(mode, "interpolation mode", ["seeds", "images"])
        steps = V.number(steps, "steps", integer=True)
        frames = V.number(frames, "frames", integer=True)
        seeds = (V.number(seed_a, "seed", integer=True), V.number(seed_b, "seed", integer=True))
        labels, guidance = self._label_guidance(pipe, label, guidance, 1)
        label = None if labels is None else labels[0]
        note = ""
        images = None
        if mode == "images":
            a, note_a = self._edit_image(pipe, editor)
            b, note_b = V.model_image(other, pipe.image_shape[1], "second image")
            images, note = np.stack([a, b]), f"{note_a}; {note_b}. "
        res = pipe.interpolate(frames, seeds=seeds, images=images, sampler=sampler, steps=steps, grid=self._grid(grid),
                               label=label, guidance=guidance)
        strip = image_grid(res.images, nrow=frames)
        what = f"seeds {seeds[0]} -> {seeds[1]}" if images is None else "the two images (ODE-inverted latents)"
        info = (f"{note}{frames} frames between {what}: slerp, {res.sampler}, {res.steps} steps, NFE {res.nfe}, "
                f"{res.seconds:.2f} s.")
        return [(strip, "strip")] + [(img, f"frame {i}") for i, img in enumerate(res.images)], info, \
            self._file(strip, "interpolate")

    # --- Compare ---

    @_user_errors
    def compare(self, model, chosen, steps_text, seed, n, label, guidance):
        pipe = self.models.get(model)
        if isinstance(chosen, str):
            chosen = [chosen]
        if not chosen:
            raise gr.Error("choose at least one sampler to compare")
        usable = pipe.samplers()
        bad = [s for s in chosen if s not in usable]
        if bad:
            raise gr.Error(f"sampler(s) {bad} cannot drive {pipe.name}; its samplers: {', '.join(usable)}")
        try:
            step_list = [int(s) for s in str(steps_text).replace(",", " ").split()]
        except ValueError:
            raise gr.Error(f"steps must be whole numbers separated by commas, e.g. 4, 8, 16; "
                           f"got {steps_text!r}") from None
        if not step_list:
            raise gr.Error("give at least one step count, e.g. 4, 8, 16")
        step_list = [V.number(s, "steps", integer=True) for s in step_list]
        runs = [(s, k) for s in chosen for k in step_list]
        if len(runs) > MAX_COMPARE_RUNS:
            raise gr.Error(f"{len(runs)} runs asked for; at most {MAX_COMPARE_RUNS} samplers x step counts at once")
        seed = V.number(seed, "seed", integer=True)
        n = V.number(n, "n", integer=True, limits=(1, 16))
        labels, guidance = self._label_guidance(pipe, label, guidance, n)
        gallery, rows = [], []
        for sampler, steps in runs:
            res = pipe.generate(n, sampler=sampler, steps=steps, seed=seed, labels=labels, guidance=guidance)
            gallery.append((image_grid(res.images), f"{sampler}, {steps} steps: NFE {res.nfe}, {res.seconds:.2f} s"))
            rows.append([sampler, steps, res.grid, res.nfe, round(res.seconds, 3)])
        return gallery, rows

    # --- Models ---

    def model_card(self, model):
        pipe = self.models.get(model)
        text, samples_png, plot, metrics = card(pipe, self.models.resolve(model))
        return text, samples_png, plot, metrics


def build(checkpoints: list[str | Path] | None = None, device: str = "cpu") -> gr.Blocks:
    """The studio's gr.Blocks on `checkpoints` (default: the shipped ones, the default first)."""
    checkpoints = list(checkpoints) if checkpoints else shipped_checkpoints()
    studio = Studio(Models(checkpoints, device=device))
    first = studio.models.checkpoints[0]
    grids = [AUTO_GRID] + list(samplers.GRIDS)
    pipe0 = studio.models.get(first)
    usable, d = pipe0.samplers(), pipe0.defaults()
    heavy = dict(concurrency_limit=1, concurrency_id="sampling")  # one sampling job at a time: CPU-bound

    with gr.Blocks(title="genstudio studio") as demo:
        gr.Markdown("# genstudio studio\nGenerate, edit and compare images of score, diffusion, flow and "
                    "consistency models. Uploaded images of any size are center-cropped and resized to the "
                    "model's 32x32.")
        with gr.Row():
            model = gr.Dropdown(studio.models.checkpoints, value=first, allow_custom_value=True, scale=3,
                                label="model (a shipped checkpoint, or type a checkpoint folder's path)")
            model_info = gr.Markdown()

        with gr.Tabs() as tabs:
            with gr.Tab("Generate", id="generate"):
                with gr.Row():
                    with gr.Column(scale=1):
                        g_sampler = gr.Dropdown(usable, value=d["sampler"], allow_custom_value=True,
                                                label="sampler (only those that can drive this model)")
                        g_steps = CheckedSlider(1, 200, value=d["steps"], step=1, label="steps")
                        g_grid = gr.Dropdown(grids, value=AUTO_GRID, label="time grid", allow_custom_value=True)
                        with gr.Row():
                            g_seed = gr.Number(0, precision=0, label="seed (image i uses seed + i)")
                            g_random = gr.Checkbox(False, label="randomize seed")
                        g_n = CheckedSlider(1, 64, value=16, step=1, label="number of images")
                        g_label = _label_dropdown()
                        g_guidance = CheckedSlider(0, 10, value=2.0, step=0.1, label="guidance scale (1: none)")
                        g_button = gr.Button("Generate", variant="primary", elem_id="generate-button")
                    with gr.Column(scale=2):
                        g_preview = gr.Image(label="denoising: the model's x0 prediction, live", format="png",
                                             interactive=False, height=280, elem_classes="pixelated")
                        g_info = gr.Markdown(elem_id="generate-info")
                        g_gallery = gr.Gallery(label="images", format="png", columns=8, height="auto",
                                               elem_id="generate-gallery", elem_classes="pixelated")
                        g_file = gr.File(label="PNG grid")
                        with gr.Row():
                            g_index = gr.Number(0, precision=0, label="image to send (click one in the gallery)")
                            g_send = gr.Button("Send to Edit")
                g_images = gr.State(None)

            with gr.Tab("Edit", id="edit"):
                gr.Markdown("Upload an image (any size: it is center-cropped and resized to 32x32) or send one "
                            "from Generate. For inpainting, paint over the part to fill in.")
                with gr.Row():
                    with gr.Column(scale=1):
                        e_image = CheckedEditor(label="image (paint the mask for inpainting)", height=360,
                                                type="filepath", format="png", sources=["upload", "clipboard"],
                                                elem_classes="pixelated",
                                                brush=gr.Brush(default_size=12, colors=["#ff00ff"],
                                                               color_mode="fixed"))
                        e_sampler = gr.Dropdown(usable, value=d["sampler"], label="sampler", allow_custom_value=True)
                        with gr.Row():
                            e_steps = CheckedSlider(1, 200, value=18, step=1, label="steps")
                            e_grid = gr.Dropdown(grids, value=AUTO_GRID, label="time grid", allow_custom_value=True)
                        with gr.Row():
                            e_seed = gr.Number(0, precision=0, label="seed")
                            e_n = CheckedSlider(1, 16, value=4, step=1, label="results")
                        e_label = _label_dropdown()
                        e_guidance = CheckedSlider(0, 10, value=1.0, step=0.1, label="guidance scale")
                    with gr.Column(scale=1):
                        with gr.Tab("Inpaint"):
                            i_levels = CheckedSlider(2, 200, value=30, step=1, label="noise levels")
                            i_per = CheckedSlider(1, 20, value=3, step=1, label="Langevin steps per level")
                            i_button = gr.Button("Inpaint", variant="primary")
                        with gr.Tab("SDEdit"):
                            s_strength = CheckedSlider(0, 1, value=0.5, step=0.01,
                                                   label="strength (0: keep the image, 1: ignore it)")
                            s_button = gr.Button("SDEdit", variant="primary")
                        with gr.Tab("Purify"):
                            p_strength = CheckedSlider(0.01, 0.6, value=0.3, step=0.01, label="purification strength")
                            p_noise = CheckedSlider(0, 1, value=0.1, step=0.01,
                                                label="first add Gaussian noise of this std (a stand-in attack)")
                            p_button = gr.Button("Purify", variant="primary")
                        with gr.Tab("Interpolate"):
                            x_mode = gr.Radio(["seeds", "images"], value="seeds", label="between")
                            with gr.Row():
                                x_seed_a = gr.Number(0, precision=0, label="seed A")
                                x_seed_b = gr.Number(1, precision=0, label="seed B")
                            x_other = CheckedImage(label="second image (the first is the image above)",
                                                   type="filepath", format="png", image_mode=None,
                                                   sources=["upload", "clipboard"], height=160)
                            x_frames = CheckedSlider(2, 32, value=8, step=1, label="frames")
                            x_button = gr.Button("Interpolate", variant="primary")
                        e_info = gr.Markdown()
                        e_gallery = gr.Gallery(label="results", format="png", columns=6, height="auto",
                                               elem_classes="pixelated")
                        e_file = gr.File(label="PNG")

            with gr.Tab("Compare", id="compare"):
                with gr.Row():
                    c_samplers = gr.Dropdown(usable, value=usable[:2], multiselect=True, allow_custom_value=True,
                                         label="samplers")
                    c_steps = gr.Textbox("4, 10", label="step counts (comma-separated)")
                with gr.Row():
                    c_seed = gr.Number(0, precision=0, label="seed")
                    c_n = CheckedSlider(1, 16, value=4, step=1, label="images per run")
                    c_label = _label_dropdown()
                    c_guidance = CheckedSlider(0, 10, value=2.0, step=0.1, label="guidance scale")
                c_button = gr.Button("Compare", variant="primary")
                c_table = gr.Dataframe(headers=["sampler", "steps", "grid", "NFE", "seconds"], interactive=False)
                c_gallery = gr.Gallery(label="same seeds, each sampler and step count", format="png", columns=4,
                                       height="auto", elem_classes="pixelated")

            with gr.Tab("Models", id="models"):
                m_model = gr.Dropdown(studio.models.checkpoints, value=first, allow_custom_value=True,
                                      label="checkpoint")
                m_card = gr.Markdown()
                with gr.Row():
                    m_samples = gr.Image(label="sample grid (samples.png)", format="png", interactive=False)
                    m_plot = gr.Image(label="FID vs NFE", format="png", interactive=False)
                m_metrics = gr.JSON(label="metrics.json")

        model_outputs = [model_info, g_sampler, g_steps, g_grid, g_label, g_guidance,
                         e_sampler, e_steps, e_label, e_guidance, c_samplers, c_label, c_guidance]
        model.change(studio.on_model, model, model_outputs, api_name="select_model")
        demo.load(studio.on_model, model, model_outputs, api_name=False)
        card_outputs = [m_card, m_samples, m_plot, m_metrics]
        m_model.change(studio.model_card, m_model, card_outputs, api_name="model_card")
        demo.load(studio.model_card, m_model, card_outputs, api_name=False)

        g_button.click(studio.generate, [model, g_sampler, g_steps, g_grid, g_seed, g_random, g_n, g_label, g_guidance],
                       [g_preview, g_gallery, g_info, g_file, g_images, g_seed], api_name="generate", **heavy)
        g_gallery.select(_selected, None, g_index, api_name=False)
        g_send.click(studio.send_to_edit, [g_images, g_index], [e_image, tabs], api_name="send_to_edit")

        common = [e_sampler, e_steps, e_grid]
        edit_outputs = [e_gallery, e_info, e_file]
        i_button.click(studio.inpaint, [model, e_image, e_n, e_seed, i_levels, i_per, e_label, e_guidance],
                       edit_outputs, api_name="inpaint", **heavy)
        s_button.click(studio.sdedit, [model, e_image, *common, s_strength, e_n, e_seed, e_label, e_guidance],
                       edit_outputs, api_name="sdedit", **heavy)
        p_button.click(studio.purify, [model, e_image, *common, p_strength, p_noise, e_seed, e_label, e_guidance],
                       edit_outputs, api_name="purify", **heavy)
        x_button.click(studio.interpolate, [model, e_image, x_other, x_mode, *common, x_seed_a, x_seed_b, x_frames,
                                            e_label, e_guidance], edit_outputs, api_name="interpolate", **heavy)
        c_button.click(studio.compare, [model, c_samplers, c_steps, c_seed, c_n, c_label, c_guidance],
                       [c_gallery, c_table], api_name="compare", **heavy)
    demo.studio = studio  # type: ignore[attr-defined]
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, block: bool = True, quiet: bool = False):
    """Serve the studio: a bounded queue, no share link, uploads capped, nothing served beyond Gradio's cache."""
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2)
    return demo.launch(server_name=host, server_port=port, share=False, max_file_size=MAX_FILE_SIZE,
                       allowed_paths=[], prevent_thread_lock=not block, quiet=quiet, show_error=False, css=CSS,
                       footer_links=["api"])

"""The Edit tab: inpaint, colorize, SDEdit, purify, interpolate, reconstruct and project an uploaded (or sent) image."""
from __future__ import annotations

import time

import gradio as gr
import numpy as np

from genstudio.api import Pipeline
from genstudio.edit import gray as gray_image
from genstudio.images import image_grid

from .. import validate as V
from ..common import (
    HEAVY,
    Shared,
    grid_choice,
    grid_dropdown,
    label_dropdown,
    label_guidance,
    label_updates,
    user_errors,
)
from ..components import CheckedEditor, CheckedImage, CheckedNumber, CheckedSlider


def _fill_settings(pipe, n, seed, levels, per_level, label, guidance) -> tuple:
    """The checked settings inpainting and colorization share: (n, seed, levels, per_level, labels, guidance)."""
    n = V.number(n, "n", integer=True, limits=(1, 16))
    seed = V.number(seed, "seed", integer=True)
    levels = V.number(levels, "inpaint_steps", integer=True)
    per_level = V.number(per_level, "per_level", integer=True)
    return (n, seed, levels, per_level, *label_guidance(pipe, label, guidance, n))


def _edit_image(pipe: Pipeline, editor) -> tuple[np.ndarray, str]:
    """The editor's background image at the model's size, and a note on what was done to it."""
    background, _ = V.editor_parts(editor)
    return V.model_image(background, pipe.image_shape[1], "image")


class Edit:
    """The tab's handlers; build() lays out its components and sets them here."""

    def __init__(self, shared: Shared):
        self.shared = shared

    @property
    def model_outputs(self) -> list:
        """The components on_model updates, in the order the select_model endpoint lists them."""
        return [self.sampler, self.steps, self.label, self.guidance]

    def on_model(self, pipe: Pipeline) -> dict:
        usable, d = pipe.samplers(), pipe.defaults()
        return {self.sampler: gr.update(choices=usable, value="ddim" if "ddim" in usable else d["sampler"]),
                self.steps: gr.update(value=min(d["steps"], 20)), **label_updates(pipe, self.label, self.guidance)}

    def _results(self, gallery: list, info: str, images: np.ndarray, stem: str) -> dict:
        return {self.gallery: gallery, self.info: info, self.file: self.shared.file(images, stem)}

    @user_errors
    def inpaint(self, model, editor, n, seed, levels, per_level, label, guidance) -> dict:
        pipe = self.shared.pipe(model)
        background, layers = V.editor_parts(editor)
        image, note = V.model_image(background, pipe.image_shape[1], "image")
        mask = V.mask_from_layers(V.open_image(background), layers, pipe.image_shape[1])
        n, seed, levels, per_level, labels, guidance = _fill_settings(pipe, n, seed, levels, per_level, label,
                                                                      guidance)
        t0 = time.perf_counter()
        out = pipe.inpaint(image, mask, n=n, seed=seed, steps=levels, labels=labels, guidance=guidance,
                           steps_per_level=per_level)
        seconds = time.perf_counter() - t0
        shown = image.copy()
        shown[~mask] = 128
        gallery = [(image, "input"), (shown, "known pixels (gray: to fill)")] + \
            [(img, f"completion, seed {seed + i}") for i, img in enumerate(out)]
        how = pipe.editor("inpaint").summary(steps=levels, per_level=per_level)
        info = f"{note}. Filled {int((~mask).sum())} of {mask.size} pixels with {how}, {seconds:.2f} s."
        return self._results(gallery, info, out, "inpaint")

    @user_errors
    def colorize(self, model, editor, n, seed, levels, per_level, label, guidance) -> dict:
        pipe = self.shared.pipe(model)
        image, note = _edit_image(pipe, editor)
        n, seed, levels, per_level, labels, guidance = _fill_settings(pipe, n, seed, levels, per_level, label,
                                                                      guidance)
        t0 = time.perf_counter()
        out = pipe.colorize(image, n=n, seed=seed, steps=levels, labels=labels, guidance=guidance,
                            steps_per_level=per_level)
        seconds = time.perf_counter() - t0
        gray = gray_image(image)
        off = np.abs(out.astype(np.float64).mean(-1) - image.astype(np.float64).mean(-1)).max()
        strip = np.concatenate([gray, *[np.concatenate([np.full((gray.shape[0], 2, 3), 255, np.uint8), o], 1)
                                        for o in out]], axis=1)
        gallery = [(image, "input"), (gray, "gray (what the model sees: its luminance)")] + \
            [(img, f"colorized, seed {seed + i}") for i, img in enumerate(out)] + [(strip, "before | after")]
        how = pipe.editor("colorize").summary(steps=levels, per_level=per_level)
        info = (f"{note}. Colorized with {how}, {seconds:.2f} s; the luminance (mean of R, G, B) is the input's "
                f"to within {off:.2f} of 255 (rounding).")
        return self._results(gallery, info, out, "colorize")

    @user_errors
    def sdedit(self, model, editor, sampler, steps, grid, strength, n, seed, label, guidance) -> dict:
        pipe, sampler = self.shared.pipe_sampler(model, sampler)
        image, note = _edit_image(pipe, editor)
        strength = V.number(strength, "strength")
        steps = V.number(steps, "steps", integer=True)
        n = V.number(n, "n", integer=True, limits=(1, 16))
        seed = V.number(seed, "seed", integer=True)
        labels, guidance = label_guidance(pipe, label, guidance, n)
        res = pipe.sdedit(np.repeat(image[None], n, 0), strength, sampler=sampler, steps=steps, grid=grid_choice(grid),
                          seed=seed, labels=labels, guidance=guidance)
        t_s = pipe.strength_time(strength)
        gallery = [(image, "input")] + [(img, f"seed {seed + i}") for i, img in enumerate(res.images)]
        info = (f"{note}. SDEdit at strength {strength:g} (t = {t_s:.4g}): {res.sampler}, {res.steps} steps on the "
                f"{res.grid} grid, NFE {res.nfe}, {res.seconds:.2f} s.")
        return self._results(gallery, info, res.images, "sdedit")

    @user_errors
    def purify(self, model, editor, sampler, steps, grid, strength, noise, seed, label, guidance) -> dict:
        pipe, sampler = self.shared.pipe_sampler(model, sampler)
        image, note = _edit_image(pipe, editor)
        strength = V.number(strength, "purify_strength")
        noise = V.number(noise, "noise")
        steps = V.number(steps, "steps", integer=True)
        seed = V.number(seed, "seed", integer=True)
        labels, guidance = label_guidance(pipe, label, guidance, 1)
        before = image
        if noise > 0:  # a stand-in for an attack: Gaussian noise of std `noise` (pixels in [-1, 1])
            rng = np.random.default_rng(seed)
            before = np.clip(image.astype(np.float64) + noise * 127.5 * rng.standard_normal(image.shape), 0, 255)
            before = before.round().astype(np.uint8)
        res = pipe.purify(before, strength, sampler=sampler, steps=steps, grid=grid_choice(grid), seed=seed,
                          labels=labels, guidance=guidance)
        after = res.images[0]
        side = np.concatenate([before, np.full((before.shape[0], 2, 3), 255, np.uint8), after], axis=1)
        gallery = [(before, "before" + (f" (input + noise {noise:g})" if noise > 0 else "")), (after, "after"),
                   (side, "before | after")]
        info = (f"{note}. Purified at strength {strength:g} (t = {pipe.strength_time(strength):.4g}): {res.sampler}, "
                f"{res.steps} steps, NFE {res.nfe}, {res.seconds:.2f} s.")
        return self._results(gallery, info, side, "purify")

    @user_errors
    def interpolate(self, model, editor, other, mode, sampler, steps, grid, seed_a, seed_b, frames, label,
                    guidance) -> dict:
        pipe, sampler = self.shared.pipe_sampler(model, sampler)
        mode = V.choice(mode, "interpolation mode", ["seeds", "images"])
        steps = V.number(steps, "steps", integer=True)
        frames = V.number(frames, "frames", integer=True)
        seeds = (V.number(seed_a, "seed", integer=True), V.number(seed_b, "seed", integer=True))
        labels, guidance = label_guidance(pipe, label, guidance, 1)
        label = None if labels is None else labels[0]
        note = ""
        images = None
        if mode == "images":
            a, note_a = _edit_image(pipe, editor)
            b, note_b = V.model_image(other, pipe.image_shape[1], "second image")
            images, note = np.stack([a, b]), f"{note_a}; {note_b}. "
        res = pipe.interpolate(frames, seeds=seeds, images=images, sampler=sampler, steps=steps,
                               grid=grid_choice(grid), label=label, guidance=guidance)
        strip = image_grid(res.images, nrow=frames)
        what = f"seeds {seeds[0]} -> {seeds[1]}" if images is None else "the two images (ODE-inverted latents)"
        info = (f"{note}{frames} frames between {what}: slerp, {res.sampler}, {res.steps} steps, NFE {res.nfe}, "
                f"{res.seconds:.2f} s.")
        gallery = [(strip, "strip")] + [(img, f"frame {i}") for i, img in enumerate(res.images)]
        return self._results(gallery, info, strip, "interpolate")

    @user_errors
    def reconstruct(self, model, editor) -> dict:
        """A flow's or a VAE's encode and decode of the image."""
        pipe = self.shared.pipe(model)
        image, note = _edit_image(pipe, editor)
        res = pipe.reconstruct(image)
        out = res.images[0]
        side = np.concatenate([image, np.full((image.shape[0], 2, 3), 255, np.uint8), out], axis=1)
        err = float(np.abs(image.astype(np.float64) - out).mean())
        info = f"{note}. Encoded to the latent and decoded: mean |error| {err:.2f} / 255, {res.seconds:.2f} s."
        return self._results([(image, "input"), (out, "reconstruction"), (side, "input | reconstruction")], info,
                             side, "reconstruct")

    @user_errors
    def project(self, model, editor, steps, noise, seed) -> dict:
        """An idempotent network's f applied to the image (after optional Gaussian noise), `steps` times."""
        pipe = self.shared.pipe(model)
        image, note = _edit_image(pipe, editor)
        steps = V.number(steps, "project_steps", integer=True, limits=(1, 10))
        noise = V.number(noise, "noise")
        seed = V.number(seed, "seed", integer=True)
        res = pipe.project(image, steps=steps, noise=noise, seed=seed)
        out = res.images[0]
        side = np.concatenate([image, np.full((image.shape[0], 2, 3), 255, np.uint8), out], axis=1)
        noised = f", after Gaussian noise of std {noise:g}" if noise else ""
        info = f"{note}. Projected by f ({steps} time(s){noised}): NFE {res.nfe}, {res.seconds:.2f} s."
        return self._results([(image, "input"), (out, "projection"), (side, "input | projection")], info, side,
                             "project")


def build(shared: Shared, model: gr.Dropdown, pipe0: Pipeline) -> Edit:
    """Lay out the Edit tab (inside the app's gr.Tabs) and register its events."""
    tab = Edit(shared)
    usable, d = pipe0.samplers(), pipe0.defaults()
    with gr.Tab("Edit", id="edit"):
        size = pipe0.image_shape[1]
        gr.Markdown(f"Upload an image (any size: it is center-cropped and resized to the model's {size}x{size}) "
                    "or send one from Generate. For inpainting, paint over the part to fill in.")
        with gr.Row():
            with gr.Column(scale=1):
                tab.image = CheckedEditor(label="image (paint the mask for inpainting)", height=360,
                                          type="filepath", format="png", sources=["upload", "clipboard"],
                                          elem_classes="pixelated", elem_id="edit-image",
                                          brush=gr.Brush(default_size=12, colors=["#ff00ff"], color_mode="fixed"))
                tab.sampler = gr.Dropdown(usable, value=d["sampler"], label="sampler", allow_custom_value=True)
                with gr.Row():
                    tab.steps = CheckedSlider(1, 200, value=18, step=1, label="steps")
                    tab.grid = grid_dropdown()
                with gr.Row():
                    tab.seed = CheckedNumber(0, precision=0, label="seed")
                    tab.n = CheckedSlider(1, 16, value=4, step=1, label="results")
                tab.label = label_dropdown()
                tab.guidance = CheckedSlider(0, 10, value=1.0, step=0.1, label="guidance scale")
            with gr.Column(scale=1):
                with gr.Tab("Inpaint"):
                    levels = CheckedSlider(2, 200, value=30, step=1, label="noise levels")
                    per_level = CheckedSlider(1, 20, value=3, step=1, label="Langevin steps per level")
                    inpaint = gr.Button("Inpaint", variant="primary")
                with gr.Tab("Colorize"):
                    c_levels = CheckedSlider(2, 200, value=30, step=1, label="noise levels (jumps for a map model)",
                                             elem_id="colorize-levels")
                    c_per_level = CheckedSlider(1, 20, value=2, step=1, label="Langevin steps per level")
                    colorize = gr.Button("Colorize", variant="primary", elem_id="colorize-button")
                with gr.Tab("SDEdit"):
                    s_strength = CheckedSlider(0, 1, value=0.5, step=0.01,
                                               label="strength (0: keep the image, 1: ignore it)")
                    sdedit = gr.Button("SDEdit", variant="primary", elem_id="sdedit-button")
                with gr.Tab("Purify"):
                    p_strength = CheckedSlider(0.01, 0.6, value=0.3, step=0.01, label="purification strength")
                    noise = CheckedSlider(0, 1, value=0.1, step=0.01,
                                          label="first add Gaussian noise of this std (a stand-in attack)")
                    purify = gr.Button("Purify", variant="primary")
                with gr.Tab("Interpolate"):
                    mode = gr.Radio(["seeds", "images"], value="seeds", label="between")
                    with gr.Row():
                        seed_a = CheckedNumber(0, precision=0, label="seed A")
                        seed_b = CheckedNumber(1, precision=0, label="seed B")
                    other = CheckedImage(label="second image (the first is the image above)", type="filepath",
                                         format="png", image_mode=None, sources=["upload", "clipboard"], height=160)
                    frames = CheckedSlider(2, 32, value=8, step=1, label="frames")
                    interpolate = gr.Button("Interpolate", variant="primary")
                with gr.Tab("Reconstruct"):
                    gr.Markdown("A flow or a VAE: the image to its latent and back (exact for a flow).")
                    reconstruct = gr.Button("Reconstruct", variant="primary")
                with gr.Tab("Project"):
                    gr.Markdown("An idempotent network (SIGN-style): f(image), a zero-shot restoration.")
                    j_steps = CheckedSlider(1, 10, value=1, step=1, label="applications of f")
                    j_noise = CheckedSlider(0, 1, value=0.0, step=0.01, label="first add Gaussian noise of this std")
                    project = gr.Button("Project", variant="primary")
                tab.info = gr.Markdown(elem_id="edit-info")
                tab.gallery = gr.Gallery(label="results", format="png", columns=6, height="auto",
                                         elem_id="edit-gallery", elem_classes="pixelated")
                tab.file = gr.File(label="PNG")

    sampling = [tab.sampler, tab.steps, tab.grid]
    label = [tab.label, tab.guidance]
    outputs = [tab.gallery, tab.info, tab.file]
    inpaint.click(tab.inpaint, [model, tab.image, tab.n, tab.seed, levels, per_level, *label], outputs,
                  api_name="inpaint", **HEAVY)
    colorize.click(tab.colorize, [model, tab.image, tab.n, tab.seed, c_levels, c_per_level, *label], outputs,
                   api_name="colorize", **HEAVY)
    sdedit.click(tab.sdedit, [model, tab.image, *sampling, s_strength, tab.n, tab.seed, *label], outputs,
                 api_name="sdedit", **HEAVY)
    purify.click(tab.purify, [model, tab.image, *sampling, p_strength, noise, tab.seed, *label], outputs,
                 api_name="purify", **HEAVY)
    interpolate.click(tab.interpolate, [model, tab.image, other, mode, *sampling, seed_a, seed_b, frames, *label],
                      outputs, api_name="interpolate", **HEAVY)
    reconstruct.click(tab.reconstruct, [model, tab.image], outputs, api_name="reconstruct", **HEAVY)
    project.click(tab.project, [model, tab.image, j_steps, j_noise, tab.seed], outputs, api_name="project", **HEAVY)
    return tab

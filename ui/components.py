"""Gradio image inputs that check an upload (size, format, pixel count) before anything decodes it, so a
non-image or a decompression bomb gets a clear gr.Error instead of an exception inside Gradio."""
from __future__ import annotations

import gradio as gr
from gradio.data_classes import FileData

from .validate import open_image


class CheckedImage(gr.Image):
    """gr.Image whose upload is checked first (build it with type="filepath", format="png", image_mode=None)."""

    is_template = True  # rendered by the frontend's Image component

    def preprocess(self, payload):
        if payload is not None and getattr(payload, "path", None):
            open_image(payload.path, self.label or "image")
        return super().preprocess(payload)


class CheckedEditor(gr.ImageEditor):
    """gr.ImageEditor (image plus brush layers) whose background and layers are checked first
    (build it with type="filepath", format="png")."""

    is_template = True  # rendered by the frontend's ImageEditor component

    def convert_and_format_image(self, file, flatten_on_white: bool = False):
        # Gradio builds the frontend's props from __init__'s signature: so no __init__ override here
        if isinstance(file, FileData):
            open_image(file.path, "image")
        elif file is not None:
            open_image(file, "image")
        return super().convert_and_format_image(file, flatten_on_white)


class CheckedSlider(gr.Slider):
    """gr.Slider whose out-of-range error names the slider."""

    is_template = True  # rendered by the frontend's Slider component

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except (gr.Error, TypeError, ValueError):
            raise gr.Error(f"{self.label}: must be a number in {self.minimum}..{self.maximum}, "
                           f"got {payload!r}") from None

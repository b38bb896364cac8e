"""Gradio inputs that check what they are sent before anything decodes it, so a malformed value gets a clear
gr.Error instead of Gradio's opaque "the upstream Gradio app has raised an exception".

The image inputs read only files in Gradio's upload folder (an API call could name any path on the server),
check an upload (size, format, pixel count) before decoding it, and the editor re-saves every image as PNG, turned
upright as its EXIF says. A payload of the wrong shape, or any other exception in their preprocessing, becomes a
short gr.Error too (ui.validate.user_error), logged on the server."""
from __future__ import annotations

from pathlib import Path

import gradio as gr
from gradio import image_utils
from gradio.components.image_editor import EditorData
from gradio.data_classes import FileData, ImageData
from gradio.utils import is_in_or_equal
from PIL import Image

from .validate import open_image, user_error


def _uploaded(block: gr.components.Component, path: str, what: str) -> str:
    """`path` if it lies in Gradio's upload folder (uploads, and the files the app sent out), else a gr.Error."""
    if not is_in_or_equal(path, block.GRADIO_CACHE):
        raise gr.Error(f"the {what} was not uploaded to this app; upload the file itself")
    return path


class _EditorPayload(EditorData):
    """The editor's payload; one of the wrong shape is refused with a message, not a pydantic ValidationError."""

    @classmethod
    def model_validate(cls, obj, *args, **kwargs):
        try:
            return super().model_validate(obj, *args, **kwargs)
        except Exception:
            raise gr.Error("the image editor was sent something that is not an image (expected background, "
                           "layers and composite files); upload the image again") from None


class _ImagePayload(ImageData):
    """An image input's payload; one of the wrong shape is refused with a message."""

    @classmethod
    def model_validate(cls, obj, *args, **kwargs):
        try:
            return super().model_validate(obj, *args, **kwargs)
        except Exception:
            raise gr.Error("an image input was sent something that is not an image file; upload it again") from None


class CheckedImage(gr.Image):
    """gr.Image whose upload is checked first (build it with type="filepath", format="png", image_mode=None)."""

    is_template = True  # rendered by the frontend's Image component
    data_model = _ImagePayload

    def preprocess(self, payload):
        what = self.label or "image"
        try:
            if payload is not None and getattr(payload, "path", None):
                open_image(_uploaded(self, payload.path, what), what)
            return super().preprocess(payload)
        except Exception as e:
            raise user_error(e, f"reading the {what}") from None


class CheckedEditor(gr.ImageEditor):
    """gr.ImageEditor (image plus brush layers) whose background and layers are checked first, turned upright
    as their EXIF says and always re-saved as PNG (build it with type="filepath", format="png"): Gradio's own
    editor re-saves in the upload's format, and a JPEG cannot hold the editor's RGBA."""

    is_template = True  # rendered by the frontend's ImageEditor component
    data_model = _EditorPayload

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception as e:
            raise user_error(e, "reading the image") from None

    def convert_and_format_image(self, file, flatten_on_white: bool = False):
        # Gradio builds the frontend's props from __init__'s signature: so no __init__ override here
        if file is None:
            return None
        if isinstance(file, FileData):  # an uploaded file (the browser sends the canvas' PNG bytes instead)
            im = open_image(_uploaded(self, file.path, "image"), "image")
            name = Path(file.orig_name or "image").stem or "image"
        else:
            im, name = open_image(file, "image"), "image"
        mode = self.image_mode or "RGBA"
        transparent = "A" in im.getbands() or "transparency" in im.info
        if flatten_on_white and mode not in ("RGBA", "LA", "PA") and transparent:
            im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
        im = im.convert(mode)  # keeps im.info: its text (e.g. the EXIF orientation applied) goes into the PNG
        return image_utils.format_image(im, self.type, self.GRADIO_CACHE, format="png", name=name)


class CheckedSlider(gr.Slider):
    """gr.Slider whose out-of-range error names the slider."""

    is_template = True  # rendered by the frontend's Slider component

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except (gr.Error, TypeError, ValueError):
            raise gr.Error(f"{self.label}: must be a number in {self.minimum}..{self.maximum}, "
                           f"got {payload!r}") from None


class CheckedNumber(gr.Number):
    """gr.Number whose error for a value that is not a number names the field."""

    is_template = True  # rendered by the frontend's Number component

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception:
            raise gr.Error(f"{self.label}: must be a number, got {payload!r}") from None

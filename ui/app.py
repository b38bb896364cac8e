"""The genstudio studio: a Gradio app to generate, edit, compare and inspect models.

    from ui.app import build, launch
    launch(build(["checkpoints/edm_tiny_cifar10"]), port=7860)

It calls genstudio's public API only (genstudio.api.Pipeline, samplers.GRIDS). Each tab is a module of
ui.tabs (its layout, events and handlers); this one lays out the shared model dropdown, calls each tab's
build, and merges the tabs' updates when the model changes. Every event checks its inputs first
(ui.validate) and turns a bad value into a gr.Error; images go out as PNG."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from genstudio.api import Pipeline, shipped_checkpoints

from .common import Shared, user_errors
from .models import Models
from .tabs import compare, edit, generate, models

QUEUE_SIZE = 16
MAX_FILE_SIZE = "10mb"
CSS = ".pixelated img, .pixelated canvas { image-rendering: pixelated; }"


def _model_info(pipe: Pipeline) -> str:
    """The line under the model dropdown: what the model is and which samplers can drive it."""
    usable, d = pipe.samplers(), pipe.defaults()
    return (f"**{pipe.name}**: {pipe.model.family} ({pipe.model.kind}), "
            f"{'%d classes' % pipe.num_classes if pipe.num_classes else 'unconditional'}, "
            f"{sum(p.numel() for p in pipe.model.parameters()):,} parameters; default {d['sampler']}, "
            f"{d['steps']} steps. Samplers: {', '.join(usable)}")


def build(checkpoints: list[str | Path] | None = None, device: str = "cpu") -> gr.Blocks:
    """The studio's gr.Blocks on `checkpoints` (default: the shipped ones, the default first)."""
    checkpoints = list(checkpoints) if checkpoints else shipped_checkpoints()
    shared = Shared(Models(checkpoints, device=device))
    first = shared.models.checkpoints[0]
    pipe0 = shared.pipe(first)

    with gr.Blocks(title="genstudio studio") as demo:
        gr.Markdown("# genstudio studio\nGenerate, edit and compare images of score, diffusion, flow and "
                    "consistency models. Uploaded images of any size are center-cropped and resized to the "
                    "model's image size.")
        with gr.Row():
            model_dropdown = gr.Dropdown(
                shared.models.checkpoints, value=first, allow_custom_value=True, scale=3,
                label="model (a shipped checkpoint, or type a checkpoint folder's path)")
            model_info = gr.Markdown()

        with gr.Tabs() as tabs:
            generate_tab = generate.build(shared, model_dropdown, pipe0)
            edit_tab = edit.build(shared, model_dropdown, pipe0)
            compare_tab = compare.build(shared, model_dropdown, pipe0)
            models_tab = models.build(shared, demo)
        generate.connect_send_to_edit(generate_tab, edit_tab.image, tabs)
        followers = [generate_tab, edit_tab, compare_tab, models_tab]  # the tabs' controls that follow the model

        @user_errors
        def select_model(model) -> dict:
            """Refresh every model-dependent control for the chosen model."""
            pipe = shared.pipe(model)  # the info line, then each tab's updates
            updates = {model_info: _model_info(pipe)}
            for tab in followers:
                updates.update(tab.on_model(pipe))
            return updates

        model_outputs = [model_info] + [c for tab in followers for c in tab.model_outputs]
        model_dropdown.change(select_model, model_dropdown, model_outputs, api_name="select_model")
        demo.load(select_model, model_dropdown, model_outputs, api_name=False)
    demo.studio = shared  # type: ignore[attr-defined]
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, block: bool = True, quiet: bool = False):
    """Serve the studio: a bounded queue, no share link, uploads capped, nothing served beyond Gradio's cache."""
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2)
    return demo.launch(server_name=host, server_port=port, share=False, max_file_size=MAX_FILE_SIZE,
                       allowed_paths=[], prevent_thread_lock=not block, quiet=quiet, show_error=False, css=CSS,
                       footer_links=["api"])

"""The genstudio studio: a Gradio app to generate, edit, compare, evaluate, inspect and train models.

    from ui.app import build, launch
    launch(build(["checkpoints/edm_tiny_cifar10"]), port=7860)

It calls genstudio's public API only (genstudio.api.Pipeline, samplers.GRIDS, the trainer's command line through
ui.runs, genstudio.evaluation.sweep, genstudio.publish). Each tab is a module of
ui.tabs (its layout, events and handlers); this one lays out the shared model dropdown, calls each tab's
build, and merges the tabs' updates when the model changes. Every event checks its inputs first
(ui.validate) and turns a bad value into a gr.Error; images go out as PNG."""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import gradio as gr

from genstudio.api import Pipeline, shipped_checkpoints

from .common import Shared, user_errors
from .models import Models
from .runs import Runs
from .tabs import compare, compare_models, edit, evaluate, generate, models, train

QUEUE_SIZE = 16
MAX_FILE_SIZE = "10mb"
CSS = (".pixelated img, .pixelated canvas { image-rendering: pixelated; } "
       "#models-card td:first-child { white-space: nowrap; }")


def _model_info(pipe: Pipeline) -> str:
    """The line under the model dropdown: what the model is and which samplers can drive it."""
    usable, d = pipe.samplers(), pipe.defaults()
    return (f"**{pipe.name}**: {pipe.model.family} ({pipe.model.kind}), "
            f"{'%d classes' % pipe.num_classes if pipe.num_classes else 'unconditional'}, "
            f"{sum(p.numel() for p in pipe.model.parameters()):,} parameters; default {d['sampler']}, "
            f"{d['steps']} steps. Samplers: {', '.join(usable)}")


def is_local(host: str) -> bool:
    """Whether `host` is this machine only (a loopback name or address), so nobody else reaches the studio."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build(checkpoints: list[str | Path] | None = None, device: str = "cpu", host: str = "127.0.0.1",
          allow_training: bool = False, runs_dir: str | Path = "runs", config_dirs: list[str | Path] | None = None,
          evaluator: dict[str, Any] | None = None) -> gr.Blocks:
    """The studio's gr.Blocks on `checkpoints` (default: the shipped ones, the default first), plus the models
    exported into `runs_dir`. The Train tab (it starts processes) is there only when `host` is this machine
    only, or with `allow_training`; runs start from the TOML files of `config_dirs` (default: configs/) and live
    in `runs_dir`, where Evaluate writes its sweeps too (`runs_dir`/sweeps). `evaluator`: options for the
    Evaluate tab's evaluator (genstudio.evaluation.options), e.g. {"reference": ..., "classifier": ...}."""
    runs = Runs(runs_dir, config_dirs)
    checkpoints = list(checkpoints) if checkpoints else shipped_checkpoints()
    checkpoints += [p for p in runs.exported() if str(p) not in map(str, checkpoints)]
    shared = Shared(Models(checkpoints, device=device))
    first = shared.models.checkpoints[0]
    pipe0 = shared.pipe(first)
    training = allow_training or is_local(host)

    with gr.Blocks(title="genstudio studio") as demo:
        gr.Markdown("# genstudio studio\nGenerate, edit and compare images of score, diffusion, flow and "
                    "consistency models. Uploaded images of any size are center-cropped and resized to the "
                    "model's image size.")
        with gr.Row():
            model_dropdown = shared.model_list(gr.Dropdown(
                shared.models.choices(), value=first, allow_custom_value=True, scale=3,
                label="model (a listed checkpoint, or type a checkpoint folder's path)", elem_id="model"))
            model_info = gr.Markdown()

        with gr.Tabs() as tabs:
            generate_tab = generate.build(shared, model_dropdown, pipe0)
            edit_tab = edit.build(shared, model_dropdown, pipe0)
            compare_tab = compare.build(shared, model_dropdown, pipe0)
            compare_models.build(shared)
            evaluate.build(shared, runs.root / "sweeps", evaluator or {})
            models_tab = models.build(shared, demo)
            if training:
                train.build(shared, runs)
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
    demo.runs = runs if training else None  # type: ignore[attr-defined]
    return demo


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, block: bool = True, quiet: bool = False):
    """Serve the studio: a bounded queue, no share link, uploads capped, nothing served beyond Gradio's cache."""
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=2)
    return demo.launch(server_name=host, server_port=port, share=False, max_file_size=MAX_FILE_SIZE,
                       allowed_paths=[], prevent_thread_lock=not block, quiet=quiet, show_error=False, css=CSS,
                       footer_links=["api"])

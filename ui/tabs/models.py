"""The Models tab: a checkpoint's card (what it is, its recorded scores, its sample grid and FID-vs-NFE plot), its
audit, and the tables across checkpoints (bits/dim, the one-step comparison)."""
from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from genstudio.api import Pipeline
from genstudio.evaluation.metrics import checkpoint_hash
from genstudio.evaluation.records import protocol_key
from genstudio.images import image_grid
from genstudio.neon import BASE_SAMPLES

from ..audit import audit_view
from ..common import HEAVY, Shared, user_errors
from ..likelihood import likelihood_table
from ..models import card, read_metrics, read_png
from ..onestep import onestep_table

SIDE_BY_SIDE = 10  # images per model in "base vs improved": seeds 0..9, labels i % classes


def _base_is_there(neon: dict, folder: Path) -> bool:
    """Whether the base named on a Neon card is a checkpoint here, and the one merged from (where the card says)."""
    base = Path(neon["base"]).expanduser()
    if not (base / "genstudio.json").is_file() or base.resolve() == folder.resolve():
        return False
    return not isinstance(neon.get("base_sha256"), str) or checkpoint_hash(base) == neon["base_sha256"]


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

    @user_errors
    def base_vs_improved(self, model) -> dict:
        """A model made by genstudio neon next to its base: the same seeds and labels, each at its default sampler.
        Where the base is gone (replaced by the merged model in place, as the shipped ect_cifar10 was), the two
        recorded sample grids and the two cards' scores instead."""
        folder = self.shared.models.resolve(model)
        metrics = read_metrics(folder)
        neon = metrics.get("neon")
        if not isinstance(neon, dict) or not isinstance(neon.get("base"), str):
            raise gr.Error(f"{folder.name} was not made by genstudio neon: its card names no base model")
        improved = f"Neon, w = {neon.get('w')}"
        if not _base_is_there(neon, folder):
            return self._recorded_side_by_side(folder, metrics, improved)
        pipes = {"base": self.shared.pipe(neon["base"]), improved: self.shared.pipe(model)}
        shown, rows = [], []
        for title, pipe in pipes.items():
            labels = [i % pipe.num_classes for i in range(SIDE_BY_SIDE)] if pipe.num_classes else None
            res = pipe.generate(SIDE_BY_SIDE, seed=0, labels=labels, guidance=2.0 if labels else 1.0)
            shown.append((image_grid(res.images, nrow=SIDE_BY_SIDE), f"{title}: {pipe.name}"))
            rows.append(f"| {title} | {pipe.name} | {res.sampler}, {res.steps} steps | {res.nfe} | "
                        f"{res.seconds:.1f} s |")
        text = "\n".join(["| | model | sampler | NFE | time |", "| --- | --- | --- | --- | --- |", *rows,
                          "", "Seeds 0..9, labels i % classes, guidance 2 for a class-conditional model."])
        return {self.neon_images: shown, self.neon_info: text}

    def _recorded_side_by_side(self, folder: Path, metrics: dict, improved: str) -> dict:
        grids = [(read_png(folder / BASE_SAMPLES), "base: its samples.png, kept on this card"),
                 (read_png(folder / "samples.png"), f"{improved}: samples.png")]
        if any(g is None for g, _ in grids):
            raise gr.Error(f"the base of {folder.name} is not here (moved, or replaced by this model), and the "
                           f"card lacks {BASE_SAMPLES} or samples.png to show instead")
        base = {protocol_key(r): r for r in metrics.get("base_scores", []) if isinstance(r, dict)}
        rows = [f"| {' | '.join(map(str, key))} | {base[key]['metrics']['fid']:.1f} | {r['metrics']['fid']:.1f} |"
                for r in metrics.get("scores", []) if isinstance(r, dict) and (key := protocol_key(r)) in base
                and "fid" in base[key].get("metrics", {}) and "fid" in r.get("metrics", {})]
        text = "\n".join(["The base is not here (this checkpoint replaced it, or it moved; its sha256 is on the "
                           "card, `neon.base_sha256`). Shown: the two recorded grids (seed 0, labels i % classes, "
                           "guidance 2, each model's default sampler).", "",
                           f"| sampler | steps | precision | first seed | n | base FID | {improved} FID |",
                           "| --- | --- | --- | --- | --- | --- | --- |", *rows])
        return {self.neon_images: grids, self.neon_info: text}

    @user_errors
    def audit(self, model) -> dict:
        text, png = audit_view(self.shared.models.resolve(model))
        return {self.audit_text: text, self.audit_png: png}


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
        with gr.Accordion("Base vs improved (a model made by genstudio neon)", open=False,
                         elem_id="models-neon-accordion"):
            tab.neon_button = gr.Button("Show it next to its base, on the same seeds", elem_id="models-neon")
            tab.neon_images = gr.Gallery(label="base | improved", columns=2, height="auto", format="png",
                                         elem_classes="pixelated", elem_id="models-neon-images")
            tab.neon_info = gr.Markdown(elem_id="models-neon-info")
        with gr.Accordion("Audit: backdoor, memorization, real vs generated", open=True):
            tab.audit_text = gr.Markdown(elem_id="models-audit")
            tab.audit_png = gr.Image(label="audit.png", format="png", interactive=False, elem_id="models-audit-png")
        with gr.Accordion("metrics.json (raw)", open=False):
            tab.metrics = gr.Code(label="metrics.json", language="json", interactive=False)
        tab.likelihood = gr.Markdown(likelihood_table(checkpoints), elem_id="likelihood-table")
        tab.onestep = gr.Markdown(onestep_table(checkpoints), elem_id="onestep-table")

    outputs = [tab.card, tab.samples, tab.plot, tab.metrics]
    tab.model.change(tab.model_card, tab.model, outputs, api_name="model_card")
    demo.load(tab.model_card, tab.model, outputs, api_name=False)
    page.select(tab.model_card, tab.model, outputs, api_name=False)  # shown afresh: e.g. after an evaluation
    audit = [tab.audit_text, tab.audit_png]
    tab.model.change(tab.audit, tab.model, audit, api_name="audit")
    demo.load(tab.audit, tab.model, audit, api_name=False)
    page.select(tab.audit, tab.model, audit, api_name=False)
    tab.neon_button.click(tab.base_vs_improved, tab.model, [tab.neon_images, tab.neon_info],
                          api_name="base_vs_improved", **HEAVY)
    return tab

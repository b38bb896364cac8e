"""The Evaluate tab: FID against NFE for models x samplers x step counts (genstudio.evaluation.sweep, one cell at a
time, so it shows its progress and can be cancelled between cells), one plot with every model overlaid and a
table. Each model's cells go where `genstudio sweep --out <runs>/sweeps/<model> --record` puts them: sweep.json
and fid_vs_nfe.png in that folder, and the scores (with the plot) in the checkpoint's card."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

import samplers
from genstudio.evaluation.metrics import checkpoint_hash
from genstudio.evaluation.records import record_scores
from genstudio.evaluation.sweep import PLOT, plot_curves, sweep

from .. import validate as V
from ..common import Shared, user_errors
from ..components import CheckedNumber

MAX_MODELS, MAX_CELLS = 6, 48
OWN_DEFAULT = "each model's default"
EVALUATOR = {"metrics": ("fid",), "progress": False}  # the studio's evaluator options (build(evaluator=...) adds)
HEADERS = ["model", "sampler", "steps", "NFE", "FID", "n", "seconds"]


class Evaluate:
    """The tab's handlers; build() lays out its components and sets them here."""

    def __init__(self, shared: Shared, out_dir: Path, evaluator: dict[str, Any]):
        self.shared, self.out_dir = shared, out_dir
        self.options = {**EVALUATOR, "device": shared.models.device, **evaluator}
        self.cancelled = threading.Event()

    model_outputs: list = []  # the tab chooses its own models

    def on_model(self, pipe) -> dict:
        return {}

    def _plan(self, models, chosen, steps_text, n) -> tuple[list[tuple[str, Path, list[str]]], list[int], int]:
        models = [models] if isinstance(models, str) else list(models or [])
        chosen = [chosen] if isinstance(chosen, str) else list(chosen or [])
        if not models:
            raise gr.Error("choose at least one model to evaluate")
        if len(models) > MAX_MODELS:
            raise gr.Error(f"at most {MAX_MODELS} models at once, got {len(models)}")
        if not chosen:
            raise gr.Error("choose at least one sampler")
        steps = V.step_list(steps_text)
        n = int(V.number(n, "n", integer=True, limits=(2, 50_000)))
        plan = []
        for value in dict.fromkeys(models):
            pipe = self.shared.pipe(value)
            own = [pipe.defaults()["sampler"]] if OWN_DEFAULT in chosen else []
            usable = list(dict.fromkeys(own + [s for s in chosen if s in pipe.samplers()]))
            if not usable:
                raise gr.Error(f"none of the samplers {chosen} can drive {self.shared.models.label(value)}; "
                               f"its samplers: {', '.join(pipe.samplers())}")
            plan.append((value, self.shared.models.resolve(value), usable))
        cells = sum(len(p[2]) for p in plan) * len(steps)
        if cells > MAX_CELLS:
            raise gr.Error(f"{cells} cells (models x samplers x step counts) asked for; at most {MAX_CELLS} at once")
        return plan, steps, n

    def cancel(self) -> dict:
        self.cancelled.set()
        return {self.info: "cancelled: the cells done so far are kept (sweep.json and the cards)"}

    @user_errors
    def evaluate(self, models, chosen, steps_text, n, progress=gr.Progress()) -> Iterator[dict]:  # noqa: B008
        plan, steps, n = self._plan(models, chosen, steps_text, n)
        self.cancelled.clear()
        total = sum(len(p[2]) for p in plan) * len(steps)
        done, tables = 0, {}
        t0 = time.perf_counter()
        for value, folder, usable in plan:
            name = self.shared.models.label(value)
            out = self.out_dir / name
            for sampler in usable:
                for k in steps:
                    if self.cancelled.is_set():
                        yield {self.info: f"cancelled after {done} of {total} cells; they are kept"}
                        return
                    progress((done, total), desc=f"{name}: {sampler}, {k} steps")
                    yield {self.info: f"cell {done + 1} of {total}: {name}, {sampler}, {k} steps, n {n} ..."}
                    table = sweep(folder, [sampler], [k], out, n=n, **self.options)
                    mine = [c for c in table["cells"] if c["sampler"] == sampler and c["steps"] == k]
                    if table["computed"]:  # recorded as `genstudio sweep --record` does (kept cells already are)
                        ours = [c for c in mine if c["protocol"]["checkpoint"]["sha256"] == checkpoint_hash(folder)]
                        record_scores(folder, ours, out / PLOT)
                    tables.setdefault(name, []).extend(mine)
                    done += 1
                    yield self._results(tables, f"{done} of {total} cells, {time.perf_counter() - t0:.1f} s")
        progress((total, total))
        yield self._results(tables, f"**done**: {total} cells in {time.perf_counter() - t0:.1f} s; each model's "
                                    f"sweep.json and fid_vs_nfe.png are in `{self.out_dir}/<model>`, and its card "
                                    f"(Models tab) lists the scores")

    def _results(self, tables: dict[str, list[dict]], info: str) -> dict:
        curves: dict[str, list[tuple[float, float]]] = {}
        rows = []
        for name, cells in tables.items():
            for c in sorted(cells, key=lambda c: (c["sampler"], c["nfe"])):
                curves.setdefault(f"{name}: {c['sampler']}", []).append((c["nfe"], c["metrics"]["fid"]))
                rows.append([name, c["sampler"], c["steps"], c["nfe"], round(c["metrics"]["fid"], 4),
                             c["protocol"].get("n"), c["protocol"].get("wall_seconds")])
        label = next((c["labels"]["fid"] for cells in tables.values() for c in cells), "FID")
        plot = self.shared.out_dir / f"fid_vs_nfe_{time.time_ns()}.png"
        plot_curves(curves, plot, "FID vs NFE", label)
        return {self.plot: str(plot), self.table: rows, self.info: info}


def build(shared: Shared, out_dir: Path, evaluator: dict[str, Any]) -> Evaluate:
    """Lay out the Evaluate tab (inside the app's gr.Tabs) and register its events."""
    tab = Evaluate(shared, out_dir, evaluator)
    choices = shared.models.choices()
    with gr.Tab("Evaluate", id="evaluate"):
        gr.Markdown(f"FID against NFE (extractor: {tab.options.get('extractor', 'c10')}) for every model x sampler x "
                    f"step count; results go to `{out_dir}/<model>` and the models' cards.")
        with gr.Row():
            models = shared.model_list(gr.Dropdown(choices, value=[choices[0][1]], multiselect=True,
                                                   allow_custom_value=True, label="models", scale=2,
                                                   elem_id="evaluate-models"))
            chosen = gr.Dropdown([OWN_DEFAULT, *samplers.SAMPLERS], value=[OWN_DEFAULT, "euler"], multiselect=True,
                                 allow_custom_value=True, label="samplers (each model runs those it can)", scale=2)
        with gr.Row():
            steps = gr.Textbox("2, 4", label="step counts (comma-separated)", elem_id="evaluate-steps")
            n = CheckedNumber(1000, precision=0, label="n (images per cell; the standard protocol is 10,000 for c10)",
                              elem_id="evaluate-n")
        with gr.Row():
            run = gr.Button("Evaluate", variant="primary", elem_id="evaluate-button")
            cancel = gr.Button("Cancel", variant="stop", elem_id="evaluate-cancel")
        tab.info = gr.Markdown(elem_id="evaluate-info")
        with gr.Row():
            tab.plot = gr.Image(label="FID vs NFE, every model overlaid", type="filepath", format="png",
                                interactive=False, elem_id="evaluate-plot")
            tab.table = gr.Dataframe(headers=HEADERS, interactive=False, elem_id="evaluate-table")
    event = run.click(tab.evaluate, [models, chosen, steps, n], [tab.plot, tab.table, tab.info],
                      api_name="evaluate", concurrency_limit=1, concurrency_id="sampling")
    cancel.click(tab.cancel, None, tab.info, cancels=[event], api_name="evaluate_cancel")
    return tab

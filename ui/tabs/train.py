"""The Train tab: start a run from a config (a few keys overridden), watch its loss, images/s, ETA and latest
sample grid, stop it (SIGTERM: the trainer checkpoints and exits), resume it, and export it as a checkpoint
that the model lists offer at once. The process and the run folders are ui.runs.Runs'."""
from __future__ import annotations

import time

import gradio as gr
import numpy as np
import pandas as pd

from genstudio.publish import publish

from ..common import HEAVY, Shared, enlarged, user_errors
from ..models import read_png
from ..runs import PRECISIONS, Runs

KEEP = "(the config's)"
MAX_POINTS = 2000  # loss points drawn (a longer log is thinned evenly)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(seconds)
    return f"{seconds // 3600} h {seconds % 3600 // 60} min" if seconds >= 3600 else \
        f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def _grid(path) -> np.ndarray | None:
    """A sample grid enlarged (nearest pixel) so that even an 8x8 model's grid is seen."""
    image = read_png(path) if path else None
    return None if image is None else enlarged(image)


class Train:
    """The tab's handlers; build() lays out its components and sets them here."""

    def __init__(self, shared: Shared, runs: Runs):
        self.shared, self.runs = shared, runs

    model_outputs: list = []  # the tab does not follow the studio's model

    def on_model(self, pipe) -> dict:
        return {}

    def _overrides(self, steps, batch, lr, precision) -> dict:
        return self.runs.overrides(steps, batch, lr, None if precision in (None, "", KEEP) else precision)

    def _started(self, name: str, what: str) -> dict:
        return {self.run: gr.update(choices=self.runs.names(), value=name),
                self.info: f"**{name}**: {what}; the curve fills in as it trains (Stop saves a checkpoint)"}

    @user_errors
    def start(self, config, steps, batch, lr, precision, output) -> dict:
        name = self.runs.start(config, output, self._overrides(steps, batch, lr, precision))
        return self._started(name, f"started from {config}")

    @user_errors
    def resume(self, run, steps, batch, lr, precision) -> dict:
        name = self.runs.resume(run, self._overrides(steps, batch, lr, precision))
        return self._started(name, "resumed from its latest checkpoint")

    @user_errors
    def stop(self) -> dict:
        name = self.runs.stop()
        return {self.info: f"**{name}**: stop requested (SIGTERM): the trainer saves a checkpoint and exits"}

    @user_errors
    def export(self, run) -> dict:
        folder = self.runs.run_folder(run)
        if self.runs.is_running(folder.name):
            raise gr.Error(f"run {folder.name!r} is still training; stop it (or let it finish) before exporting")
        if not (folder / "model" / "genstudio.json").is_file():
            raise gr.Error(f"run {folder.name!r} has no exported model/ yet: it saves one at its first checkpoint")
        t0 = time.perf_counter()
        dest = publish(folder, self.runs.export_dir(folder.name))
        value = self.shared.models.add(dest)
        info = (f"**{folder.name}** exported to `{dest}` (model, samples.png, metrics.json) in "
                f"{time.perf_counter() - t0:.1f} s; the model lists now offer it as "
                f"**{self.shared.models.label(dest)}**")
        return {self.info: info, **self.shared.list_updates(), self.exported: value}

    def tick(self, run, shown) -> dict:
        """status for the timer: the sample grid sent only when it is a new one (`shown`: the grid's caption on
        the page); a run that went away is a line, not an error every second."""
        try:
            out = self.status(run, shown)
        except gr.Error as e:
            return {self.info: e.message}
        return {**out, self.shown: out[self.grid_label]}

    @user_errors
    def status(self, run, shown: str | None = None) -> dict:
        if run in (None, ""):
            return {self.info: "no run chosen: start one, or pick a run of the runs folder"}
        s = self.runs.status(run)
        pts = s["losses"]
        if len(pts) > MAX_POINTS:
            pts = pts[::len(pts) // MAX_POINTS + 1] + pts[-1:]
        frame = pd.DataFrame({"step": [p[0] for p in pts], "loss": [p[1] for p in pts]})
        parts = [f"**{s['name']}**: {s['state']}", f"step {s['step']} of {s['max_steps']}"]
        if pts:
            parts.append(f"loss {pts[-1][1]:.4g}")
        if s["running"] and s["img_per_s"]:
            parts += [f"{s['img_per_s']:.0f} img/s", f"ETA {_duration(s['eta_s'])}"]
        ckpt = s["checkpoint"]
        parts.append(f"latest checkpoint: {ckpt.name if ckpt else 'none yet'}")
        grid = s["sample_grid"]
        caption = f"latest sample grid: {grid.name}" if grid else "no sample grid yet"
        return {self.info: "; ".join(parts), self.loss: frame, self.log: s["log_tail"], self.grid_label: caption,
                self.grid: gr.skip() if shown == caption else _grid(grid)}


def build(shared: Shared, runs: Runs) -> Train:
    """Lay out the Train tab (inside the app's gr.Tabs) and register its events."""
    tab = Train(shared, runs)
    configs = runs.configs()
    names = runs.names()
    with gr.Tab("Train", id="train"):
        gr.Markdown(f"Runs are folders of `{runs.root}`; each trains in its own process (`python -m genstudio.train`), "
                    "one at a time. Empty fields keep the config's values.")
        with gr.Row():
            with gr.Column(scale=1):
                config = gr.Dropdown(configs, value=configs[0][1] if configs else None, allow_custom_value=True,
                                     label="config (configs/*.toml)", elem_id="train-config")
                with gr.Row():  # text fields: empty keeps the config's value
                    steps = gr.Textbox("", label="steps", placeholder=KEEP, elem_id="train-steps")
                    batch = gr.Textbox("", label="batch size", placeholder=KEEP)
                with gr.Row():
                    lr = gr.Textbox("", label="learning rate", placeholder=KEEP)
                    precision = gr.Dropdown([KEEP, *PRECISIONS], value=KEEP, label="precision",
                                            allow_custom_value=True)
                output = gr.Textbox("", label="output folder (a name in the runs folder; empty: the config's)",
                                    elem_id="train-output")
                start = gr.Button("Start", variant="primary", elem_id="train-start")
                tab.run = gr.Dropdown(names, value=names[0] if names else None, allow_custom_value=True,
                                      label="run (found in the runs folder)", elem_id="train-run")
                with gr.Row():
                    stop = gr.Button("Stop", variant="stop", elem_id="train-stop")
                    resume = gr.Button("Resume")
                    export = gr.Button("Export", elem_id="train-export")
                tab.exported = gr.Textbox(visible=False)
            with gr.Column(scale=2):
                tab.info = gr.Markdown(elem_id="train-info")
                tab.loss = gr.LinePlot(pd.DataFrame({"step": [], "loss": []}), x="step", y="loss", height=260,
                                       label="training loss", elem_id="train-loss")
                tab.grid_label = gr.Markdown()
                tab.grid = gr.Image(label="latest sample grid", format="png", interactive=False, height=260,
                                    elem_classes="pixelated", elem_id="train-grid")
                tab.log = gr.Textbox(label="trainer output (last lines)", lines=4, max_lines=8, interactive=False)
        timer = gr.Timer(1.0)
        tab.shown = gr.State(None)  # the grid this page shows (its caption): sent again only when it changes

    started = [tab.run, tab.info]
    shown = [tab.info, tab.loss, tab.grid, tab.grid_label, tab.log]
    start.click(tab.start, [config, steps, batch, lr, precision, output], started, api_name="train_start")
    resume.click(tab.resume, [tab.run, steps, batch, lr, precision], started, api_name="train_resume")
    stop.click(tab.stop, None, tab.info, api_name="train_stop")
    export.click(tab.export, tab.run, [tab.info, *shared.model_lists, tab.exported], api_name="train_export",
                 **HEAVY)
    tab.run.change(tab.status, tab.run, shown, api_name="train_status")
    timer.tick(tab.tick, [tab.run, tab.shown], [*shown, tab.shown], api_name=False, show_progress="hidden",
               trigger_mode="always_last")
    return tab

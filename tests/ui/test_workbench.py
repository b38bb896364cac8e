"""The studio as a workbench, driven through gradio_client against a live localhost server with micro checkpoints
made here: a training run started, watched, stopped, exported and resumed from the Train tab; an evaluation of two
models; colorization; models compared; and bad inputs to the new tabs, each with a clear message."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from tests.helpers import SIZE, refused_wrongly, serve, workbench
from tests.ui.test_ui import editor
from ui.app import build
from ui.tabs.compare_models import OWN_DEFAULT
from ui.tabs.evaluate import OWN_DEFAULT as EVAL_OWN
from ui.tabs.train import KEEP


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("workbench")
    (field, cmap), options = workbench(root)
    configs = options["config_dirs"][0]
    (configs / "zz_bad_lr.toml").write_text((configs / "micro.toml").read_text().replace("lr = 1e-3", "lr = -1.0"))
    (configs / "pipeline.toml").write_text("[reflow]\npairs = 10\n")  # not a trainer config: not offered
    rng = np.random.default_rng(0)
    gray = np.repeat(rng.integers(0, 256, (SIZE, SIZE, 1), dtype=np.uint8), 3, -1)
    Image.fromarray(gray).save(root / "gray.png")
    (root / "notes.png").write_text("not an image\n" * 10)
    with serve([field, cmap], **options) as (url, demo):
        yield {"url": url, "client": Client(url, verbose=False), "field": str(field), "map": str(cmap), "root": root,
               "demo": demo, "config": str(configs / "micro.toml"), "bad_lr": str(configs / "zz_bad_lr.toml"),
               "gray": str(root / "gray.png"), "text": str(root / "notes.png")}


def _status(ctx, run="micro"):
    info, loss, grid, grid_label, log = ctx["client"].predict(run, api_name="/train_status")
    return info, loss, grid


def _wait(ctx, done, timeout=90.0, run="micro"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        s = _status(ctx, run)
        if done(*s):
            return s
        time.sleep(0.5)
    raise AssertionError(f"timed out; last status: {s[0]}")


def _rgb(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_train_start_watch_stop_export_resume(ctx):
    client = ctx["client"]
    listed = next(c for c in client.config["components"] if c["props"].get("elem_id") == "train-config")
    assert [c[0] for c in listed["props"]["choices"]] == ["configs/micro.toml", "configs/zz_bad_lr.toml"]
    run, info = client.predict(ctx["config"], None, None, None, KEEP, "micro", api_name="/train_start")
    assert run["value"] == "micro" and "started" in info
    with pytest.raises(Exception, match="one run at a time"):  # a second concurrent run
        client.predict(ctx["config"], None, None, None, KEEP, "other", api_name="/train_start")
    info, loss, grid = _wait(ctx, lambda info, loss, grid: len(loss["data"]) >= 4 and grid is not None)
    assert "training" in info and "img/s" in info and "ETA" in info and loss["data"][0][0] == 1
    assert all(np.isfinite(v) for _, v in loss["data"])
    assert _rgb(grid).std() > 0  # the latest sample grid
    restarted = build([ctx["field"]], runs_dir=ctx["root"] / "runs", config_dirs=[Path(ctx["config"]).parent])
    assert "micro" in restarted.runs.names()  # a restarted studio finds the run, and sees it still training
    assert "started before this studio restarted" in restarted.runs.status("micro")["state"]
    with pytest.raises(ValueError, match="still training"):
        restarted.runs.start(ctx["config"], "other", {})
    assert "stop requested" in client.predict(api_name="/train_stop")
    info, loss, _ = _wait(ctx, lambda info, loss, grid: "stopped" in info)
    step = int(info.split("step ")[1].split()[0])
    assert f"latest checkpoint: step_{step:08d}" in info and len(loss["data"]) == step
    model = ctx["root"] / "runs" / "micro" / "model"
    assert json.loads((model / "genstudio.json").read_text())["training"]["steps"] == step
    out = client.predict("micro", api_name="/train_export")
    info, exported = out[0], out[-1]
    assert "exported" in info and Path(exported) == ctx["root"] / "runs" / "exports" / "micro"
    assert {"micro": exported}.items() <= dict(out[1]["choices"]).items()  # the model lists offer it at once
    gen = client.predict(exported, "euler", 2, "auto (the sampler's default)", 0, False, 2, -1, 1.0,
                         api_name="/generate")
    assert len(gen[1]) == 2 and "NFE 2" in gen[2]
    text = client.predict(exported, api_name="/model_card")[0]
    assert f"| steps | {step} |" in text and "micro" in text
    restarted = build([ctx["field"]], runs_dir=ctx["root"] / "runs", config_dirs=[Path(ctx["config"]).parent])
    assert exported in restarted.studio.models.checkpoints and restarted.runs.status("micro")["checkpoint"]
    run, info = client.predict("micro", step + 2, None, None, KEEP, api_name="/train_resume")
    info, loss, _ = _wait(ctx, lambda info, loss, grid: "finished" in info)
    assert f"step {step + 2} of {step + 2}" in info and len(loss["data"]) == step + 2


def test_the_train_tab_is_there_only_on_this_machine_or_when_allowed(tmp_path):
    from tests.helpers import field_checkpoint
    from ui.app import is_local

    assert all(is_local(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(is_local(h) for h in ("0.0.0.0", "::", "192.168.1.5", "studio.example.org", ""))
    ckpt = field_checkpoint(tmp_path)
    apis = lambda **kw: {fn.api_name for fn in build([ckpt], runs_dir=tmp_path / "runs", **kw).fns.values()}  # noqa
    assert "train_start" in apis(host="localhost")
    assert "train_start" not in apis(host="0.0.0.0") and "generate" in apis(host="0.0.0.0")
    assert "train_start" in apis(host="0.0.0.0", allow_training=True)


def test_evaluate_two_models_plots_tabulates_and_records(ctx):
    plot, table, info = ctx["client"].predict([ctx["field"], ctx["map"]], ["euler", "consistency"], "1, 2", 6,
                                              api_name="/evaluate")
    rows = table["data"]
    assert {(r[0], r[1], r[2]) for r in rows} == {("field_ckpt", s, k) for s in ("euler", "consistency")
                                                  for k in (1, 2)} | {("map_ckpt", "consistency", k) for k in (1, 2)}
    assert all(np.isfinite(r[4]) and r[5] == 6 for r in rows) and "done" in info
    image = _rgb(plot)
    assert image.shape[1] > 400 and image.std() > 10
    for name in ("field_ckpt", "map_ckpt"):
        sweep = json.loads((ctx["root"] / "runs" / "sweeps" / name / "sweep.json").read_text())
        assert len(sweep["cells"]) == (4 if name == "field_ckpt" else 2)
    text, _, card_plot, metrics = ctx["client"].predict(ctx["field"], api_name="/model_card")
    assert card_plot is not None and len(json.loads(metrics)["scores"]) == 4
    assert "| sampler | steps | nfe |" in text and "metrics.fid" in text and "c10" in text


def test_evaluate_can_be_cancelled_and_keeps_the_cells_done(ctx):
    client = ctx["client"]
    job = client.submit([ctx["map"]], ["consistency"], "3, 4, 5, 6, 7, 8, 9, 10", 64, api_name="/evaluate")
    t0 = time.time()
    while not any("2 of 8 cells" in str(o) for o in job.outputs()) and time.time() - t0 < 60:
        time.sleep(0.1)
    assert "cancelled" in client.predict(api_name="/evaluate_cancel")
    while not job.done() and time.time() - t0 < 60:
        time.sleep(0.1)
    cells = json.loads((ctx["root"] / "runs" / "sweeps" / "map_ckpt" / "sweep.json").read_text())["cells"]
    assert 2 <= len([c for c in cells if c["steps"] >= 3]) < 8  # stopped early; what was done is kept
    rows = client.predict([ctx["map"]], [EVAL_OWN], "1", 6, api_name="/evaluate")[1]["data"]
    assert [r[1] for r in rows] == ["consistency"]  # "each model's default"


def test_colorize_keeps_the_luminance_for_field_and_map_models(ctx):
    for model, label in ((ctx["field"], 0), (ctx["map"], -1)):
        gallery, info, file = ctx["client"].predict(model, editor(ctx["gray"]), 3, 0, 3, 1, label, 1.0,
                                                    api_name="/colorize")
        gray = _rgb(ctx["gray"]).astype(float)
        results = [_rgb(g["image"]).astype(float) for g in gallery[2:5]]
        assert len(gallery) == 6 and "Colorized" in info and "luminance" in info
        for out in results:
            assert np.abs(out.mean(-1) - gray[..., 0]).max() <= 0.5 + 1e-9  # within the rounding of each channel
        assert np.mean([r.std(-1).mean() for r in results]) > 1  # colour was added


def test_compare_models_side_by_side_and_compare_defaults(ctx):
    gallery, table = ctx["client"].predict([ctx["field"], ctx["map"]], OWN_DEFAULT, None, 3, 4, -1, 1.0,
                                           api_name="/compare_models")
    assert [r[:4] for r in table["data"]] == [["field_ckpt", "heun", 3, 5], ["map_ckpt", "consistency", 2, 2]]
    assert len(gallery) == 2 and "NFE 5" in gallery[0]["caption"]
    gallery, table = ctx["client"].predict([ctx["field"], ctx["map"]], "consistency", 1, 3, 2, 1, 1.0,
                                           api_name="/compare_models")
    assert [r[1:4] for r in table["data"]] == [["consistency", 1, 1]] * 2
    out = ctx["client"].predict(ctx["field"], api_name="/select_model")
    assert out[10]["value"] == ["heun", "ddim", "dpmpp_2m"]  # the Compare tab: the default plus two others
    models = next(c for c in ctx["client"].config["components"] if c["props"].get("elem_id") == "models-checkpoint")
    assert ["field_ckpt", ctx["field"]] in models["props"]["choices"]  # listed by name, the folder as the value


BAD = [  # (endpoint, arguments, a piece of the message)
    ("train_start", lambda c: ["/etc/passwd", None, None, None, KEEP, "x"], "outside the project's config folders"),
    ("train_start", lambda c: [str(Path(c["config"]).parent / ".." / "x.toml"), None, None, None, KEEP, "x"],
     "outside the project's config folders"),
    ("train_start", lambda c: [c["config"], -5, None, None, KEEP, "x"], "steps must be in"),
    ("train_start", lambda c: [c["config"], None, 0, None, KEEP, "x"], "batch size must be in"),
    ("train_start", lambda c: [c["config"], None, None, 100.0, KEEP, "x"], "learning rate must be in"),
    ("train_start", lambda c: [c["config"], None, None, None, "fp8", "x"], "precision must be one of"),
    ("train_start", lambda c: [c["config"], None, None, None, KEEP, "../escape"], "must be a folder name"),
    ("train_start", lambda c: [c["bad_lr"], None, None, None, KEEP, "x"], "train.lr must be >= 0"),
    ("train_stop", lambda c: [], "nothing is training"),
    ("train_resume", lambda c: ["nope", None, None, None, KEEP], "no run folder"),
    ("train_export", lambda c: ["../../etc", ], "choose a run of"),
    ("train_status", lambda c: ["nope"], "no run folder"),
    ("colorize", lambda c: [c["field"], editor(c["text"]), 2, 0, 3, 1, 0, 1.0], "not an image"),
    ("colorize", lambda c: [c["field"], editor(None), 2, 0, 3, 1, 0, 1.0], "no image"),
    ("colorize", lambda c: [c["field"], editor(c["gray"]), 2, 0, 10**6, 1, 0, 1.0], "noise levels"),
    ("compare_models", lambda c: [[c["field"]], OWN_DEFAULT, None, 0, 2, -1, 1.0], "choose 2 to 4 models"),
    ("compare_models", lambda c: [[c["field"], c["map"]], "heun", None, 0, 2, -1, 1.0], "cannot drive map_ckpt"),
    ("compare_models", lambda c: [[c["field"], c["map"]], OWN_DEFAULT, None, 0, 2, 5, 1.0], "beyond field_ckpt"),
    ("evaluate", lambda c: [[], ["euler"], "2", 8], "at least one model"),
    ("evaluate", lambda c: [[c["map"]], ["euler"], "2", 8], "none of the samplers"),
    ("evaluate", lambda c: [[c["field"]], ["euler"], "two", 8], "whole numbers"),
    ("evaluate", lambda c: [[c["field"]], ["euler"], "2", 1], "n must be in 2..50000"),
]


def test_bad_inputs_to_the_new_tabs_get_clear_messages_and_the_server_stays_up(ctx):
    client = ctx["client"]
    failures = refused_wrongly(client, BAD, ctx)
    assert not failures, "\n".join(failures)
    assert len({m for _, _, m in BAD}) >= 10
    assert not (ctx["root"] / "runs" / "x").exists() and not Path("/etc/x").exists()  # nothing was started
    out = client.predict(ctx["field"], "heun", 3, "auto (the sampler's default)", 0, False, 2, -1, 1.0,
                         api_name="/generate")
    assert len(out[1]) == 2 and "NFE 5" in out[2]

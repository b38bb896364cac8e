"""Uploads: JPEGs and every other file in the corpus (tests/ui/uploads.py) through the Edit tab's image inputs,
each ending in the right image or a clear message, never Gradio's opaque "the upstream Gradio app has raised an
exception"; EXIF orientation honoured; unexpected exceptions turned into short messages and logged."""
from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio.data_classes import FileData
from gradio_client import Client, handle_file
from PIL import Image

from genstudio.api import Pipeline
from tests.helpers import SIZE, field_checkpoint, serve
from tests.ui.uploads import OPAQUE, ORIENTATION, corpus, quadrants, result_matches

AUTO = "auto (the sampler's default)"


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    return corpus(tmp_path_factory.mktemp("uploads"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("uploads_studio")
    field = field_checkpoint(root)
    mask = np.zeros((32, 32, 4), np.uint8)
    mask[8:24, 8:24] = (255, 0, 255, 255)
    Image.fromarray(mask).save(root / "mask.png")
    with serve([field]) as (url, demo):
        yield {"client": Client(url, verbose=False), "field": str(field), "mask": str(root / "mask.png"),
               "url": url, "demo": demo}


def editor(path, layers=()) -> dict:
    return {"background": handle_file(str(path)), "layers": [handle_file(str(p)) for p in layers],
            "composite": handle_file(str(path)), "id": None}


def sdedit_args(s, image, strength=0.0, n=1):
    return [s["field"], image, "euler", 3, AUTO, strength, n, 0, 0, 1.0]


def interp_args(s, image, other, mode="images"):
    return [s["field"], image, other, mode, "ddim", 2, AUTO, 0, 1, 2, 0, 1.0]


def _rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _outcome(client, args, api_name):
    """("image", result) or ("error", message) for a gradio_client call."""
    try:
        return "image", client.predict(*args, api_name=api_name)
    except Exception as e:  # gradio_client raises AppError carrying the gr.Error's message
        return "error", str(e)


def _check(case, kind, value, note_of, image_of) -> str | None:
    """What is wrong with how `case` ended (None: as expected)."""
    if kind == "error":
        if OPAQUE.lower() in value.lower():
            return f"{case.name}: the opaque message"
        if case.expect != "error" or case.message.lower() not in value.lower():
            return f"{case.name}: expected {case.expect} {case.message!r}, got the error {value!r}"
        return None
    if case.expect == "error":
        return f"{case.name}: expected the error {case.message!r}, got a result"
    note = note_of(value)
    if case.note and case.note not in note:
        return f"{case.name}: the note {note!r} lacks {case.note!r}"
    image = image_of(value)
    if image is not None:
        wrong = result_matches(case, image)
        if wrong:
            return f"{case.name}: {wrong}"
    return None


# -- without a server ---------------------------------------------------------------------------------------------

def test_every_case_of_the_corpus_ends_in_the_right_image_or_a_clear_message(cases):
    from ui import validate as V

    failures, table = [], Counter()
    for case in cases:
        try:
            got = ("image", V.model_image(str(case.path), SIZE))
        except gr.Error as e:
            got = ("error", e.message)
        wrong = _check(case, *got, note_of=lambda v: v[1], image_of=lambda v: v[0])
        failures += [wrong] if wrong else []
        table[case.klass, case.expect] += 1
    assert not failures, "\n".join(failures)
    assert len(cases) >= 50 and len({c.klass for c in cases}) == 5 and table["malformed files", "error"] >= 15


def test_the_editor_component_resaves_every_upload_as_png_upright(cases, tmp_path):
    """CheckedEditor's preprocessing (what runs before a handler) on each case, as Gradio calls it."""
    from ui import validate as V
    from ui.components import CheckedEditor

    ed = CheckedEditor(type="filepath", format="png")
    uploads = Path(tempfile.mkdtemp(dir=_upload_folder()))  # where Gradio puts uploads: the editor reads only there
    failures = []
    for case in cases:
        path = str(shutil.copy(case.path, uploads / case.path.name))
        payload = ed.data_model(background=FileData(path=path, orig_name=case.path.name), layers=[],
                                composite=FileData(path=path, orig_name=case.path.name), id=None)
        try:
            value = ed.preprocess(payload)
            with Image.open(value["background"]) as im:
                assert im.format == "PNG" and im.mode == "RGBA"
            got = ("image", V.model_image(value["background"], SIZE))
        except gr.Error as e:
            got = ("error", e.message)
        wrong = _check(case, *got, note_of=lambda v: v[1], image_of=lambda v: v[0])
        failures += [wrong] if wrong else []
    shutil.rmtree(uploads)
    assert not failures, "\n".join(failures)
    outside = next(c.path for c in cases if c.name == "png")
    payload = ed.data_model(background=FileData(path=str(outside)), layers=[], composite=None, id=None)
    with pytest.raises(gr.Error, match="not uploaded to this app"):
        ed.preprocess(payload)


def _upload_folder() -> str:
    from gradio.utils import get_upload_folder

    Path(get_upload_folder()).mkdir(parents=True, exist_ok=True)
    return get_upload_folder()


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_honoured_before_the_crop(tmp_path, orientation):
    from ui import validate as V

    upright = np.concatenate([quadrants(32), np.zeros((32, 16, 3), np.uint8)], axis=1)  # 48 wide, 32 high
    stored = np.ascontiguousarray(np.rot90(upright, 1 if orientation == 6 else -1))  # 32 wide, 48 high
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    path = tmp_path / f"turned{orientation}.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    image, note = V.model_image(str(path), SIZE)
    want = np.asarray(V.square(Image.fromarray(upright), SIZE))
    as_stored = np.asarray(V.square(Image.fromarray(stored), SIZE))
    assert np.abs(image.astype(int) - want).mean() < 8 < np.abs(image.astype(int) - as_stored).mean()
    assert f"48x32, turned upright (EXIF orientation {orientation}), center-cropped" in note


def test_user_errors_keeps_user_messages_and_turns_anything_else_into_a_short_logged_one(caplog):
    from ui.common import user_errors

    def raising(e):
        @user_errors
        def handler():
            raise e

        @user_errors
        def streaming():
            yield 1
            raise e
        return handler, streaming

    for e, message in ((ValueError("steps must be in 1..200"), "steps must be in 1..200"),
                       (FileNotFoundError("no such checkpoint"), "no such checkpoint"),
                       (gr.Error("the mask is empty"), "the mask is empty")):
        handler, streaming = raising(e)
        with pytest.raises(gr.Error) as got:
            handler()
        assert got.value.message == message
        with pytest.raises(gr.Error) as got:
            list(streaming())
        assert got.value.message == message
    assert not caplog.records
    for e in (RuntimeError("CUDA out of memory"), KeyError("x"), OSError("cannot write mode RGBA as JPEG"),
              ZeroDivisionError()):
        for fn in raising(e):
            caplog.clear()
            with caplog.at_level(logging.ERROR, logger="ui"), pytest.raises(gr.Error) as got:
                list(fn()) if fn.__name__ == "streaming" else fn()
            text = got.value.message
            assert f"{fn.__name__} failed unexpectedly ({type(e).__name__})" in text and "try again" in text
            assert len(text) < 200 and OPAQUE not in text
            record = caplog.records[-1]
            assert record.levelno == logging.ERROR and record.exc_info and record.exc_info[1] is e


# -- through the served studio (gradio_client) -------------------------------------------------------------------

def test_a_jpeg_upload_works_in_every_edit_endpoint(server, cases):
    client = server["client"]
    jpeg = next(c.path for c in cases if c.name == "jpeg (.jpg)")
    gallery, info, file = client.predict(*sdedit_args(server, editor(jpeg), strength=0.5, n=2), api_name="/sdedit")
    assert len(gallery) == 3 and "SDEdit at strength 0.5" in info and "32x32" in info
    assert all(_rgb(g["image"]).shape == (SIZE, SIZE, 3) for g in gallery)
    gallery, info, file = client.predict(server["field"], editor(jpeg, [server["mask"]]), 2, 0, 3, 1, 0, 1.0,
                                         api_name="/inpaint")
    assert len(gallery) == 4 and "Filled 64 of 256 pixels" in info
    known = _rgb(gallery[1]["image"])
    for g in gallery[2:]:  # the known pixels are the JPEG's
        out = _rgb(g["image"])
        assert np.array_equal(out[(known != 128).any(-1)], _rgb(gallery[0]["image"])[(known != 128).any(-1)])
    gallery, info, file = client.predict(server["field"], editor(jpeg), "euler", 2, AUTO, 0.3, 0.1, 0, 0, 1.0,
                                         api_name="/purify")
    assert [g["caption"] for g in gallery][1:] == ["after", "before | after"] and "Purified" in info
    other = next(c.path for c in cases if c.name == "jpeg, orientation 6")
    gallery, info, file = client.predict(*interp_args(server, editor(jpeg), handle_file(str(other))),
                                         api_name="/interpolate")
    assert len(gallery) == 1 + 2 and "ODE-inverted" in info
    assert "second image: 32x32, turned upright (EXIF orientation 6)" in info


def test_the_corpus_through_the_edit_tab_ends_in_results_or_clear_messages(server, cases):
    """Each case as the editor's image (SDEdit at strength 0 returns what the model got) and as the
    Interpolate tab's second image (a gr.Image: the handler reads the upload itself)."""
    client = server["client"]
    failures, table = [], Counter()
    base = next(c.path for c in cases if c.name == "png")
    for case in cases:
        kind, value = _outcome(client, sdedit_args(server, editor(case.path)), "/sdedit")
        wrong = _check(case, kind, value, note_of=lambda v: v[1], image_of=lambda v: _rgb(v[0][0]["image"]))
        failures += [f"editor: {wrong}"] if wrong else []
        kind2, value2 = _outcome(client, interp_args(server, editor(base), handle_file(str(case.path))), "/interpolate")
        wrong = _check(case, kind2, value2, note_of=lambda v: v[1].replace("second image", "image"),
                       image_of=lambda v: None)
        failures += [f"second image: {wrong}"] if wrong else []
        table[case.klass, kind, kind2] += 1
    assert not failures, "\n".join(failures)
    print("\nclass | cases | ends in (editor, second image)")  # the report table (pytest -s)
    for klass in dict.fromkeys(c.klass for c in cases):
        rows = {k[1:]: n for k, n in table.items() if k[0] == klass}
        print(f"{klass} | {sum(rows.values())} | " + ", ".join(f"{a}/{b}: {n}" for (a, b), n in rows.items()))
    assert len(client.predict(*sdedit_args(server, editor(base)), api_name="/sdedit")[0]) == 2  # still up


def test_an_unexpected_exception_reaches_the_user_as_a_short_message_and_the_log(server, cases, monkeypatch, caplog):
    client = server["client"]
    jpeg = next(c.path for c in cases if c.name == "jpeg (.jpg)")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug deep inside")

    monkeypatch.setattr(Pipeline, "sdedit", broken)
    with caplog.at_level(logging.ERROR, logger="ui"), pytest.raises(Exception) as e:
        client.predict(*sdedit_args(server, editor(jpeg), strength=0.5), api_name="/sdedit")
    assert "sdedit failed unexpectedly (RuntimeError); try again" in str(e.value) and OPAQUE not in str(e.value)
    assert any(r.exc_info and "a bug deep inside" in str(r.exc_info[1]) for r in caplog.records)
    monkeypatch.undo()

    import ui.components

    def failing_save(*args, **kwargs):
        raise OSError("cannot write mode RGBA as JPEG")

    monkeypatch.setattr(ui.components.image_utils, "format_image", failing_save)  # in the editor's preprocessing
    with pytest.raises(Exception) as e:
        client.predict(*sdedit_args(server, editor(jpeg)), api_name="/sdedit")
    assert "reading the image failed unexpectedly (OSError); try again" in str(e.value) and OPAQUE not in str(e.value)
    monkeypatch.undo()
    assert len(client.predict(*sdedit_args(server, editor(jpeg)), api_name="/sdedit")[0]) == 2


def test_malformed_payloads_and_paths_outside_the_upload_folder_get_clear_messages(server, cases, tmp_path):
    """What an API client (not the page) can send: values of the wrong type or shape, and a file's path on the
    server instead of an upload (refused without reading it, so the answer says nothing about the path)."""
    client, s = server["client"], server
    png = str(next(c.path for c in cases if c.name == "png"))  # outside Gradio's upload folder
    gen = [s["field"], "heun", 3, AUTO, 0, False, 2, -1, 2.0]
    payloads = [  # (endpoint, arguments, a piece of the message)
        ("generate", gen[:4] + ["abc"] + gen[5:], "seed (image i uses seed + i): must be a number"),
        ("generate", gen[:4] + [[1, 2]] + gen[5:], "must be a number"),
        ("sdedit", sdedit_args(s, "hello"), "not an image"),
        ("sdedit", sdedit_args(s, [1, 2]), "not an image"),
        ("sdedit", sdedit_args(s, {"background": "x", "layers": [], "composite": None}), "not an image"),
        ("sdedit", sdedit_args(s, {"background": {"path": png}, "layers": [], "composite": None, "id": None}),
         "not an image"),  # a file that is not marked as one (gradio_client uploads those that are)
        ("sdedit", sdedit_args(s, {"background": {"path": "/etc/passwd"}, "layers": [], "composite": None}),
         "not an image"),
        ("sdedit", sdedit_args(s, editor(png))[:7] + ["abc"] + sdedit_args(s, editor(png))[8:], "seed: must be"),
        ("inpaint", [s["field"], {"background": handle_file(png), "layers": [{"path": "/etc/hostname"}],
                                  "composite": None, "id": None}, 2, 0, 3, 1, 0, 1.0], "not an image"),
        ("interpolate", interp_args(s, editor(png), "notafile"), "not an image file"),
        ("interpolate", interp_args(s, editor(png), {"path": png}), "not uploaded to this app"),
        ("interpolate", interp_args(s, editor(png), {"path": "/etc/passwd"}), "not uploaded to this app"),
        ("interpolate", interp_args(s, editor(png), handle_file(png))[:7] + [None, "x"] +
         interp_args(s, editor(png), handle_file(png))[9:], "seed B: must be a number"),
        ("send_to_edit", ["x"], "must be a number"),
    ]
    failures = []
    for endpoint, args, message in payloads:
        kind, value = _outcome(client, args, f"/{endpoint}")
        if kind != "error" or OPAQUE.lower() in value.lower() or message.lower() not in value.lower():
            failures.append(f"{endpoint} {message!r}: got {kind} {str(value)[:200]!r}")
    assert not failures, "\n".join(failures)

"""The studio served on localhost and driven through gradio_client: every tab, and malformed inputs that
must each get a clear error while the server keeps answering."""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.helpers import SIZE, field_checkpoint, map_checkpoint, refused_wrongly, serve

AUTO = "auto (the sampler's default)"


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("studio")
    field, cmap = field_checkpoint(root), map_checkpoint(root)
    Image.fromarray(np.zeros((SIZE * 4, SIZE * 4, 3), np.uint8) + 90).save(root / "samples.png")
    (field / "metrics.json").write_text('{"training": {"wall_time_s": 1.5}, "scores": {"fid_10k": 123.4, '
                                        '"is": 2.5, "extractor": "genstudio-c10"}}')
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(field / "sweep.png")
    files = _files(root)
    with serve([field, cmap]) as (url, demo):
        yield {"url": url, "client": Client(url, verbose=False), "field": str(field), "map": str(cmap),
               "root": root, "demo": demo, **files}


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (its data is a few bytes): a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _files(root: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    f = {}
    f["photo"] = root / "photo.png"  # not square, not 16x16: center-cropped and resized
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(f["photo"])
    f["other"] = root / "other.jpg"
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(f["other"])
    mask = np.zeros((48, 64, 4), np.uint8)
    mask[10:30, 20:44] = (255, 0, 255, 255)
    f["mask"] = root / "mask.png"
    Image.fromarray(mask).save(f["mask"])
    f["blank_mask"] = root / "blank_mask.png"
    Image.fromarray(np.zeros((48, 64, 4), np.uint8)).save(f["blank_mask"])
    f["small_mask"] = root / "small_mask.png"
    Image.fromarray(mask[:16, :16]).save(f["small_mask"])
    f["text"] = root / "notes.png"
    f["text"].write_text("this is not an image\n" * 10)
    f["bomb"] = root / "bomb.png"
    f["bomb"].write_bytes(_png_header(100_000, 100_000))
    f["huge"] = root / "huge.png"  # 20M pixels: refused from its header (PIL alone would only warn)
    Image.new("L", (8000, 2500)).save(f["huge"])
    f["truncated"] = root / "truncated.png"
    f["truncated"].write_bytes(f["photo"].read_bytes()[:200])
    f["too_big"] = root / "too_big.bin"
    f["too_big"].write_bytes(rng.integers(0, 255, 11 * 2**20, dtype=np.uint8).tobytes())
    return {k: str(v) for k, v in f.items()}


def editor(image: str | None, layers=()) -> dict:
    return {"background": handle_file(image) if image else None, "layers": [handle_file(p) for p in layers],
            "composite": handle_file(image) if image else None, "id": None}


def gen_args(ctx, **kw):
    a = dict(model=ctx["field"], sampler="heun", steps=3, grid=AUTO, seed=0, randomize=False, n=4, label=-1,
             guidance=2.0, temperature=1.0)
    a.update(kw)
    return list(a.values())


def sdedit_args(ctx, **kw):
    a = dict(model=ctx["field"], image=editor(ctx["photo"]), sampler="euler", steps=3, grid=AUTO, strength=0.5, n=2,
             seed=0, label=1, guidance=1.0)
    a.update(kw)
    return list(a.values())


def purify_args(ctx, **kw):
    a = dict(model=ctx["field"], image=editor(ctx["photo"]), sampler="euler", steps=2, grid=AUTO, strength=0.3,
             noise=0.1, seed=0, label=0, guidance=1.0)
    a.update(kw)
    return list(a.values())


def inpaint_args(ctx, **kw):
    a = dict(model=ctx["field"], image=editor(ctx["photo"], [ctx["mask"]]), n=2, seed=0, levels=3, per_level=1,
             label=0, guidance=1.0)
    a.update(kw)
    return list(a.values())


def interp_args(ctx, **kw):
    a = dict(model=ctx["field"], image=editor(ctx["photo"]), other=None, mode="seeds", sampler="ddim", steps=3,
             grid=AUTO, seed_a=0, seed_b=1, frames=4, label=0, guidance=1.0)
    a.update(kw)
    return list(a.values())


def compare_args(ctx, **kw):
    a = dict(model=ctx["field"], samplers=["euler", "dpmpp_2m"], steps="2, 3", seed=0, n=2, label=-1, guidance=1.0)
    a.update(kw)
    return list(a.values())


def _is_png(path: str) -> bool:
    with Image.open(path) as im:
        return im.format == "PNG"


def test_generate_streams_previews_then_png_images_nfe_and_time(ctx):
    job = ctx["client"].submit(*gen_args(ctx), api_name="/generate")
    preview, gallery, info, file, seed = job.result(timeout=60)
    outputs = job.outputs()
    assert len(outputs) >= 2  # at least one live x0 preview before the final images
    assert len(gallery) == 4 and all(_is_png(g["image"]) for g in gallery) and _is_png(preview) and _is_png(file)
    assert gallery[0]["caption"] == "seed 0, class 0" and gallery[1]["caption"] == "seed 1, class 1"
    with Image.open(gallery[0]["image"]) as im:
        assert im.size == (SIZE, SIZE)
    assert "NFE 5" in info and " s**" in info and seed == 0
    again = ctx["client"].predict(*gen_args(ctx), api_name="/generate")
    assert np.array_equal(np.asarray(Image.open(again[1][2]["image"])), np.asarray(Image.open(gallery[2]["image"])))
    rnd = ctx["client"].predict(*gen_args(ctx, randomize=True, n=1), api_name="/generate")
    assert rnd[4] == int(rnd[1][0]["caption"].split(",")[0].split()[1])  # the drawn seed is shown and used


def test_model_choice_lists_only_compatible_samplers_and_hides_labels_for_unconditional(ctx):
    out = ctx["client"].predict(ctx["map"], api_name="/select_model")
    info, sampler = out[0], out[1]
    assert "consistency" in info and "unconditional" in info
    assert [c[0] for c in sampler["choices"]] == ["consistency"] and sampler["value"] == "consistency"
    assert out[4]["visible"] is False and out[5]["visible"] is False  # no class, no guidance
    out = ctx["client"].predict(ctx["field"], api_name="/select_model")
    assert out[1]["value"] == "heun" and "ddim" in [c[0] for c in out[1]["choices"]] and "2 classes" in out[0]
    assert out[4]["visible"] is True and [c[1] for c in out[4]["choices"]] == [-1, 0, 1]
    res = ctx["client"].predict(*gen_args(ctx, model=ctx["map"], sampler="consistency", steps=1, label=5,
                                          guidance=3.0), api_name="/generate")
    assert "NFE 1" in res[2] and res[1][0]["caption"] == "seed 0"  # labels ignored on an unconditional model


def test_send_to_edit_after_generate(ctx):
    client = Client(ctx["url"], verbose=False)  # its own session: the generated images are session state
    gallery = client.predict(*gen_args(ctx, n=2), api_name="/generate")[1]
    value = client.predict(1, api_name="/send_to_edit")
    background = value[0]["background"] if isinstance(value, (list, tuple)) else value["background"]
    assert _is_png(background) and Image.open(background).size == (256, 256)  # enlarged to paint a mask on
    from ui.validate import square

    sent = np.asarray(square(Image.open(background).convert("RGB"), SIZE))
    assert np.array_equal(sent, np.asarray(Image.open(gallery[1]["image"]).convert("RGB")))  # exactly image 1


def test_inpaint_keeps_known_pixels_and_says_what_it_did_to_the_upload(ctx):
    gallery, info, file = ctx["client"].predict(*inpaint_args(ctx), api_name="/inpaint")
    assert "64x48, center-cropped to a square and resized to 16x16" in info and "Filled" in info
    image = np.asarray(Image.open(gallery[0]["image"]).convert("RGB"))
    known = np.asarray(Image.open(gallery[1]["image"]).convert("RGB"))
    unknown = (known == 128).all(-1) & (image != 128).any(-1)
    assert unknown.sum() > 10
    for g in gallery[2:]:
        out = np.asarray(Image.open(g["image"]).convert("RGB"))
        assert np.array_equal(out[~unknown], image[~unknown])
    assert len(gallery) == 4 and _is_png(file)


def test_sdedit_strength_zero_returns_the_upload_for_field_and_map_models(ctx):
    for model, sampler in ((ctx["field"], "euler"), (ctx["map"], "consistency")):
        label = 1 if model == ctx["field"] else -1
        gallery, info, _ = ctx["client"].predict(*sdedit_args(ctx, model=model, sampler=sampler, strength=0.0,
                                                              label=label), api_name="/sdedit")
        src = np.asarray(Image.open(gallery[0]["image"]))
        assert all(np.array_equal(np.asarray(Image.open(g["image"])), src) for g in gallery[1:])
        gallery, info, _ = ctx["client"].predict(*sdedit_args(ctx, model=model, sampler=sampler, strength=0.6,
                                                              label=label), api_name="/sdedit")
        assert "SDEdit at strength 0.6" in info and len(gallery) == 3
        assert not np.array_equal(np.asarray(Image.open(gallery[1]["image"])), src)


def test_purify_shows_before_and_after(ctx):
    gallery, info, file = ctx["client"].predict(*purify_args(ctx), api_name="/purify")
    assert [g["caption"] for g in gallery] == ["before (input + noise 0.1)", "after", "before | after"]
    assert Image.open(gallery[2]["image"]).size == (2 * SIZE + 2, SIZE) and "Purified" in info


def test_interpolate_seeds_and_images(ctx):
    gallery, info, _ = ctx["client"].predict(*interp_args(ctx), api_name="/interpolate")
    assert len(gallery) == 1 + 4 and "seeds 0 -> 1" in info
    gen = ctx["client"].predict(*gen_args(ctx, sampler="ddim", n=2, label=0, guidance=1.0), api_name="/generate")
    first, last = (np.asarray(Image.open(gallery[k]["image"])).astype(int) for k in (1, 4))
    assert np.abs(first - np.asarray(Image.open(gen[1][0]["image"]))).max() <= 1
    assert np.abs(last - np.asarray(Image.open(gen[1][1]["image"]))).max() <= 1
    gallery, info, _ = ctx["client"].predict(*interp_args(ctx, mode="images", other=handle_file(ctx["other"])),
                                             api_name="/interpolate")
    assert "ODE-inverted" in info and "second image: 20x20, resized to 16x16" in info


def test_compare_runs_each_sampler_and_step_count_on_the_same_seeds(ctx):
    gallery, table = ctx["client"].predict(*compare_args(ctx), api_name="/compare")
    rows = table["data"]
    assert [(r[0], r[1]) for r in rows] == [("euler", 2), ("euler", 3), ("dpmpp_2m", 2), ("dpmpp_2m", 3)]
    assert [r[3] for r in rows] == [2, 3, 2, 3] and all(r[4] > 0 for r in rows)
    assert len(gallery) == 4 and "NFE" in gallery[0]["caption"] and _is_png(gallery[0]["image"])


def test_model_card_names_the_extractor_and_shows_the_plots(ctx):
    text, samples, plot, metrics = ctx["client"].predict(ctx["field"], api_name="/model_card")
    assert "diffusion" in text and "parameters" in text and "genstudio-c10" in text and "fid_10k" in text
    assert plot is not None and Image.open(plot).size == (60, 40)
    assert json.loads(metrics)["scores"]["fid_10k"] == 123.4
    text, samples, plot, metrics = ctx["client"].predict(ctx["map"], api_name="/model_card")
    assert "consistency" in text and "none recorded" in text and plot is None


MALFORMED = [  # (endpoint, arguments, a piece of the error message)
    ("generate", lambda c: gen_args(c, steps=0), "steps: must be"),
    ("generate", lambda c: gen_args(c, steps=100000), "steps: must be"),
    ("generate", lambda c: gen_args(c, n=0), "number of images: must be"),
    ("generate", lambda c: gen_args(c, n=500), "number of images: must be"),
    ("generate", lambda c: gen_args(c, seed=-5), "seed"),
    ("generate", lambda c: gen_args(c, seed=2**40), "seed"),
    ("generate", lambda c: gen_args(c, guidance=-1.0), "guidance scale (1: none): must be"),
    ("generate", lambda c: gen_args(c, label=7), "class label"),
    ("generate", lambda c: gen_args(c, label="cat"), "class label"),
    ("generate", lambda c: gen_args(c, sampler="nope"), "cannot drive"),
    ("generate", lambda c: gen_args(c, sampler="consistency", model=c["map"], steps=3, grid="ddpm"), "ddpm grid"),
    ("generate", lambda c: gen_args(c, sampler="caf"), "cannot drive"),
    ("generate", lambda c: gen_args(c, grid="fancy"), "unknown time grid"),
    ("generate", lambda c: gen_args(c, model="/no/such/folder"), "no such folder"),
    ("generate", lambda c: gen_args(c, model=str(c["root"])), "genstudio.json is missing"),
    ("generate", lambda c: gen_args(c, model=""), "choose a model"),
    ("sdedit", lambda c: sdedit_args(c, image=editor(c["text"])), "not an image"),
    ("sdedit", lambda c: sdedit_args(c, image=editor(c["bomb"])), "decompression bomb"),
    ("sdedit", lambda c: sdedit_args(c, image=editor(c["huge"])), "8000x2500"),
    ("sdedit", lambda c: sdedit_args(c, image=editor(c["truncated"])), "cut short (truncated)"),
    ("sdedit", lambda c: sdedit_args(c, image=None), "no image"),
    ("sdedit", lambda c: sdedit_args(c, strength=1.5), "strength (0: keep the image, 1: ignore it): must be"),
    ("sdedit", lambda c: sdedit_args(c, model=c["map"], sampler="heun", label=-1), "cannot drive"),
    ("inpaint", lambda c: inpaint_args(c, image=editor(c["photo"])), "mask is empty"),
    ("inpaint", lambda c: inpaint_args(c, image=editor(c["photo"], [c["blank_mask"]])), "mask is empty"),
    ("inpaint", lambda c: inpaint_args(c, image=editor(c["photo"], [c["small_mask"]])), "mask layer is 16x16"),
    ("inpaint", lambda c: inpaint_args(c, image=editor(c["photo"], [c["text"]])), "not an image"),
    ("inpaint", lambda c: inpaint_args(c, levels=10**6), "noise levels: must be"),
    ("purify", lambda c: purify_args(c, strength=0.95), "purification strength: must be"),
    ("purify", lambda c: purify_args(c, noise=-1), "std (a stand-in attack): must be"),
    ("interpolate", lambda c: interp_args(c, frames=1), "frames: must be a number in 2..32"),
    ("interpolate", lambda c: interp_args(c, frames=1000), "frames: must be a number in 2..32"),
    ("interpolate", lambda c: interp_args(c, mode="images"), "no second image"),
    ("interpolate", lambda c: interp_args(c, mode="sideways"), "sideways"),
    ("interpolate", lambda c: interp_args(c, mode="images", sampler="ddpm", other=handle_file(c["other"])),
     "cannot invert"),
    ("compare", lambda c: compare_args(c, samplers=[]), "at least one sampler"),
    ("compare", lambda c: compare_args(c, samplers=["euler", "bogus"]), "cannot drive"),
    ("compare", lambda c: compare_args(c, steps="four"), "whole numbers"),
    ("compare", lambda c: compare_args(c, steps="1 2 3 4 5 6 7 8 9", samplers=["euler", "heun", "ddim"]),
     "at most 24"),
    ("model_card", lambda c: [c["field"] + "/../../nowhere"], "no such folder"),
]


def test_malformed_inputs_get_clear_errors_and_the_server_stays_up(ctx):
    client = ctx["client"]
    failures = refused_wrongly(client, MALFORMED, ctx)
    assert not failures, "\n".join(failures)
    assert len({(e, m) for e, _, m in MALFORMED}) >= 20
    out = client.predict(*gen_args(ctx), api_name="/generate")
    assert len(out[1]) == 4 and "NFE 5" in out[2]


def test_send_to_edit_without_images_and_an_oversized_upload_are_refused(ctx):
    client = Client(ctx["url"], verbose=False)
    with pytest.raises(Exception, match="generate images first"):
        client.predict(0, api_name="/send_to_edit")
    with pytest.raises(Exception):  # noqa: B017  (the client raises what the server sends): over max_file_size
        client.predict(*sdedit_args(ctx, image=editor(ctx["too_big"])), api_name="/sdedit")
    assert len(client.predict(*gen_args(ctx, n=1), api_name="/generate")[1]) == 1


def test_the_app_is_configured_defensively(ctx):
    from ui import app

    demo = ctx["demo"]
    assert demo.share is False and demo.max_file_size == 10 * 2**20 and demo.allowed_paths == []
    assert demo._queue.max_size == app.QUEUE_SIZE
    limits = {fn.api_name: fn.concurrency_limit for fn in demo.fns.values() if fn.api_name}
    assert all(limits[k] == 1 for k in ("generate", "inpaint", "sdedit", "purify", "interpolate", "compare"))
    import urllib.error
    import urllib.request

    for outside in ("/etc/passwd", str(Path(ctx["field"]) / "genstudio.json")):  # nothing outside Gradio's cache
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{ctx['url']}gradio_api/file={outside}", timeout=10)
        assert e.value.code in (403, 404)
    config = Client(ctx["url"], verbose=False).config
    shown = [c for c in config["components"] if c["type"] in ("gallery", "image", "imageeditor")]
    assert len(shown) >= 6 and all(c["props"]["format"] == "png" for c in shown)  # PNG out, never WebP


def test_cli_studio_refuses_a_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    from genstudio import cli

    assert cli.main(["studio", "--checkpoint", str(tmp_path)]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err

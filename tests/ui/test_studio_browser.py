"""A real browser (Debian's chromium driven by Playwright) opens the studio, clicks Generate and sees images."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import field_checkpoint, serve

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (.ci/run installs it with apt-get)")


def test_generate_in_the_browser_shows_the_images(tmp_path):
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package").sync_playwright
    ckpt = field_checkpoint(tmp_path)
    with serve([ckpt]) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            button = page.locator("#generate-button")
            button.wait_for(state="visible", timeout=60_000)
            page.wait_for_timeout(500)  # let demo.load fill in the model's controls
            button.click()
            images = page.locator("#generate-gallery img")
            page.wait_for_function(
                """() => {
                    const imgs = document.querySelectorAll('#generate-gallery img');
                    return imgs.length >= 16 && [...imgs].every(i => i.complete && i.naturalWidth > 0);
                }""", timeout=60_000)
            sizes = images.evaluate_all("imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
            info = page.locator("#generate-info").inner_text(timeout=10_000)
            shot = tmp_path / "studio.png"
            page.screenshot(path=str(shot), full_page=True)
            gallery_shot = tmp_path / "gallery.png"
            page.locator("#generate-gallery").screenshot(path=str(gallery_shot))
        finally:
            browser.close()
    assert len(sizes) >= 16 and all(w == 16 and h == 16 for w, h in sizes[:16])
    assert "16 images" in info and "NFE 5" in info
    for path in (shot, gallery_shot):
        pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
        assert pixels.std(0).max() > 10 and len(np.unique(pixels, axis=0)) > 200  # not a blank page


def test_a_jpeg_uploaded_in_the_edit_tab_is_edited(tmp_path):
    """The commonest upload there is: a JPEG (an EXIF-rotated phone photo) into the Edit tab's image editor, then
    SDEdit: the results appear, with the note on what was done to the upload, and no error."""
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package").sync_playwright
    from tests.ui.uploads import ORIENTATION, quadrants

    ckpt = field_checkpoint(tmp_path)
    photo = tmp_path / "phone photo.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(np.concatenate([quadrants(96), quadrants(96)[:, :32]], axis=1), 1))
                    ).save(photo, exif=exif, quality=92)  # stored 96 wide, 128 high; upright 128x96
    with serve([ckpt]) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.get_by_role("tab", name="Edit", exact=True).click(timeout=60_000)
            prompt = page.locator("#edit-image").get_by_text("Upload an image")
            prompt.wait_for(state="visible", timeout=60_000)  # the editor is ready for an upload
            page.wait_for_timeout(500)
            page.locator("#edit-image input[type=file]").first.set_input_files(str(photo), timeout=30_000)
            prompt.wait_for(state="hidden", timeout=30_000)  # the editor holds the upload
            page.wait_for_timeout(500)
            page.get_by_role("tab", name="SDEdit", exact=True).click()
            page.locator("#sdedit-button").click()
            page.wait_for_function(
                """() => {
                    const imgs = document.querySelectorAll('#edit-gallery img');
                    const info = document.querySelector('#edit-info');
                    return imgs.length >= 5 && [...imgs].every(i => i.complete && i.naturalWidth > 0)
                        && info && info.innerText.includes('SDEdit at strength');
                }""", timeout=90_000)
            sizes = page.locator("#edit-gallery img").evaluate_all(
                "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")
            info = page.locator("#edit-info").inner_text(timeout=10_000)
            errors = page.locator(".toast-body").all_inner_texts()
            page.screenshot(path=str(tmp_path / "edit.png"), full_page=True)
        finally:
            browser.close()
    assert not [e for e in errors if "error" in e.lower()], errors
    assert len(sizes) >= 5 and all(w == 16 and h == 16 for w, h in sizes[:5])
    assert "128x96" in info and "center-cropped" in info and "SDEdit at strength 0.5" in info


# -- the workbench tabs: one server for all of them ------------------------------------------------------------------

SHOTS = "GENSTUDIO_SCREENSHOTS"  # names a folder: small copies of the screenshots go there too (docs/screenshots)


def _not_blank(path: Path) -> None:
    pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    assert pixels.std(0).max() > 10 and len(np.unique(pixels, axis=0)) > 50, f"{path.name} looks blank"


def _shot(target, path: Path, name: str, **options) -> Path:
    """Screenshot `target` (a page or a locator) to path/name, check it is not blank, keep a small copy in
    $GENSTUDIO_SCREENSHOTS if set."""
    out = path / name
    target.screenshot(path=str(out), **options)
    _not_blank(out)
    if os.environ.get(SHOTS):
        keep = Path(os.environ[SHOTS])
        keep.mkdir(parents=True, exist_ok=True)
        Image.open(out).convert("RGB").quantize(128).save(keep / name, optimize=True)
    return out


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="needs the playwright package").sync_playwright
    from tests.helpers import workbench

    root = tmp_path_factory.mktemp("bench")
    (field, cmap), options = workbench(root)
    gray = np.repeat(np.asarray(Image.open(next((root / "reference" / "a").iterdir())).convert("L"))[..., None], 3, -1)
    Image.fromarray(gray.repeat(8, 0).repeat(8, 1)).save(root / "gray.png")
    with serve([field, cmap], **options) as (url, demo), \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        page.locator("#generate-button").wait_for(state="visible", timeout=60_000)
        page.wait_for_timeout(500)
        try:
            yield {"page": page, "root": root, "demo": demo, "browser": browser, "gray": root / "gray.png"}
        finally:
            browser.close()


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click(timeout=30_000)
    page.wait_for_timeout(300)


def _wait_text(page, selector: str, text: str, timeout: int = 90_000) -> str:
    page.wait_for_function("([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
                           arg=[selector, text], timeout=timeout)
    return page.locator(selector).inner_text()


def _wait_images(page, selector: str, count: int, timeout: int = 90_000) -> None:
    page.wait_for_function(
        """([s, n]) => { const imgs = document.querySelectorAll(s + ' img');
                         return imgs.length >= n && [...imgs].every(i => i.complete && i.naturalWidth > 0); }""",
        arg=[selector, count], timeout=timeout)


def test_train_tab_starts_watches_stops_and_exports_a_run(bench, tmp_path):
    page = bench["page"]
    _tab(page, "Train")
    page.locator("#train-output textarea, #train-output input").first.fill("browser")
    page.locator("#train-start").click()
    _wait_text(page, "#train-info", "img/s")
    _wait_images(page, "#train-grid", 1)
    page.wait_for_timeout(1500)  # a few more loss points on the curve
    page.locator("#train-stop").click()
    info = _wait_text(page, "#train-info", "stopped")
    assert "latest checkpoint: step_" in info
    page.wait_for_timeout(1500)
    _wait_images(page, "#train-grid", 1)  # the last grid, no longer replaced every second
    _shot(page, tmp_path, "train.png")
    page.locator("#train-export").click()
    assert "now offer it as browser" in _wait_text(page, "#train-info", "exported")
    assert (bench["root"] / "runs" / "exports" / "browser" / "genstudio.json").is_file()


def test_evaluate_tab_plots_fid_against_nfe(bench, tmp_path):
    page = bench["page"]
    _tab(page, "Evaluate")
    page.locator("#evaluate-n input").fill("6")
    page.locator("#evaluate-steps textarea, #evaluate-steps input").first.fill("1, 2")
    page.locator("#evaluate-button").click()
    _wait_text(page, "#evaluate-info", "done")
    _wait_images(page, "#evaluate-plot", 1)
    assert page.locator("#evaluate-table").inner_text().count("field_ckpt") == 4
    _shot(page.locator("#evaluate-plot"), tmp_path, "evaluate_plot.png")
    _shot(page, tmp_path, "evaluate.png")


def test_compare_models_tab_shows_each_model(bench, tmp_path):
    page = bench["page"]
    _tab(page, "Compare models")
    page.locator("#compare-models-button").click()
    _wait_images(page, "#compare-models-gallery", 2)
    _shot(page, tmp_path, "compare_models_micro.png")


def test_colorize_in_the_edit_tab(bench, tmp_path):
    page = bench["page"]
    _tab(page, "Edit")
    prompt = page.locator("#edit-image").get_by_text("Upload an image")
    prompt.wait_for(state="visible", timeout=60_000)
    page.locator("#edit-image input[type=file]").first.set_input_files(str(bench["gray"]), timeout=30_000)
    prompt.wait_for(state="hidden", timeout=30_000)
    page.wait_for_timeout(500)
    _tab(page, "Colorize")
    page.locator("#colorize-button").click()
    _wait_text(page, "#edit-info", "Colorized")
    _wait_images(page, "#edit-gallery", 6)
    _shot(page, tmp_path, "colorize_micro.png")


def test_models_tab_card_is_a_table(bench, tmp_path):
    page = bench["page"]
    _tab(page, "Models")
    _wait_text(page, "#models-card", "parameters")
    assert page.locator("#models-card table").count() >= 2
    assert "One-step comparison" in page.locator("#onestep-table").inner_text()  # none beside the micro models
    _shot(page, tmp_path, "models_micro.png")


def test_the_train_tab_is_absent_on_a_non_local_host(bench, tmp_path):
    """Served on all interfaces without --allow-training: no Train tab (and no endpoint that starts a process)."""
    ckpt = field_checkpoint(tmp_path)
    with serve([ckpt], host="0.0.0.0", runs_dir=tmp_path / "runs") as (url, demo):
        page = bench["browser"].new_page()
        try:
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.get_by_role("tab", name="Evaluate", exact=True).wait_for(timeout=60_000)
            assert page.get_by_role("tab", name="Train", exact=True).count() == 0
            assert page.get_by_role("tab", name="Generate", exact=True).count() == 1
        finally:
            page.close()
    assert demo.runs is None and "train_start" not in {fn.api_name for fn in demo.fns.values()}

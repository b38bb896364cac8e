"""A real browser (Debian's chromium driven by Playwright) opens the studio, clicks Generate and sees images."""
from __future__ import annotations

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

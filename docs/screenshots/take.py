"""Screenshots of the studio on the shipped checkpoints for the docs (Compare models, Colorize, the Models card, base
vs improved):

    PYTHONPATH=. GENSTUDIO_DATA=/path/to/data python docs/screenshots/take.py

The Train and Evaluate screenshots come from the browser tests on micro models:
    GENSTUDIO_SCREENSHOTS=docs/screenshots python -m pytest tests/ui/test_studio_browser.py"""
from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from playwright.sync_api import sync_playwright

from tests.helpers import serve
from tests.ui.test_studio_browser import CHROMIUM, _shot, _tab, _wait_images, _wait_text

OUT = Path(__file__).resolve().parent


def cifar_gray(root: Path, member: str = "test/airplane/0004.jpg") -> Path:
    """A CIFAR-10 test image made gray (the mean of R, G, B), enlarged 4x for the upload."""
    with tarfile.open(Path(os.environ["GENSTUDIO_DATA"]) / "cifar10" / "test.tar.gz") as t:
        image = np.asarray(Image.open(io.BytesIO(t.extractfile(member).read())).convert("RGB"), dtype=np.float64)
    gray = np.repeat(image.mean(-1, keepdims=True).round().astype(np.uint8), 3, -1).repeat(4, 0).repeat(4, 1)
    Image.fromarray(gray).save(root / "gray.png")
    return root / "gray.png"


def main() -> None:
    os.environ.setdefault("GENSTUDIO_SCREENSHOTS", str(OUT))
    root = Path(tempfile.mkdtemp())
    gray = cifar_gray(root)
    with serve([], host="127.0.0.1", runs_dir=root / "runs") as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url, wait_until="domcontentloaded", timeout=60_000)
        page.locator("#generate-button").wait_for(state="visible", timeout=60_000)
        page.wait_for_timeout(1000)
        _tab(page, "Compare models")
        page.locator("#compare-models-button").click()
        _wait_images(page, "#compare-models-gallery", 2, timeout=300_000)
        page.locator("#compare-models-gallery").scroll_into_view_if_needed()
        _shot(page, root, "compare_models.png")
        page.locator("#model input").fill("ect_cifar10")
        page.keyboard.press("Enter")
        page.wait_for_timeout(1500)
        _tab(page, "Edit")
        page.locator("#edit-image input[type=file]").first.set_input_files(str(gray), timeout=30_000)
        page.wait_for_timeout(1000)
        _tab(page, "Colorize")
        page.locator("#colorize-levels input[type=number]").fill("3")
        page.keyboard.press("Enter")
        page.locator("#colorize-button").click()
        _wait_text(page, "#edit-info", "Colorized", timeout=300_000)
        _wait_images(page, "#edit-gallery", 6, timeout=60_000)
        _shot(page, root, "colorize.png")
        _tab(page, "Models")
        _wait_text(page, "#models-card", "parameters")
        _wait_images(page, "#models-plot", 1)
        _shot(page, root, "models.png")
        page.locator("#models-checkpoint input").fill("ect_cifar10")  # a Neon model that replaced its base
        page.keyboard.press("Enter")
        _wait_text(page, "#models-card", "ect_cifar10")
        page.get_by_text("Base vs improved").click()
        page.locator("#models-neon").click()
        _wait_images(page, "#models-neon-images", 2)
        _wait_text(page, "#models-neon-info", "Neon")
        _shot(page.locator("#models-neon-accordion"), root, "models_neon.png")
        browser.close()


if __name__ == "__main__":
    main()

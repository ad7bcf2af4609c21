# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""``egeunet-monai serve`` driven by a real headless Chromium (Debian's, through Playwright): a real photograph
uploaded as a user would, its area and mask compared with what ``egeunet-monai predict`` wrote for it, and the
errors a user sees for an oversized, a non-image and a corrupt upload.

Set ``EGEUNET_VIEWER_SCREENSHOT=docs/images/viewer.png`` to keep the page's screenshot (it is always saved in the
test's temporary folder)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from local_server import free_port, stop_process_group, wait_until_answering
from PIL import Image

from tests.conftest import in_ci, require_original_checkpoint, require_shared_data

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IMAGE = "IMD002.jpg"  # a PH2 photograph at its original size (765 x 572)
TIMEOUT_MS = 180_000  # a segmentation on a busy 2-core machine


def _need(condition: bool, what: str) -> None:
    if not condition:
        if in_ci():
            pytest.fail(f"{what} (scripts/run_tests.sh installs it)", pytrace=False)
        pytest.skip(what)


@pytest.fixture(scope="module")
def served(tiny_bundle_weights, tmp_path_factory):
    """``egeunet-monai serve`` with the weights of the tiny training (the CLI test's)."""
    yield from _serve(tiny_bundle_weights, tmp_path_factory.mktemp("serve") / "serve.log")


def _serve(weights: Path, log: Path, *options: str):
    """``egeunet-monai serve`` in its own process group on a free port, with a 1 MB upload limit."""
    port = free_port()
    script = Path(sys.executable).with_name("egeunet-monai")
    with open(log, "w") as out:
        proc = subprocess.Popen([str(script), "serve", "--port", str(port), "--weights", str(weights),
                                 "--max-upload-mb", "1", "--device", "cpu", *options],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(url + "/", proc, log, 300, "egeunet-monai serve")
        yield url
    finally:
        stop_process_group(proc, timeout_s=20)


@pytest.fixture(scope="module")
def served_tta(tmp_path_factory):
    """``egeunet-monai serve --tta`` with the original implementation's 17-epoch checkpoint (weights that never
    change, so that the photograph below stays uncertain across releases)."""
    yield from _serve(require_original_checkpoint(), tmp_path_factory.mktemp("serve_tta") / "log", "--tta")


@pytest.fixture(scope="module")
def page(served):
    _need(os.path.exists(CHROMIUM), f"{CHROMIUM} not found: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    _need(sync_playwright is not None, "playwright not installed: pip install -e '.[test]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1120, "height": 760}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(served + "/")
        yield page
        context.close()
        browser.close()


@pytest.fixture(scope="module")
def cli_row(cli_predictions):
    with open(cli_predictions.out / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = {Path(r["image"]).name: r for r in csv.DictReader(f)}
    return rows[IMAGE]


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _upload(page, path: Path) -> None:
    page.set_input_files("#file", str(path))


def test_upload_shows_the_cli_s_area_and_downloads_the_cli_s_mask(page, cli_predictions, cli_row, tmp_path):
    _upload(page, cli_predictions.inputs / IMAGE)
    page.wait_for_selector("#result", state="visible")
    assert page.inner_text("#status") == f"Done: {IMAGE}."
    assert page.is_hidden("#error")

    # the numbers on the page are the CLI's for the same image
    assert int(page.inner_text("#area-px").replace(",", "")) == int(cli_row["lesion_area_px"])
    assert float(page.inner_text("#area-pct")) == pytest.approx(100 * float(cli_row["lesion_area_fraction"]),
                                                                abs=0.0051)
    assert float(page.inner_text("#confidence")) == pytest.approx(float(cli_row["mean_confidence"]), abs=0.0006)
    assert page.inner_text("#size") == f"{cli_row['width']} \u00d7 {cli_row['height']}"
    # the quality flags are the CLI's; without --tta there is no uncertainty to show
    assert page.get_attribute("#flags", "data-value") == cli_row["flags"]
    assert page.inner_text("#flags") == (cli_row["flags"].replace(";", ", ") or "none")
    assert page.is_hidden("#uncertainty-row") and page.is_hidden("#uncertainty-label")

    # the outline is shown on the photo at its own size; the toggle swaps in the mask
    page.wait_for_function("document.getElementById('overlay').complete && "
                           "document.getElementById('overlay').naturalWidth > 0")
    assert page.eval_on_selector("#overlay", "img => [img.naturalWidth, img.naturalHeight]") == [
        int(cli_row["width"]), int(cli_row["height"])]
    assert page.is_visible("#overlay") and page.is_hidden("#mask")
    screenshot = tmp_path / "viewer.png"
    page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get("EGEUNET_VIEWER_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["EGEUNET_VIEWER_SCREENSHOT"])
    page.check("#show-mask")
    assert page.is_visible("#mask") and page.is_hidden("#overlay")
    page.uncheck("#show-mask")
    assert page.is_visible("#overlay") and page.is_hidden("#mask")

    # the downloaded mask is the CLI's, pixel for pixel and byte for byte
    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename == "IMD002_mask.png"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    cli_mask = Path(cli_row["mask"])
    assert np.array_equal(np.asarray(Image.open(saved)), np.asarray(Image.open(cli_mask)))
    assert saved.read_bytes() == cli_mask.read_bytes()


@pytest.mark.parametrize(
    "name, make, message",
    [
        ("big_scan.jpg", lambda p: p.write_bytes(b"\xff\xd8\xff" + bytes(1536 * 1024)),
         "big_scan.jpg is larger than the 1 MB limit: please upload a smaller photograph."),
        ("notes.txt", lambda p: p.write_text("not a photograph"),
         "notes.txt is not an image: please choose a JPEG or PNG photograph."),
    ],
    ids=["oversized", "not-an-image"],
)
def test_a_bad_upload_shows_a_readable_error(page, tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    _upload(page, path)
    expect(page.locator("#error")).to_have_text(message, timeout=TIMEOUT_MS)
    assert page.is_visible("#error") and page.is_hidden("#result")


def test_a_corrupt_photo_shows_the_reason(page, cli_predictions):
    _upload(page, cli_predictions.inputs / cli_predictions.corrupt)
    expect(page.locator("#error")).to_contain_text(
        f"{cli_predictions.corrupt} could not be segmented: truncated file", timeout=TIMEOUT_MS)
    assert page.is_visible("#error") and page.is_hidden("#result")


def test_with_tta_the_page_shows_the_uncertainty_and_the_flags(page, served_tta):
    # ISIC_0000127: the views disagree (uncertainty 0.73, two pieces; measured 2026-12-07)
    photo = require_shared_data("isic2017_train_256", "images", "ISIC_0000127.jpg")
    page.goto(served_tta + "/")
    _upload(page, photo)
    page.wait_for_selector("#result", state="visible")
    # the API's answer for the same photo, asked as the page asks it (reading the page's own response body fails
    # when the browser has evicted it from its inspector cache: it holds the result images)
    answer = page.request.post(served_tta + "/api/segment", data=photo.read_bytes(),
                               headers={"x-file-name": photo.name})
    assert answer.ok, answer.text()
    body = answer.json()
    assert 0.5 < body["uncertainty"] <= 1.0 and "low_confidence" in body["flags"]
    assert page.is_visible("#uncertainty-row") and page.is_visible("#uncertainty-label")
    assert page.inner_text("#uncertainty") == f"{body['uncertainty']:.3f}"
    assert page.inner_text("#flags") == ", ".join(body["flags"])
    assert page.get_attribute("#flags", "data-value") == ";".join(body["flags"])

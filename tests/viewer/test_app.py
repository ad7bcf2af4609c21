# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The viewer's HTTP side: what the page relies on, the upload checks, and concurrent uploads kept apart."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from egeunet_monai.data import generate_synthetic_dataset


def _post(url: str, data: bytes, name: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/api/segment", data=data, method="POST",
                                     headers={"X-File-Name": quote(name), "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _get(url: str) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three different synthetic lesions of different sizes, as PNG and JPEG bytes."""
    root = tmp_path_factory.mktemp("photos")
    out = {}
    for size, fmt in ((96, "PNG"), (128, "JPEG"), (160, "PNG")):
        folder = generate_synthetic_dataset(root / str(size), num_images=1, size=size, seed=size)
        image = Image.open(f"{folder}/images/syn_0000.png").convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, quality=95)
        out[f"lesion_{size}.{'png' if fmt == 'PNG' else 'jpg'}"] = buffer.getvalue()
    return out


def test_the_page_is_served_with_the_upload_limit(viewer_url):
    status, body, headers = _get(viewer_url + "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    page = body.decode()
    assert 'id="file"' in page and "const MAX_BYTES = 1048576;" in page and "up to 1 MB" in page


def test_concurrent_uploads_each_get_their_own_result(viewer_url, viewer_predictor, photos, tmp_path):
    expected = {}
    for name, data in photos.items():  # one at a time, straight from the predictor
        (tmp_path / name).write_bytes(data)
        mask, _, stats = viewer_predictor.predict_one(tmp_path / name)
        expected[name] = (mask, stats)
    assert len({stats.area_px for _, stats in expected.values()}) == len(photos), "the photos must differ"

    names = [*photos, next(iter(photos))]  # three different photos, one of them twice, all at once
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        answers = list(pool.map(lambda n: _post(viewer_url, photos[n], n), names))

    assert len({body["id"] for _, body in answers}) == len(names)
    for name, (status, body) in zip(names, answers):
        assert status == 200, body
        mask, stats = expected[name]
        assert body["filename"] == name
        assert (body["width"], body["height"], body["area_px"]) == (stats.width, stats.height, stats.area_px)
        assert body["area_fraction"] == pytest.approx(stats.area_fraction)
        # no --tta: no uncertainty; the flags are the predictor's
        assert body["uncertainty"] is None and body["flags"] == list(stats.flags)
        status, png, headers = _get(viewer_url + body["mask_url"] + "?download=1")
        assert status == 200 and headers["content-type"] == "image/png"
        assert f'filename="{name.rsplit(".", 1)[0]}_mask.png"' in headers["content-disposition"]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), mask)
        status, jpeg, _ = _get(viewer_url + body["overlay_url"])
        assert status == 200 and Image.open(io.BytesIO(jpeg)).size == (stats.width, stats.height)


def test_an_upload_over_the_limit_is_refused_with_413(viewer_url):
    status, body = _post(viewer_url, b"\xff\xd8" + bytes(1024 * 1024), "huge.jpg")
    assert status == 413
    assert body["error"] == "huge.jpg is larger than the 1 MB limit: please upload a smaller photograph."


@pytest.mark.parametrize(
    "data, name, status, message",
    [
        (b"just some notes", "notes.txt", 415, "notes.txt is not an image: please choose a JPEG or PNG photograph."),
        (None, "anim.gif", 415, "anim.gif is a GIF image: please choose a JPEG or PNG photograph."),
        (b"", "empty.png", 400, "empty.png is empty (0 bytes)."),
    ],
)
def test_non_images_are_refused_with_a_readable_message(viewer_url, data, name, status, message):
    if data is None:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="GIF")
        data = buffer.getvalue()
    assert _post(viewer_url, data, name) == (status, {"error": message})


def test_a_truncated_jpeg_is_refused_with_the_reader_s_reason(viewer_url, photos):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photos["lesion_160.png"])).save(buffer, format="JPEG")
    whole = buffer.getvalue()
    status, body = _post(viewer_url, whole[: len(whole) // 2], "cut.jpg")
    assert status == 422
    assert body["error"].startswith("cut.jpg could not be segmented: truncated file")
    assert "/tmp" not in body["error"]  # server paths are not shown


@pytest.mark.parametrize("path", ["/api/results/0123456789abcdef0123456789abcdef/mask.png",
                                  "/api/results/..%2F..%2Fetc/mask.png", "/api/results/x/passwd"])
def test_results_are_found_only_by_a_server_generated_id(viewer_url, path):
    status, body, _ = _get(viewer_url + path)
    assert status == 404

# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""``egeunet-monai predict --no-fill-holes`` and ``--largest-component`` on real photographs whose masks have holes and
a second piece, and the same options reaching ``serve``'s predictor."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from egeunet_monai.cli import main
from egeunet_monai.cli.predict import CSV_NAME
from tests.conftest import require_original_checkpoint, require_shared_data
from tests.local_server import free_port, stop_process_group, wait_until_answering

# With the original implementation's 17-epoch checkpoint (weights that never change) at the default threshold,
# measured 2026-12-07: PH2 IMD408's thresholded mask has holes that fill_holes fills (3751 pixels; flagged
# touches_border), IMD240's a second piece that largest_component removes (20800 pixels; touches_border and
# multiple_components)
HOLES = "IMD408.jpg"
MIN_HOLES = 1800  # about half the measured 3751
TWO_PIECES = "IMD240.jpg"
MIN_SECOND_PIECE = 10000  # about half the measured 20800


def _predict(photo: Path, out: Path, *options: str) -> tuple[np.ndarray, dict]:
    """The mask (lesion True) and the CSV row of ``egeunet-monai predict photo --out out *options``."""
    code = main(["predict", str(photo), "--out", str(out), "--weights", str(require_original_checkpoint()),
                 "--device", "cpu", "--no-progress", *options])
    assert code == 0
    with open(out / CSV_NAME, newline="", encoding="utf-8") as f:
        (row,) = csv.DictReader(f)
    return np.asarray(Image.open(row["mask"])) > 0, row


def _pieces(mask: np.ndarray) -> int:
    return ndimage.label(mask, structure=np.ones((3, 3)))[1]


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    """``{photo name: (path, default mask, CSV row)}`` of the plain ``predict`` (holes filled, every piece kept)."""
    runs = {}
    for name in (HOLES, TWO_PIECES):
        photo = require_shared_data("ph2", "images", name)
        runs[name] = (photo, *_predict(photo, tmp_path_factory.mktemp("default")))
    return runs


def test_no_fill_holes_leaves_the_holes_in_the_mask(default_runs, tmp_path):
    photo, filled, row = default_runs[HOLES]
    holed, holed_row = _predict(photo, tmp_path, "--no-fill-holes")
    assert not (holed & ~filled).any()  # filling only adds lesion pixels
    assert (filled & ~holed).sum() > MIN_HOLES
    assert int(holed_row["lesion_area_px"]) == int(holed.sum()) < int(row["lesion_area_px"])
    assert holed_row["flags"] == row["flags"] == "touches_border"  # measured before the clean-up either way


def test_largest_component_keeps_one_piece_and_the_flags(default_runs, tmp_path):
    photo, default, row = default_runs[TWO_PIECES]
    largest, largest_row = _predict(photo, tmp_path, "--largest-component")
    assert _pieces(default) > 1 and _pieces(largest) == 1
    assert not (largest & ~default).any() and (default & ~largest).sum() > MIN_SECOND_PIECE
    assert largest_row["flags"] == row["flags"] == "touches_border;multiple_components"


def test_serve_segments_with_the_clean_up_options(default_runs, tmp_path):
    """``egeunet-monai serve --no-fill-holes --largest-component``, a real server on 127.0.0.1: each uploaded
    photo's mask is one piece inside ``predict``'s default mask, with the holes left (IMD408) and the second piece
    gone (IMD240); the flags are measured before the clean-up."""
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    port, log = free_port(), tmp_path / "serve.log"
    script = Path(sys.executable).with_name("egeunet-monai")
    with open(log, "w") as out:
        proc = subprocess.Popen([str(script), "serve", "--port", str(port), "--weights",
                                 str(require_original_checkpoint()), "--device", "cpu", "--no-fill-holes",
                                 "--largest-component"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    served, answers = {}, {}
    try:
        wait_until_answering(url + "/", proc, log, 300, "egeunet-monai serve")
        for name, (photo, _, _) in default_runs.items():
            request = urllib.request.Request(url + "/api/segment", data=photo.read_bytes(), method="POST",
                                             headers={"X-File-Name": name, "Content-Type": "application/octet-stream"})
            with urllib.request.urlopen(request, timeout=120) as response:
                answers[name] = json.loads(response.read())
            with urllib.request.urlopen(url + answers[name]["mask_url"], timeout=60) as response:
                served[name] = np.asarray(Image.open(io.BytesIO(response.read()))) > 0
    finally:
        stop_process_group(proc, timeout_s=20)
    for name, (_, filled, _) in default_runs.items():
        assert served[name].shape == filled.shape and _pieces(served[name]) == 1, name
        assert not (served[name] & ~filled).any(), name
    assert (default_runs[HOLES][1] & ~served[HOLES]).sum() > MIN_HOLES
    assert (default_runs[TWO_PIECES][1] & ~served[TWO_PIECES]).sum() > MIN_SECOND_PIECE
    assert answers[HOLES]["flags"] == ["touches_border"]
    assert answers[TWO_PIECES]["flags"] == ["touches_border", "multiple_components"]


def test_predict_help_gives_the_clean_up_options_defaults_and_measurements(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--no-fill-holes leave holes in the mask (the config's fill_holes, on by default: +0.0004" in text
    assert "--largest-component keep only the mask's largest piece (the config's largest_component, off by " in text

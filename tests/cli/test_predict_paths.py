# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""``egeunet-monai predict``'s paths on real photographs: an ``--out`` that cannot take the files is refused before
any work, a folder's scan leaves out predict's own outputs and says what else it passed over, and a folder without
images is not counted as an image."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from PIL import Image

from egeunet_monai.cli import main
from egeunet_monai.cli.predict import CSV_NAME, collect_inputs
from tests.conftest import require_shared_data


def _photo(name: str = "IMD002.jpg") -> Path:
    return require_shared_data("ph2", "images", name)


def _predict(*args: str) -> int:
    return main(["predict", *args, "--device", "cpu", "--no-progress"])


def _csv_images(out: Path) -> set[str]:
    with open(out / CSV_NAME, newline="", encoding="utf-8") as f:
        return {Path(row["image"]).name for row in csv.DictReader(f)}


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    taken = tmp_path / "results"
    taken.write_text("not a folder")
    # the command checks it before it loads the weights
    assert _predict(str(_photo()), "--out", str(taken)) == 2
    captured = capsys.readouterr()
    assert captured.err == f"egeunet-monai predict: error: --out {taken}: not a folder (a file of that name exists)\n"
    assert "weights:" not in captured.out and taken.read_text() == "not a folder"


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux's /sys, where not even root can create a file")
def test_out_where_no_file_can_be_written_stops_before_the_network(capsys):
    assert _predict(str(_photo()), "--out", "/sys") == 2
    captured = capsys.readouterr()
    assert "egeunet-monai predict: error: --out /sys: cannot write files there (" in captured.err
    assert "FAILED" not in captured.err and "Segmented" not in captured.out


def test_a_second_run_into_the_input_folder_segments_the_photos_only(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(_photo(), photos)
    assert _predict(str(photos), "--out", str(photos), "--overlay", "--probabilities") == 0
    capsys.readouterr()

    assert _predict(str(photos), "--out", str(photos), "--overlay", "--probabilities") == 0
    captured = capsys.readouterr()
    assert "Segmented 1 of 1 images" in captured.out
    assert f"{photos}: left out 4 files that predict writes (IMD002_mask.png, IMD002_overlay.png, " in captured.err
    assert _csv_images(photos) == {"IMD002.jpg"}
    assert not list(photos.glob("IMD002_*_*.png"))  # no IMD002_mask_mask.png and the like


def test_a_file_with_an_output_name_is_left_out_of_a_folder_but_taken_when_named(tmp_path):
    shutil.copy(_photo(), tmp_path)
    named = tmp_path / "IMD003_mask.png"
    Image.open(_photo("IMD003.jpg")).save(named)  # a real photograph under a name predict writes

    notes: list[str] = []
    files, failed = collect_inputs([tmp_path], notes)
    assert [p.name for p in files] == ["IMD002.jpg"] and failed == []
    assert len(notes) == 1 and "left out 1 file that predict writes (IMD003_mask.png)" in notes[0]

    assert collect_inputs([named]) == ([named], [])


def test_unsupported_files_and_subfolders_are_named_in_one_line(tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(_photo(), photos)
    shutil.copy(_photo("IMD003.jpg"), photos / "sub")
    for name in ("lesion.tif", "lesion.webp", "scan.gif"):
        shutil.copy(_photo("IMD004.jpg"), photos / name)
    (photos / "notes.txt").write_text("patient notes")

    assert _predict(str(photos), "--out", str(tmp_path / "out")) == 0
    captured = capsys.readouterr()
    assert "Segmented 1 of 1 images" in captured.out
    (line,) = [line for line in captured.err.splitlines() if "not supported" in line]
    assert line == (f"{photos}: skipped 4 files not supported (lesion.tif, lesion.webp, notes.txt, ...; supported: "
                    ".jpg, .jpeg, .png, .bmp); subfolders are not searched (sub)")


def test_an_empty_folder_is_named_and_not_counted_as_an_image(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _predict(str(empty), "--out", str(tmp_path / "out")) == 1
    captured = capsys.readouterr()
    assert f"No image to segment: none found in {empty}" in captured.out
    assert "Segmented" not in captured.out

    assert _predict(str(empty), str(_photo()), "--out", str(tmp_path / "out")) == 1
    captured = capsys.readouterr()
    assert "Segmented 1 of 1 images" in captured.out
    assert f"{empty}: no images" in captured.err

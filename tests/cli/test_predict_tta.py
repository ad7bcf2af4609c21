# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""``egeunet-monai predict --tta --uncertainty-map`` with the released weights on real photographs: the 40 first
ISIC images of the release's validation split (the weights never trained on them), a PH2 photograph at its own
765 x 572 size and a synthetic photo of bare skin, in one run of the installed console script.

The CSV's uncertainty ranks the images by their error, the quality flags mark the known bad cases, the uncertainty
maps are the per-pixel entropy, and the TTA masks agree with the plain ones."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT, console_script
from egeunet_monai.cli.predict import CSV_NAME
from egeunet_monai.inference import QUALITY_FLAGS, LesionPredictor
from egeunet_monai.metrics import spearman_correlation

RELEASED = REPO_ROOT / "bundle" / "models" / "model.pt"
ISIC_COUNT = 40
PH2_ID = "IMD008"  # PH2 validation photograph, 765 x 572
SKIN = "bare_skin.png"  # no lesion at all: skin colour and sensor noise
# known cases among the 40 (their flags with the released weights, scripts/uncertainty_report.py on the split):
# a lesion that runs off the photograph, and the worst of the 40 (Dice 0.28 against the expert)
RUNS_OFF_THE_PHOTO = "ISIC_0000055"
WORST = "ISIC_0000127"
# Spearman(uncertainty, 1 - Dice) of these 40 images, measured 0.75 (2-core Xeon, 2026-12-01; 0.72 on all 429
# validation images); asserted well below, as the issue asks: > 0.3.
MIN_SPEARMAN = 0.3
# Mean Dice of the TTA masks against the plain masks of four validation photos, measured 0.976 (0.968-0.982 each;
# 2-core Xeon, 2026-12-01): the mean of 8 views moves the outline by a pixel or two. The bound.
MIN_AGREEMENT = 0.97


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 1.0


@pytest.fixture(scope="module")
def tta_run(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    split = json.loads((REPO_ROOT / "bundle" / "splits" / "isic2017_ph2_seed0.json").read_text())
    ids = [e["id"] for e in split["validation"] if e["source"] == "isic2017_train_256"][:ISIC_COUNT]
    assert {RUNS_OFF_THE_PHOTO, WORST} <= set(ids)
    root = tmp_path_factory.mktemp("predict_tta")
    inputs, out = root / "photos", root / "results"
    inputs.mkdir()
    isic = shared_data_dir / "isic2017_train_256"
    for i in ids:
        (inputs / f"{i}.jpg").write_bytes((isic / "images" / f"{i}.jpg").read_bytes())
    (inputs / f"{PH2_ID}.jpg").write_bytes((shared_data_dir / "ph2" / "images" / f"{PH2_ID}.jpg").read_bytes())
    rng = np.random.default_rng(0)
    skin = np.clip(np.array([200.0, 150.0, 130.0]) + rng.normal(0.0, 8.0, (256, 256, 3)), 0, 255)
    Image.fromarray(skin.astype(np.uint8)).save(inputs / SKIN)
    cmd = [str(console_script()), "predict", str(inputs), "--out", str(out), "--weights", str(RELEASED), "--tta",
           "--uncertainty-map", "--device", "cpu", "--no-progress"]
    # one intra-op thread: the CPU time of a 2-thread run on a busy machine goes to threads waiting for each other
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / CSV_NAME, newline="", encoding="utf-8") as f:
        rows = {Path(r["image"]).name: r for r in csv.DictReader(f)}
    labels = {f"{i}.jpg": np.asarray(Image.open(isic / "masks" / f"{i}_segmentation.png")) > 127 for i in ids}
    return rows, labels, inputs


def test_every_image_gets_an_uncertainty_in_0_1_and_valid_flags(tta_run):
    rows, labels, _ = tta_run
    assert len(rows) == ISIC_COUNT + 2 and all(r["status"] == "ok" for r in rows.values())
    for name, row in rows.items():
        assert 0.0 <= float(row["uncertainty"]) <= 1.0, name
        flags = row["flags"].split(";") if row["flags"] else []
        assert set(flags) <= set(QUALITY_FLAGS) and flags == sorted(flags, key=QUALITY_FLAGS.index), name
        assert ("low_confidence" in flags) == (float(row["uncertainty"]) > 0.5), name
        assert ("empty" in flags) == (int(row["lesion_area_px"]) == 0), name


def test_the_known_bad_cases_are_flagged(tta_run):
    rows, _, _ = tta_run
    flags = {name: set(row["flags"].split(";")) - {""} for name, row in rows.items()}
    assert "low_confidence" in flags[SKIN]  # no lesion, yet the model draws one: its views disagree
    assert "low_confidence" in flags[f"{WORST}.jpg"]
    assert "touches_border" in flags[f"{RUNS_OFF_THE_PHOTO}.jpg"]
    assert not flags[f"{PH2_ID}.jpg"]  # a clear lesion in the middle of the photo (Dice 0.94)
    assert sum(1 for f in flags.values() if not f) >= ISIC_COUNT // 2  # most usual photos have no flag


def test_uncertainty_ranks_the_errors(tta_run):
    rows, labels, _ = tta_run
    names = sorted(labels)
    uncertainty = [float(rows[n]["uncertainty"]) for n in names]
    error = [1.0 - _dice(np.asarray(Image.open(rows[n]["mask"])) > 0, labels[n]) for n in names]
    rho = spearman_correlation(uncertainty, error)
    assert rho > MIN_SPEARMAN, rho


def test_uncertainty_maps_are_the_entropy_at_the_photo_size(tta_run):
    rows, _, inputs = tta_run
    row = rows[f"{PH2_ID}.jpg"]
    uncertainty_map = np.asarray(Image.open(row["uncertainty_map"]))
    mask = np.asarray(Image.open(row["mask"])) > 0
    with Image.open(inputs / f"{PH2_ID}.jpg") as photo:
        assert uncertainty_map.shape == mask.shape == photo.size[::-1] and uncertainty_map.dtype == np.uint8
    # the views disagree along the lesion's outline: pixels there (3x3 neighbourhood of both classes) are far
    # less certain than the rest
    padded = np.pad(mask, 1, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    band = windows.any(axis=(-2, -1)) & ~windows.all(axis=(-2, -1))
    assert uncertainty_map[band].mean() > 4 * uncertainty_map[~band].mean() + 50
    assert uncertainty_map.max() >= 250  # somewhere the mean probability is 0.5 (entropy 1 bit)


def test_tta_masks_agree_with_the_plain_masks(tta_run, tmp_path):
    rows, _, inputs = tta_run
    plain = LesionPredictor(RELEASED, output_dir=tmp_path, device="cpu")
    assert not plain.tta
    agreement = {}
    for name in (f"{PH2_ID}.jpg", "ISIC_0000010.jpg", "ISIC_0000016.jpg", "ISIC_0000024.jpg"):
        prediction = plain.predict(inputs / name)
        assert prediction.stats.uncertainty is None and "low_confidence" not in prediction.stats.flags
        agreement[name] = _dice(prediction.mask > 0, np.asarray(Image.open(rows[name]["mask"])) > 0)
    assert np.mean(list(agreement.values())) >= MIN_AGREEMENT, agreement

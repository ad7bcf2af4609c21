"""The released weights: checksums, the model card's figures reproduced, and good masks from the bundle's
inference command on real photographs with no training."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
RELEASE = REPO / "bundle"
SPLIT = RELEASE / "splits" / "isic2017_ph2_seed0.json"
CARD_FIGURES = RELEASE / "docs" / "performance.json"


def test_checksums_match_the_files():
    lines = (RELEASE / "models" / "SHA256SUMS").read_text().split("\n")
    sums = dict(reversed(line.split()) for line in lines if line.strip())
    assert set(sums) == {"model.pt", "model.ts"}
    for name, digest in sums.items():
        assert hashlib.sha256((RELEASE / "models" / name).read_bytes()).hexdigest() == digest
    card = (RELEASE / "docs" / "README.md").read_text()
    assert all(digest in card for digest in sums.values()), "the model card must list the sha256 of each file"


@pytest.fixture(scope="module")
def released_masks(shared_data_dir, tmp_path_factory):
    """The bundle's inference command with the released weights on five PH2 validation photographs (original,
    non-square size, copied under names with a space), and each mask's Dice against the expert mask, computed here.
    Returns ``{id: dice}``."""
    ids = [it["id"] for it in json.loads(SPLIT.read_text())["validation"] if it["source"] == "ph2"][:5]
    root = tmp_path_factory.mktemp("released")
    photos = root / "my photos"
    photos.mkdir()
    for i in ids:
        (photos / f"{i}.jpg").write_bytes((shared_data_dir / "ph2" / "images" / f"{i}.jpg").read_bytes())
    out = root / "masks"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json",
           "--input_path", str(photos), "--output_dir", str(out), "--ckpt_path", str(RELEASE / "models" / "model.pt")]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    dices = {}
    for i in ids:
        pred = np.asarray(Image.open(out / f"{i}_mask.png"))
        truth = np.asarray(Image.open(shared_data_dir / "ph2" / "masks" / f"{i}_segmentation.png")) > 0
        assert pred.shape == truth.shape and set(np.unique(pred)) <= {0, 255}
        p = pred > 0
        dices[i] = float(2 * (p & truth).sum() / (p.sum() + truth.sum()))
    return dices


@pytest.mark.slow
def test_evaluation_script_reproduces_the_model_cards_figures(shared_data_dir, released_masks, tmp_path):
    out = tmp_path / "report"
    cmd = [sys.executable, str(REPO / "scripts" / "evaluation_report.py"),
           "--data", str(shared_data_dir / "isic2017_train_256"), str(shared_data_dir / "ph2"),
           "--split", str(SPLIT), "--weights", str(RELEASE / "models" / "model.pt"), "--out", str(out), "--overlays", "2"]
    # 429 images: more than 15 min of wall time seen at load 16 on the 2-core Xeon; the timeout only stops a hang
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = json.loads((out / "summary.json").read_text())["by_source"]
    card = json.loads(CARD_FIGURES.read_text())["by_source"]
    # The card's figures were written by this same script: equal figures prove that the card REPRODUCES (same
    # weights, data, split and code give the same numbers), not that they are RIGHT; a bug in the script would be
    # in both. The independent check is below: Dice computed here from the inference command's masks.
    assert fresh.keys() == card.keys()
    for source, entry in card.items():
        assert fresh[source]["images"] == entry["images"]
        for res in ("256", "original"):
            for metric, value in entry[res].items():
                assert fresh[source][res][metric] == pytest.approx(value, abs=1e-4), (source, res, metric)
    assert "| isic2017_train_256 |" in result.stdout and (out / "per_image.csv").is_file() and (out / "overlays.png").is_file()
    # independent of the script: the bundle's inference command (configs/inference.json, its SaveImaged PNGs) and a
    # numpy Dice against the expert mask, for five of the same PH2 images at their original size. Measured: equal
    # to 5e-6 (the CSV keeps 5 decimals)
    with open(out / "per_image.csv", newline="") as f:
        by_id = {row["id"]: float(row["dice_original"]) for row in csv.DictReader(f)}
    for i, dice in released_masks.items():
        assert by_id[i] == pytest.approx(dice, abs=1e-4), i


@pytest.mark.slow
def test_inference_command_gives_good_masks_with_the_released_weights(released_masks):
    dices = list(released_masks.values())
    # measured with the released weights on these five, fed H x W (scripts/evaluation_report.py, 2026-12-01):
    # 0.944, 0.931, 0.933, 0.712, 0.955 (mean 0.895); fed W x H as they were trained: 0.944, 0.946, 0.917, 0.701, 0.978
    assert min(dices) > 0.65 and np.mean(dices) > 0.87, dices

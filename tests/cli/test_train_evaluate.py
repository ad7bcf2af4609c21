# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""``egeunet-monai train`` and ``egeunet-monai evaluate`` run for real: the training of ``tiny_training`` (the
session's weights for every inference test come from it), then an evaluation of its model on real ISIC 2017 pairs,
whose per-image Dice is checked against the mask ``LesionPredictor`` gives for the same photo."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import console_script

pytestmark = pytest.mark.slow

REAL_IDS = ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"]  # 256x256; --val_fraction 0.5: 2 of them validate
EVAL_METRICS = {"val_mean_dice", "val_mean_iou", "val_thresholded_jaccard", "val_pooled_dice", "val_pooled_iou",
                "val_pooled_accuracy", "val_pooled_sensitivity", "val_pooled_specificity"}


def test_train_writes_a_model_the_network_loads_and_the_split(tiny_training):
    proc = tiny_training.proc
    assert proc.stdout.startswith("$ ") and " -m monai.bundle run training --config_file " in proc.stdout
    assert "Epoch[2] Complete" in proc.stdout + proc.stderr  # --max_epochs 2, passed through to the bundle
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(Path(__file__).resolve().parents[2] / "configs" / "inference.json"))
    network = parser.get_parsed_content("network_def")
    state = torch.load(tiny_training.weights, map_location="cpu", weights_only=True)
    network.load_state_dict(state)  # strict: every weight of the inference network, nothing else
    assert all(torch.isfinite(p).all() for p in network.parameters())
    split = json.loads((tiny_training.runs / "datalist_split.json").read_text())
    ids = [d["id"] for d in split["training"] + split["validation"]]
    assert sorted(ids) == sorted(p.stem for p in (tiny_training.data / "images").iterdir())
    assert [p.name for p in (tiny_training.runs / "checkpoints").iterdir()] == ["checkpoint_epoch=2.pt"]
    summary = json.loads((tiny_training.runs / "mlflow_summary.json").read_text())
    assert summary["complete"] is True, summary


@pytest.fixture(scope="module")
def evaluated(tiny_training, shared_data_dir, mlflow_db_template, tmp_path_factory):
    """``egeunet-monai evaluate`` of the tiny model on 3 real ISIC 2017 pairs, in a bundle root of its own."""
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "isic"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    for i in REAL_IDS:
        shutil.copyfile(shared_data_dir / "isic2017_train_256" / "images" / f"{i}.jpg", data / "images" / f"{i}.jpg")
        mask = f"{i}_segmentation.png"
        shutil.copyfile(shared_data_dir / "isic2017_train_256" / "masks" / mask, data / "masks" / mask)
    runs = root / "runs"
    runs.mkdir()
    shutil.copyfile(mlflow_db_template, runs / "mlflow.db")
    cmd = [str(console_script()), "evaluate", "--bundle_root", str(root), "--dataset_dir", str(data),
           "--ckpt_path", str(tiny_training.weights), "--output_dir", str(runs), "--val_fraction", "0.5",
           "--num_workers", "0"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"egeunet-monai evaluate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", pytrace=False)
    return runs


def test_evaluate_writes_metrics_in_0_1_for_the_validation_images(evaluated):
    with open(evaluated / "eval" / "metrics.csv", newline="") as f:
        metrics = {row[0]: float(row[1]) for row in csv.reader(f) if row}
    assert EVAL_METRICS <= set(metrics), sorted(metrics)
    assert all(0.0 <= v <= 1.0 for v in metrics.values()), metrics
    split = json.loads((evaluated / "datalist_split.json").read_text())
    validation = sorted(d["image"] for d in split["validation"])
    assert len(validation) == 2 and len(split["training"]) == 1
    with open(evaluated / "eval" / "val_mean_dice_raw.csv", newline="") as f:
        raw = {row["filename"]: float(row["class0"]) for row in csv.DictReader(f)}
    assert sorted(raw) == validation
    assert np.mean(list(raw.values())) == pytest.approx(metrics["val_mean_dice"], abs=1e-6)
    assert sorted(p.name for p in (evaluated / "eval" / "overlays").glob("ISIC_*_overlay.png")) == [
        f"{Path(v).stem}_overlay.png" for v in validation]
    assert json.loads((evaluated / "mlflow_summary_evaluate.json").read_text())["complete"] is True


def test_evaluate_s_dice_is_that_of_the_predicted_mask(evaluated, tiny_training):
    # an independent check of the figure: the CLI's predictor on the same photo (256x256, so no resize either
    # way), and Dice computed here with numpy. Measured: equal to 1e-8 (the CSV's float32).
    from egeunet_monai.inference import LesionPredictor

    # evaluate.json scores the thresholded mask; inference.json then fills holes (fill_holes, on by default)
    predictor = LesionPredictor(tiny_training.weights, output_dir=evaluated / "check", device="cpu",
                                overrides={"fill_holes": False})
    with open(evaluated / "eval" / "val_mean_dice_raw.csv", newline="") as f:
        raw = {row["filename"]: float(row["class0"]) for row in csv.DictReader(f)}
    for image, dice in raw.items():
        predicted = predictor.predict(image).mask > 0
        label = Path(image).parents[1] / "masks" / f"{Path(image).stem}_segmentation.png"
        truth = np.asarray(Image.open(label)) > 0
        expected = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
        assert dice == pytest.approx(expected, abs=1e-5), image

# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The train -> evaluate -> infer chain on a few real pairs from ../shared/data, with two dataset folders given as
``--dataset_dir "a,b"``, and a training from a decathlon datalist JSON (``--datalist_file``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import (
    TRAIN,
    check_ok,
    epoch_log_lines,
    metric_steps,
    mlflow_client,
    read_mask,
    run_bundle,
    seed_mlflow_store,
    training_runs,
)
from PIL import Image

pytestmark = pytest.mark.slow


def test_two_dataset_folders_are_paired_split_and_trained(real_bundle):
    split = json.loads((real_bundle.root / "runs" / "datalist_split.json").read_text())
    sources = {name: (sum(d["source"] == name for d in split["training"]),
                      sum(d["source"] == name for d in split["validation"]))
               for name in ("isic2017_train_256", "ph2")}
    assert sources == {"isic2017_train_256": (2, 1), "ph2": (2, 1)}, sources  # stratified by folder
    for item in split["training"] + split["validation"]:
        assert Path(item["label"]).name == f"{item['id']}_segmentation.png"
        assert Path(item["image"]).stem == item["id"]
    # 4 training images, batch 4: one iteration per epoch, two epochs
    assert [(e, i, n) for e, _, i, n in epoch_log_lines(real_bundle.train.output)] == [(1, 1, 1), (2, 1, 1)]
    assert (real_bundle.root / "models" / "model.pt").is_file()


def test_evaluation_on_real_pairs(real_bundle):
    eval_dir = real_bundle.root / "runs" / "eval"
    with open(eval_dir / "val_mean_dice_raw.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    split = json.loads((real_bundle.root / "runs" / "datalist_split.json").read_text())
    assert sorted(r["filename"] for r in rows) == sorted(d["image"] for d in split["validation"])
    with open(eval_dir / "metrics.csv", newline="") as f:
        metrics = {row[0]: float(row[1]) for row in csv.reader(f) if row}
    assert {"val_pooled_dice", "val_pooled_iou", "val_mean_dice"} <= set(metrics)
    # the PH2 photo's overlay is drawn at the evaluation size
    assert len(list((eval_dir / "overlays").glob("*_overlay.png"))) == 2


def test_inference_masks_have_each_photos_size(real_bundle):
    photos = sorted(real_bundle.data.photos.iterdir())
    assert len(photos) == 6
    sizes = set()
    for photo in photos:
        mask_file = real_bundle.predictions / f"{photo.stem}_mask.png"
        assert mask_file.is_file(), f"no mask for {photo.name}"
        mask = read_mask(mask_file)
        with Image.open(photo) as img:
            assert mask.shape == (img.size[1], img.size[0]), f"{mask_file.name}: {mask.shape} for a {img.size} photo"
            sizes.add(img.size)
        assert set(np.unique(mask)) <= {0, 255}
    assert len(sizes) >= 2 and any(w != h for w, h in sizes), sizes  # square ISIC and non-square PH2 photos
    assert sorted(p.name for p in real_bundle.predictions.iterdir()) == sorted(f"{p.stem}_mask.png" for p in photos)


def test_training_from_a_datalist_file(real_datasets, tmp_path: Path, mlflow_db_template: Path):
    """A decathlon datalist with paths relative to its own folder, and its own validation list; trained with the
    augmentation on the device (``--augment_on_device true``, the GPU default) through the real trainer on the CPU:
    the loader only collates, the trainer's prepare_batch flips and rotates each batch, the split step still runs."""
    items = []
    for folder in real_datasets.folders:
        for image in sorted((folder / "images").iterdir()):
            label = folder / "masks" / f"{image.stem}_segmentation.png"
            items.append({"image": str(image.relative_to(real_datasets.root)),
                          "label": str(label.relative_to(real_datasets.root))})
    datalist = real_datasets.root / "my_datalist.json"
    datalist.write_text(json.dumps({"training": items[:4], "validation": items[4:]}, indent=2))
    root = tmp_path / "bundle"
    seed_mlflow_store(mlflow_db_template, root)
    result = check_ok(
        run_bundle("run", "training", "--config_file", TRAIN, "--bundle_root", root, "--datalist_file", datalist,
                   "--max_epochs", "1", "--num_workers", "0", "--batch_size", "4", "--augment_on_device", "true",
                   log_file=tmp_path / "train.log")
    )
    assert [(e, n, i, k) for e, n, i, k in epoch_log_lines(result.output)] == [(1, 1, 1, 1)]
    client = mlflow_client(root)
    (run,) = training_runs(client)
    assert (run.data.params["train_images"], run.data.params["val_images"]) == ("4", "2")
    assert run.data.params["augment_on_device"] == "True"
    assert [s for s, _ in metric_steps(client, run.info.run_id, "val_mean_dice")] == [1]
    assert (root / "models" / "model.pt").is_file()

    # the trained bundle's masks on the validation photos are binary and at the photo's size
    val_photos = [real_datasets.root / d["image"] for d in items[4:]]
    out = tmp_path / "masks"
    check_ok(run_bundle("run", "--config_file", "configs/inference.json", "--bundle_root", root,
                        "--input_path", val_photos[0], "--output_dir", out))
    mask = read_mask(out / f"{val_photos[0].stem}_mask.png")
    truth = read_mask(real_datasets.root / items[4]["label"])
    assert mask.shape == truth.shape and set(np.unique(mask)) <= {0, 255}

# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Fixtures of the end-to-end bundle tests: bundles trained, evaluated and run for inference once per session,
by the very commands of the README, each in a bundle root of its own (never the repository's runs/ or models/)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from bundle_helpers import EVALUATE, INFERENCE, TRAIN, check_ok, copy_pairs, run_bundle

SYNTHETIC_EPOCHS = 2
# three pairs per source: one goes to validation, two to training (val_fraction 0.2), so one batch of 4
REAL_IDS = {
    "isic2017_train_256": ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002"],
    "ph2": ["IMD002", "IMD003", "IMD004"],
}


@pytest.fixture(scope="session")
def synthetic_trained(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The bare training command on the synthetic default, for ``SYNTHETIC_EPOCHS`` epochs."""
    root = tmp_path_factory.mktemp("synthetic_bundle")
    train = check_ok(
        run_bundle("run", "training", "--config_file", TRAIN, "--bundle_root", root, "--max_epochs", SYNTHETIC_EPOCHS,
                   log_file=root / "train.log")
    )
    return SimpleNamespace(root=root, train=train, epochs=SYNTHETIC_EPOCHS)


@pytest.fixture(scope="session")
def synthetic_evaluated(synthetic_trained: SimpleNamespace) -> SimpleNamespace:
    root = synthetic_trained.root
    synthetic_trained.evaluate = check_ok(
        run_bundle("run", "evaluating", "--config_file", EVALUATE, "--bundle_root", root,
                   log_file=root / "evaluate.log")
    )
    return synthetic_trained


@pytest.fixture(scope="session")
def synthetic_inferred(synthetic_trained: SimpleNamespace) -> SimpleNamespace:
    """Inference with the synthetic training's model (runs/synthetic_model/model.pt, asked for with --ckpt_path: by
    default inference keeps the released weights) on the synthetic images (the default input), then ``ckpt_export``
    to runs/synthetic_model/model.ts and inference again with the TorchScript module instead of the network and its
    checkpoint."""
    root = synthetic_trained.root
    synthetic_trained.model = root / "runs" / "synthetic_model" / "model.pt"
    synthetic_trained.infer = check_ok(
        run_bundle("run", "--config_file", INFERENCE, "--bundle_root", root, "--ckpt_path", synthetic_trained.model,
                   log_file=root / "infer.log")
    )
    synthetic_trained.predictions = root / "predictions"
    synthetic_trained.inputs = root / "runs" / "synthetic_data" / "images"
    synthetic_trained.export = check_ok(
        run_bundle("ckpt_export", "network_def", "--filepath", synthetic_trained.model.with_suffix(".ts"),
                   "--ckpt_file", synthetic_trained.model, "--meta_file", "configs/metadata.json",
                   "--config_file", INFERENCE, "--bundle_root", root, log_file=root / "export.log")
    )
    # a bundle root holding the TorchScript file only: no model.pt that the inference could fall back on
    ts_root = root.parent / "synthetic_bundle_ts"
    (ts_root / "models").mkdir(parents=True)
    shutil.copyfile(synthetic_trained.model.with_suffix(".ts"), ts_root / "models" / "model.ts")
    ts_path = ts_root / "models" / "model.ts"
    synthetic_trained.infer_ts = check_ok(
        run_bundle("run", "--config_file", INFERENCE, "--bundle_root", ts_root,
                   "--input_path", synthetic_trained.inputs, "--output_dir", ts_root / "predictions",
                   "--ckpt_path", ts_path, "--runtime", "torchscript", log_file=ts_root / "infer.log")
    )
    synthetic_trained.ts_predictions = ts_root / "predictions"
    return synthetic_trained


@pytest.fixture(scope="session")
def real_datasets(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """Two small dataset folders with real pairs (ISIC 2017 at 256x256, PH2 at about 765x572)."""
    root = tmp_path_factory.mktemp("real_data")
    folders = [copy_pairs(shared_data_dir / name, root / name, ids) for name, ids in REAL_IDS.items()]
    photos = root / "photos"  # the images alone, as a user's folder for inference
    photos.mkdir()
    for folder in folders:
        for image in (folder / "images").iterdir():
            shutil.copyfile(image, photos / image.name)
    return SimpleNamespace(root=root, folders=folders, photos=photos)


@pytest.fixture(scope="session")
def real_bundle(real_datasets: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory,
                mlflow_db_template: Path) -> SimpleNamespace:
    """Train (two folders: ``--dataset_dir "a,b"``), evaluate and infer on the real pairs."""
    from bundle_helpers import seed_mlflow_store

    root = tmp_path_factory.mktemp("real_bundle")
    seed_mlflow_store(mlflow_db_template, root)
    dirs = ",".join(str(f) for f in real_datasets.folders)
    common = ["--bundle_root", root, "--dataset_dir", dirs, "--num_workers", "0", "--batch_size", "4"]
    train = check_ok(
        run_bundle("run", "training", "--config_file", TRAIN, *common, "--max_epochs", "2",
                   log_file=root / "train.log")
    )
    evaluate = check_ok(
        run_bundle("run", "evaluating", "--config_file", EVALUATE, *common, log_file=root / "evaluate.log")
    )
    infer = check_ok(
        run_bundle("run", "--config_file", INFERENCE, "--bundle_root", root, "--input_path", real_datasets.photos,
                   "--output_dir", root / "predictions", log_file=root / "infer.log")
    )
    return SimpleNamespace(root=root, data=real_datasets, train=train, evaluate=evaluate, infer=infer,
                           predictions=root / "predictions")

# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""A second training into the same bundle root replaces ``models/model.pt`` (the MONAI bundle convention: the
default weights are the latest training's), and the first training's model is not lost: each run's ``model.pt``
stays in the MLflow store as an artifact of that run."""

from __future__ import annotations

from pathlib import Path

import pytest
from bundle_helpers import TRAIN, check_ok, mlflow_client, run_bundle, seed_mlflow_store, training_runs

pytestmark = pytest.mark.slow


def test_a_second_training_keeps_the_first_model_in_mlflow(tmp_path: Path, mlflow_db_template: Path):
    from egeunet_monai.data import generate_synthetic_dataset

    data = generate_synthetic_dataset(tmp_path / "data", num_images=10, size=64)
    root = tmp_path / "bundle"
    seed_mlflow_store(mlflow_db_template, root)
    common = ["--config_file", TRAIN, "--bundle_root", root, "--dataset_dir", data, "--num_workers", "0",
              "--batch_size", "4", "--image_size", "[64, 64]", "--max_epochs", "1"]
    model = root / "models" / "model.pt"
    models = []
    for seed in (0, 1):
        check_ok(run_bundle("run", "training", *common, "--seed", seed, log_file=tmp_path / f"seed{seed}.log"))
        models.append(model.read_bytes())
    assert models[0] != models[1]  # the second training replaced it

    client = mlflow_client(root)
    runs = training_runs(client)
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    for run, expected in zip(runs, models):
        local = client.download_artifacts(run.info.run_id, "model.pt", str(tmp_path / run.info.run_id))
        assert Path(local).read_bytes() == expected, run.info.run_name

# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Training on every image (``--val_fraction 0``): with no selection split there is no best epoch, so ``model.pt``
is the last epoch's model (the EMA model with ``--ema_momentum``), logged to MLflow like any training's model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from bundle_helpers import TRAIN, check_ok, mlflow_client, run_bundle, training_runs

pytestmark = pytest.mark.slow

N_SYNTHETIC, EPOCHS = 48, 2


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_training_on_all_images_saves_the_last_epochs_ema_model(tmp_path):
    train = check_ok(
        run_bundle("run", "training", "--config_file", TRAIN, "--bundle_root", tmp_path, "--max_epochs", EPOCHS,
                   "--val_fraction", 0, "--ema_momentum", 0.001, log_file=tmp_path / "train.log")
    )
    split = json.loads((tmp_path / "runs" / "datalist_split.json").read_text())
    assert (len(split["training"]), len(split["validation"])) == (N_SYNTHETIC, 0)
    assert f"Saved the model of the last epoch ({EPOCHS})" in train.output

    model = tmp_path / "runs" / "synthetic_model" / "model.pt"
    state = _load(model)
    last = _load(tmp_path / "runs" / "checkpoints" / f"checkpoint_epoch={EPOCHS}.pt")
    assert state.keys() == last["ema_model"].keys()
    for name, value in state.items():
        assert torch.equal(value, last["ema_model"][name]), name
    assert any(not torch.equal(value, last["model"][name]) for name, value in state.items())  # EMA, not raw

    client = mlflow_client(tmp_path)
    run = training_runs(client)[-1]
    assert run.info.status == "FINISHED"
    assert run.data.params["val_images"] == "0"
    local = client.download_artifacts(run.info.run_id, "model.pt", str(tmp_path / "downloaded"))
    assert Path(local).read_bytes() == model.read_bytes()

# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Resume: a training stopped after 2 epochs and rerun with ``--max_epochs 4 --resume true`` continues at epoch 3
with the model, optimizer, scheduler and trainer state of its checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from bundle_helpers import TRAIN, check_ok, epoch_log_lines, metric_steps, mlflow_client, run_bundle, seed_mlflow_store
from bundle_helpers import training_runs

pytestmark = pytest.mark.slow

ITERS = 2  # 8 training images in batches of 4


def _cosine_lr(step: int, lr0: float = 1e-3, eta_min: float = 1e-5, period: int = 50) -> float:
    return eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * step / period)) / 2


def test_resume_continues_at_epoch_3_with_optimizer_and_schedule(tmp_path: Path, mlflow_db_template: Path):
    from egeunet_monai.data import generate_synthetic_dataset

    data = generate_synthetic_dataset(tmp_path / "data", num_images=10, size=64)
    root = tmp_path / "bundle"
    seed_mlflow_store(mlflow_db_template, root)
    common = ["--config_file", TRAIN, "--bundle_root", root, "--dataset_dir", data, "--num_workers", "0",
              "--batch_size", "4", "--image_size", "[64, 64]"]
    first = check_ok(run_bundle("run", "training", *common, "--max_epochs", "2", log_file=tmp_path / "first.log"))
    assert [(e, i) for e, _, i, _ in epoch_log_lines(first.output)] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    ckpt_dir = root / "runs" / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["checkpoint_epoch=2.pt"]
    at_2 = torch.load(ckpt_dir / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=False)
    assert "ema_model" not in at_2  # ema_momentum 0, the default: no EMA

    second = check_ok(run_bundle("run", "training", *common, "--max_epochs", "4", "--resume", "true",
                                 log_file=tmp_path / "second.log"))
    assert f"resume: continuing from {ckpt_dir / 'checkpoint_epoch=2.pt'}" in second.output
    # the log starts at epoch 3: epochs 1 and 2 are not trained again
    assert epoch_log_lines(second.output) == [(3, 4, 1, ITERS), (3, 4, 2, ITERS), (4, 4, 1, ITERS), (4, 4, 2, ITERS)]

    at_4 = torch.load(ckpt_dir / "checkpoint_epoch=4.pt", map_location="cpu", weights_only=False)
    # only epoch 4's: the resumed run's saver did not write epoch 2's, but removes it once a newer one is on disk
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["checkpoint_epoch=4.pt"]
    assert "removed checkpoint_epoch=2.pt: superseded by checkpoint_epoch=3.pt" in second.output
    assert (at_4["trainer"]["iteration"], at_4["trainer"]["epoch_length"]) == (4 * ITERS, ITERS)
    # AdamW's step counts went on from the checkpoint's (a fresh optimizer would be at 2 epochs' worth)
    steps_2 = {float(s["step"]) for s in at_2["optimizer"]["state"].values()}
    steps_4 = {float(s["step"]) for s in at_4["optimizer"]["state"].values()}
    assert steps_2 == {2.0 * ITERS} and steps_4 == {4.0 * ITERS}, (steps_2, steps_4)
    assert (at_2["lr_scheduler"]["last_epoch"], at_4["lr_scheduler"]["last_epoch"]) == (2, 4)

    # MLflow: each epoch's values once, the lr of epochs 3 and 4 continuing the cosine schedule
    client = mlflow_client(root)
    runs = training_runs(client)
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    lr, val, loss = {}, {}, {}
    for run in runs:
        for store, key in ((lr, "lr"), (val, "val_mean_dice"), (loss, "train_loss")):
            for step, value in metric_steps(client, run.info.run_id, key):
                assert step not in store, f"{key} logged twice at step {step}"
                store[step] = value
    assert sorted(lr) == [1, 2, 3, 4] and sorted(val) == [1, 2, 3, 4] and sorted(loss) == list(range(1, 4 * ITERS + 1))
    for epoch, value in lr.items():
        assert value == pytest.approx(_cosine_lr(epoch - 1), rel=1e-6), f"lr of epoch {epoch}"
    assert lr[3] < lr[1]  # a restarted schedule would be back at 1e-3


def test_resume_continues_the_weight_ema_exactly(tmp_path: Path, mlflow_db_template: Path):
    """``--ema_momentum``: the best model (``models/model.pt``) is the EMA model, not the trained network, and the
    training checkpoint holds the EMA model, so a run stopped after epoch 1 and resumed ends with the very network and
    EMA weights of a run that was never stopped."""
    from egeunet_monai.data import generate_synthetic_dataset
    from egeunet_monai.networks.nets import EGEUNet

    data = generate_synthetic_dataset(tmp_path / "data", num_images=10, size=64)
    # nothing random that a resumed process would draw afresh (the loader's order, the flips and rotation): both runs
    # then take the same steps, and any difference is what the checkpoint did not restore
    common = ["--config_file", TRAIN, "--dataset_dir", data, "--num_workers", "0", "--batch_size", "4",
              "--image_size", "[64, 64]", "--ema_momentum", "0.3", "--flip_prob", "0", "--rotate_prob", "0",
              "--train#dataloader#shuffle", "False"]
    stopped, straight = tmp_path / "stopped", tmp_path / "straight"
    for root in (stopped, straight):
        seed_mlflow_store(mlflow_db_template, root)
    check_ok(run_bundle("run", "training", *common, "--bundle_root", stopped, "--max_epochs", "1",
                        log_file=tmp_path / "stopped.log"))
    at_1 = torch.load(stopped / "runs" / "checkpoints" / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    best = torch.load(stopped / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert set(best) == set(at_1["model"]) == set(at_1["ema_model"])
    assert all(torch.equal(best[k], at_1["ema_model"][k]) for k in best)
    assert not all(torch.equal(best[k], at_1["model"][k]) for k in best)
    EGEUNet(in_channels=3, out_channels=1, channels=[8, 16, 24, 32, 48, 64], deep_supervision=True).load_state_dict(best)

    check_ok(run_bundle("run", "training", *common, "--bundle_root", stopped, "--max_epochs", "2", "--resume", "true",
                        log_file=tmp_path / "resumed.log"))
    check_ok(run_bundle("run", "training", *common, "--bundle_root", straight, "--max_epochs", "2",
                        log_file=tmp_path / "straight.log"))
    resumed, uninterrupted = (
        torch.load(root / "runs" / "checkpoints" / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)
        for root in (stopped, straight)
    )
    for part in ("model", "ema_model"):
        for key, value in uninterrupted[part].items():
            assert torch.equal(resumed[part][key], value), f"{part}.{key}"
    # the resumed run updated the EMA too (its handler is attached on resume)
    assert not all(torch.equal(resumed["ema_model"][k], at_1["ema_model"][k]) for k in at_1["ema_model"])

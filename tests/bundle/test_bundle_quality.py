# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Issue 3's bar: the bare quick-start command, on the synthetic default and with the default number of epochs,
reaches a validation mean Dice >= 0.85. A failure means the pipeline is broken (the task is easy)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bundle_helpers import REPO_ROOT, TRAIN, check_ok, metric_steps, mlflow_client, run_bundle, training_runs

MIN_DICE = 0.85
# measured: about 40 s of CPU per epoch on 2 cores (5 min of wall time when idle); a loaded machine stretches that
TIMEOUT_S = 5400


def _default_synthetic_epochs() -> int:
    from monai.bundle import ConfigParser

    from egeunet_monai.engines import training_epochs

    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "configs" / "train.json"))
    return training_epochs(parser["max_epochs"], on_synthetic_data=True)


@pytest.mark.slow
def test_synthetic_default_reaches_mean_dice_085(tmp_path: Path, record_property):
    epochs = _default_synthetic_epochs()
    root = tmp_path / "bundle"
    result = check_ok(
        run_bundle("run", "training", "--config_file", TRAIN, "--bundle_root", root, timeout=TIMEOUT_S,
                   log_file=tmp_path / "train.log")
    )
    record_property("synthetic_default_epochs", epochs)
    record_property("synthetic_default_train_seconds", round(result.seconds, 1))

    # the run went the full default length
    assert re.search(rf"Epoch: {epochs}/{epochs}, Iter: \d+/\d+ -- train_loss", result.output)
    best = re.findall(r"Key metric: val_mean_dice best value: ([0-9.]+) at epoch: (\d+)", result.output)
    assert best, "no validation result in the log"
    best_dice, best_epoch = float(best[-1][0]), int(best[-1][1])

    # the same number from the MLflow run, which is where a user looks
    client = mlflow_client(root)
    (run,) = training_runs(client)
    history = metric_steps(client, run.info.run_id, "val_mean_dice")
    assert [s for s, _ in history] == list(range(1, epochs + 1))
    assert max(v for _, v in history) == pytest.approx(best_dice, abs=1e-4)
    record_property("synthetic_default_best_val_mean_dice", round(best_dice, 4))
    record_property("synthetic_default_last_val_mean_dice", round(history[-1][1], 4))
    print(f"synthetic default: {epochs} epochs in {result.seconds:.0f} s, best val mean Dice {best_dice:.4f} "
          f"(epoch {best_epoch}), last {history[-1][1]:.4f}")
    assert best_dice >= MIN_DICE, f"best validation mean Dice {best_dice:.4f} < {MIN_DICE} after {epochs} epochs"

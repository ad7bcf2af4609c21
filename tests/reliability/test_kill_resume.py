"""SIGKILL in the middle of an epoch, then ``--resume true``: the run goes on from the last checkpoint as if it had
never stopped, and its MLflow run is the same run, each epoch's values logged exactly once.

Real bundle training (configs/train.json) as a subprocess on 10 real ISIC 2017 images at 256x256 (8 training
images: 2 iterations of 4 per epoch, 2 validation images), 2 epochs. A test probe (``_bundle_probe.Probe``, added
by a config overlay) holds the first run after iteration 1 of epoch 2, so the kill lands at a known point: epoch 1
and its checkpoint complete, epoch 2 half done. The resumed run gets a key metric that is always worse
(``WorseMeanDice``), so ``models/model.pt`` must not change after the resume.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from egeunet_monai.engines import latest_checkpoint

from reliability_helpers import probe_overlay, tiny_training_args

pytestmark = pytest.mark.slow

EPOCHS = 2
ITERATIONS_PER_EPOCH = 2
START_TIMEOUT_S = 600  # under heavy load, start-up and one epoch took up to 3 minutes
EXPERIMENT = "egeunet_skin_lesion_segmentation"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mlflow_history(db: Path) -> tuple[list, dict[str, list[tuple[int, float]]]]:
    """Runs of the experiment, and each metric's (step, value) history of its only run."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    try:
        experiment = client.get_experiment_by_name(EXPERIMENT)
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        history = {}
        if len(runs) == 1:
            run_id = runs[0].info.run_id
            for key in runs[0].data.metrics:
                history[key] = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        return runs, history
    finally:
        store = client._tracking_client.store
        for engine in (getattr(store, "engine", None), getattr(store, "read_engine", None)):
            if engine is not None:
                engine.dispose()


def assert_same_state(actual, expected, where: str) -> None:
    """Nested state dicts equal, tensors exactly."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor) and torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for k in expected:
            assert_same_state(actual[k], expected[k], f"{where}.{k}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same_state(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_sigkill_mid_epoch_then_resume(tiny_dataset, mlflow_db_template, bundle_runs, tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    (root / "runs").mkdir(parents=True)
    shutil.copyfile(mlflow_db_template, root / "runs" / "mlflow.db")
    db = root / "runs" / "mlflow.db"
    checkpoints = root / "runs" / "checkpoints"
    best_model = root / "models" / "model.pt"
    overlay = probe_overlay(tmp_path / "probe.json")
    args = tiny_training_args(root, tiny_dataset, overlay, EPOCHS)
    first_probe, resumed_probe = tmp_path / "probe_first", tmp_path / "probe_resumed"

    # ---- first run: killed in the middle of epoch 2
    first = bundle_runs(
        [*args, "--probe_dir", str(first_probe), "--probe_pause_epoch", "2"], tmp_path / "first.log"
    )
    first.wait_for(lambda: (first_probe / "paused").exists(), START_TIMEOUT_S, "iteration 1 of epoch 2")
    assert sorted(p.name for p in checkpoints.glob("checkpoint_epoch=*.pt")) == ["checkpoint_epoch=1.pt"]
    assert best_model.is_file()
    first.kill()  # SIGKILL to the process group, in epoch 2 after its first iteration
    assert first.proc.returncode == -9
    assert (first_probe / "epochs.txt").read_text().split() == ["1", "2"]
    saved = torch.load(checkpoints / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    best_model_before = sha256(best_model)
    assert latest_checkpoint(str(checkpoints)).endswith("checkpoint_epoch=1.pt")
    assert not list(checkpoints.glob(".*partial*"))

    # what the killed run left in MLflow: epoch 1 only; epoch 2's first iteration was held back, never logged
    runs, history = mlflow_history(db)
    assert len(runs) == 1 and runs[0].info.status == "RUNNING"
    assert [s for s, _ in history["train_loss"]] == [1, 2]
    assert [s for s, _ in history["val_mean_dice"]] == [1]
    best_so_far = history["val_mean_dice"][0][1]

    # ---- resumed run: same command, --resume true, and a key metric that is always worse than epoch 1's
    resumed = bundle_runs(
        [
            *args,
            "--resume",
            "true",
            "--probe_dir",
            str(resumed_probe),
            "--validate#key_metric#val_mean_dice#_target_",
            "_bundle_probe.WorseMeanDice",
        ],
        tmp_path / "resumed.log",
    )
    rc = resumed.finish(START_TIMEOUT_S)
    log = resumed.output(tail=0)
    assert rc == 0, resumed.output()
    assert "resume: continuing from" in log and "checkpoint_epoch=1.pt" in log

    # the resumed trainer started from the checkpoint's state, exactly
    started = torch.load(resumed_probe / "started.pt", map_location="cpu", weights_only=True)
    assert (started["epoch"], started["iteration"]) == (1, ITERATIONS_PER_EPOCH)
    assert_same_state(started["optimizer"], saved["optimizer"], "optimizer")
    assert started["optimizer"]["state"][0]["step"].item() == ITERATIONS_PER_EPOCH  # AdamW moments, not fresh
    assert_same_state(started["lr_scheduler"], saved["lr_scheduler"], "lr_scheduler")
    assert started["lr_scheduler"]["last_epoch"] == 1
    assert_same_state(started["best_model_tracker"], saved["best_model_tracker"], "best_model_tracker")
    assert started["best_model_tracker"]["_saved"][0][0] == pytest.approx(best_so_far)

    # it ran epoch 2 again, only epoch 2, and ended where an uninterrupted run ends
    assert (resumed_probe / "epochs.txt").read_text().split() == ["2"]
    final = torch.load(checkpoints / f"checkpoint_epoch={EPOCHS}.pt", map_location="cpu", weights_only=True)
    assert final["trainer"]["iteration"] == EPOCHS * ITERATIONS_PER_EPOCH  # ignite keeps the iteration, not the epoch
    assert final["trainer"]["epoch_length"] == ITERATIONS_PER_EPOCH
    assert final["lr_scheduler"]["last_epoch"] == EPOCHS
    assert final["optimizer"]["state"][0]["step"].item() == EPOCHS * ITERATIONS_PER_EPOCH

    # the worse validation after the resume did not replace the best model of epoch 1, nor the best metric
    assert "Got new best metric" not in log
    reported = re.findall(r"Key metric: val_mean_dice best value: (\S+) at epoch: (\d+)", log)
    assert len(reported) == 1 and reported[0][1] == "1", reported  # epoch 1's, restored from the checkpoint
    assert float(reported[0][0]) == pytest.approx(best_so_far)
    assert sha256(best_model) == best_model_before
    assert_same_state(final["best_model_tracker"], saved["best_model_tracker"], "best_model_tracker at the end")

    # MLflow: the same run, continued and finished; every step exactly once
    runs, history = mlflow_history(db)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == (root / "runs" / "mlflow_run_name.txt").read_text().strip()
    iterations = list(range(1, EPOCHS * ITERATIONS_PER_EPOCH + 1))
    for key, steps in {
        "train_loss": iterations,
        "lr_group_0": iterations,
        "val_mean_dice": list(range(1, EPOCHS + 1)),
        "val_pooled_dice": list(range(1, EPOCHS + 1)),
    }.items():
        assert [s for s, _ in history[key]] == steps, f"{key}: steps {[s for s, _ in history[key]]}"
    for key, points in history.items():  # any other key (e.g. an epoch-level one added later): no step twice
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), f"{key}: a step logged twice: {steps}"
    # the values of epoch 2 are those of the resumed run (its log), not of the killed one
    printed = [float(v) for v in re.findall(r"Epoch: 2/2, Iter: \d/2 -- train_loss: ([0-9.]+)", log)]
    assert len(printed) == ITERATIONS_PER_EPOCH
    assert [round(v, 4) for _, v in history["train_loss"][2:]] == pytest.approx(printed, abs=1e-4)
    assert history["val_mean_dice"][1][1] < 0  # WorseMeanDice: the resumed run's own validation
    # a resumed run logs a param that changed as a tag (MLflow refuses to change a param)
    assert run.data.params["resumed_from"] == ""
    assert run.data.tags["changed_param.resumed_from"].endswith("checkpoint_epoch=1.pt")
    summary = json.loads((root / "runs" / "mlflow_summary.json").read_text())
    assert summary["complete"] is True and summary["metric_values_not_logged"] == 0

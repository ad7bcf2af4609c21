"""A real ``mlflow server`` on 127.0.0.1 stops in the middle of a real bundle training: training and checkpoints go
on (a warning, not a crash), and the run's summary says which metrics were not logged.

The training (configs/train.json, 10 real ISIC images, 2 epochs of 2 iterations) logs to
``--tracking_uri http://127.0.0.1:<port>``. The test probe holds it after iteration 1 of epoch 2; by then epoch 1 is
in the server's store. The test stops the server (SIGTERM to its process group, then waits until the port is
closed) and lets the training go on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from local_server import free_port, stop_process_group, wait_until_answering
from reliability_helpers import probe_overlay, tiny_training_args

pytestmark = pytest.mark.slow

EXPERIMENT = "egeunet_skin_lesion_segmentation"
SERVER_START_TIMEOUT_S = 300
TRAIN_TIMEOUT_S = 600


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def mlflow_server(tmp_path: Path, mlflow_db_template: Path):
    """``mlflow server`` on 127.0.0.1 with a SQLite store in tmp_path; yields (port, db path, stop function)."""
    port = free_port()
    db = tmp_path / "server.db"
    shutil.copyfile(mlflow_db_template, db)
    executable = Path(sys.executable).parent / "mlflow"
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "mlflow"]
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen(
        [*command, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{db}", "--artifacts-destination", str(tmp_path / "artifacts")],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # no background job workers (MLflow 3 starts several by default): not needed, and slow to stop
        env={**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )

    def stop() -> None:
        stop_process_group(proc)
        deadline = time.monotonic() + 30
        while port_open(port):  # workers of the group may take a moment to let go of the port
            assert time.monotonic() < deadline, "the server's port is still open"
            time.sleep(0.2)

    try:
        wait_until_answering(f"http://127.0.0.1:{port}/health", proc, tmp_path / "server.log",
                             SERVER_START_TIMEOUT_S, "mlflow server")
        yield port, db, stop
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        log.close()


def test_tracking_server_stopped_mid_run(tiny_dataset, mlflow_server, bundle_runs, tmp_path: Path) -> None:
    import mlflow

    port, server_db, stop_server = mlflow_server
    root = tmp_path / "bundle"
    probe, go = tmp_path / "probe", tmp_path / "go"
    args = tiny_training_args(root, tiny_dataset, probe_overlay(tmp_path / "probe.json"), epochs=2)
    run = bundle_runs(
        [*args, "--tracking_uri", f"http://127.0.0.1:{port}", "--probe_dir", str(probe),
         "--probe_pause_epoch", "2", "--probe_resume_file", str(go)],
        tmp_path / "train.log",
    )
    run.wait_for(lambda: (probe / "paused").exists(), TRAIN_TIMEOUT_S, "iteration 1 of epoch 2")

    # epoch 1 reached the server: tracking worked before the fault
    client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert [m.step for m in client.get_metric_history(tracked.info.run_id, "val_mean_dice")] == [1]

    stop_server()
    go.touch()
    resumed_at = time.monotonic()
    rc = run.finish(TRAIN_TIMEOUT_S)
    after_fault_s = time.monotonic() - resumed_at
    log = run.output(tail=0)
    assert rc == 0, run.output()
    print(f"\ntraining went on for {after_fault_s:.1f} s after the server stopped, then ended with rc 0")

    # training and checkpoints were not affected
    final = torch.load(root / "runs" / "checkpoints" / "checkpoint_epoch=2.pt", map_location="cpu", weights_only=True)
    assert final["trainer"]["iteration"] == 4
    assert torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "Saved checkpoint at epoch: 2" in log

    # one warning, then a summary that says what was not logged
    assert len(re.findall(r"WARNING - MLflow tracking failed", log)) == 1, log[-4000:]
    assert "MLflow summary: metrics were NOT all logged" in log
    summary = json.loads((root / "runs" / "mlflow_summary.json").read_text())
    assert summary["complete"] is False and summary["run_ended"] is False
    # epoch 1's values were logged, epoch 2's (the same keys: train_loss and lr per iteration, the validation
    # metrics, ...) were not
    assert summary["metric_values_logged"] >= 6 and summary["metric_values_logged"] == summary["metric_values_not_logged"]
    assert sorted(Path(a).name for a in summary["artifacts_not_logged"]) == ["datalist_split.json", "model.pt"]
    assert summary["tracking_uri"] == f"http://127.0.0.1:{port}"

    # the server's own store (read directly now that it is down) has epoch 1, and the run was left unfinished
    store = mlflow.MlflowClient(tracking_uri=f"sqlite:///{server_db}")
    (kept,) = store.search_runs([experiment.experiment_id])
    assert kept.info.status == "RUNNING"
    assert sorted(m.step for m in store.get_metric_history(kept.info.run_id, "train_loss")) == [1, 2]
    in_store = sum(len(store.get_metric_history(kept.info.run_id, key)) for key in kept.data.metrics)
    assert in_store == summary["metric_values_logged"]

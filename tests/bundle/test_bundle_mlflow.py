# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""A training tracked to a real ``mlflow server`` on 127.0.0.1 (``--tracking_uri http://...``), read back with
``MlflowClient`` over HTTP: metrics, params and the best checkpoint as an artifact (proxied to the server's
``--artifacts-destination``). The sqlite-store read-back is in test_bundle_synthetic.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from bundle_helpers import TRAIN, bundle_env, check_ok, metric_steps, run_bundle
from local_server import free_port, stop_process_group, wait_until_answering

pytestmark = pytest.mark.slow

SERVER_START_TIMEOUT_S = 600  # a loaded 2-core machine has been seen to need minutes


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """``mlflow server`` in a process group of its own; always stopped (SIGTERM to the group, then SIGKILL)."""
    port = free_port()
    artifacts = tmp_path / "artifacts"
    log = open(tmp_path / "mlflow_server.log", "w")
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}", "--artifacts-destination", str(artifacts),
           "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=bundle_env())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{url}/health", proc, tmp_path / "mlflow_server.log", SERVER_START_TIMEOUT_S,
                             "mlflow server")
        yield url, artifacts
    finally:
        stop_process_group(proc)
        log.close()


def test_training_tracked_by_a_real_mlflow_server(mlflow_server, tmp_path: Path):
    from egeunet_monai.data import generate_synthetic_dataset
    from mlflow import MlflowClient

    url, artifacts_dir = mlflow_server
    data = generate_synthetic_dataset(tmp_path / "data", num_images=10, size=64)
    root = tmp_path / "bundle"
    # the handler's default HTTP time-out (10 s, no retry) is meant for a dead server; a live one on a loaded
    # CI machine can be slower than that
    env = bundle_env(MLFLOW_HTTP_REQUEST_TIMEOUT="120", MLFLOW_HTTP_REQUEST_MAX_RETRIES="3")
    result = check_ok(
        run_bundle("run", "training", "--config_file", TRAIN, "--bundle_root", root, "--dataset_dir", data,
                   "--tracking_uri", url, "--run_name", "served_run", "--max_epochs", "2", "--num_workers", "0",
                   "--batch_size", "4", "--image_size", "[64, 64]", "--lr_cosine_period", "16", "--weight_decay", "0.02",
                   env=env, log_file=tmp_path / "train.log")
    )
    assert "metrics were NOT all logged" not in result.output
    assert not (root / "runs" / "mlflow.db").exists(), "tracked to the local sqlite store instead of the server"

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("egeunet_skin_lesion_segmentation")
    (run,) = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'served_run'")
    assert run.info.status == "FINISHED"
    assert [s for s, _ in metric_steps(client, run.info.run_id, "train_loss")] == [1, 2, 3, 4]
    assert [s for s, _ in metric_steps(client, run.info.run_id, "lr")] == [1, 2]
    assert [s for s, _ in metric_steps(client, run.info.run_id, "val_mean_dice")] == [1, 2]
    assert metric_steps(client, run.info.run_id, "lr")[0][1] == pytest.approx(1e-3)
    params = run.data.params
    assert (params["train_images"], params["val_images"], params["batch_size"]) == ("8", "2", "4")
    # the recipe's params are read from the objects the config built, so overrides show (the release's 16-epoch
    # cosine period once went to MLflow as the config's hand-written T_max=50)
    assert params["lr_scheduler"] == "CosineAnnealingLR(T_max=16, eta_min=1e-05)"
    assert (float(params["learning_rate"]), float(params["weight_decay"])) == (1e-3, 0.02)
    assert params["optimizer"] == "AdamW(betas=(0.9, 0.999), eps=1e-08)"
    assert params["network"] == (
        "EGEUNet(in_channels=3, out_channels=1, deep_supervision=True, channels=[8, 16, 24, 32, 48, 64])"
    )
    assert params["loss"] == "EGEUNetLoss(weights=[1.0, 0.5, 0.4, 0.3, 0.2, 0.1])"
    assert (params["amp"], params["compile"], params["max_epochs"]) == ("False", "False", "2")

    assert {"model.pt", "datalist_split.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    local = client.download_artifacts(run.info.run_id, "model.pt", str(tmp_path / "downloaded"))
    assert Path(local).read_bytes() == (root / "models" / "model.pt").read_bytes()
    # the server stored it under its --artifacts-destination
    stored = list(artifacts_dir.rglob("model.pt"))
    assert len(stored) == 1 and stored[0].read_bytes() == Path(local).read_bytes()

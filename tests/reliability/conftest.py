"""Fixtures of the fault tests: a tiny real dataset, an MLflow store template, bundle runs killed at teardown."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from reliability_helpers import BundleRun

TINY_DATASET_SIZE = 10  # 8 training images (2 iterations of 4) and 2 validation images: val_fraction 0.2


@pytest.fixture(scope="session")
def tiny_dataset(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 10 ISIC 2017 pairs (256x256), copied to a dataset folder of their own."""
    src = shared_data_dir / "isic2017_train_256"
    dst = tmp_path_factory.mktemp("tiny") / "isic_tiny"
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    for image in sorted((src / "images").glob("*.jpg"))[:TINY_DATASET_SIZE]:
        shutil.copyfile(image, dst / "images" / image.name)
        mask = f"{image.stem}_segmentation.png"
        shutil.copyfile(src / "masks" / mask, dst / "masks" / mask)
    return dst


@pytest.fixture(scope="session")
def mlflow_db_template(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with its tables made. Making them takes 10-60 s (MLflow's migrations), copying
    the file no time; kept in pytest's cache per MLflow version, so a later session does not pay it again."""
    import mlflow

    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir(f"mlflow_db_{mlflow.__version__}") if cache is not None else tmp_path_factory.mktemp("db")
    path = Path(folder) / "mlflow.db"
    if path.is_file():
        return path
    fd, tmp = tempfile.mkstemp(prefix="mlflow.db.", dir=folder)
    os.close(fd)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp}")
    client.search_experiments()
    store = client._tracking_client.store
    for engine in (getattr(store, "engine", None), getattr(store, "read_engine", None)):
        if engine is not None:
            engine.dispose()
    os.replace(tmp, path)  # whole or absent, also when two sessions make it at once
    return path


@pytest.fixture
def bundle_runs():
    """Start bundle runs; whatever is still running at the end of the test is killed (its process group)."""
    runs: list[BundleRun] = []

    def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> BundleRun:
        run = BundleRun(args, log, env)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.proc.poll() is None:
            run.kill()

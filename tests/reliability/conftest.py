"""Fixtures of the fault tests: a tiny real dataset and bundle runs killed at teardown (the MLflow store template,
``mlflow_db_template``, is in tests/conftest.py)."""

from __future__ import annotations

import shutil
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

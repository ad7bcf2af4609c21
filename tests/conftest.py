# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Shared test fixtures: the real dermoscopy data in ``<repo root>/../shared/data``, the original
implementation's reference outputs in ``<repo root>/../shared/reference``, and an empty MLflow store to copy."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

__all__ = [
    "REPO_ROOT", "SHARED_DATA_DIR", "SHARED_REFERENCE_DIR", "console_script", "in_ci", "require_cpu_kernels",
    "require_original_checkpoint", "require_shared_data", "require_shared_reference",
]  # fmt: skip

REPO_ROOT = Path(__file__).resolve().parents[1]
# tests/local_server.py is shared by test folders that pytest puts on sys.path one by one
sys.path.insert(0, str(Path(__file__).resolve().parent))
SHARED_DATA_DIR = (REPO_ROOT.parent / "shared" / "data").resolve()
SHARED_REFERENCE_DIR = (REPO_ROOT.parent / "shared" / "reference").resolve()


def in_ci() -> bool:
    """Whether the tests run in CI: ``CI`` is ``true``, ``1`` or ``yes`` (any case). The one rule for it: under CI a
    missing prerequisite fails its test, and any skip at all is turned into a failure (see
    :func:`pytest_runtest_makereport` below)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def console_script() -> Path:
    """The installed ``egeunet-monai`` console script next to this Python (``pip install -e .`` puts it there)."""
    script = Path(sys.executable).with_name("egeunet-monai")
    if not script.is_file():
        pytest.fail(f"{script}: the console script is not installed (pip install -e .)", pytrace=False)
    return script


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        reason = f"{what} not found at {path} (expected next to the repository, see the README.md there)"
        if in_ci():
            pytest.fail(f"{reason}; CI={os.environ['CI']!r} requires it", pytrace=False)
        pytest.skip(reason)
    return path


def require_shared_data(*subpaths: str) -> Path:
    """The shared data folder (or a path inside it), or skip the calling test when it is absent.

    On a user's machine the real data is usually absent and the test is skipped with the reason. In CI (:func:`in_ci`)
    the data must be there, so the test FAILS instead: a silently skipped test would hide a broken CI setup.

    Args:
        subpaths: parts of a path inside the shared data folder that the test needs, e.g. ``"ph2", "images"``.
    """
    return _require(SHARED_DATA_DIR.joinpath(*subpaths), "real dermoscopy data (<repo root>/../shared/data)")


def require_shared_reference(*subpaths: str) -> Path:
    """The original implementation's reference outputs (or a file among them); skips, or fails under CI.

    Args:
        subpaths: parts of a path inside ``<repo root>/../shared/reference``.
    """
    return _require(
        SHARED_REFERENCE_DIR.joinpath(*subpaths), "reference outputs of the original EGE-UNet (../shared/reference)"
    )


def require_original_checkpoint() -> Path:
    """The original implementation's 17-epoch checkpoint in ``../shared/reference``; skips, or fails under CI.

    The weights of the tests that assert what a network does on given photographs (holes, second pieces, quality
    flags, uncertainty): they never change, so a new release of ``bundle/models`` does not move those photographs.
    """
    return require_shared_reference("original_trained_isic2017_17ep.pth")


def require_cpu_kernels():
    """``torch.ops.egeunet_cpu``, building the C++ CPU kernels of ``egeunet_monai.accel`` if needed; skips the calling
    test where they cannot be built (no C++ compiler or ninja), fails it under CI (CI builds them)."""
    import torch

    from egeunet_monai.accel import kernels

    if not kernels.load():
        reason = "the C++ CPU kernels could not be built here (no C++ compiler or ninja? see the warning above)"
        if in_ci():
            pytest.fail(f"{reason}; CI={os.environ['CI']!r} requires them", pytrace=False)
        pytest.skip(reason)
    return torch.ops.egeunet_cpu


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``<repo root>/../shared/data``; skips the test when absent, fails it under CI."""
    return require_shared_data()


@pytest.fixture(scope="session")
def shared_reference_dir() -> Path:
    """``<repo root>/../shared/reference``; skips the test when absent, fails it under CI."""
    return require_shared_reference()


@pytest.fixture(scope="session")
def tiny_training(mlflow_db_template: Path, tmp_path_factory: pytest.TempPathFactory):
    """One real ``egeunet-monai train`` (the bundle's ``configs/train.json``, 2 epochs on 8 synthetic 64x64 images),
    in a temporary bundle root whose MLflow store is seeded from :func:`mlflow_db_template`. Returns a namespace:
    ``root``, ``data`` (the images), ``runs`` (``--output_dir``), ``weights`` (``models/model.pt``) and ``proc``
    (the finished process). Shared by the inference tests (through :func:`tiny_bundle_weights`) and the CLI's."""
    import shutil
    from types import SimpleNamespace

    from egeunet_monai.data import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny_bundle")
    data = Path(generate_synthetic_dataset(root / "data", num_images=8, size=64))
    runs, models = root / "runs", root / "models"
    runs.mkdir()
    shutil.copyfile(mlflow_db_template, runs / "mlflow.db")  # MLflow's migrations would cost 10-60 s
    # the arguments of a normal training run: only the data, the size and the length are made small
    cmd = [str(console_script()), "train", "--bundle_root", str(root), "--output_dir", str(runs),
           "--ckpt_dir", str(models), "--dataset_dir", str(data), "--image_size", "[64, 64]", "--batch_size", "4",
           "--max_epochs", "2", "--num_workers", "0"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    weights = models / "model.pt"
    if proc.returncode != 0 or not weights.is_file():
        pytest.fail(f"egeunet-monai train failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", pytrace=False)
    return SimpleNamespace(root=root, data=data, runs=runs, weights=weights, proc=proc)


@pytest.fixture(scope="session")
def tiny_bundle_weights(request: pytest.FixtureRequest) -> Path:
    """A ``model.pt`` trained by the bundle itself (:func:`tiny_training`): real weights for inference tests.
    ``EGEUNET_TEST_WEIGHTS=path`` uses that checkpoint instead (e.g. the released weights, for a docs screenshot)."""
    if os.environ.get("EGEUNET_TEST_WEIGHTS"):
        return Path(os.environ["EGEUNET_TEST_WEIGHTS"]).resolve()
    return request.getfixturevalue("tiny_training").weights


CLI_TEST_IMAGES = ("ph2/images/IMD002.jpg", "ph2/images/IMD003.jpg", "isic2017_train_256/images/ISIC_0000000.jpg",
                   "isic2017_train_256/images/ISIC_0000001.jpg")
CORRUPT_IMAGE_NAME = "corrupt_photo.jpg"


@pytest.fixture(scope="session")
def cli_predictions(shared_data_dir: Path, tiny_bundle_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    """One run of the installed ``egeunet-monai predict`` console script on a folder of 4 real images
    (:data:`CLI_TEST_IMAGES`) and one truncated JPEG (:data:`CORRUPT_IMAGE_NAME`), with ``--overlay
    --probabilities``. Returns a namespace: ``inputs`` and ``out`` (folders), ``images`` (the good files' names),
    ``corrupt`` (the bad file's name) and ``proc`` (the finished process); shared by the CLI tests and the viewer's
    browser test, which compares its results with the CLI's."""
    import shutil
    from types import SimpleNamespace

    root = tmp_path_factory.mktemp("cli_predict")
    inputs, out = root / "photos", root / "results"
    inputs.mkdir()
    for name in CLI_TEST_IMAGES:
        shutil.copy(shared_data_dir / name, inputs)
    whole = (shared_data_dir / "ph2" / "images" / "IMD004.jpg").read_bytes()
    (inputs / CORRUPT_IMAGE_NAME).write_bytes(whole[: len(whole) // 3])  # a download cut short
    cmd = [str(console_script()), "predict", str(inputs), "--out", str(out), "--weights", str(tiny_bundle_weights),
           "--overlay", "--probabilities", "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    images = [Path(name).name for name in CLI_TEST_IMAGES]
    return SimpleNamespace(inputs=inputs, out=out, images=images, corrupt=CORRUPT_IMAGE_NAME, proc=proc)


def _fail_a_skip_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    # under CI a skip is a failure, whatever raised it (pytest.skip, importorskip, skipif): CI runs every test
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped with CI={os.environ['CI']!r}, where every test must run: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    _fail_a_skip_in_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    report = yield
    _fail_a_skip_in_ci(report)  # a module-level skip or importorskip
    return report


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

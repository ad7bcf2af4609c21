# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Shared test fixtures: the real dermoscopy data in ``<repo root>/../shared/data`` and the original
implementation's reference outputs in ``<repo root>/../shared/reference``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

__all__ = ["REPO_ROOT", "SHARED_DATA_DIR", "SHARED_REFERENCE_DIR", "require_shared_data", "require_shared_reference"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_DIR = (REPO_ROOT.parent / "shared" / "data").resolve()
SHARED_REFERENCE_DIR = (REPO_ROOT.parent / "shared" / "reference").resolve()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        reason = f"{what} not found at {path} (expected next to the repository, see the README.md there)"
        if _in_ci():
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return path


def require_shared_data(*subpaths: str) -> Path:
    """The shared data folder (or a path inside it), or skip the calling test when it is absent.

    On a user's machine the real data is usually absent and the test is skipped with the reason. In CI (``CI=true``)
    the data must be there, so the test FAILS instead: a silently skipped test would hide a broken CI setup.

    Args:
        subpaths: parts of a path inside the shared data folder that the test needs, e.g. ``"ph2", "images"``.
    """
    return _require(SHARED_DATA_DIR.joinpath(*subpaths), "real dermoscopy data (<repo root>/../shared/data)")


def require_shared_reference(*subpaths: str) -> Path:
    """The original implementation's reference outputs (or a file among them); skips, or fails when ``CI=true``.

    Args:
        subpaths: parts of a path inside ``<repo root>/../shared/reference``.
    """
    return _require(
        SHARED_REFERENCE_DIR.joinpath(*subpaths), "reference outputs of the original EGE-UNet (../shared/reference)"
    )


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """``<repo root>/../shared/data``; skips the test when absent, fails it when ``CI=true``."""
    return require_shared_data()


@pytest.fixture(scope="session")
def shared_reference_dir() -> Path:
    """``<repo root>/../shared/reference``; skips the test when absent, fails it when ``CI=true``."""
    return require_shared_reference()


@pytest.fixture(scope="session")
def tiny_bundle_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``model.pt`` trained by the bundle itself (``configs/train.json``, 2 epochs on 8 synthetic 64x64 images):
    real weights for inference tests, made in a temporary folder. ``EGEUNET_TEST_WEIGHTS=path`` uses that
    checkpoint instead (e.g. the released weights, for a docs screenshot)."""
    if os.environ.get("EGEUNET_TEST_WEIGHTS"):
        return Path(os.environ["EGEUNET_TEST_WEIGHTS"]).resolve()
    from egeunet_monai.data import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny_bundle")
    data = generate_synthetic_dataset(root / "data", num_images=8, size=64)
    # the arguments of a normal training run: only the data, the size and the length are made small
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training",
           "--config_file", str(REPO_ROOT / "configs" / "train.json"), "--bundle_root", str(root),
           "--output_dir", str(root / "runs"), "--ckpt_dir", str(root / "models"),
           "--dataset_dir", data, "--image_size", "[64, 64]", "--batch_size", "4", "--max_epochs", "2",
           "--num_workers", "0"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    weights = root / "models" / "model.pt"
    if proc.returncode != 0 or not weights.is_file():
        pytest.fail(f"bundle training failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", pytrace=False)
    return weights


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tests that use the real data get the `shared_data` marker, so `-m "not shared_data"` deselects them
    for item in items:
        if {"shared_data_dir", "shared_reference_dir"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared_data)

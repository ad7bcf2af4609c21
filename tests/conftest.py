# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Shared test fixtures: the real dermoscopy data in ``<repo root>/../shared/data`` and the original
implementation's reference outputs in ``<repo root>/../shared/reference``."""

from __future__ import annotations

import os
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tests that use the real data get the `shared_data` marker, so `-m "not shared_data"` deselects them
    for item in items:
        if {"shared_data_dir", "shared_reference_dir"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared_data)

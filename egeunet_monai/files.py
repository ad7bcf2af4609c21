# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Small file helpers shared by the data and tracking code."""

from __future__ import annotations

import json
import os
import tempfile

__all__ = ["write_json_atomic"]


def write_json_atomic(path: str | os.PathLike, content: dict) -> None:
    """Write ``content`` as JSON to ``path`` through a temporary file and a rename, creating the folder: readers
    (and other processes writing the same file, one per GPU) never see a half-written file."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.partial-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

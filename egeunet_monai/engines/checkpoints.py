# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Finding the checkpoint to resume training from, and naming the MLflow run it continues."""

from __future__ import annotations

import os
import re
import time

__all__ = ["default_weights", "latest_checkpoint", "resume_checkpoint", "tracking_run_name"]

_EPOCH_CHECKPOINT = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")


def latest_checkpoint(checkpoint_dir: str) -> str | None:
    """The ``checkpoint_epoch=N.pt`` with the highest N in ``checkpoint_dir`` (as MONAI's ``CheckpointSaver``
    names them), or None when there is none."""
    if not os.path.isdir(checkpoint_dir):
        return None
    found = [(int(m[1]), name) for name in os.listdir(checkpoint_dir) if (m := _EPOCH_CHECKPOINT.match(name))]
    return os.path.join(checkpoint_dir, max(found)[1]) if found else None


def resume_checkpoint(checkpoint_dir: str, resume: bool) -> str:
    """The checkpoint a ``--resume true`` run continues from; "" when not resuming or nothing was saved yet
    (a resume with nothing to resume starts from scratch, with a message, rather than failing)."""
    if not resume:
        return ""
    path = latest_checkpoint(checkpoint_dir)
    if path is None:
        print(f"resume: no checkpoint in {checkpoint_dir}, starting from epoch 0")
        return ""
    print(f"resume: continuing from {path}")
    return path


def tracking_run_name(output_dir: str, resume: bool, run_name: str | None = None) -> str:
    """The MLflow run name: ``run_name`` if given; when resuming, the name the interrupted run used (so its
    unfinished MLflow run is continued); otherwise a new time-stamped name. Saved in ``output_dir``."""
    record = os.path.join(output_dir, "mlflow_run_name.txt")
    if not run_name and resume and os.path.isfile(record):
        with open(record, encoding="utf-8") as f:
            run_name = f.read().strip()
    run_name = run_name or time.strftime("egeunet_%Y%m%d_%H%M%S")
    os.makedirs(output_dir, exist_ok=True)
    with open(record, "w", encoding="utf-8") as f:
        f.write(run_name)
    return run_name


def default_weights(bundle_root: str) -> str:
    """The weights inference uses when none are given: the bundle's own ``models/model.pt`` (what training
    writes, and what a packaged bundle ships), else the released weights kept in the repository's ``bundle/``."""
    for candidate in ("models/model.pt", "bundle/models/model.pt"):
        path = os.path.join(bundle_root, candidate)
        if os.path.isfile(path):
            print(f"weights: {path}")
            return path
    raise FileNotFoundError(
        f"no weights in {bundle_root}/models/model.pt or {bundle_root}/bundle/models/model.pt: train the bundle "
        "first, or pass --ckpt_path PATH."
    )

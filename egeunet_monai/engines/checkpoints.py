# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Finding the checkpoint to resume training from, naming the MLflow run it continues, and the weights inference
uses by default."""

from __future__ import annotations

import os
import re
import time

from egeunet_monai.flags import flag

__all__ = [
    "latest_checkpoint", "resume_checkpoint", "tracking_run_name", "trained_on_synthetic_data",
]

_EPOCH_CHECKPOINT = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")


def latest_checkpoint(checkpoint_dir: str) -> str | None:
    """The ``checkpoint_epoch=N.pt`` with the highest N in ``checkpoint_dir`` (as MONAI's ``CheckpointSaver``
    names them), or None when there is none."""
    if not os.path.isdir(checkpoint_dir):
        return None
    found = [(int(m[1]), name) for name in os.listdir(checkpoint_dir) if (m := _EPOCH_CHECKPOINT.match(name))]
    return os.path.join(checkpoint_dir, max(found)[1]) if found else None


def resume_checkpoint(checkpoint_dir: str, resume: bool | str) -> str:
    """The checkpoint a ``--resume true`` run continues from; "" when not resuming or nothing was saved yet
    (a resume with nothing to resume starts from scratch, with a message, rather than failing). ``resume`` is the
    yes/no option as given (a bool, or "true"/"false"/"1"... from the command line: see :func:`~egeunet_monai.flags.flag`)."""
    if not flag(resume, "resume"):
        return ""
    path = latest_checkpoint(checkpoint_dir)
    if path is None:
        print(f"resume: no checkpoint in {checkpoint_dir}, starting from epoch 0")
        return ""
    print(f"resume: continuing from {path}")
    return path


def tracking_run_name(output_dir: str, resumed_from: str, run_name: str | None = None) -> str:
    """The MLflow run name: ``run_name`` if given; when training resumes from the checkpoint ``resumed_from`` (not
    ""), the name the interrupted run used (so its unfinished MLflow run is continued); otherwise a new
    time-stamped name. Saved in ``output_dir``."""
    record = os.path.join(output_dir, "mlflow_run_name.txt")
    if not run_name and resumed_from and os.path.isfile(record):
        with open(record, encoding="utf-8") as f:
            run_name = f.read().strip()
    run_name = run_name or time.strftime("egeunet_%Y%m%d_%H%M%S")
    os.makedirs(output_dir, exist_ok=True)
    with open(record, "w", encoding="utf-8") as f:
        f.write(run_name)
    return run_name


def trained_on_synthetic_data(datalist: list[dict], synthetic_dir: str) -> bool:
    """Whether every image of ``datalist`` lies in ``synthetic_dir``: a training on the synthetic quick-start data
    (configs/train.json then keeps its model under ``runs/``, out of the way of :func:`default_weights`). A
    ``--dataset_dir``, a ``--datalist_file`` or the datalist that MONAI Label passes in gives False."""
    folder = os.path.abspath(synthetic_dir) + os.sep
    return all(os.path.abspath(d["image"]).startswith(folder) for d in datalist)



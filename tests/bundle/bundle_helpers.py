# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Running the bundle's commands as a user does (``python -m monai.bundle ...`` from the repository root) and
reading what they wrote. No mocks: real processes, real files, a real MLflow store."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN = "configs/train.json"
EVALUATE = "['configs/train.json','configs/evaluate.json']"
MULTI_GPU_TRAIN = "['configs/train.json','configs/multi_gpu_train.json']"
INFERENCE = "configs/inference.json"
EXPERIMENT = "egeunet_skin_lesion_segmentation"
# a training on a handful of images costs 30-60 s of CPU, but a loaded 2-core machine stretches that 5-10 times
COMMAND_TIMEOUT_S = 1500


@dataclass
class Result:
    """A finished bundle command: its arguments, exit status, stdout+stderr (interleaved) and duration."""

    args: list[str]
    returncode: int
    output: str
    seconds: float

    def tail(self, chars: int = 4000) -> str:
        return self.output[-chars:]


def bundle_env(**extra: str) -> dict[str, str]:
    """The environment of a bundle command: this one, minus what would redirect its outputs elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(extra)
    return env


def run_command(args: list[str], timeout: float = COMMAND_TIMEOUT_S, env: dict | None = None,
                log_file: Path | None = None) -> Result:
    """Run ``args`` from the repository root; stdout and stderr are captured together (and saved to
    ``log_file`` if given, for a look after a failure)."""
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [str(a) for a in args], cwd=REPO_ROOT, env=env or bundle_env(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
        pytest.fail(f"timed out after {timeout} s: {' '.join(map(str, args))}\n{out[-4000:]}", pytrace=False)
    result = Result([str(a) for a in args], proc.returncode, proc.stdout, time.monotonic() - start)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(result.output, encoding="utf-8")
    return result


def run_bundle(*args: object, timeout: float = COMMAND_TIMEOUT_S, env: dict | None = None,
               log_file: Path | None = None) -> Result:
    """``python -m monai.bundle <args>`` from the repository root, as the README has it."""
    return run_command([sys.executable, "-m", "monai.bundle", *map(str, args)], timeout, env, log_file)


def check_ok(result: Result) -> Result:
    """Fail the test with the command's last output lines when it did not exit 0."""
    if result.returncode != 0:
        pytest.fail(
            f"exit status {result.returncode} after {result.seconds:.0f} s: {' '.join(result.args)}\n{result.tail()}",
            pytrace=False,
        )
    return result


def copy_pairs(src: Path, dst: Path, ids: list[str]) -> Path:
    """A dataset folder ``dst`` (images/, masks/) with the pairs ``ids`` of the dataset folder ``src``."""
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "masks").mkdir(parents=True, exist_ok=True)
    for i in ids:
        image = next(p for p in (src / "images").iterdir() if p.stem == i)
        shutil.copyfile(image, dst / "images" / image.name)
        shutil.copyfile(src / "masks" / f"{i}_segmentation.png", dst / "masks" / f"{i}_segmentation.png")
    return dst


def seed_mlflow_store(template: Path, bundle_root: Path) -> None:
    (bundle_root / "runs").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, bundle_root / "runs" / "mlflow.db")


def mlflow_client(bundle_root: Path):
    from mlflow import MlflowClient

    db = bundle_root / "runs" / "mlflow.db"
    assert db.is_file(), f"{db}: no MLflow store"
    return MlflowClient(tracking_uri=f"sqlite:///{db}")


def training_runs(client, run_name: str | None = None) -> list:
    """Runs of the bundle's experiment that are trainings (evaluations are named ``evaluate_*``), oldest first."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"no MLflow experiment {EXPERIMENT!r}"
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    runs = [r for r in runs if not r.info.run_name.startswith("evaluate_")]
    if run_name is not None:
        runs = [r for r in runs if r.info.run_name == run_name]
    return runs


def metric_steps(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def read_mask(path: Path) -> np.ndarray:
    """A PNG mask as an (H, W) array, checking it is single channel."""
    with Image.open(path) as img:
        assert img.mode in ("L", "1", "P", "I;16", "I"), f"{path}: mode {img.mode}, not a single-channel mask"
        return np.asarray(img.convert("L") if img.mode in ("1", "P") else img)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def epoch_log_lines(output: str) -> list[tuple[int, int, int, int]]:
    """``(epoch, max_epochs, iteration, iterations)`` of every ``StatsHandler`` iteration line."""
    return [tuple(map(int, m)) for m in re.findall(r"Epoch: (\d+)/(\d+), Iter: (\d+)/(\d+) -- train_loss", output)]



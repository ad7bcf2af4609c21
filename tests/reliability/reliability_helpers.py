"""Helpers of the fault tests: bundle training as a subprocess with a probe, free ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def bundle_env(**extra: str) -> dict[str, str]:
    """Environment of a bundle subprocess: one torch thread (on a shared 2-core machine, two threads per process
    made a training iteration 10-20x slower in our measurements), the probe importable, no inherited tracking URI."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(HERE), str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
    )
    env.update(extra)
    return env


def probe_overlay(path: Path) -> Path:
    """A config overlay: ``run`` of configs/train.json (which ``training`` refers to) with the test probe attached
    before ``trainer.run()``."""
    run = json.loads((REPO_ROOT / "configs" / "train.json").read_text(encoding="utf-8"))["run"]
    overlay = {
        "probe_dir": "",
        "probe_pause_epoch": 0,
        "probe_resume_file": "",
        "probe": {
            "_target_": "_bundle_probe.Probe",
            "out_dir": "@probe_dir",
            "optimizer": "@optimizer",
            "lr_scheduler": "@lr_scheduler",
            "tracker": "@validate#best_model_saver",
            "pause_epoch": "@probe_pause_epoch",
            "resume_file": "@probe_resume_file",
        },
        "run": run[:-1] + ["$@probe.attach(@train#trainer)"] + run[-1:],
    }
    path.write_text(json.dumps(overlay, indent=2), encoding="utf-8")
    return path


class BundleRun:
    """``python -m monai.bundle run training`` in its own process group, output to a log file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._log_file = open(log, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monai.bundle", "run", "training", *args],
            cwd=REPO_ROOT,
            env=env or bundle_env(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self, tail: int = 6000) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return text[-tail:] if tail else text

    def wait_for(self, condition, timeout: float, what: str) -> float:
        """Seconds until ``condition()`` holds; fails if the run ends first or the time is up."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                pytest.fail(f"training ended (rc={self.proc.returncode}) before {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout:.0f} s:\n{self.output()}")
            time.sleep(0.2)
        return time.monotonic() - self.started

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)
        self._log_file.close()

    def finish(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"training did not end within {timeout:.0f} s:\n{self.output()}")
        self._log_file.close()
        return rc




def tiny_training_args(bundle_root: Path, dataset: Path, overlay: Path, epochs: int = 2) -> list[str]:
    """Bundle arguments for a short real training: 256x256 images, batch 4, no workers, all output in tmp."""
    return [
        "--config_file",
        f"['configs/train.json','{overlay}']",
        "--bundle_root",
        str(bundle_root),
        "--dataset_dir",
        str(dataset),
        "--max_epochs",
        str(epochs),
        "--batch_size",
        "4",
        "--num_workers",
        "0",
        "--val_fraction",
        "0.2",
    ]

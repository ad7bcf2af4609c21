# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The CPU benchmark modules of scripts/benchmarks/, each in a short run on the real images: every row is measured and
printed, and the size rows count the real network. Timings themselves are not asserted (they are the benchmarks'
output, not a test's)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(*args: str, timeout: float = 900) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_operators_compares_every_kernel_with_its_reference():
    out = _run("scripts/benchmarks/operators.py", "--repeats", "2")
    assert out.startswith("AMD") or "cores" in out.splitlines()[0]
    rows = [line for line in out.splitlines() if line.startswith("| ") and "x |" in line]
    names = " ".join(rows)
    for op in ("channel LayerNorm", "depth-wise conv, dilation 7", "max-pool", "bilinear resize", "EGEUNetLoss",
               "RandFlipRotateBatch"):  # fmt: skip
        assert op in names, op
    assert len(rows) == 11 and all(float(x) > 0 for r in rows for x in re.findall(r"([\d.]+)x \|", r)), rows


def test_bundle_trainer_runs_the_bundle_as_a_user_does(shared_data_dir: Path, tmp_path: Path):
    out_file = tmp_path / "trainer.json"
    out = _run("scripts/benchmarks/bundle_trainer.py", "--data", str(shared_data_dir / "isic2017_train_256"),
               "--images", "16", "--epochs", "2", "--repeats", "1", "--out", str(out_file),
               "--variants", "as shipped (accelerate true, PyTorch's default threads)", "--accelerate false (the "
               "reference network, loss and augmentation)")  # fmt: skip
    rates = json.loads(out_file.read_text())["rates"]
    assert len(rates) == 2 and all(len(v) == 1 and v[0] > 0 for v in rates.values()), rates
    assert "median" in out


def test_size_counts_the_real_network():
    out = _run("scripts/benchmarks/size.py", "--matmul", "512")
    assert "| trainable parameters | 53,374 |" in out
    # the original implementation's figure for its convolutions; nothing else has a multiply-add formula
    assert "| multiply-adds per 1x3x256x256 image (forward) | 72,096,256 | convolutions 72,096,256 " in out

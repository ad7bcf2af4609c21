# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""scripts/train_seeds.py, which a session lent a GPU machine runs there (scripts/gpu_seeds_run.sh) to train one
recipe with many seeds: here two seeds side by side for one epoch on a tiny synthetic dataset, through the real
bundle. Each seed's model, split and log tail are copied from the work folder to the output folder, with a row each
in seeds.tsv, and the seeds really differ (another selection split, other weights)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_two_seeds_side_by_side_each_bring_back_their_model(tmp_path: Path):
    from egeunet_monai.data import generate_synthetic_dataset

    data = generate_synthetic_dataset(tmp_path / "data", num_images=10, size=64)
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "scripts/train_seeds.py", "--dataset_dir", str(data), "--out", str(out), "--work", str(work),
         "--name", "tiny", "--seeds", "0", "1", "--parallel", "2", "--val_fraction", "0.2", "--",
         "--max_epochs", "1", "--image_size", "[64, 64]", "--batch_size", "4", "--num_workers", "0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "seeds.tsv", newline="", encoding="utf-8") as f:
        rows = sorted(csv.DictReader(f, delimiter="\t"), key=lambda row: row["seed"])
    assert [(r["name"], r["seed"], r["exit"], r["best_epoch"]) for r in rows] == [
        ("tiny_s0", "0", "0", "1"), ("tiny_s1", "1", "0", "1")]
    assert all(0.0 <= float(r["val_mean_dice"]) <= 1.0 for r in rows)
    models, splits = [], []
    for seed in (0, 1):
        kept = out / f"tiny_s{seed}"
        assert (work / f"tiny_s{seed}" / "models" / "model.pt").is_file()  # trained in the work folder
        assert "Key metric: val_mean_dice best value" in (kept / "train_log_tail.txt").read_text()
        models.append(torch.load(kept / "model.pt", map_location="cpu", weights_only=True))
        splits.append(json.loads((kept / "datalist_split.json").read_text()))
    assert sorted(d["image"] for d in splits[0]["validation"]) != sorted(d["image"] for d in splits[1]["validation"])
    assert any(not torch.equal(models[0][k], models[1][k]) for k in models[0])

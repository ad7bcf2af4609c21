# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""``egeunet-monai train`` / ``evaluate`` on a dataset with a bad file: the bundle's traceback is passed through and
the reader's message, which names the file, is the last line (MONAI buries it under "Failed to instantiate ...")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from egeunet_monai.cli import main
from egeunet_monai.data import generate_synthetic_dataset


def _last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def test_train_ends_with_the_bad_masks_message(tmp_path: Path, capfd):
    data = Path(generate_synthetic_dataset(tmp_path / "data", num_images=6, size=64))
    mask = data / "masks" / "syn_0003_segmentation.png"
    values = np.zeros((64, 64), np.uint8)
    values[16:48, 16:48] = 255
    values[30:34, :] = 128  # a mask resized with interpolation
    Image.fromarray(values).save(mask)
    code = main(["train", "--bundle-root", str(tmp_path / "bundle"), "--dataset_dir", str(data), "--max_epochs", "1",
                 "--image_size", "[64, 64]", "--batch_size", "4"])
    err = capfd.readouterr().err
    assert code == 1
    assert "Failed to instantiate component" in err  # the bundle's own report is still there, above
    assert _last_line(err).startswith(f"egeunet-monai train: error: {mask}: not a binary mask"), err[-2000:]


def test_evaluate_ends_with_the_mismatched_masks_message(tmp_path: Path, capfd):
    data = Path(generate_synthetic_dataset(tmp_path / "data", num_images=6, size=64))
    mask = data / "masks" / "syn_0002_segmentation.png"
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(mask)  # 64 wide, 48 high; the photo is 64x64
    code = main(["evaluate", "--bundle-root", str(tmp_path / "bundle"), "--dataset_dir", str(data),
                 "--image_size", "[64, 64]"])
    err = capfd.readouterr().err
    assert code == 1
    last = _last_line(err)
    assert last.startswith("egeunet-monai evaluate: error: ") and str(mask) in last and "64x48" in last, err[-2000:]

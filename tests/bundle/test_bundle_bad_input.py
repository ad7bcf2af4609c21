# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Bad input through the bundle commands (not the reader alone, see tests/data/): the command fails with a message
that names the file or folder, or, for an RGBA or grayscale photo, converts it with a warning naming the file and
goes on."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from bundle_helpers import INFERENCE, TRAIN, check_ok, read_mask, run_bundle, seed_mlflow_store
from PIL import Image

N_PAIRS = 6  # 4 training images (one batch of 4) and 2 for validation


def _dataset(folder: Path) -> Path:
    from egeunet_monai.data import generate_synthetic_dataset

    return Path(generate_synthetic_dataset(folder, num_images=N_PAIRS, size=64))


def _train(root: Path, dataset: Path | str, *extra: str):
    return run_bundle("run", "training", "--config_file", TRAIN, "--bundle_root", root, "--dataset_dir", dataset,
                      "--max_epochs", "1", "--num_workers", "0", "--batch_size", "4", "--image_size", "[64, 64]",
                      *extra, log_file=root.parent / f"{root.name}.log")


def _fails_naming(result, path: Path, *words: str) -> None:
    assert result.returncode != 0, f"the command succeeded on bad input {path}:\n{result.tail()}"
    assert str(path) in result.output, f"the error does not name {path}:\n{result.tail()}"
    for word in words:
        assert re.search(word, result.output, re.IGNORECASE), f"no {word!r} in the error:\n{result.tail()}"
    assert "Traceback" in result.output  # a real failure of the command, not a silent skip


def test_truncated_jpeg(tmp_path: Path):
    data = _dataset(tmp_path / "data")
    png = data / "images" / "syn_0001.png"
    buffer = io.BytesIO()
    Image.open(png).convert("RGB").save(buffer, format="JPEG", quality=95)
    jpeg = png.with_suffix(".jpg")
    jpeg.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # a download cut short
    png.unlink()
    _fails_naming(_train(tmp_path / "bundle", data), jpeg, "truncated")


def test_mask_of_another_size(tmp_path: Path):
    data = _dataset(tmp_path / "data")
    mask = data / "masks" / "syn_0002_segmentation.png"
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(mask)  # 64 wide, 48 high; the photo is 64x64
    _fails_naming(_train(tmp_path / "bundle", data), mask, "size differs", r"64x64", r"64x48")


def test_mask_with_grey_levels(tmp_path: Path):
    data = _dataset(tmp_path / "data")
    mask = data / "masks" / "syn_0003_segmentation.png"
    values = np.zeros((64, 64), np.uint8)
    values[16:48, 16:48] = 255
    values[30:34, :] = 128  # e.g. a mask resized with interpolation
    Image.fromarray(values).save(mask)
    _fails_naming(_train(tmp_path / "bundle", data), mask, "not a binary mask", "128")


def test_empty_folder(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails_naming(_train(tmp_path / "bundle", empty), empty / "images", "missing 'images' subfolder")
    (empty / "images").mkdir()
    (empty / "masks").mkdir()
    _fails_naming(_train(tmp_path / "bundle2", empty), empty / "images", "no images")
    # inference too, with weights at hand so that the folder is the only problem
    import torch

    from egeunet_monai.networks.nets import EGEUNet

    weights = tmp_path / "weights.pt"
    torch.save(EGEUNet(3, 1, channels=[8, 16, 24, 32, 48, 64], deep_supervision=True).state_dict(), weights)
    _fails_naming(
        run_bundle("run", "--config_file", INFERENCE, "--bundle_root", tmp_path / "bundle3", "--input_path",
                   empty / "images", "--output_dir", tmp_path / "out", "--ckpt_path", weights),
        empty / "images", "no images",
    )


def test_inference_names_a_one_pixel_photo_and_keeps_the_masks_before_it(tmp_path: Path):
    """A 1x1 photo once stopped the inference in MONAI's SaveImage ("cannot find a suitable writer", after its
    batch); the reader now refuses it by name, as any unusable photo. The bundle command stops at the first such
    photo (MONAI's evaluator has no skip; `egeunet-monai predict` goes on and lists it): the photos before it keep
    their masks."""
    import torch

    from egeunet_monai.networks.nets import EGEUNet

    photos = _dataset(tmp_path / "data") / "images"
    tiny = photos / "zz_tiny.png"  # sorted last
    Image.new("RGB", (1, 1), (120, 80, 60)).save(tiny)
    weights = tmp_path / "weights.pt"
    torch.save(EGEUNet(3, 1, channels=[8, 16, 24, 32, 48, 64], deep_supervision=True).state_dict(), weights)
    out = tmp_path / "out"
    result = run_bundle("run", "--config_file", INFERENCE, "--bundle_root", tmp_path / "bundle", "--input_path",
                        photos, "--output_dir", out, "--ckpt_path", weights, "--batch_size", "1")
    _fails_naming(result, tiny, r"too small to segment \(1x1 pixels")
    assert "suitable writer" not in result.output
    written = sorted(p.name for p in out.glob("*_mask.png"))
    assert written == sorted(f"{p.stem}_mask.png" for p in photos.iterdir() if p != tiny), result.tail()


@pytest.mark.slow
def test_rgba_and_grayscale_photos_are_converted_with_a_warning(tmp_path: Path, mlflow_db_template: Path):
    data = _dataset(tmp_path / "data")
    rgba, gray = data / "images" / "syn_0004.png", data / "images" / "syn_0005.png"
    Image.open(rgba).convert("RGBA").save(rgba)
    Image.open(gray).convert("L").save(gray)
    root = tmp_path / "bundle"
    seed_mlflow_store(mlflow_db_template, root)
    result = check_ok(_train(root, data))
    assert re.search(rf"{re.escape(str(rgba))}: RGBA converted to RGB", result.output), result.tail()
    assert re.search(rf"{re.escape(str(gray))}: grayscale \(L\) copied to the 3 RGB channels", result.output)
    assert (root / "models" / "model.pt").is_file()

    # inference converts them the same way and writes their masks
    out = tmp_path / "masks"
    infer = check_ok(run_bundle("run", "--config_file", INFERENCE, "--bundle_root", root, "--input_path",
                                data / "images", "--output_dir", out))
    for photo in (rgba, gray):
        assert str(photo) in infer.output
        mask = read_mask(out / f"{photo.stem}_mask.png")
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}

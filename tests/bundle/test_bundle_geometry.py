# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Geometry of inference.json: a non-square real PH2 photo goes through the inference pre-processing (resize to
256x256), its mask is resized the same way and treated as the prediction, and the config's own ``Invertd`` and
mask writer bring it back: the PNG has the photo's size and orientation and matches the original mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_helpers import REPO_ROOT, dice, read_mask
from PIL import Image

PH2_IDS = ["IMD002", "IMD019", "IMD035"]
MIN_DICE = 0.97


def _inference_parts(output_dir: Path):
    """inference.json's pre-processing, and its post-processing from ``Invertd`` on (``Invertd``, the 0.5
    threshold, the mask PNG writer), all as the config builds them, with ``output_dir`` overridden."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "configs" / "inference.json"))
    parser["output_dir"] = str(output_dir)
    steps = parser["postprocessing_transforms"]
    invert_idx = next(i for i, t in enumerate(steps) if t["_target_"] == "Invertd")
    threshold_idx = next(i for i, t in enumerate(steps) if t["_target_"] == "AsDiscreted")
    save_idx = next(i for i, t in enumerate(steps)
                    if t["_target_"] == "SaveImaged" and t.get("output_ext") == ".png"
                    and t["output_postfix"] == "mask")
    assert invert_idx < threshold_idx < save_idx and "_disabled_" not in steps[save_idx]
    post = [parser.get_parsed_content(f"postprocessing_transforms#{i}") for i in (invert_idx, threshold_idx, save_idx)]
    return parser.get_parsed_content("preprocessing"), post, parser.get_parsed_content("image_size")


def _resized_mask(mask_path: Path, image_size) -> torch.Tensor:
    """The mask at the network's size, as train.json resizes labels (bilinear, then re-binarised at 0.5)."""
    from monai.transforms import AsDiscrete, Compose, EnsureChannelFirst, LoadImage, Resize

    from egeunet_monai.data import DermoscopyImageReader

    load = LoadImage(reader=DermoscopyImageReader(kind="mask"), image_only=True)
    return Compose([EnsureChannelFirst(), Resize(image_size, mode="bilinear"), AsDiscrete(threshold=0.5)])(
        load(str(mask_path))
    )


@pytest.mark.parametrize("image_id", PH2_IDS)
def test_resize_and_inverse_restore_size_and_orientation(shared_data_dir: Path, tmp_path: Path, image_id: str):
    photo = shared_data_dir / "ph2" / "images" / f"{image_id}.jpg"
    mask_file = shared_data_dir / "ph2" / "masks" / f"{image_id}_segmentation.png"
    with Image.open(photo) as img:
        width, height = img.size
    assert width != height, "the test needs a non-square photo"
    original = read_mask(mask_file)
    assert original.shape == (height, width)

    preprocessing, (invert, threshold, save_mask), image_size = _inference_parts(tmp_path)
    data = preprocessing({"image": str(photo)})
    assert tuple(data["image"].shape) == (3, *image_size)
    data["pred"] = _resized_mask(mask_file, image_size)  # the "prediction": no sigmoid, it is 0/1 already
    assert tuple(data["pred"].shape) == (1, *image_size)

    data = threshold(invert(data))
    pred = data["pred"]
    # the bundle's reader keeps rows first: spatial axes are (height, width), as the photo is shown
    assert tuple(pred.shape) == (1, height, width), f"inverted to {tuple(pred.shape)}, photo is {width}x{height}"
    restored = pred[0].numpy()
    assert set(np.unique(restored)) <= {0.0, 1.0}
    score = dice(restored, original)
    assert score >= MIN_DICE, f"{image_id}: Dice {score:.4f} between the restored and the original mask"
    assert max(dice(restored[::-1], original), dice(restored[:, ::-1], original)) < score  # not mirrored

    # and the config's PNG writer puts it on disk the right way round, under the photo's name
    save_mask(data)
    written = read_mask(tmp_path / f"{image_id}_mask.png")
    assert written.shape == (height, width)
    assert set(np.unique(written)) <= {0, 255}
    assert dice(written, original) == pytest.approx(score, abs=1e-6)

# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The inference config's clean-up options: ``fill_holes`` (MONAI ``FillHolesd``, on by default) and
``largest_component`` (``KeepLargestConnectedComponentd``, off by default), run through the config's own
preprocessing and postprocessing on a hand-drawn prediction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import decollate_batch, list_data_collate
from monai.transforms import FillHolesd, KeepLargestConnectedComponentd
from PIL import Image

from tests.conftest import REPO_ROOT

SIZE = 256


def _config(tmp_path, **options) -> ConfigParser:
    parser = ConfigParser(json.loads((REPO_ROOT / "configs" / "inference.json").read_text()))
    parser["output_dir"] = str(tmp_path)
    parser["datalist"] = []
    for key, value in options.items():
        parser[key] = value
    return parser


def _ring_logits() -> torch.Tensor:
    """A lesion with a hole in it, drawn as logits (+10 inside the ring, -10 elsewhere)."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    radius = np.hypot(rows - SIZE / 2, cols - SIZE / 2)
    return torch.as_tensor(np.where((radius > 20) & (radius < 60), 10.0, -10.0), dtype=torch.float32)[None, None]


def _mask_after_postprocessing(parser: ConfigParser, tmp_path) -> np.ndarray:
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((SIZE, SIZE, 3), 128, np.uint8)).save(photo)
    batch = list_data_collate([parser.get_parsed_content("preprocessing")({"image": str(photo)})])
    # as the network's output: a MetaTensor with the image's metadata and transforms, for Invertd and SaveImaged
    batch["pred"] = batch["image"][:, :1] * 0 + _ring_logits()
    item = decollate_batch(batch)[0]
    parser.get_parsed_content("postprocessing")(item)
    return np.asarray(Image.open(tmp_path / "photo_mask.png")) > 0


def test_fill_holes_is_on_by_default_and_fills_the_hole(tmp_path):
    filled = _mask_after_postprocessing(_config(tmp_path), tmp_path)
    assert filled[SIZE // 2, SIZE // 2] and filled.sum() == pytest.approx(np.pi * 60**2, rel=0.05)
    ring = _mask_after_postprocessing(_config(tmp_path, fill_holes="false"), tmp_path)
    assert not ring[SIZE // 2, SIZE // 2] and ring.sum() == pytest.approx(np.pi * (60**2 - 20**2), rel=0.05)


@pytest.mark.parametrize("value, present", [(None, False), ("true", True), (False, False)])
def test_largest_component_is_off_by_default(tmp_path, value, present):
    parser = _config(tmp_path) if value is None else _config(tmp_path, largest_component=value)
    transforms = parser.get_parsed_content("postprocessing").transforms
    assert any(isinstance(t, KeepLargestConnectedComponentd) for t in transforms) == present
    assert sum(isinstance(t, FillHolesd) for t in transforms) == 1
    # after the threshold, before the mask is written: the written mask is the cleaned one
    names = [type(t).__name__ for t in transforms]
    assert names.index("AsDiscreted") < names.index("FillHolesd") < names.index("SaveImaged", names.index("AsDiscreted"))

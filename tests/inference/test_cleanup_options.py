# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The inference config's clean-up options: ``fill_holes`` (MONAI ``FillHolesd``, on by default) and
``largest_component`` (``KeepLargestConnectedComponentd``, off by default), run through the config's own
preprocessing and postprocessing on a hand-drawn prediction, and through the predictor of ``egeunet-monai predict``
on real photographs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import decollate_batch, list_data_collate
from monai.transforms import FillHolesd, KeepLargestConnectedComponentd
from PIL import Image
from scipy import ndimage

from tests.conftest import REPO_ROOT, require_original_checkpoint, require_shared_data

SIZE = 256
# PH2 photographs in which the original implementation's 17-epoch checkpoint finds a second piece of lesion at the
# default threshold (each flagged multiple_components; largest_component removes 2087 and 20800 pixels of them,
# measured 2026-12-07)
TWO_PIECES = ("IMD037.jpg", "IMD240.jpg")


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


def _two_pieces_logits() -> torch.Tensor:
    """A lesion (radius 50) and a smaller second piece (radius 15) apart from it, drawn as logits."""
    rows, cols = np.mgrid[:SIZE, :SIZE]
    lesion = np.hypot(rows - 128, cols - 90) < 50
    second = np.hypot(rows - 128, cols - 200) < 15
    return torch.as_tensor(np.where(lesion | second, 10.0, -10.0), dtype=torch.float32)[None, None]


def _pieces(mask: np.ndarray) -> list[int]:
    """Pixel counts of the mask's 8-connected pieces, largest first."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    return sorted(np.bincount(labels.ravel(), minlength=count + 1)[1:].tolist(), reverse=True)


def _mask_after_postprocessing(parser: ConfigParser, tmp_path, logits: torch.Tensor | None = None) -> np.ndarray:
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((SIZE, SIZE, 3), 128, np.uint8)).save(photo)
    batch = list_data_collate([parser.get_parsed_content("preprocessing")({"image": str(photo)})])
    # as the network's output: a MetaTensor with the image's metadata and transforms, for Invertd and SaveImaged
    batch["pred"] = batch["image"][:, :1] * 0 + (_ring_logits() if logits is None else logits)
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


def test_largest_component_removes_the_smaller_piece_from_the_written_mask(tmp_path):
    both = _pieces(_mask_after_postprocessing(_config(tmp_path), tmp_path, _two_pieces_logits()))
    assert len(both) == 2 and both[1] == pytest.approx(np.pi * 15**2, rel=0.1)
    # MONAI's KeepLargestConnectedComponent on CPU runs on scikit-image: a dependency, or this stops
    kept = _pieces(_mask_after_postprocessing(_config(tmp_path, largest_component="true"), tmp_path,
                                              _two_pieces_logits()))
    assert kept == both[:1] and kept[0] == pytest.approx(np.pi * 50**2, rel=0.05)


def test_largest_component_in_the_predict_command_s_predictor_on_real_photos(tmp_path):
    """``open_predictor`` without TTA (``egeunet-monai predict``, the viewer) is a ``BatchPredictor`` that calls
    MONAI's ``KeepLargestConnectedComponent`` itself: on photographs where the mask has a second piece, the mask keeps
    one, and the flags still name the pieces found before the clean-up."""
    from egeunet_monai.inference import open_predictor

    photos = [require_shared_data("ph2", "images", name) for name in TWO_PIECES]
    weights = require_original_checkpoint()
    default = open_predictor(weights, output_dir=tmp_path / "default", device="cpu")
    largest = open_predictor(weights, output_dir=tmp_path / "largest", device="cpu",
                             overrides={"largest_component": True})
    for photo in photos:
        before, _, before_stats = default.predict_one(photo)
        after, _, after_stats = largest.predict_one(photo)
        assert len(_pieces(before > 0)) > 1 and len(_pieces(after > 0)) == 1, photo.name
        assert _pieces(after > 0)[0] == _pieces(before > 0)[0]
        assert np.array_equal(np.asarray(Image.open(largest.mask_path(photo))), after)
        assert "multiple_components" in before_stats.flags and after_stats.flags == before_stats.flags

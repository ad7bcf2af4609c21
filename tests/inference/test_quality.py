# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Quality flags on drawn masks: empty, touching the border, in pieces, tiny, huge, low confidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egeunet_monai.inference import QUALITY_FLAGS, QualityThresholds, format_flags, quality_flags

SIZE = 100  # 10,000 pixels: 1 pixel = 0.01 % of the image


def blank() -> np.ndarray:
    return np.zeros((SIZE, SIZE), dtype=np.uint8)


def square(top: int, left: int, side: int, mask: np.ndarray | None = None) -> np.ndarray:
    mask = blank() if mask is None else mask
    mask[top : top + side, left : left + side] = 255
    return mask


def test_a_central_lesion_of_usual_size_has_no_flag():
    assert quality_flags(square(30, 30, 40), uncertainty=0.05) == []
    assert format_flags([]) == ""


def test_empty_mask_is_only_empty():
    assert quality_flags(blank()) == ["empty"]
    assert quality_flags(blank(), uncertainty=0.9) == ["empty", "low_confidence"]


def test_touches_border_beyond_the_allowed_share_of_the_outer_ring():
    # the outer ring of a 100 x 100 image has 396 pixels; 1 % of it is 3.96
    assert "touches_border" in quality_flags(square(0, 40, 20))  # 20 ring pixels
    assert "touches_border" not in quality_flags(square(0, 40, 3))  # 3 ring pixels: stray, not a lesion cut off
    assert "touches_border" in quality_flags(square(0, 40, 3), thresholds=QualityThresholds(border_fraction=0.0))
    # the corner pixels belong to the ring once each: a 2x2 square in a corner has 3 ring pixels
    assert "touches_border" not in quality_flags(square(98, 98, 2))


def test_multiple_components_counts_pieces_of_at_least_the_minimum_size():
    two = square(60, 60, 20, square(10, 10, 20))
    assert quality_flags(two) == ["multiple_components"]
    # a speck of 4 pixels (0.04 % of the image) next to a lesion does not count; min 0.1 % = 10 pixels
    assert quality_flags(square(80, 80, 2, square(10, 10, 30))) == []
    # pieces touching at a corner are one 8-connected piece, as for MONAI's KeepLargestConnectedComponent
    diagonal = square(40, 40, 10, square(30, 30, 10))
    assert quality_flags(diagonal) == []


def test_tiny_and_huge_areas():
    assert quality_flags(square(45, 45, 8)) == ["tiny"]  # 0.64 % of the image, below 0.8 %
    assert quality_flags(square(45, 45, 9)) == []  # 0.81 %
    huge = np.full((SIZE, SIZE), 255, dtype=np.uint8)
    huge[:10] = 0  # 90 % of the image, still touching three sides
    assert quality_flags(huge) == ["touches_border", "huge"]


def test_low_confidence_follows_the_threshold_and_needs_an_uncertainty():
    lesion = square(30, 30, 40)
    limit = QualityThresholds().max_uncertainty
    assert quality_flags(lesion, uncertainty=limit) == []
    assert quality_flags(lesion, uncertainty=limit + 1e-6) == ["low_confidence"]
    assert quality_flags(lesion, uncertainty=None) == []


def test_flags_come_in_the_documented_order_and_join_with_semicolons():
    everything = square(0, 0, 2, square(0, 60, 40))  # a 2x2 corner piece (too small to count) and a border lesion
    everything = square(40, 0, 10, everything)
    flags = quality_flags(everything, uncertainty=1.0, thresholds=QualityThresholds(huge_area_fraction=0.1))
    assert flags == ["touches_border", "multiple_components", "huge", "low_confidence"]
    assert flags == [f for f in QUALITY_FLAGS if f in flags]
    assert format_flags(flags) == "touches_border;multiple_components;huge;low_confidence"


def test_accepts_torch_masks_with_a_channel_axis():
    mask = torch.from_numpy(square(10, 10, 20, square(60, 60, 20)))[None].bool()
    assert quality_flags(mask) == ["multiple_components"]


@pytest.mark.parametrize("shape", [(2, 10, 10), (10,), (0, 5)])
def test_bad_mask_shapes_are_refused(shape):
    with pytest.raises(ValueError, match="H x W"):
        quality_flags(np.zeros(shape))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"border_fraction": 1.5}, "border_fraction"), ({"tiny_area_fraction": 0.5, "huge_area_fraction": 0.4}, "below")],
)
def test_bad_thresholds_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QualityThresholds(**kwargs)

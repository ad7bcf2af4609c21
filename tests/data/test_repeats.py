"""Large lesions listed more than once in the training list (``--large_lesion_repeats``), on real ISIC 2017 masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from egeunet_monai.data import DermoscopyInputError, lesion_share, repeat_large_lesions

# real ISIC 2017 masks around the default threshold 0.5: two just above it, one just below, one small lesion
ABOVE = ["ISIC_0000026", "ISIC_0000038"]
BELOW = ["ISIC_0000030", "ISIC_0000012"]


def _items(isic: Path, ids: list[str]) -> list[dict]:
    return [{"image": str(isic / "images" / f"{i}.jpg"), "label": str(isic / "masks" / f"{i}_segmentation.png"),
             "id": i} for i in ids]


def test_lesion_share_is_the_fraction_of_lesion_pixels(shared_data_dir: Path):
    isic = shared_data_dir / "isic2017_train_256"
    for item in _items(isic, ABOVE + BELOW):
        expected = (np.asarray(Image.open(item["label"])) == 255).mean()
        assert lesion_share(item["label"]) == pytest.approx(expected, abs=1e-12)
    shares = [lesion_share(d["label"]) for d in _items(isic, ABOVE + BELOW)]
    assert min(shares[:2]) > 0.5 > max(shares[2:])  # the ids above are chosen on both sides of the threshold


def test_images_above_the_share_are_listed_repeats_times(shared_data_dir: Path):
    items = _items(shared_data_dir / "isic2017_train_256", BELOW[:1] + ABOVE + BELOW[1:])
    out = repeat_large_lesions(items, repeats=3, min_share=0.5)
    assert [d["id"] for d in out] == [BELOW[0]] + [ABOVE[0]] * 3 + [ABOVE[1]] * 3 + [BELOW[1]]
    assert [d["id"] for d in items] == BELOW[:1] + ABOVE + BELOW[1:]  # the input list is left as it was
    # the threshold is a parameter: below both "BELOW" masks' shares, every image is repeated
    assert len(repeat_large_lesions(items, repeats=2, min_share=0.01)) == 2 * len(items)


def test_one_repeat_returns_the_list_without_reading_a_mask(tmp_path: Path):
    items = [{"image": str(tmp_path / "a.jpg"), "label": str(tmp_path / "missing_segmentation.png")}]
    assert repeat_large_lesions(items, repeats=1) == items
    with pytest.raises(DermoscopyInputError, match="missing_segmentation.png"):
        repeat_large_lesions(items, repeats=2)


def test_a_mask_with_grey_levels_is_refused_by_name(tmp_path: Path):
    mask = tmp_path / "grey_segmentation.png"
    Image.fromarray(np.array([[0, 128], [255, 255]], dtype=np.uint8)).save(mask)
    with pytest.raises(DermoscopyInputError, match="grey_segmentation.png.*not a binary mask"):
        repeat_large_lesions([{"image": "x.jpg", "label": str(mask)}], repeats=3)


@pytest.mark.parametrize("repeats, min_share", [(0, 0.5), (3, 1.0), (3, -0.1)])
def test_out_of_range_settings_are_refused(repeats: int, min_share: float):
    with pytest.raises(ValueError, match="repeats|min_share"):
        repeat_large_lesions([], repeats=repeats, min_share=min_share)

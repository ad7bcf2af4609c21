# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Per-image Dice / IoU / ISIC 2018 thresholded Jaccard on hand-counted masks."""

from __future__ import annotations

import pytest
import torch
from monai.metrics import DiceMetric

from egeunet_monai.metrics import (
    ISIC_JACCARD_THRESHOLD,
    PooledConfusionMetric,
    ThresholdedJaccardMetric,
    per_image_scores,
    thresholded_jaccard,
)


def mask(*rows: str) -> torch.Tensor:
    """A 1 x 1 x H x W float mask drawn with '1' (foreground) and '.' (background)."""
    return torch.tensor([[float(c == "1") for c in row] for row in rows]).reshape(1, 1, len(rows), len(rows[0]))


def first_k(k: int, size: int = 5) -> torch.Tensor:
    """A 1 x 1 x size x size mask whose first k pixels in raster order are foreground."""
    out = torch.zeros(size * size)
    out[:k] = 1
    return out.reshape(1, 1, size, size)


def as_list(scores: dict[str, torch.Tensor]) -> dict[str, list[float]]:
    return {k: v.tolist() for k, v in scores.items()}


# TP 3 ((0,0) (0,1) (1,0)), FP 2 ((1,1) (2,2)), FN 2 ((3,3) (3,4)): Dice 6/10, IoU 3/7 (< 0.65 -> 0)
PRED = mask("11...", "11...", "..1..", ".....")
GT = mask("11...", "1....", ".....", "...11")


def test_hand_counted_image() -> None:
    scores = per_image_scores(PRED, GT)
    assert set(scores) == {"dice", "iou", "thresholded_jaccard"}
    assert all(v.shape == (1,) for v in scores.values())
    assert as_list(scores) == {
        "dice": [pytest.approx(0.6)],
        "iou": [pytest.approx(3 / 7)],
        "thresholded_jaccard": [0.0],
    }


def test_empty_mask_conventions_all_correct_all_wrong() -> None:
    empty = torch.zeros_like(GT)
    y_pred = torch.cat([empty, empty, GT, GT, 1 - GT])
    y = torch.cat([empty, GT, empty, GT, GT])
    scores = as_list(per_image_scores(y_pred, y))
    # both empty -> 1; prediction empty, lesion present -> 0; lesion predicted on empty image -> 0;
    # all correct -> 1; every pixel wrong -> 0
    assert scores["dice"] == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert scores["iou"] == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert scores["thresholded_jaccard"] == [1.0, 0.0, 0.0, 1.0, 0.0]


def test_jaccard_threshold_boundary() -> None:
    # prediction inside the lesion, so IoU = |pred| / |gt|:
    #   11/17 = 0.647 (just below 0.65 -> 0), 13/20 = 0.65 (kept), 15/23 = 0.652 (just above, kept)
    y_pred = torch.cat([first_k(11), first_k(13), first_k(15)])
    y = torch.cat([first_k(17), first_k(20), first_k(23)])
    scores = per_image_scores(y_pred, y)
    assert scores["iou"].tolist() == pytest.approx([11 / 17, 13 / 20, 15 / 23])
    assert scores["dice"].tolist() == pytest.approx([22 / 28, 26 / 33, 30 / 38])
    assert scores["thresholded_jaccard"].tolist() == pytest.approx([0.0, 0.65, 15 / 23])
    assert ISIC_JACCARD_THRESHOLD == 0.65
    # a different cut-off changes which images count
    assert per_image_scores(y_pred, y, jaccard_threshold=0.5)["thresholded_jaccard"].tolist() == pytest.approx(
        [11 / 17, 13 / 20, 15 / 23]
    )
    assert thresholded_jaccard(torch.tensor([0.6499, 0.65, 0.6501])).tolist() == pytest.approx([0.0, 0.65, 0.6501])


def test_pooled_differs_from_per_image_mean() -> None:
    # 10 x 10 images of different lesion sizes:
    #   big:   GT 50 pixels (rows 0-4), prediction rows 0-3 -> TP 40, FP 0, FN 10: Dice 80/90, IoU 40/50
    #   small: GT 4 pixels, prediction 2 of them + 2 outside -> TP 2, FP 2, FN 2:  Dice 4/8,  IoU 2/6
    gt = torch.zeros(2, 1, 10, 10)
    pred = torch.zeros(2, 1, 10, 10)
    gt[0, 0, :5] = 1
    pred[0, 0, :4] = 1
    gt[1, 0, 0, 0:4] = 1
    pred[1, 0, 0, 2:6] = 1

    summary = {f"mean_{k}": float(v.mean()) for k, v in per_image_scores(pred, gt).items()}
    assert summary == {
        "mean_dice": pytest.approx((8 / 9 + 1 / 2) / 2),  # 25/36 = 0.694
        "mean_iou": pytest.approx((0.8 + 1 / 3) / 2),  # 17/30 = 0.567
        "mean_thresholded_jaccard": pytest.approx(0.4),  # (0.8 + 0) / 2
    }

    pooled = PooledConfusionMetric()
    pooled.update(pred, gt)
    assert pooled.confusion_matrix() == {"tp": 42, "fp": 2, "fn": 12, "tn": 144}
    result = pooled.compute()
    assert result["dsc"] == pytest.approx(84 / 98)  # 6/7 = 0.857: the big lesion dominates
    assert result["miou"] == pytest.approx(42 / 56)
    assert result["dsc"] - summary["mean_dice"] > 0.15


def test_threshold_on_probabilities() -> None:
    # probabilities >= 0.5 are foreground: [0, 1, 0, 1, 1, 0] vs GT [0, 1, 1, 0, 1, 0]
    # -> TP 2, FP 1, FN 1: Dice 4/6, IoU 2/4 (< 0.65 -> 0)
    probs = torch.tensor([0.2, 0.5, 0.49, 0.51, 0.9, 0.0]).reshape(1, 1, 1, 6)
    gt = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 1, 6)
    scores = as_list(per_image_scores(probs, gt))
    assert scores == {"dice": [pytest.approx(4 / 6)], "iou": [pytest.approx(0.5)], "thresholded_jaccard": [0.0]}
    # at threshold 0.45, idx 2 (0.49) joins: TP 3, FP 1, FN 0 -> IoU 3/4 (kept)
    assert per_image_scores(probs, gt, threshold=0.45)["thresholded_jaccard"].tolist() == pytest.approx([0.75])
    with pytest.raises(ValueError, match="binary"):
        per_image_scores(probs, gt, threshold=None)


def test_thresholded_jaccard_metric_accumulates() -> None:
    gen = torch.Generator().manual_seed(0)
    gt = torch.zeros(6, 1, 8, 8)
    gt[:, :, 2:6, 2:6] = 1
    # noisy probabilities around the lesion, so per-image IoUs spread around 0.65
    probs = gt * 0.4 + torch.rand(6, 1, 8, 8, generator=gen) * 0.55
    expected = per_image_scores(probs, gt)["thresholded_jaccard"]
    assert (expected == 0).any() and (expected > 0).any()  # the data exercises both sides of the cut-off

    metric = ThresholdedJaccardMetric()
    for i in range(0, 6, 2):
        metric(probs[i : i + 2], gt[i : i + 2])
    assert metric.get_buffer().flatten().tolist() == pytest.approx(expected.tolist())
    assert float(metric.aggregate()) == pytest.approx(float(expected.mean()))
    metric.reset()
    metric(list(probs[:1]), list(gt[:1]))
    assert float(metric.aggregate()) == pytest.approx(float(expected[0]))


def test_mean_dice_matches_monai_dice_metric() -> None:
    # the bundle's mean Dice comes from MONAI (DiceMetric / MeanDice with ignore_empty=False on binarised
    # predictions); it must agree with per_image_scores, empty images included
    empty = torch.zeros_like(GT)
    y_pred = torch.cat([PRED, empty, GT, empty])
    y = torch.cat([GT, GT, GT, empty])
    dice_metric = DiceMetric(include_background=True, reduction="mean", ignore_empty=False)
    dice_metric(y_pred, y)
    ours = float(per_image_scores(y_pred, y)["dice"].mean())
    assert ours == pytest.approx((0.6 + 0 + 1 + 1) / 4)
    assert float(dice_metric.aggregate()) == pytest.approx(ours)

# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Pooled (whole-test-set) confusion-matrix metrics on hand-counted masks."""

from __future__ import annotations

import math

import pytest
import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from monai.metrics import ConfusionMatrixMetric
from monai.transforms import Activationsd
from torch import nn

from egeunet_monai.metrics import (
    POOLED_METRIC_NAMES,
    PooledConfusionMetric,
    PooledDice,
    PooledIoU,
    ThresholdedJaccard,
    binarize,
    pooled_metrics,
)


def mask(*rows: str) -> torch.Tensor:
    """A 1 x 1 x H x W float mask drawn with '1' (foreground) and '.' (background)."""
    return torch.tensor([[float(c == "1") for c in row] for row in rows]).reshape(1, 1, len(rows), len(rows[0]))


def approx(expected: dict[str, float]) -> dict[str, object]:
    return {k: pytest.approx(v, abs=1e-12) for k, v in expected.items()}


# 4 x 5 = 20 pixels, counted by hand:
#   TP = (0,0) (0,1) (1,0)   -> 3
#   FP = (1,1) (2,2)         -> 2
#   FN = (3,3) (3,4)         -> 2
#   TN = 20 - 7              -> 13
PRED = mask("11...", "11...", "..1..", ".....")
GT = mask("11...", "1....", ".....", "...11")


def test_pooled_metrics_formulas() -> None:
    out = pooled_metrics(tp=6, fp=2, fn=1, tn=11)
    assert out == approx(
        {"dsc": 12 / 15, "miou": 6 / 9, "accuracy": 17 / 20, "sensitivity": 6 / 7, "specificity": 11 / 13}
    )
    assert tuple(out) == POOLED_METRIC_NAMES
    # the paper's mIoU is the foreground IoU of the pooled matrix: mIoU = DSC / (2 - DSC)
    assert out["miou"] == pytest.approx(out["dsc"] / (2 - out["dsc"]))
    # tensors are accepted as counts
    assert pooled_metrics(*(torch.tensor(v) for v in (6, 2, 1, 11))) == out
    with pytest.raises(ValueError, match="non-negative"):
        pooled_metrics(1, -1, 0, 0)


def test_hand_counted_confusion_matrix() -> None:
    metric = PooledConfusionMetric()
    metric.update(PRED, GT)
    assert metric.confusion_matrix() == {"tp": 3, "fp": 2, "fn": 2, "tn": 13}
    assert metric.compute() == approx(
        {"dsc": 6 / 10, "miou": 3 / 7, "accuracy": 16 / 20, "sensitivity": 3 / 5, "specificity": 13 / 15}
    )
    # the per-image buffer is [TP, FP, FN, TN] in int64
    buffer = metric.get_buffer()
    assert buffer.dtype == torch.int64
    assert buffer.tolist() == [[3, 2, 2, 13]]


def test_all_correct_and_all_wrong() -> None:
    metric = PooledConfusionMetric()
    metric.update(GT, GT)  # TP 5, TN 15
    assert metric.confusion_matrix() == {"tp": 5, "fp": 0, "fn": 0, "tn": 15}
    assert metric.compute() == approx(dict.fromkeys(POOLED_METRIC_NAMES, 1.0))

    metric.reset()
    metric.update(1 - GT, GT)  # every pixel wrong: FP 15, FN 5
    assert metric.confusion_matrix() == {"tp": 0, "fp": 15, "fn": 5, "tn": 0}
    assert metric.compute() == approx(dict.fromkeys(POOLED_METRIC_NAMES, 0.0))


def test_empty_masks_and_zero_division() -> None:
    empty = torch.zeros(2, 1, 3, 3)
    metric = PooledConfusionMetric()
    metric.update(empty, empty)  # TP = FP = FN = 0, TN = 18
    assert metric.confusion_matrix() == {"tp": 0, "fp": 0, "fn": 0, "tn": 18}
    # default zero_division=1.0: nothing predicted and nothing present is a perfect score
    assert metric.compute() == approx(dict.fromkeys(POOLED_METRIC_NAMES, 1.0))
    assert pooled_metrics(0, 0, 0, 18) == approx(dict.fromkeys(POOLED_METRIC_NAMES, 1.0))
    # the original code's convention: 0 for the undefined DSC / mIoU / sensitivity
    assert pooled_metrics(0, 0, 0, 18, zero_division=0.0) == approx(
        {"dsc": 0.0, "miou": 0.0, "accuracy": 1.0, "sensitivity": 0.0, "specificity": 1.0}
    )
    nan = pooled_metrics(0, 0, 0, 18, zero_division=float("nan"))
    assert math.isnan(nan["dsc"]) and math.isnan(nan["miou"]) and math.isnan(nan["sensitivity"])
    assert nan["accuracy"] == 1.0 and nan["specificity"] == 1.0

    # empty prediction of a lesion: FN 5, TN 15 -> DSC 0, sensitivity 0, specificity 1
    metric.reset()
    metric.update(torch.zeros_like(GT), GT)
    assert metric.compute() == approx(
        {"dsc": 0.0, "miou": 0.0, "accuracy": 15 / 20, "sensitivity": 0.0, "specificity": 1.0}
    )
    # lesion predicted on an empty image: FP 5, TN 15 -> sensitivity has no positives (zero_division)
    metric.reset()
    metric.update(GT, torch.zeros_like(GT))
    assert metric.compute() == approx(
        {"dsc": 0.0, "miou": 0.0, "accuracy": 15 / 20, "sensitivity": 1.0, "specificity": 15 / 20}
    )


def test_threshold_on_probabilities() -> None:
    # one row of probabilities vs ground truth; foreground is prob >= 0.5 (0.5 itself included)
    probs = torch.tensor([0.2, 0.5, 0.49, 0.51, 0.9, 0.0]).reshape(1, 1, 1, 6)
    gt = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 1, 6)
    # binarised: [0, 1, 0, 1, 1, 0] -> TP 2 (idx 1, 4), FP 1 (idx 3), FN 1 (idx 2), TN 2 (idx 0, 5)
    metric = PooledConfusionMetric(threshold=0.5)
    metric.update(probs, gt)
    assert metric.confusion_matrix() == {"tp": 2, "fp": 1, "fn": 1, "tn": 2}
    assert metric.compute()["dsc"] == pytest.approx(4 / 6)

    # another threshold moves pixels: >= 0.9 keeps only idx 4 -> TP 1, FP 0, FN 2, TN 3
    metric = PooledConfusionMetric(threshold=0.9)
    metric.update(probs, gt)
    assert metric.confusion_matrix() == {"tp": 1, "fp": 0, "fn": 2, "tn": 3}

    # threshold 0 on logits equals threshold 0.5 on probabilities
    logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6))
    on_logits = PooledConfusionMetric(threshold=0.0)
    on_logits.update(logits, gt)
    assert on_logits.confusion_matrix() == {"tp": 2, "fp": 1, "fn": 1, "tn": 2}

    # threshold=None: binary predictions pass, probabilities are refused
    binary = PooledConfusionMetric(threshold=None)
    binary.update((probs >= 0.5).float(), gt)
    assert binary.confusion_matrix() == {"tp": 2, "fp": 1, "fn": 1, "tn": 2}
    with pytest.raises(ValueError, match="binary"):
        binary.update(probs, gt)


def test_labels_binarised_at_half() -> None:
    pred, label = binarize(
        torch.tensor([1.0, 0.0, 1.0]).reshape(1, 1, 3), torch.tensor([0.7, 0.3, 0.5]).reshape(1, 1, 3)
    )
    assert pred.tolist() == [[[True, False, True]]]
    assert label.tolist() == [[[True, False, True]]]


def test_shape_checks() -> None:
    metric = PooledConfusionMetric()
    with pytest.raises(ValueError, match="same shape"):
        metric.update(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="N x 1"):
        metric.update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="no data"):
        metric.compute()


def test_batch_accumulation_equals_one_shot() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(6, 1, 8, 8, generator=gen)
    gt = (torch.rand(6, 1, 8, 8, generator=gen) > 0.6).float()

    one_shot = PooledConfusionMetric()
    one_shot.update(probs, gt)

    batched = PooledConfusionMetric()
    for i in range(0, 6, 2):
        batched.update(probs[i : i + 2], gt[i : i + 2])

    # a list of channel-first tensors (what decollated engine outputs look like)
    listed = PooledConfusionMetric()
    listed.update(list(probs), list(gt))

    expected = one_shot.confusion_matrix()
    assert sum(expected.values()) == 6 * 8 * 8
    # the same counts as pooling the pixels by hand
    pred_fg, gt_fg = probs >= 0.5, gt > 0
    assert expected["tp"] == int((pred_fg & gt_fg).sum()) and expected["fn"] == int((~pred_fg & gt_fg).sum())
    for other in (batched, listed):
        assert other.confusion_matrix() == expected
        assert other.compute() == one_shot.compute()

    # reset empties the pool
    batched.reset()
    batched.update(probs[:1], gt[:1])
    assert sum(batched.confusion_matrix().values()) == 8 * 8


def test_matches_monai_confusion_matrix_metric() -> None:
    gen = torch.Generator().manual_seed(1)
    pred = (torch.rand(4, 1, 16, 16, generator=gen) > 0.5).float()
    gt = (torch.rand(4, 1, 16, 16, generator=gen) > 0.7).float()
    names = ["f1 score", "threat score", "accuracy", "sensitivity", "specificity"]
    # compute_sample=False + reduction="sum": MONAI also pools the counts before the formulas
    monai_metric = ConfusionMatrixMetric(
        include_background=True, metric_name=names, compute_sample=False, reduction="sum"
    )
    monai_metric(pred, gt)
    expected = [float(v) for v in monai_metric.aggregate()]

    ours = PooledConfusionMetric(threshold=None, metric_name=list(POOLED_METRIC_NAMES))
    ours.update(pred, gt)
    got = [float(v) for v in ours.aggregate()]
    assert got == pytest.approx(expected, abs=1e-6)


def test_aggregate_metric_name() -> None:
    metric = PooledConfusionMetric(metric_name="miou")
    metric.update(PRED, GT)
    value = metric.aggregate()
    assert isinstance(value, torch.Tensor) and value.ndim == 0
    assert float(value) == pytest.approx(3 / 7)
    with pytest.raises(ValueError, match="metric_name"):
        PooledConfusionMetric(metric_name="f1")


def test_handlers_in_supervised_evaluator() -> None:
    # two images, logits +4 / -4 where the fixed prediction is 1 / 0; the network is the identity, so the
    # "image" is the logit map. Hand counts (10 x 10 each):
    #   big lesion:   GT 50 pixels (rows 0-4), prediction 40 of them (rows 0-3) -> TP 40, FP 0, FN 10
    #   small lesion: GT 4 pixels, prediction 2 of them + 2 outside             -> TP 2, FP 2, FN 2
    # pooled: TP 42, FP 2, FN 12 -> DSC 84/98 = 6/7, mIoU 42/56 = 3/4
    # per-image IoU: 40/50 = 0.8 and 2/6 = 1/3 (< 0.65 -> 0) -> thresholded Jaccard (0.8 + 0) / 2 = 0.4
    gt_big, pred_big = torch.zeros(1, 10, 10), torch.zeros(1, 10, 10)
    gt_big[:, :5] = 1
    pred_big[:, :4] = 1
    gt_small, pred_small = torch.zeros(1, 10, 10), torch.zeros(1, 10, 10)
    gt_small[:, 0, 0:4] = 1
    pred_small[:, 0, 2:6] = 1
    data = [
        {"image": pred_big * 8 - 4, "label": gt_big},
        {"image": pred_small * 8 - 4, "label": gt_small},
    ]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(Dataset(data), batch_size=1, num_workers=0),
        network=nn.Identity(),
        postprocessing=Activationsd(keys="pred", sigmoid=True),  # metrics threshold the probabilities at 0.5
        key_val_metric={"val_pooled_dice": PooledDice(output_transform=from_engine(["pred", "label"]))},
        additional_metrics={
            "val_pooled_iou": PooledIoU(output_transform=from_engine(["pred", "label"])),
            "val_thresholded_jaccard": ThresholdedJaccard(output_transform=from_engine(["pred", "label"])),
        },
    )
    evaluator.run()
    metrics = evaluator.state.metrics
    assert metrics["val_pooled_dice"] == pytest.approx(6 / 7, abs=1e-9)
    assert metrics["val_pooled_iou"] == pytest.approx(3 / 4, abs=1e-9)
    assert metrics["val_thresholded_jaccard"] == pytest.approx(0.4, abs=1e-6)
    # per-image details: [TP, FP, FN, TN] for the pooled handler, one score per image for the ISIC one
    details = evaluator.state.metric_details
    assert details["val_pooled_dice"].tolist() == [[40, 0, 10, 50], [2, 2, 2, 94]]
    assert details["val_thresholded_jaccard"].flatten().tolist() == pytest.approx([0.8, 0.0], abs=1e-6)
    assert evaluator.state.best_metric == pytest.approx(6 / 7, abs=1e-9)

# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Per-image Dice, IoU and the ISIC 2018 challenge's thresholded Jaccard.

The ISIC 2018 Task 1 leaderboard ranks by the *thresholded Jaccard*: the per-image IoU, set to 0 when it
is below 0.65, averaged over the test images. Unlike the pooled metrics of
:mod:`egeunet_monai.metrics.pooled`, every image weighs the same here, whatever its lesion size.

Dice and IoU come from MONAI (``compute_dice`` / ``compute_iou`` with ``ignore_empty=False``), which fixes the
empty-mask conventions:

- prediction empty and ground truth empty: Dice 1, IoU 1 (the prediction is exactly right);
- one empty and the other not: Dice 0, IoU 0.

For mean Dice during validation, use MONAI's ``monai.handlers.MeanDice`` on binarised predictions
(``include_background=True``, ``ignore_empty=False`` to match :func:`per_image_scores`); this module adds the
:class:`ThresholdedJaccard` handler that MONAI lacks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import MeanIoU, compute_dice, compute_iou
from monai.utils import MetricReduction

from egeunet_monai.metrics.pooled import binarize

__all__ = [
    "ISIC_JACCARD_THRESHOLD",
    "ThresholdedJaccard",
    "ThresholdedJaccardMetric",
    "per_image_scores",
    "thresholded_jaccard",
]

#: ISIC 2018 Task 1: a per-image Jaccard (IoU) below this value scores 0.
ISIC_JACCARD_THRESHOLD = 0.65


def thresholded_jaccard(iou: torch.Tensor, jaccard_threshold: float = ISIC_JACCARD_THRESHOLD) -> torch.Tensor:
    """The ISIC 2018 per-image score: the IoU itself when ``iou >= jaccard_threshold``, else 0.

    Args:
        iou: per-image IoU values, any shape.
        jaccard_threshold: the cut-off; an IoU exactly equal to it is kept.
    """
    return torch.where(iou >= jaccard_threshold, iou, torch.zeros_like(iou))


def per_image_scores(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    threshold: float | None = 0.5,
    jaccard_threshold: float = ISIC_JACCARD_THRESHOLD,
) -> dict[str, torch.Tensor]:
    """Dice, IoU and thresholded Jaccard of every image of a batch.

    Args:
        y_pred: ``N x 1 x spatial`` prediction, probabilities or a binary mask.
        y: ``N x 1 x spatial`` ground truth; values ``>= 0.5`` are foreground.
        threshold: prediction values ``>= threshold`` are foreground; ``None`` for already-binary predictions
            (see :func:`egeunet_monai.metrics.binarize`).
        jaccard_threshold: IoU cut-off of the thresholded Jaccard.

    Returns:
        ``{"dice", "iou", "thresholded_jaccard"}``, each a float tensor of length N. Both masks empty scores 1;
        exactly one empty scores 0.
    """
    pred, label = binarize(y_pred, y, threshold)
    pred, label = pred.float(), label.float()
    # ignore_empty=False: empty prediction of an empty mask scores 1 instead of NaN
    dice = compute_dice(pred, label, include_background=True, ignore_empty=False)[:, 0]
    iou = compute_iou(pred, label, include_background=True, ignore_empty=False)[:, 0]
    return {"dice": dice, "iou": iou, "thresholded_jaccard": thresholded_jaccard(iou, jaccard_threshold)}


class ThresholdedJaccardMetric(MeanIoU):
    """MONAI cumulative metric of the ISIC 2018 thresholded Jaccard (mean over images by default).

    A ``MeanIoU`` (``include_background=True``, ``ignore_empty=False``) that first binarises the prediction,
    then zeroes per-image IoUs below ``jaccard_threshold``. Use it directly or through :class:`ThresholdedJaccard`.

    Args:
        threshold: prediction values ``>= threshold`` are foreground; ``None`` for already-binary predictions.
        jaccard_threshold: IoU cut-off; an IoU equal to it is kept.
        reduction: MONAI reduction of the per-image scores in :meth:`aggregate`, ``"mean"`` for the ISIC score.
        get_not_nans: whether :meth:`aggregate` also returns the not-NaN count.
    """

    def __init__(
        self,
        threshold: float | None = 0.5,
        jaccard_threshold: float = ISIC_JACCARD_THRESHOLD,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(include_background=True, reduction=reduction, get_not_nans=get_not_nans, ignore_empty=False)
        self.threshold = threshold
        self.jaccard_threshold = jaccard_threshold

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Per-image thresholded Jaccard, shape ``N x 1``.

        Args:
            y_pred: ``N x 1 x spatial`` probabilities or binary mask.
            y: ``N x 1 x spatial`` ground truth.
            kwargs: unused.
        """
        if y is None:
            raise ValueError("ThresholdedJaccardMetric needs the ground truth y.")
        pred, label = binarize(y_pred, y, self.threshold)
        iou = compute_iou(pred.float(), label.float(), include_background=True, ignore_empty=False)
        return thresholded_jaccard(iou, self.jaccard_threshold)


class ThresholdedJaccard(IgniteMetricHandler):
    """Ignite handler of the ISIC 2018 thresholded Jaccard (mean over the evaluation images).

    For the ``additional_metrics`` of a ``SupervisedEvaluator``, e.g. in a bundle config:

    .. code-block:: json

        "val_thresholded_jaccard": {
            "_target_": "egeunet_monai.metrics.ThresholdedJaccard",
            "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"
        }

    Args:
        threshold: prediction values ``>= threshold`` are foreground; ``None`` for already-binary predictions.
        jaccard_threshold: IoU cut-off; an IoU equal to it is kept.
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``, typically
            ``monai.handlers.from_engine(["pred", "label"])``.
        save_details: store the per-image scores in ``engine.state.metric_details``.
    """

    def __init__(
        self,
        threshold: float | None = 0.5,
        jaccard_threshold: float = ISIC_JACCARD_THRESHOLD,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = ThresholdedJaccardMetric(threshold=threshold, jaccard_threshold=jaccard_threshold)
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)

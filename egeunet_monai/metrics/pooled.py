# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""The EGE-UNet paper's metrics: one confusion matrix pooled over every pixel of a whole test set.

The original EGE-UNet evaluation (``test_one_epoch`` in the authors' ``engine.py``) concatenates the
thresholded predictions and masks of the *whole* test set, builds one 2x2 confusion matrix, and reports

- DSC = 2TP / (2TP + FP + FN)
- "mIoU" = TP / (TP + FP + FN), the foreground IoU of that pooled matrix (so mIoU = DSC / (2 - DSC)),
- accuracy, sensitivity and specificity of the same matrix.

These are *not* the mean over images of per-image scores (see :mod:`egeunet_monai.metrics.per_image`): large
lesions weigh more than small ones. MONAI's ``ConfusionMatrixMetric(compute_sample=False, reduction="sum")``
gives the same values when no denominator is zero, but it returns NaN for zero denominators and pools the
counts in float32; this module keeps exact int64 counts and a documented ``zero_division`` value instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.utils import convert_to_tensor

__all__ = [
    "POOLED_METRIC_NAMES",
    "PooledConfusionMetric",
    "PooledDice",
    "PooledIoU",
    "binarize",
    "pooled_metrics",
]

#: Keys of the dictionaries returned by :func:`pooled_metrics` and :meth:`PooledConfusionMetric.compute`.
POOLED_METRIC_NAMES: tuple[str, ...] = ("dsc", "miou", "accuracy", "sensitivity", "specificity")

# Ground-truth masks are binarised at 0.5, as the original code does (``np.where(gts >= 0.5, 1, 0)``); this
# also turns interpolated (resized) masks back into binary ones.
_LABEL_THRESHOLD = 0.5


def binarize(y_pred: torch.Tensor, y: torch.Tensor, threshold: float | None = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes and binarise a single-channel prediction and ground truth.

    Args:
        y_pred: prediction, ``N x 1 x spatial`` (e.g. ``N x 1 x H x W``): probabilities, or a binary mask.
        y: ground truth of the same shape; values ``>= 0.5`` are foreground.
        threshold: a prediction value ``>= threshold`` is foreground (the rule of MONAI's
            ``AsDiscrete(threshold=...)`` and of the original code). ``None``: ``y_pred`` is already binary;
            any value other than 0 and 1 raises ``ValueError``. Note that ``threshold=0.0`` on logits equals
            ``threshold=0.5`` on their sigmoid.

    Returns:
        ``(y_pred, y)`` as boolean tensors.

    Raises:
        ValueError: when the shapes differ, are not ``N x 1 x spatial``, or ``threshold=None`` and ``y_pred`` is
            not binary.
    """
    # plain tensors: MetaTensor metadata is irrelevant here and would be carried into the metric buffers
    y_pred, y = convert_to_tensor(y_pred, track_meta=False), convert_to_tensor(y, track_meta=False)
    if y_pred.shape != y.shape:
        raise ValueError(f"y_pred and y should have the same shape, got {tuple(y_pred.shape)} and {tuple(y.shape)}.")
    if y_pred.ndim < 3 or y_pred.shape[1] != 1:
        raise ValueError(f"expected N x 1 x spatial (binary segmentation), got shape {tuple(y_pred.shape)}.")
    if threshold is None:
        if y_pred.dtype != torch.bool and not bool(((y_pred == 0) | (y_pred == 1)).all()):
            raise ValueError("threshold=None needs a binary y_pred (only 0 and 1); use a threshold for probabilities.")
        pred = y_pred.bool()
    else:
        pred = y_pred >= threshold
    label = y.bool() if y.dtype == torch.bool else y >= _LABEL_THRESHOLD
    return pred, label


def _ratio(numerator: int, denominator: int, zero_division: float) -> float:
    return numerator / denominator if denominator > 0 else float(zero_division)


def pooled_metrics(
    tp: int | torch.Tensor,
    fp: int | torch.Tensor,
    fn: int | torch.Tensor,
    tn: int | torch.Tensor,
    zero_division: float = 1.0,
) -> dict[str, float]:
    """The EGE-UNet paper's metrics from one (pooled) binary confusion matrix.

    Args:
        tp: true-positive pixel count.
        fp: false-positive pixel count.
        fn: false-negative pixel count.
        tn: true-negative pixel count.
        zero_division: value of a metric whose denominator is 0. Every such case has no pixel that the
            metric could get wrong (e.g. DSC and mIoU with TP = FP = FN = 0: no lesion predicted and none
            present; sensitivity with no lesion pixel; specificity with no background pixel), so the default
            scores it as perfect, 1.0. The original code returns 0 in these cases (``zero_division=0.0``);
            ``float("nan")`` marks them undefined. Real test sets never hit them.

    Returns:
        ``{"dsc", "miou", "accuracy", "sensitivity", "specificity"}`` as floats, where
        dsc = 2TP/(2TP+FP+FN), miou = TP/(TP+FP+FN), accuracy = (TP+TN)/(TP+FP+FN+TN),
        sensitivity = TP/(TP+FN), specificity = TN/(TN+FP).

    Raises:
        ValueError: when a count is negative.
    """
    # python ints: exact whatever the size of the test set
    tp_, fp_, fn_, tn_ = (int(v) for v in (tp, fp, fn, tn))
    if min(tp_, fp_, fn_, tn_) < 0:
        raise ValueError(f"confusion counts must be non-negative, got tp={tp_}, fp={fp_}, fn={fn_}, tn={tn_}.")
    return {
        "dsc": _ratio(2 * tp_, 2 * tp_ + fp_ + fn_, zero_division),
        "miou": _ratio(tp_, tp_ + fp_ + fn_, zero_division),
        "accuracy": _ratio(tp_ + tn_, tp_ + fp_ + fn_ + tn_, zero_division),
        "sensitivity": _ratio(tp_, tp_ + fn_, zero_division),
        "specificity": _ratio(tn_, tn_ + fp_, zero_division),
    }


class PooledConfusionMetric(CumulativeIterationMetric):
    """Accumulate one binary confusion matrix over all pixels of all batches (the EGE-UNet paper's metrics).

    Each call (or :meth:`update`) stores the per-image counts ``[TP, FP, FN, TN]`` (int64, shape ``N x 4``) in
    MONAI's cumulative buffer, so the metric also works with lists of channel-first tensors, with
    ``IgniteMetricHandler`` (see :class:`PooledDice`) and across distributed ranks. :meth:`compute` sums the
    buffer into one matrix and applies :func:`pooled_metrics`.

    .. code-block:: python

        metric = PooledConfusionMetric(threshold=0.5)
        for batch in loader:
            metric.update(torch.sigmoid(model(batch["image"])), batch["label"])
        print(metric.compute())  # {"dsc": ..., "miou": ..., "accuracy": ..., ...}
        metric.reset()

    Args:
        threshold: prediction values ``>= threshold`` are foreground; ``None`` for already-binary predictions.
            See :func:`binarize`.
        metric_name: what :meth:`aggregate` returns (what an Ignite handler records): one of
            :data:`POOLED_METRIC_NAMES`, or a sequence of them for a list.
        zero_division: value of a metric whose denominator is 0, see :func:`pooled_metrics`.
    """

    def __init__(
        self,
        threshold: float | None = 0.5,
        metric_name: str | Sequence[str] = "dsc",
        zero_division: float = 1.0,
    ) -> None:
        super().__init__()
        names = (metric_name,) if isinstance(metric_name, str) else tuple(metric_name)
        unknown = [n for n in names if n not in POOLED_METRIC_NAMES]
        if unknown or not names:
            raise ValueError(f"metric_name must be among {POOLED_METRIC_NAMES}, got {metric_name!r}.")
        self.threshold = threshold
        self.metric_name = metric_name
        self.zero_division = zero_division

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """Per-image ``[TP, FP, FN, TN]`` counts, int64 of shape ``N x 4``.

        Args:
            y_pred: ``N x 1 x spatial`` probabilities or binary mask.
            y: ``N x 1 x spatial`` ground truth.
            kwargs: unused.
        """
        if y is None:
            raise ValueError("PooledConfusionMetric needs the ground truth y.")
        pred, label = binarize(y_pred, y, self.threshold)
        # exact int64 sums rather than monai.metrics.get_confusion_matrix, whose float32 counts are
        # inexact above 2**24 pixels per image (full-resolution ISIC images reach ~30M pixels)
        pred, label = pred.flatten(1), label.flatten(1)
        tp = (pred & label).sum(1)
        fp = (pred & ~label).sum(1)
        fn = (~pred & label).sum(1)
        tn = (~pred & ~label).sum(1)
        return torch.stack([tp, fp, fn, tn], dim=1)

    def update(self, y_pred: torch.Tensor | Sequence[torch.Tensor], y: torch.Tensor | Sequence[torch.Tensor]) -> None:
        """Add a batch (``N x 1 x spatial`` tensors, or lists of ``1 x spatial`` tensors) to the pooled matrix.

        Args:
            y_pred: predictions, probabilities or binary.
            y: ground truth.
        """
        self(y_pred=y_pred, y=y)

    def confusion_matrix(self) -> dict[str, int]:
        """The pooled counts ``{"tp", "fp", "fn", "tn"}`` of everything added since the last reset.

        Raises:
            ValueError: when nothing was added.
        """
        data = self.get_buffer()
        if data is None:
            raise ValueError(f"{self.__class__.__name__}: no data; call update() before compute().")
        if isinstance(data, list):  # several buffers cannot happen here, but get_buffer's type allows it
            data = torch.cat(data, dim=0)
        tp, fp, fn, tn = (int(v) for v in data.sum(dim=0))
        return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}

    def compute(self) -> dict[str, float]:
        """All the pooled metrics, ``{"dsc", "miou", "accuracy", "sensitivity", "specificity"}``."""
        return pooled_metrics(**self.confusion_matrix(), zero_division=self.zero_division)

    def aggregate(self) -> torch.Tensor | list[torch.Tensor]:  # type: ignore[override]
        """The metric(s) named by ``metric_name`` as float64 scalar tensor(s), for MONAI / Ignite handlers."""
        values = self.compute()
        if isinstance(self.metric_name, str):
            return torch.tensor(values[self.metric_name], dtype=torch.float64)
        return [torch.tensor(values[n], dtype=torch.float64) for n in self.metric_name]


class _PooledHandler(IgniteMetricHandler):
    """Ignite handler recording one pooled metric (the ``metric_name`` of a :class:`PooledConfusionMetric`)."""

    _pooled_metric_name: str = "dsc"

    def __init__(
        self,
        threshold: float | None = 0.5,
        zero_division: float = 1.0,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        metric_fn = PooledConfusionMetric(
            threshold=threshold, metric_name=self._pooled_metric_name, zero_division=zero_division
        )
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)


class PooledDice(_PooledHandler):
    """Ignite handler: DSC of one confusion matrix pooled over the whole evaluation set (the paper's DSC).

    For the ``additional_metrics`` of a ``SupervisedEvaluator``, e.g. in a bundle config:

    .. code-block:: json

        "val_pooled_dice": {
            "_target_": "egeunet_monai.metrics.PooledDice",
            "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"
        }

    Args:
        threshold: prediction values ``>= threshold`` are foreground; ``None`` for already-binary predictions.
        zero_division: value when the denominator is 0 (nothing predicted, nothing present), see
            :func:`pooled_metrics`.
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``, typically
            ``monai.handlers.from_engine(["pred", "label"])``.
        save_details: store the per-image ``[TP, FP, FN, TN]`` counts in ``engine.state.metric_details``.
    """

    _pooled_metric_name = "dsc"


class PooledIoU(_PooledHandler):
    """Ignite handler: the paper's "mIoU", TP/(TP+FP+FN) of one confusion matrix pooled over the evaluation set.

    Args:
        threshold: prediction values ``>= threshold`` are foreground; ``None`` for already-binary predictions.
        zero_division: value when the denominator is 0 (nothing predicted, nothing present), see
            :func:`pooled_metrics`.
        output_transform: extracts ``(y_pred, y)`` from ``engine.state.output``, typically
            ``monai.handlers.from_engine(["pred", "label"])``.
        save_details: store the per-image ``[TP, FP, FN, TN]`` counts in ``engine.state.metric_details``.
    """

    _pooled_metric_name = "miou"

# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Segmentation metrics: the EGE-UNet paper's pooled metrics and per-image / ISIC 2018 scores."""

from __future__ import annotations

from .per_image import (
    ISIC_JACCARD_THRESHOLD,
    ThresholdedJaccard,
    ThresholdedJaccardMetric,
    per_image_scores,
    thresholded_jaccard,
)
from .pooled import (
    POOLED_METRIC_NAMES,
    PooledConfusionMetric,
    PooledDice,
    PooledIoU,
    binarize,
    pooled_metrics,
)

__all__ = [
    "ISIC_JACCARD_THRESHOLD",
    "POOLED_METRIC_NAMES",
    "PooledConfusionMetric",
    "PooledDice",
    "PooledIoU",
    "ThresholdedJaccard",
    "ThresholdedJaccardMetric",
    "binarize",
    "per_image_scores",
    "pooled_metrics",
    "thresholded_jaccard",
]

from .uncertainty import (
    CalibrationHistogram,
    ReliabilityDiagram,
    RiskCoverage,
    mean_score_at_coverage,
    plot_reliability_diagram,
    plot_risk_coverage,
    plot_uncertainty_scatter,
    risk_coverage_curve,
    spearman_correlation,
)

__all__ += [
    "CalibrationHistogram",
    "ReliabilityDiagram",
    "RiskCoverage",
    "mean_score_at_coverage",
    "plot_reliability_diagram",
    "plot_risk_coverage",
    "plot_uncertainty_scatter",
    "risk_coverage_curve",
    "spearman_correlation",
]

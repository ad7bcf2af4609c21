# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""How well an uncertainty ranks a model's errors, and how well its pixel probabilities are calibrated.

- :func:`risk_coverage_curve`: mean score (e.g. Dice) of the images kept when the most uncertain are set aside
  first, for every number kept; :func:`mean_score_at_coverage` reads one point of it (e.g. 90 % kept).
- :func:`spearman_correlation`: rank correlation, e.g. of the uncertainty with 1 - Dice (1: the uncertainty
  orders the images exactly by their error).
- :class:`CalibrationHistogram`: pixel probabilities and labels binned as they stream in, for the reliability
  diagram and the expected calibration error (ECE) of a whole data set without keeping its pixels.
- :func:`plot_risk_coverage` / :func:`plot_uncertainty_scatter` / :func:`plot_reliability_diagram`: the PNGs
  (matplotlib, imported when called).

Calibration here is that of the foreground probability ``p`` of a binary segmentation: bin the pixels by ``p``
and compare each bin's mean ``p`` with the share of its pixels that are lesion,
``ECE = sum_b (n_b / n) |mean_p_b - lesion_share_b|`` (Naeini et al., AAAI 2015; equal-width bins on [0, 1]).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Union

import numpy as np
import torch

__all__ = [
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


ArrayLike = Union[Sequence[float], np.ndarray, torch.Tensor]


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError(f"{name} is empty.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} has NaN or infinite values.")
    return array


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n; tied values share the mean of their ranks (as ``scipy.stats.rankdata``)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # start index of each run of equal values, and the run each sorted element belongs to
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run = np.cumsum(np.r_[True, sorted_values[1:] != sorted_values[:-1]]) - 1
    ends = np.r_[starts[1:], values.size]
    ranks = np.empty(values.size)
    ranks[order] = ((starts + 1 + ends) / 2.0)[run]
    return ranks


def spearman_correlation(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation of two equally long sequences (ties get average ranks).

    Returns NaN when either sequence is constant (no order to compare).

    Raises:
        ValueError: lengths differ, fewer than two values, or non-finite values.
    """
    a, b = _as_1d(x, "x"), _as_1d(y, "y")
    if a.size != b.size:
        raise ValueError(f"x and y should be equally long, got {a.size} and {b.size}.")
    if a.size < 2:
        raise ValueError("the Spearman correlation needs at least two values.")
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


class RiskCoverage(NamedTuple):
    """A risk-coverage curve: ``mean_score[k - 1]`` is the mean score of the ``k`` least uncertain images.

    Args:
        coverage: ``k / n`` for ``k = 1..n``: the fraction of the images kept.
        mean_score: mean score of the images kept.
    """

    coverage: np.ndarray
    mean_score: np.ndarray


def risk_coverage_curve(uncertainty: ArrayLike, score: ArrayLike) -> RiskCoverage:
    """Mean ``score`` of the images kept, as the most uncertain are set aside one by one.

    Images of equal uncertainty cannot be told apart, so the curve takes the expected value over their order:
    each image of a tie counts with the mean score of the tie.

    Args:
        uncertainty: per-image uncertainty (higher: set aside first).
        score: per-image score, e.g. Dice (higher is better).
    """
    u, s = _as_1d(uncertainty, "uncertainty"), _as_1d(score, "score")
    if u.size != s.size:
        raise ValueError(f"uncertainty and score should be equally long, got {u.size} and {s.size}.")
    order = np.argsort(u, kind="stable")
    u_sorted, s_sorted = u[order], s[order]
    run = np.cumsum(np.r_[True, u_sorted[1:] != u_sorted[:-1]]) - 1
    s_tied = (np.bincount(run, weights=s_sorted) / np.bincount(run))[run]
    kept = np.arange(1, u.size + 1)
    return RiskCoverage(coverage=kept / u.size, mean_score=np.cumsum(s_tied) / kept)


def mean_score_at_coverage(curve: RiskCoverage, coverage: float) -> float:
    """Mean score of the ``round(coverage * n)`` least uncertain images (at least one), from a
    :func:`risk_coverage_curve`; e.g. ``coverage=0.9`` sets the 10 % most uncertain aside."""
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage should be in (0, 1], got {coverage}.")
    n = curve.coverage.size
    return float(curve.mean_score[max(1, round(coverage * n)) - 1])


class ReliabilityDiagram(NamedTuple):
    """Binned calibration of pixel probabilities.

    Args:
        bin_edges: ``bins + 1`` edges on [0, 1].
        mean_probability: mean predicted probability of the pixels in each bin (NaN for an empty bin).
        observed_frequency: share of those pixels that are lesion (NaN for an empty bin).
        count: number of pixels in each bin.
    """

    bin_edges: np.ndarray
    mean_probability: np.ndarray
    observed_frequency: np.ndarray
    count: np.ndarray

    def expected_calibration_error(self) -> float:
        """``sum_b (n_b / n) |mean_p_b - lesion_share_b|`` over the bins that hold pixels.

        Raises:
            ValueError: when the diagram holds no pixel.
        """
        total = int(self.count.sum())
        if total == 0:
            raise ValueError("the reliability diagram holds no pixels.")
        filled = self.count > 0
        gaps = np.abs(self.mean_probability[filled] - self.observed_frequency[filled])
        return float((self.count[filled] * gaps).sum() / total)


class CalibrationHistogram:
    """Pixel probabilities and binary labels accumulated into equal-width bins on [0, 1].

    Bin ``i`` holds probabilities in ``[i / bins, (i + 1) / bins)``; the last bin also holds 1. Sums are kept in
    float64 and counts in int64, so a whole data set can be added image by image.

    Args:
        bins: number of bins (10 by default, as usual for the ECE).
    """

    def __init__(self, bins: int = 10) -> None:
        if bins < 1:
            raise ValueError(f"bins should be at least 1, got {bins}.")
        self.bins = bins
        self.count = np.zeros(bins, dtype=np.int64)
        self.probability_sum = np.zeros(bins, dtype=np.float64)
        self.label_sum = np.zeros(bins, dtype=np.float64)

    def update(self, probability: np.ndarray | torch.Tensor, label: np.ndarray | torch.Tensor) -> None:
        """Add the pixels of one image (or batch).

        Args:
            probability: predicted foreground probabilities in [0, 1], any shape.
            label: ground truth of the same shape; values ``>= 0.5`` are lesion.
        """
        p = torch.as_tensor(probability).detach().cpu().double().ravel()
        y = torch.as_tensor(label).detach().cpu().double().ravel()
        if p.shape != y.shape:
            raise ValueError(f"probability and label should have the same size, got {p.numel()} and {y.numel()}.")
        if p.numel() and (not bool(torch.isfinite(p).all()) or float(p.min()) < 0.0 or float(p.max()) > 1.0):
            raise ValueError("probabilities should be finite and in [0, 1].")
        index = (p * self.bins).long().clamp(max=self.bins - 1)
        self.count += torch.bincount(index, minlength=self.bins).numpy()
        self.probability_sum += torch.bincount(index, weights=p, minlength=self.bins).numpy()
        self.label_sum += torch.bincount(index, weights=(y >= 0.5).double(), minlength=self.bins).numpy()

    def reliability_diagram(self) -> ReliabilityDiagram:
        """The binned means so far."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_p = np.where(self.count > 0, self.probability_sum / self.count, np.nan)
            freq = np.where(self.count > 0, self.label_sum / self.count, np.nan)
        return ReliabilityDiagram(np.linspace(0.0, 1.0, self.bins + 1), mean_p, freq, self.count.copy())

    def expected_calibration_error(self) -> float:
        """The ECE of the pixels added so far (:meth:`ReliabilityDiagram.expected_calibration_error`)."""
        return self.reliability_diagram().expected_calibration_error()


def _figure(width: float = 4.5, height: float = 4.0):
    # a bare Figure needs no pyplot and no display backend (servers, CI)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    return fig, fig.add_subplot(1, 1, 1)


def _save(fig, ax, path: str | os.PathLike, title: str, legend_loc: str) -> None:
    # the finish both plots share: grid, legend, optional title, PNG
    ax.grid(alpha=0.3)
    ax.legend(loc=legend_loc)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(os.fspath(path))


def plot_risk_coverage(
    curves: Mapping[str, RiskCoverage], path: str | os.PathLike, score_name: str = "mean Dice", title: str = ""
) -> None:
    """Write a PNG of one or more risk-coverage curves (e.g. one per data source).

    Args:
        curves: legend label -> curve.
        path: the PNG file to write.
        score_name: y-axis label.
        title: figure title.
    """
    fig, ax = _figure()
    for label, curve in curves.items():
        ax.plot(curve.coverage, curve.mean_score, label=label)
    ax.axvline(0.9, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("fraction of images kept (most uncertain set aside first)")
    ax.set_ylabel(f"{score_name} of the images kept")
    ax.set_xlim(0.0, 1.0)
    _save(fig, ax, path, title, "lower left")


def plot_uncertainty_scatter(
    points: Mapping[str, tuple[ArrayLike, ArrayLike]],
    path: str | os.PathLike,
    error_name: str = "1 - Dice",
    title: str = "",
) -> None:
    """Write a PNG of per-image uncertainty against error, one colour per group, with each group's Spearman
    correlation in the legend.

    Args:
        points: legend label -> (uncertainty, error) of its images, e.g. ``(u, 1 - dice)``.
        path: the PNG file to write.
        error_name: y-axis label.
        title: figure title.
    """
    fig, ax = _figure()
    for label, (uncertainty, error) in points.items():
        u, e = _as_1d(uncertainty, "uncertainty"), _as_1d(error, "error")
        rho = spearman_correlation(u, e) if u.size > 1 else float("nan")
        ax.scatter(u, e, s=8, alpha=0.6, label=f"{label} (Spearman {rho:.2f})")
    ax.set_xlabel("per-image uncertainty")
    ax.set_ylabel(error_name)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    _save(fig, ax, path, title, "upper left")


def plot_reliability_diagram(
    diagrams: Mapping[str, ReliabilityDiagram], path: str | os.PathLike, title: str = ""
) -> None:
    """Write a PNG of reliability diagrams: observed lesion share against mean probability per bin, with the
    diagonal of perfect calibration and each diagram's ECE in the legend.

    Args:
        diagrams: legend label -> diagram (e.g. :meth:`CalibrationHistogram.reliability_diagram`).
        path: the PNG file to write.
        title: figure title.
    """
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for label, d in diagrams.items():
        filled = d.count > 0
        ece = d.expected_calibration_error()
        ax.plot(d.mean_probability[filled], d.observed_frequency[filled], marker="o", label=f"{label} (ECE {ece:.4f})")
    ax.set_xlabel("mean predicted lesion probability (bin)")
    ax.set_ylabel("share of the bin's pixels that are lesion")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    _save(fig, ax, path, title, "upper left")

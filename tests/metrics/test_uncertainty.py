# Copyright (c) egeunet-monai contributors. Apache-2.0.
"""Risk-coverage, Spearman correlation and pixel calibration against hand-computed small cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from egeunet_monai.metrics import (
    CalibrationHistogram,
    mean_score_at_coverage,
    plot_reliability_diagram,
    plot_risk_coverage,
    risk_coverage_curve,
    spearman_correlation,
)


def test_risk_coverage_sets_the_most_uncertain_aside_first():
    curve = risk_coverage_curve([0.3, 0.1, 0.9, 0.5], [0.8, 1.0, 0.2, 0.6])
    # kept in the order 0.1, 0.3, 0.5, 0.9: scores 1.0, 0.8, 0.6, 0.2
    np.testing.assert_allclose(curve.coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.mean_score, [1.0, 0.9, 0.8, 0.65])
    assert mean_score_at_coverage(curve, 0.75) == pytest.approx(0.8)
    assert mean_score_at_coverage(curve, 1.0) == pytest.approx(0.65)
    assert mean_score_at_coverage(curve, 0.01) == pytest.approx(1.0)  # at least one image is kept
    with pytest.raises(ValueError, match="coverage"):
        mean_score_at_coverage(curve, 0.0)


def test_risk_coverage_averages_over_the_order_of_ties():
    # the two images of uncertainty 0.5 cannot be told apart: each counts with their mean score 0.5
    curve = risk_coverage_curve([0.5, 0.1, 0.5], [1.0, 0.9, 0.0])
    np.testing.assert_allclose(curve.mean_score, [0.9, (0.9 + 0.5) / 2, 1.9 / 3])
    # ...whatever order they come in
    np.testing.assert_allclose(risk_coverage_curve([0.5, 0.5, 0.1], [0.0, 1.0, 0.9]).mean_score, curve.mean_score)


def test_risk_coverage_refuses_bad_input():
    with pytest.raises(ValueError, match="equally long"):
        risk_coverage_curve([0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match="empty"):
        risk_coverage_curve([], [])
    with pytest.raises(ValueError, match="NaN"):
        risk_coverage_curve([0.1, float("nan")], [1.0, 0.5])


def test_spearman_on_hand_computed_cases():
    assert spearman_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x (1, 2, 3), y (1, 3, 2): 1 - 6 * (0 + 1 + 1) / (3 * 8) = 0.5
    assert spearman_correlation([0.1, 0.5, 0.7], [1.0, 9.0, 3.0]) == pytest.approx(0.5)
    # ties share their mean rank: x ranks (1.5, 1.5, 3), y ranks (1, 2, 3) -> Pearson of the ranks = sqrt(3)/2
    assert spearman_correlation([1, 1, 2], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2)
    assert np.isnan(spearman_correlation([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="two values"):
        spearman_correlation([1], [2])


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 200).astype(float)  # many ties
    y = x + rng.normal(0, 2, 200)
    y[:20] = 1.0
    assert spearman_correlation(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert spearman_correlation(torch.as_tensor(x), torch.as_tensor(y)) == pytest.approx(spearman_correlation(x, y))


def test_calibration_histogram_on_hand_computed_bins():
    hist = CalibrationHistogram(bins=4)
    # bin [0, 0.25): 0.1, 0.1 with labels 0, 1 -> mean p 0.1, lesion share 0.5, gap 0.4
    # bin [0.75, 1]: 0.8, 1.0 (1 belongs to the last bin) with labels 1, 1 -> mean p 0.9, share 1, gap 0.1
    hist.update(torch.tensor([0.1, 0.8]), torch.tensor([0.0, 1.0]))
    hist.update(np.array([[0.1, 1.0]]), np.array([[1.0, 1.0]]))
    d = hist.reliability_diagram()
    np.testing.assert_array_equal(d.count, [2, 0, 0, 2])
    np.testing.assert_allclose(d.mean_probability[[0, 3]], [0.1, 0.9])
    np.testing.assert_allclose(d.observed_frequency[[0, 3]], [0.5, 1.0])
    assert np.isnan(d.mean_probability[1]) and np.isnan(d.observed_frequency[2])
    np.testing.assert_allclose(d.bin_edges, [0, 0.25, 0.5, 0.75, 1.0])
    # ECE = 2/4 * 0.4 + 2/4 * 0.1
    assert hist.expected_calibration_error() == pytest.approx(0.25)
    assert d.expected_calibration_error() == pytest.approx(0.25)


def test_perfectly_calibrated_probabilities_have_zero_ece():
    hist = CalibrationHistogram(bins=2)
    # p = 0.25 on four pixels, one of them lesion; p = 0.75 on four pixels, three lesion
    hist.update(torch.tensor([0.25] * 4 + [0.75] * 4), torch.tensor([1, 0, 0, 0, 1, 1, 1, 0]))
    assert hist.expected_calibration_error() == pytest.approx(0.0, abs=1e-15)


def test_calibration_histogram_refuses_bad_input():
    hist = CalibrationHistogram()
    with pytest.raises(ValueError, match="no pixels"):
        hist.expected_calibration_error()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        hist.update(torch.tensor([1.5]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="same size"):
        hist.update(torch.tensor([0.5, 0.5]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="bins"):
        CalibrationHistogram(bins=0)


def test_plots_write_png_files(tmp_path):
    curve = risk_coverage_curve([0.3, 0.1, 0.9, 0.5], [0.8, 1.0, 0.2, 0.6])
    hist = CalibrationHistogram()
    hist.update(torch.linspace(0, 1, 101), torch.linspace(0, 1, 101) > 0.4)
    plot_risk_coverage({"validation": curve}, tmp_path / "risk.png", title="risk-coverage")
    plot_reliability_diagram({"validation": hist.reliability_diagram()}, tmp_path / "reliability.png")
    for name in ("risk.png", "reliability.png"):
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size[0] > 100

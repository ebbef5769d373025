"""The ERE threshold is chosen on held-out data and only applied to the reported split."""
from __future__ import annotations

import math

import numpy as np
import pytest

from chh_lib.config import EvalConfig
from chh_lib.uncertainty import choose_ere_threshold, summarise_uncertainty


def _split(seed: int, num_images: int = 40, num_landmarks: int = 5):
    """ERE that tracks the error with noise; about a tenth of the errors above 4 mm."""
    rng = np.random.default_rng(seed)
    error = rng.gamma(2.0, 0.9, size=(num_images, num_landmarks))
    error[rng.random(error.shape) < 0.1] += 5.0
    ere = 0.6 * error + rng.normal(0, 0.6, size=error.shape).clip(-0.5, None)
    return error, ere


def test_choose_ere_threshold_reaches_the_target_tpr_on_its_split():
    error, ere = _split(0)
    error[0, 0] = np.nan
    chosen = choose_ere_threshold(ere, error, 4.0)
    present = ~np.isnan(error)
    outlier = error[present] > 4.0
    assert chosen["num_outliers"] == outlier.sum() and chosen["num_predictions"] == present.sum()
    flagged = ere[present] >= chosen["ere_threshold_mm"]
    assert flagged[outlier].mean() >= 0.5
    # the largest such threshold: one step higher falls below the target
    higher = np.sort(np.unique(ere[present]))
    above = higher[higher > chosen["ere_threshold_mm"]][0]
    assert (ere[present][outlier] >= above).mean() < 0.5


def test_no_outlier_gives_no_threshold():
    chosen = choose_ere_threshold(np.ones((3, 2)), np.ones((3, 2)), 4.0)
    assert math.isnan(chosen["ere_threshold_mm"]) and chosen["num_outliers"] == 0


def _summary(error, ere, threshold):
    num_images = error.shape[0]
    ones = np.full(error.shape, 0.05)
    settings = EvalConfig(bootstrap_resamples=20)
    return summarise_uncertainty(error, np.full((num_images, 2), 0.5), ones, ones, ones, ones,
                                 {"ere": ere}, settings, threshold).metrics


def test_the_held_out_threshold_defines_the_sets_and_the_oracle_is_only_reported():
    held_error, held_ere = _split(1)
    test_error, test_ere = _split(2)
    test_ere = test_ere * 1.3  # the reported split's scores run higher: its own threshold differs
    chosen = {**choose_ere_threshold(held_ere, held_error, 4.0), "split": "calibration"}
    metrics = _summary(test_error, test_ere, chosen)
    assert metrics["ere_threshold_mm"] == chosen["ere_threshold_mm"]
    assert metrics["ere_threshold_split"] == "calibration"
    oracle = choose_ere_threshold(test_ere, test_error, 4.0)["ere_threshold_mm"]
    assert metrics["ere_threshold_oracle_mm"] == pytest.approx(oracle)
    assert metrics["ere_threshold_oracle_mm"] != pytest.approx(metrics["ere_threshold_mm"])
    flagged = test_ere >= chosen["ere_threshold_mm"]
    assert metrics["erroneous_set"]["count"] == flagged.sum()
    assert metrics["good_set"]["mre_mm"] == pytest.approx(test_error[~flagged].mean())
    outlier = test_error > 4.0
    assert metrics["ere_threshold_tpr"] == pytest.approx(flagged[outlier].mean())
    assert metrics["ere_threshold_fpr"] == pytest.approx(flagged[~outlier].mean())
    assert metrics["ere_threshold_oracle_tpr"] >= 0.5


def test_without_a_held_out_threshold_there_are_no_sets():
    error, ere = _split(3)
    metrics = _summary(error, ere, None)
    assert metrics["ere_threshold_mm"] is None and metrics["good_set"] is None and metrics["erroneous_set"] is None
    assert math.isnan(metrics["ere_threshold_tpr"])
    assert np.isfinite(metrics["ere_threshold_oracle_mm"])

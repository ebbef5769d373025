"""Calibration and uncertainty summary of one evaluated split.

Turns predictions (arg-max, mode probabilities, uncertainty scores) and radial
errors into the numbers ``chh evaluate`` reports: NLL and ECE before and after
temperature scaling, the ERE-error correlation, ROC/AUROC of every uncertainty
score for detecting outliers (radial error > ``outlier_threshold_mm``), the good
and erroneous sets that an ERE threshold defines, and bootstrap 95 % intervals
(resampling images).

The ERE threshold is chosen on held-out data, as a deployed system must choose
it: :func:`choose_ere_threshold` runs at ``chh calibrate`` time on the
calibration (or selection) split and the threshold is stored in the run; the
reported split only applies it. The threshold that the reported split itself
would pick is given beside it as an oracle (``ere_threshold_oracle_mm``), never
used for the sets.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from chh_lib.config import EvalConfig
from chh_lib.metrics import (
    ReliabilityBins,
    RocCurve,
    adaptive_reliability_bins,
    binned_pearson,
    bootstrap_ci,
    correct_within_pixel,
    mean_radial_error,
    outliers,
    reliability_bins,
    roc_curve_for,
    score_threshold_at_tpr,
    spearman,
    split_by_score,
    success_detection_rate,
)

TARGET_TPR = 0.5
#: Fewest outliers on the held-out split from which ``chh calibrate`` stores an ERE threshold:
#: at TPR 0.5 the threshold is then set by the ERE of the 5th of them; below that, one
#: outlier more or less moves it by a large step.
MIN_OUTLIERS = 10


def suggested_outlier_cut(radial_error_mm: np.ndarray, num_outliers: int = MIN_OUTLIERS) -> float:
    """The largest cut, rounded down to 0.1 mm, with at least ``num_outliers`` errors above it.

    Parameters
    ----------
    radial_error_mm : ndarray
        Any shape; NaN (missing) left out.

    Returns
    -------
    float
        In mm; NaN when fewer than ``num_outliers`` errors are present.
    """
    errors = np.sort(np.asarray(radial_error_mm, dtype=np.float64)[~np.isnan(radial_error_mm)])[::-1]
    if errors.size < num_outliers:
        return float("nan")
    cut = np.floor(errors[num_outliers - 1] * 10.0) / 10.0
    if cut >= errors[num_outliers - 1]:
        cut -= 0.1
    return float(round(cut, 1))


def choose_ere_threshold(
    ere_mm: np.ndarray, radial_error_mm: np.ndarray, outlier_threshold_mm: float, target_tpr: float = TARGET_TPR
) -> dict[str, Any]:
    """The largest ERE threshold (mm) that flags ``target_tpr`` of the outliers of a held-out split.

    Parameters
    ----------
    ere_mm, radial_error_mm : ndarray, shape (N, K)
        NaN errors (missing landmarks) are left out.
    outlier_threshold_mm : float
        Radial error above which a prediction is an outlier.

    Returns
    -------
    dict
        ``ere_threshold_mm`` (NaN when the split has no outlier), ``target_tpr``,
        ``outlier_threshold_mm``, ``num_outliers``, ``num_predictions`` and
        ``suggested_outlier_threshold_mm`` (:func:`suggested_outlier_cut`: the largest
        cut that would give :data:`MIN_OUTLIERS` outliers on this split).
    """
    present = ~np.isnan(radial_error_mm)
    is_outlier = outliers(radial_error_mm[present], outlier_threshold_mm)
    return {
        "ere_threshold_mm": score_threshold_at_tpr(ere_mm[present], is_outlier, target_tpr),
        "target_tpr": target_tpr,
        "outlier_threshold_mm": outlier_threshold_mm,
        "num_outliers": int(is_outlier.sum()),
        "num_predictions": int(is_outlier.size),
        "suggested_outlier_threshold_mm": suggested_outlier_cut(radial_error_mm[present]),
    }


def _rates_at(scores: np.ndarray, is_outlier: np.ndarray, threshold: float | None) -> tuple[float, float]:
    """(TPR, FPR) of flagging ``score >= threshold``; NaN where undefined."""
    if threshold is None or not np.isfinite(threshold):
        return float("nan"), float("nan")
    flagged = scores >= threshold
    tpr = float(flagged[is_outlier].mean()) if is_outlier.any() else float("nan")
    fpr = float(flagged[~is_outlier].mean()) if (~is_outlier).any() else float("nan")
    return tpr, fpr


@dataclass
class UncertaintySummary:
    """Numbers for ``metrics.json`` plus what the figures need."""

    metrics: dict[str, Any]
    bins_before: ReliabilityBins
    bins_after: ReliabilityBins
    roc: dict[str, RocCurve]
    ere_mm: np.ndarray
    radial_error_mm: np.ndarray


def summarise_uncertainty(
    radial_error_mm: np.ndarray,
    pixel_size_mm: np.ndarray,
    mode_prob_before: np.ndarray,
    mode_prob: np.ndarray,
    nll_before: np.ndarray,
    nll: np.ndarray,
    scores: dict[str, np.ndarray],
    settings: EvalConfig,
    ere_threshold: dict[str, Any] | None = None,
) -> UncertaintySummary:
    """Summarise calibration and uncertainty over the present (image, landmark) pairs.

    Parameters
    ----------
    radial_error_mm : ndarray, shape (N, K)
        NaN where the landmark is missing; those pairs are left out everywhere.
    pixel_size_mm : ndarray, shape (N, 2)
    mode_prob_before, mode_prob : ndarray, shape (N, K)
        Confidence without and with the temperatures.
    nll_before, nll : ndarray, shape (N, K)
        One-hot NLL (nats) without and with the temperatures.
    scores : dict of str to ndarray (N, K)
        Uncertainty scores (higher = less certain), including ``ere`` in mm.
    settings : EvalConfig
    ere_threshold : dict, optional
        What :func:`choose_ere_threshold` returned on a held-out split (plus its
        ``split``), stored in the run by ``chh calibrate``. Without it the good and
        erroneous sets are None: a threshold tuned on the reported split would flatter them.
    """
    present = ~np.isnan(radial_error_mm)  # (N, K)
    pixel_size_nk = np.broadcast_to(pixel_size_mm[:, None, :], radial_error_mm.shape + (2,))
    correct = correct_within_pixel(radial_error_mm[present], pixel_size_nk[present])
    bins_before = reliability_bins(mode_prob_before[present], correct)
    bins_after = reliability_bins(mode_prob[present], correct)
    adaptive = adaptive_reliability_bins(mode_prob[present], correct)
    errors = radial_error_mm[present]
    is_outlier = outliers(errors, settings.outlier_threshold_mm)
    roc = {name: roc_curve_for(values[present], is_outlier) for name, values in scores.items()}
    ere = scores["ere"][present]
    oracle = score_threshold_at_tpr(ere, is_outlier, TARGET_TPR)
    deployed = None if ere_threshold is None else ere_threshold.get("ere_threshold_mm")
    if deployed is not None and np.isfinite(deployed):
        sets = split_by_score(ere, errors, deployed, settings.sdr_thresholds_mm, settings.sdr_inclusive)
    else:
        sets = {"good_set": None, "erroneous_set": None}
    tpr, fpr = _rates_at(ere, is_outlier, deployed)
    oracle_tpr, oracle_fpr = _rates_at(ere, is_outlier, oracle)

    intervals = _bootstrap_intervals(
        radial_error_mm, present, pixel_size_nk, mode_prob_before, mode_prob, nll_before, nll, scores, settings
    )
    metrics: dict[str, Any] = {
        "nll_before": float(np.nanmean(nll_before[present])),
        "nll_after": float(np.nanmean(nll[present])),
        "ece_percent_before": bins_before.ece_percent,
        "ece_percent_after": bins_after.ece_percent,
        "adaptive_ece_percent_after": adaptive.ece_percent,
        "mce_percent_after": bins_after.mce_percent,
        "ere_mean_mm": float(np.mean(ere)) if ere.size else float("nan"),
        "ere_error_binned_pearson": binned_pearson(ere, errors),
        "ere_error_spearman": spearman(ere, errors),
        "ere_cutoff": settings.ere_cutoff,
        "outlier_threshold_mm": settings.outlier_threshold_mm,
        "outlier_fraction": float(is_outlier.mean()) if is_outlier.size else float("nan"),
        "num_outliers": int(is_outlier.sum()),
        "num_predictions": int(is_outlier.size),
        "auroc": {name: curve.auroc for name, curve in roc.items()},
        "ere_threshold_mm": deployed,
        "ere_threshold_split": None if ere_threshold is None else ere_threshold.get("split"),
        "ere_threshold_num_outliers": None if ere_threshold is None else ere_threshold.get("num_outliers"),
        "ere_threshold_tpr": tpr,
        "ere_threshold_fpr": fpr,
        "ere_threshold_oracle_mm": oracle,
        "ere_threshold_oracle_tpr": oracle_tpr,
        "ere_threshold_oracle_fpr": oracle_fpr,
        **sets,
        **intervals,
    }
    return UncertaintySummary(metrics, bins_before, bins_after, roc, ere, errors)


def _bootstrap_intervals(
    radial_error_mm: np.ndarray,
    present: np.ndarray,
    pixel_size_nk: np.ndarray,
    mode_prob_before: np.ndarray,
    mode_prob: np.ndarray,
    nll_before: np.ndarray,
    nll: np.ndarray,
    scores: dict[str, np.ndarray],
    settings: EvalConfig,
) -> dict[str, Any]:
    """95 % intervals of every headline number, resampling whole images.

    Every interval uses the same resamples (one seed), so the interval of a change
    (``ece_change_ci95``: after minus before, ``nll_change_ci95`` likewise) is paired:
    it is the spread of the change measured on the same resampled images, narrower
    than the two separate intervals suggest when both move together.
    """
    num_images = radial_error_mm.shape[0]

    def interval(statistic: Callable[[np.ndarray], float]) -> list[float]:
        low, high = bootstrap_ci(statistic, num_images, settings.bootstrap_resamples, settings.bootstrap_seed)
        return [float(low), float(high)]

    def ece_of(confidence: np.ndarray) -> Callable[[np.ndarray], float]:
        def statistic(indices: np.ndarray) -> float:
            keep = present[indices]
            correct = correct_within_pixel(radial_error_mm[indices][keep], pixel_size_nk[indices][keep])
            return reliability_bins(confidence[indices][keep], correct).ece_percent
        return statistic

    def mean_of(values: np.ndarray) -> Callable[[np.ndarray], float]:
        def statistic(indices: np.ndarray) -> float:
            chosen = values[indices][present[indices]]
            return float(chosen.mean()) if chosen.size else float("nan")
        return statistic

    def correlation(function: Callable[[np.ndarray, np.ndarray], float]) -> Callable[[np.ndarray], float]:
        def statistic(indices: np.ndarray) -> float:
            keep = present[indices]
            return function(scores["ere"][indices][keep], radial_error_mm[indices][keep])
        return statistic

    def auroc(name: str) -> Callable[[np.ndarray], float]:
        def statistic(indices: np.ndarray) -> float:
            keep = present[indices]
            labels = outliers(radial_error_mm[indices][keep], settings.outlier_threshold_mm)
            return roc_curve_for(scores[name][indices][keep], labels).auroc
        return statistic

    def sdr(threshold: float) -> Callable[[np.ndarray], float]:
        def statistic(indices: np.ndarray) -> float:
            rates = success_detection_rate(radial_error_mm[indices], [threshold], settings.sdr_inclusive)
            return rates[float(threshold)]
        return statistic

    ece_before, ece_after = ece_of(mode_prob_before), ece_of(mode_prob)
    mean_nll_before, mean_nll_after = mean_of(nll_before), mean_of(nll)
    return {
        "mre_mm_ci95": interval(lambda indices: mean_radial_error(radial_error_mm[indices])[0]),
        "sdr_percent_ci95": {f"{t:g}": interval(sdr(t)) for t in settings.sdr_thresholds_mm},
        "ece_percent_before_ci95": interval(ece_before),
        "ece_percent_after_ci95": interval(ece_after),
        "ece_change_ci95": interval(lambda indices: ece_after(indices) - ece_before(indices)),
        "nll_before_ci95": interval(mean_nll_before),
        "nll_after_ci95": interval(mean_nll_after),
        "nll_change_ci95": interval(lambda indices: mean_nll_after(indices) - mean_nll_before(indices)),
        "ere_error_binned_pearson_ci95": interval(correlation(binned_pearson)),
        "spearman_ci95": interval(correlation(spearman)),
        "auroc_ci95": {name: interval(auroc(name)) for name in scores},
        "bootstrap_resamples": settings.bootstrap_resamples,
    }

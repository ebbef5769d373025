"""Key numbers of notebook 03 (temperature calibration), picked from its variables for ``metrics.json``."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from chh_lib.exercises.answers import is_attempted

#: Percentiles written for the spread of the fitted temperature and the test ECE over small calibration sets.
SPREAD_PERCENTILES = (2.5, 25.0, 50.0, 75.0, 97.5)


def _interval(bounds: Any) -> list[float]:
    """A (low, high) pair as a list of two floats."""
    low, high = bounds
    return [float(low), float(high)]


def _percentiles(values: np.ndarray) -> dict[str, float]:
    """``{"2.5": ..., "50": ..., ...}`` of ``values`` (shape (draws,))."""
    found = np.percentile(np.asarray(values, dtype=np.float64), SPREAD_PERCENTILES)
    return {f"{q:g}": float(v) for q, v in zip(SPREAD_PERCENTILES, found)}


def _small_sets(ns: Mapping[str, Any]) -> dict[str, Any]:
    """Spread of the global temperature and of the test ECE over drawn calibration sets, by set size."""
    by_size = {}
    for size, draws in ns["set_draws"].items():
        by_size[str(size)] = {
            "temperature_percentiles": _percentiles(draws["temperature"]),
            "ece_percent_percentiles": _percentiles(draws["ece"]),
            "adaptive_ece_percent_percentiles": _percentiles(draws["adaptive_ece"]),
            "temperature_95_width": float(ns["width_of"][size]),
            "share_worse_test_nll_than_t1": float(ns["share_worse"][size]),
            "share_temperature_above_1": float(ns["share_above_one"][size]),
            "draws_at_grid_edge": int(draws["at_grid_edge"]),
        }
    return {
        "sizes": [int(ns["small_size"]), int(ns["large_size"])],
        "num_draws": int(ns["num_set_draws"]),
        "pool_images": int(ns["pool_size"]),
        "pool_splits": str(ns["pool_splits"]),
        "new_information": bool(ns["new_information"]),
        "grid_matches_library": bool(ns["grid_matches_library"]),
        "min_calibration_images": int(ns["MIN_CALIBRATION_IMAGES"]),
        "by_size": by_size,
    }


def summary(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers notebook 03 reports, as plain JSON-ready values.

    Parameters
    ----------
    namespace : mapping
        The notebook's variables (``globals()`` after its last exercise).

    Returns
    -------
    dict
        The test-split calibration before and after (ECE, adaptive ECE and NLL, with
        bootstrap intervals by image and the paired interval of each change), whether
        the run keeps T = 1, the fitted and stored temperatures, the cross-validated
        NLL of each scope, the paired interval of the test change from T = 1 to the
        global and to the per-landmark fit, the spread over small calibration sets,
        and the exercises attempted and passed.
    """
    ns = namespace
    abbreviations = list(ns["landmarks"].abbreviations)
    per_landmark = np.asarray(ns["per_landmark_temperatures"], dtype=np.float64)
    intervals = ns["intervals"]
    answers = [value for name, value in sorted(ns.items()) if name.startswith("answer_03_")]
    return {
        "profile": ns["profile"],
        "image_size": [int(ns["width"]), int(ns["height"])],
        "num_test_images": len(ns["test_set"]),
        "num_test_pairs": int(ns["present"].sum()),
        "num_calibration_images": len(ns["calibration_set"]),
        "accuracy_percent": float(100 * ns["correct"].mean()),
        "stored_scope": ns["stored_scope"],
        "pixel_area_ratio_to_paper": float(ns["area_ratio"]),
        "mode_probability_growth_2x2": float(ns["merge_growth"]),
        "mode_probability_growth_is_proportional": bool(ns["growth_is_proportional"]),
        "ece_percent_before": float(ns["bins_before"].ece_percent),
        "ece_percent_after": float(ns["bins_after"].ece_percent),
        "adaptive_ece_percent_before": float(ns["adaptive_before"].ece_percent),
        "adaptive_ece_percent_after": float(ns["adaptive_after"].ece_percent),
        "chh_bin_counts_before": [int(c) for c in ns["bins_before"].count],
        "share_confidence_above_0_15": float(ns["share_above"]),
        "share_in_last_chh_bin": float(ns["share_last_bin"]),
        "last_chh_bin_share_of_ece": float(ns["last_bin_ece_share"]),
        "num_ece_resamples": int(ns["num_ece_resamples"]),
        "ece_percent_before_ci": _interval(intervals["ece"]["before"]),
        "ece_percent_after_ci": _interval(intervals["ece"]["after"]),
        "ece_change_ci": _interval(intervals["ece"]["change"]),
        "ece_change_within_noise": bool(intervals["ece"]["within_noise"]),
        "adaptive_ece_percent_before_ci": _interval(intervals["adaptive_ece"]["before"]),
        "adaptive_ece_percent_after_ci": _interval(intervals["adaptive_ece"]["after"]),
        "adaptive_ece_change_ci": _interval(intervals["adaptive_ece"]["change"]),
        "adaptive_ece_change_within_noise": bool(intervals["adaptive_ece"]["within_noise"]),
        "nll_before_ci": _interval(intervals["nll"]["before"]),
        "nll_after_ci": _interval(intervals["nll"]["after"]),
        "nll_change_ci": _interval(intervals["nll"]["change"]),
        "nll_change_within_noise": bool(intervals["nll"]["within_noise"]),
        "run_keeps_t_1": bool(ns["run_keeps_t_1"]),
        "scope_change_ci": {scope: {measure: _interval(found["change"]) for measure, found in by_measure.items()}
                            for scope, by_measure in ns["scope_intervals"].items()},
        "scope_change_verdict": {scope: {measure: str(found["verdict"]) for measure, found in by_measure.items()}
                                 for scope, by_measure in ns["scope_intervals"].items()},
        "nll_before": float(ns["nll_test_before"]),
        "nll_after": float(ns["nll_test_after"]),
        "nll_calibration_before": float(ns["nll_calibration_before"]),
        "nll_calibration_after": float(ns["nll_calibration_after"]),
        "temperature_min": float(per_landmark.min()),
        "temperature_median": float(np.median(per_landmark)),
        "temperature_max": float(per_landmark.max()),
        "temperatures": dict(zip(abbreviations, per_landmark.tolist())),
        "stored_temperatures": dict(zip(abbreviations, np.asarray(ns["temperatures"], dtype=np.float64).tolist())),
        "global_temperature": float(ns["global_temperature"]),
        "ece_percent_after_per_landmark": float(ns["bins_per_landmark"].ece_percent),
        "ece_percent_after_global": float(ns["bins_global"].ece_percent),
        "nll_after_per_landmark": float(ns["nll_test_per_landmark"]),
        "nll_after_global": float(ns["nll_test_global"]),
        "cv_nll_none": float(ns["scope_cv"]["none"]),
        "cv_nll_per_landmark": float(ns["scope_cv"]["per_landmark"]),
        "cv_nll_global": float(ns["scope_cv"]["global"]),
        "cv_better_scope": ns["better_scope"],
        "test_better_scope": ns["test_scope"],
        "global_inside_temperature_ci": int(ns["global_inside_ci"]),
        "small_calibration_sets": _small_sets(ns),
        "readable_ece_matches_library": bool(ns["readable_matches"]),
        "argmax_unchanged": bool(ns["argmax_unchanged"]),
        "exercises_attempted": sum(is_attempted(answer) for answer in answers),
        "exercises_passed": sum(bool(passed) for passed in ns["exercise_results"].values()),
    }


def headline(summary: dict[str, Any]) -> str:
    """One line: ECE before -> after with intervals and the verdict on the change, NLL, scope, small sets, exercises.

    The verdict is "T = 1 kept: no change" when the run keeps T = 1 (scope none), else whether the
    paired interval of the ECE change holds 0.
    """
    before, after, change = summary["ece_percent_before_ci"], summary["ece_percent_after_ci"], summary["ece_change_ci"]
    sets = summary["small_calibration_sets"]
    small, large = (sets["by_size"][str(size)]["temperature_percentiles"] for size in sets["sizes"])
    if summary.get("run_keeps_t_1", False):  # absent from summaries written before it was added
        verdict = "T = 1 kept: no change"
    else:
        verdict = "within noise" if summary["ece_change_within_noise"] else "beyond noise"
    return (
        f"ECE {summary['ece_percent_before']:.2f} % [{before[0]:.2f}, {before[1]:.2f}] -> "
        f"{summary['ece_percent_after']:.2f} % [{after[0]:.2f}, {after[1]:.2f}], change [{change[0]:+.2f}, "
        f"{change[1]:+.2f}] ({verdict}); "
        f"NLL {summary['nll_before']:.3f} -> {summary['nll_after']:.3f} nats ({summary['stored_scope']}); "
        f"T from {sets['sizes'][0]} images [{small['2.5']:.3f}, {small['97.5']:.3f}], from {sets['sizes'][1]} "
        f"[{large['2.5']:.3f}, {large['97.5']:.3f}]; exercises passed {summary['exercises_passed']}/"
        f"{summary['exercises_attempted']} attempted"
    )

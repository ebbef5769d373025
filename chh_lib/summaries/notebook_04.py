"""Key numbers of notebook 04 (the expected radial error), picked from its variables for ``metrics.json``."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from chh_lib.exercises.answers import is_attempted


def _interval(bounds: Any) -> list[float]:
    """A (low, high) pair as a list of two floats."""
    low, high = bounds
    return [float(low), float(high)]


def summary(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers notebook 04 reports, as plain JSON-ready values.

    Parameters
    ----------
    namespace : mapping
        The notebook's variables (``globals()`` after its last exercise).

    Returns
    -------
    dict
        Pair and bin counts, mean ERE and MRE (mm), the four correlations with the
        bootstrap intervals of the binned r and Spearman rho (and whether they
        overlap), the binned r without
        its top bin and the verdict on its fall, the shuffled baseline, the readable
        ERE's agreement with the library, the mean ERE per cutoff, elongations and
        per-landmark medians and means (mm), the contour-versus-sella comparison, and
        the exercises attempted and passed.
    """
    ns = namespace
    abbreviations = list(ns["landmarks"].abbreviations)
    shape_table = ns["shape_table"]
    shuffled = np.asarray(ns["shuffled_binned_r"], dtype=np.float64)
    point_landmarks = ns["point_landmarks"]
    answers = (ns["answer_04_1"], ns["answer_04_2"], ns["answer_04_3"])
    return {
        "profile": ns["profile"],
        "image_size": [int(ns["width"]), int(ns["height"])],
        "num_pairs": int(ns["ere"].size),
        "num_bins": int(ns["ere"].size // 36),
        "bootstrap_resamples": int(ns["resamples"]),
        "ere_mean_mm": float(ns["ere_mean_mm"]),
        "mre_mm": float(ns["errors"].mean()),
        "pearson": float(ns["raw_r"]),
        "spearman": float(ns["rho"]),
        "spearman_ci95": _interval(ns["rho_ci95"]),
        "binned_pearson": float(ns["binned_r"]),
        "binned_pearson_ci95": _interval(ns["binned_r_ci95"]),
        "binned_pearson_and_spearman_ci95_overlap": bool(ns["intervals_overlap"]),
        "binned_pearson_without_top_bin": float(ns["binned_r_without_top"]),
        "binned_pearson_sharp_fall": float(ns["SHARP_FALL"]),
        "binned_pearson_rests_on_top_bin": bool(ns["rests_on_top_bin"]) if "rests_on_top_bin" in ns else None,
        "binned_pearson_shuffled_p95": float(np.nanpercentile(shuffled, 95)) if np.isfinite(shuffled).any() else None,
        "contour_example_ere_share_beyond_crop": float(ns["ere_share_beyond"](
            ns["calibrated_heatmaps"](ns["contour_n"])[ns["contour_landmark"]],
            ns["test_set"].pixel_size_mm[ns["contour_n"]], ns["crop"])),
        "readable_matches_library": bool(ns["readable_matches_library"]),
        "max_abs_difference_mm": float(ns["max_abs_difference_mm"]),
        "mean_ere_by_cutoff_mm": {f"{c:g}": float(v) for c, v in zip(ns["cutoffs"], ns["cutoff_table"]["mean ERE (mm)"])},
        "sella_elongation": float(shape_table.loc["S", "elongation"]) if point_landmarks else None,
        "median_contour_elongation": float(ns["contour_elongation"].median()),
        "num_contour_landmarks_above_sella_median_ere": ns["num_contour_above_point"],
        "spearman_median_ere_with_spread_size": float(ns["rho_ere_with_size"]),
        "spearman_median_ere_with_elongation": float(ns["rho_ere_with_shape"]),
        "per_landmark_median_ere_mm": dict(zip(abbreviations, map(float, shape_table["ERE median (mm)"]))),
        "per_landmark_mean_ere_mm": dict(zip(abbreviations, map(float, shape_table["ERE mean (mm)"]))),
        "exercises_attempted": sum(is_attempted(a) for a in answers),
        "exercises_passed": int(sum(ns["exercise_results"].values())),
    }


def headline(summary: dict[str, Any]) -> str:
    """Mean ERE, binned r and Spearman rho with their intervals, and the exercises."""
    low_r, high_r = summary["binned_pearson_ci95"]
    low_rho, high_rho = summary["spearman_ci95"]
    return (f"mean ERE {summary['ere_mean_mm']:.2f} mm, binned r {summary['binned_pearson']:.2f} "
            f"[{low_r:.2f}, {high_r:.2f}], Spearman {summary['spearman']:.2f} [{low_rho:.2f}, {high_rho:.2f}]; "
            f"exercises passed {summary['exercises_passed']}/{summary['exercises_attempted']} attempted")

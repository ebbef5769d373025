"""Key numbers of notebook 01 (data exploration), picked from its variables for ``metrics.json``."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from chh_lib.exercises.answers import is_attempted


def _optional(value: float) -> float | None:
    """``value`` as a float, or None when it is NaN."""
    return None if np.isnan(value) else float(value)


def summary(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers notebook 01 reports, as plain JSON-ready values.

    Parameters
    ----------
    namespace : mapping
        The notebook's variables (``globals()`` after its last exercise).

    Returns
    -------
    dict
        Images per split and in all, landmarks and contour landmarks, hard cases, the
        annotators' mean distance (mm, overall and per landmark), the along/across ratios
        (measured along the tangents, pooled along the principal axis, and the generator's
        on a phantom), and the exercises attempted and passed.
    """
    ns = namespace
    abbreviations = list(ns["landmarks"].abbreviations)
    is_contour = np.asarray(ns["is_contour"], dtype=bool)
    contour_ratios = ns["contour_ratios"]
    pooled_ratio = np.asarray(ns["pooled"].ratio, dtype=np.float64)
    measured_ratio = np.asarray(ns["along_across"].ratio, dtype=np.float64)
    generator = None
    if ns["is_phantom"]:
        generator_ratio = ns["model_table"]["ratio"].to_numpy(dtype=np.float64)
        generator = {a: float(r) if c else None for a, r, c in zip(abbreviations, generator_ratio, is_contour)}
    answers = [value for name, value in sorted(ns.items()) if name.startswith("answer_01_")]
    return {
        "profile": ns["profile"],
        "num_images": {name: int(count) for name, count in ns["split_counts"].items()},
        "num_images_total": len(ns["records"]),
        "num_landmarks": int(ns["K"]),
        "num_contour_landmarks": int(is_contour.sum()),
        "num_hard_cases": len(ns["hard_ids"]),
        "mean_annotator_distance_mm": float(ns["mean_distance_mm"]),
        "tangent_source": ns["tangent_source"],
        "min_contour_along_across_ratio": float(contour_ratios.min()) if len(contour_ratios) else None,
        "median_contour_along_across_ratio": float(contour_ratios.median()) if len(contour_ratios) else None,
        "median_contour_pooled_ratio": float(np.nanmedian(pooled_ratio[is_contour])) if is_contour.any() else None,
        "point_landmark_along_across_ratio": {  # no contour: along the principal axis
            a: float(r) for a, r, c in zip(abbreviations, pooled_ratio, is_contour) if not c
        },
        "per_landmark_along_across_ratio": {a: _optional(r) for a, r in zip(abbreviations, measured_ratio)},
        "per_landmark_generator_ratio": generator,
        "per_landmark_mean_distance_mm": {
            a: float(d) for a, d in zip(abbreviations, ns["disagreement"]["mean distance (mm)"])
        },
        "exercises_attempted": sum(is_attempted(answer) for answer in answers),
        "exercises_passed": sum(bool(passed) for passed in ns["exercise_results"].values()),
    }


def headline(summary: dict[str, Any]) -> str:
    """One line: images, the annotators' mean distance, the median contour ratio, exercises."""
    median = summary["median_contour_along_across_ratio"]
    return (
        f"{summary['num_images_total']} images, mean annotator distance {summary['mean_annotator_distance_mm']:.2f} mm, "
        f"median along/across ratio of the contour landmarks "
        f"{'n/a' if median is None else f'{median:.2f}'} ({summary['tangent_source']}); exercises passed "
        f"{summary['exercises_passed']}/{summary['exercises_attempted']} attempted"
    )

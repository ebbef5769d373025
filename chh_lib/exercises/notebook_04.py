"""Checks of notebook 04's exercises (the Expected Radial Error)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from chh_lib.exercises.answers import (
    choice,
    ExerciseError,
    correct,
    expect_close,
    fields,
    flag,
    is_attempted,
    not_attempted,
    number,
    pair,
)
from chh_lib.metrics import expected_radial_error, spearman


def exercise_04_1(answer: Any, heatmap: np.ndarray, pixel_size_mm: Sequence[float], cutoff: float = 0.05) -> bool:
    r"""Exercise 04.1: the ERE of one heatmap and the probability mass its cutoff discards.

    Expected answer: ``{"ere_mm": float, "discarded_mass": float}`` with, for the
    significant pixels :math:`S = \{i : p(i) / \max_j p(j) > c\}`,

    .. math::

        \mathrm{ERE} = \sum_{i \in S} \frac{p(i)}{\sum_{j \in S} p(j)}\,
            \lVert (\mathbf{x}_i - \hat{\mathbf{x}}) \odot \mathbf{s} \rVert, \qquad
        \text{discarded mass} = \frac{\sum_{i \notin S} p(i)}{\sum_i p(i)}.

    Parameters
    ----------
    answer : dict or Ellipsis
        The student's answer; ``...`` when not attempted.
    heatmap : ndarray, shape (H, W)
        One landmark's heatmap (non-negative).
    pixel_size_mm : sequence of float, length 2
        (x, y) pixel size in mm.
    cutoff : float
        The fraction :math:`c` of the mode.

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "04.1"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("ere_mm", "discarded_mass"), name)
    heatmap = np.asarray(heatmap, dtype=np.float64)  # (H, W)
    pixel = torch.as_tensor(np.asarray(pixel_size_mm, dtype=np.float64).reshape(1, 2))
    expected_ere = float(expected_radial_error(torch.from_numpy(heatmap)[None, None], pixel, cutoff)[0, 0])
    significant = heatmap / heatmap.max() > cutoff
    expected_discarded = float(heatmap[~significant].sum() / heatmap.sum())
    expect_close(number(given["ere_mm"], "ere_mm", name), expected_ere, "ere_mm (mm)",
                  "keep the pixels with p / max p > cutoff (strictly), renormalise over them, and average the "
                  "distance in mm to the first arg-max (x = column times s_x, y = row times s_y).", name)
    expect_close(number(given["discarded_mass"], "discarded_mass", name), expected_discarded,
                  "discarded_mass", "sum p over the pixels NOT in S and divide by the sum of p over all pixels "
                  "(a number between 0 and 1).", name, atol=1e-6)
    return correct(name, f"ERE {expected_ere:.3f} mm; the cutoff drops {100 * expected_discarded:.2f} % of the mass")


def exercise_04_2(answer: Any, ere_by_cutoff: np.ndarray, cutoffs: Sequence[float], radial_error_mm: np.ndarray,
                  low: float = 0.001, high: float = 0.05) -> bool:
    r"""Exercise 04.2: the cutoff moves the mean ERE much more than its rank correlation with the error.

    Expected answer::

        {"mean_ere_mm": (mean at low, mean at high),
         "spearman": (rho at low, rho at high),
         "rank_correlation_changes_less": bool}

    over the present pairs (those whose radial error is not NaN), where
    ``rank_correlation_changes_less`` is
    :math:`|\rho_{low} - \rho_{high}| < |m_{low} - m_{high}| / m_{high}` (the
    absolute change of Spearman's :math:`\rho` against the relative change of
    the mean ERE :math:`m`).

    Parameters
    ----------
    answer : dict or Ellipsis
    ere_by_cutoff : ndarray, shape (N, K, C)
        ERE in mm at each of the ``C`` cutoffs.
    cutoffs : sequence of float, length C
    radial_error_mm : ndarray, shape (N, K)
        True radial error in mm; NaN marks a missing landmark.
    low, high : float
        The two cutoffs compared; both must be in ``cutoffs``.

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "04.2"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("mean_ere_mm", "spearman", "rank_correlation_changes_less"), name)
    ere_by_cutoff = np.asarray(ere_by_cutoff, dtype=np.float64)
    radial_error_mm = np.asarray(radial_error_mm, dtype=np.float64)
    present = ~np.isnan(radial_error_mm)
    columns = [list(cutoffs).index(c) for c in (low, high)]
    means = [float(ere_by_cutoff[..., i][present].mean()) for i in columns]
    rhos = [spearman(ere_by_cutoff[..., i][present], radial_error_mm[present]) for i in columns]
    for label, got, expected, hint in (
        ("mean_ere_mm", pair(given["mean_ere_mm"], "mean_ere_mm", name), means,
         "average the ERE at each cutoff over the present pairs only (where the radial error is not NaN)."),
        ("spearman", pair(given["spearman"], "spearman", name), rhos,
         "chh_lib.metrics.spearman(ere, error) over the present pairs, once per cutoff."),
    ):
        for cutoff, g, e in zip((low, high), got, expected):
            expect_close(g, e, f"{label} at cutoff {cutoff:g}", hint, name)
    mean_change = abs(means[0] - means[1]) / means[1]
    rho_change = abs(rhos[0] - rhos[1])
    expected_flag = bool(rho_change < mean_change)
    if flag(given["rank_correlation_changes_less"], "rank_correlation_changes_less", name) != expected_flag:
        raise ExerciseError(
            f"Exercise {name}: rank_correlation_changes_less should be {expected_flag}: the mean ERE changes by "
            f"{100 * mean_change:.1f} % (relative) and Spearman rho by {rho_change:.3f} (absolute). Hint: compare "
            f"|rho_low - rho_high| with |mean_low - mean_high| / mean_high.")
    return correct(name, f"mean ERE changes by {100 * mean_change:.1f} %, Spearman rho by {rho_change:.3f}")


#: Relative margin within which exercise 04.3 calls two median EREs "about the same".
SAME_SIZE_MARGIN = 0.2

#: What each choice of exercise 04.3 says, for the explanation the check prints.
VERDICTS_04_3 = {
    "a": f"the contour landmarks' median ERE is more than {100 * SAME_SIZE_MARGIN:.0f} % larger than the point "
         "landmarks'",
    "b": f"the two medians are within {100 * SAME_SIZE_MARGIN:.0f} % of each other",
    "c": f"the contour landmarks' median ERE is more than {100 * SAME_SIZE_MARGIN:.0f} % smaller than the point "
         "landmarks'",
}


#: Why each verdict of exercise 04.3 comes about, in terms of the heatmaps' size and shape.
_WHY_04_3 = {
    "a": "Here the contour landmarks' heatmaps are larger as well as longer, so their median ERE is the larger.",
    "b": "Here the longer axis of the contour landmarks' heatmaps is offset by the narrower one, so the medians "
         "are about the same.",
    "c": "Here the contour landmarks' heatmaps are narrow enough across the contour to be smaller overall than "
         "the point landmarks', so their median ERE is the smaller.",
}


def size_verdict_04_3(median_contour_mm: float, median_point_mm: float) -> str:
    """The letter of :data:`VERDICTS_04_3` that the two medians (mm) satisfy."""
    ratio = median_contour_mm / median_point_mm
    if ratio > 1 + SAME_SIZE_MARGIN:
        return "a"
    if ratio < 1 - SAME_SIZE_MARGIN:
        return "c"
    return "b"


def exercise_04_3(answer: Any, ere_mm: np.ndarray, radial_error_mm: np.ndarray,
                  point_landmarks: Sequence[int]) -> bool:
    r"""Exercise 04.3: predict, then check whether contour landmarks have a larger median ERE than point ones.

    Expected answer::

        {"verdict": str, "median_ere_contour_mm": float, "median_ere_point_mm": float}

    medians over the present (image, landmark) pairs (radial error not NaN) of
    the landmarks not in ``point_landmarks`` and of those in it (medians rather
    than means, because a few failed heatmaps pull a mean), and the letter of
    :data:`VERDICTS_04_3` that they satisfy (:func:`size_verdict_04_3`, margin
    :data:`SAME_SIZE_MARGIN`). The verdict is checked first; a wrong one is
    explained.

    Parameters
    ----------
    answer : dict or Ellipsis
    ere_mm : ndarray, shape (N, K)
        ERE in mm at the paper's cutoff.
    radial_error_mm : ndarray, shape (N, K)
        True radial error in mm; NaN marks a missing landmark.
    point_landmarks : sequence of int
        Channel indices of the point (non-contour) landmarks; at least one.

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    ValueError
        When ``point_landmarks`` is empty or covers every landmark.
    """
    name = "04.3"
    if not is_attempted(answer):
        return not_attempted(name)
    ere_mm = np.asarray(ere_mm, dtype=np.float64)
    present = ~np.isnan(np.asarray(radial_error_mm, dtype=np.float64))
    is_point = np.zeros(ere_mm.shape[1], dtype=bool)
    is_point[list(point_landmarks)] = True
    if not is_point.any() or is_point.all():
        raise ValueError("exercise 04.3 needs at least one point landmark and one contour landmark")
    given = fields(answer, ("verdict", "median_ere_contour_mm", "median_ere_point_mm"), name)
    verdict = choice(given["verdict"], VERDICTS_04_3, name)
    contour = float(np.median(ere_mm[present & ~is_point[None, :]]))
    point = float(np.median(ere_mm[present & is_point[None, :]]))
    expected = size_verdict_04_3(contour, point)
    explanation = (
        f"the medians are {contour:.2f} mm (contour) and {point:.2f} mm (point), a ratio of {contour / point:.2f}. "
        "A contour landmark's heatmap is long along its contour but narrow across it; the ERE averages the "
        "distance to the mode over the significant pixels, so it grows with the size of the spread (both axes "
        "together), not with the elongation as such. " + _WHY_04_3[expected])
    if verdict != expected:
        raise ExerciseError(f"Exercise {name}: your prediction ({verdict}) does not hold: the answer is ({expected}), "
                            f"{VERDICTS_04_3[expected]}. Why: {explanation}")
    hint = ("take results['ere'] where the landmark is present, split the columns into point landmarks (point_k) "
            "and the others, and use np.median over all pairs of each group (not a median of per-landmark means).")
    expect_close(number(given["median_ere_contour_mm"], "median_ere_contour_mm", name), contour,
                  "median_ere_contour_mm (mm)", hint, name)
    expect_close(number(given["median_ere_point_mm"], "median_ere_point_mm", name), point,
                  "median_ere_point_mm (mm)", hint, name)
    return correct(name, f"({expected}) {explanation}")

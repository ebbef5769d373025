"""Checks of notebook 06's exercises (the heatmap inspector)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from chh_lib.exercises.answers import (
    ExerciseError,
    choice,
    correct,
    expect_close,
    fields,
    flag,
    is_attempted,
    not_attempted,
    number,
    pair,
)
from chh_lib.metrics import expected_radial_error


def _count(value: Any, what: str, name: str) -> int:
    got = number(value, what, name)
    if got != round(got):
        raise ExerciseError(f"Exercise {name}: {what} counts pixels and should be a whole number, got {got:g}.")
    return round(got)


def exercise_06_1(answer: Any, heatmap: np.ndarray, pixel_size_mm: Sequence[float],
                  cutoffs: Sequence[float] = (0.05, 0.2)) -> bool:
    r"""Exercise 06.1: the size of the significant set :math:`S` in pixels and mm² at two cutoffs.

    Expected answer: ``{"pixels": (n_1, n_2), "area_mm2": (a_1, a_2)}`` with, for each
    cutoff :math:`c`, :math:`n = |S_c| = |\{i : p(i) / \max_j p(j) > c\}|` and
    :math:`a = n \, s_x s_y`.

    Parameters
    ----------
    answer : dict or Ellipsis
        The student's answer; ``...`` when not attempted.
    heatmap : ndarray, shape (H, W)
        One landmark's heatmap (non-negative, maximum above 0).
    pixel_size_mm : sequence of float, length 2
        (x, y) pixel size in mm.
    cutoffs : sequence of float, length 2
        The two cutoffs, in the order of the answer's tuples.

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "06.1"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("pixels", "area_mm2"), name)
    heatmap = np.asarray(heatmap, dtype=np.float64)  # (H, W)
    s_x, s_y = (float(v) for v in np.asarray(pixel_size_mm, dtype=np.float64).reshape(2))
    counts = [int((heatmap / heatmap.max() > c).sum()) for c in cutoffs]
    pixels = pair(given["pixels"], "pixels", name)
    for cutoff, got, expected in zip(cutoffs, pixels, counts):
        got = _count(got, f"pixels at cutoff {cutoff:g}", name)
        if got != expected:
            at_or_above = int((heatmap / heatmap.max() >= cutoff).sum())
            hint = ("S keeps the pixels with p / max p strictly greater than c (you counted p / max p >= c)."
                    if got == at_or_above != expected else
                    "compare p / p.max() with the cutoff (not p itself) and count the True pixels.")
            raise ExerciseError(f"Exercise {name}: pixels at cutoff {cutoff:g} should be {expected}, got {got}. "
                                f"Hint: {hint}")
    for cutoff, got, expected in zip(cutoffs, pair(given["area_mm2"], "area_mm2", name), counts):
        expect_close(got, expected * s_x * s_y, f"area_mm2 at cutoff {cutoff:g} (mm²)",
                     "one pixel covers s_x * s_y mm² (its width times its height), so the area is the count "
                     "times that.", name)
    return correct(name, f"|S| = {counts[0]} px at c = {cutoffs[0]:g} and {counts[1]} px at c = {cutoffs[1]:g} "
                         f"({counts[0] * s_x * s_y:.1f} and {counts[1] * s_x * s_y:.1f} mm²)")


def false_alarms(ere_mm: np.ndarray, radial_error_mm: np.ndarray, ere_threshold_mm: float | None,
                 outlier_threshold_mm: float) -> np.ndarray:
    """Which (image, landmark) pairs are false alarms: ERE >= the threshold, error present and not above ``outlier``.

    Returns
    -------
    ndarray, shape (N, K), bool
        All False when ``ere_threshold_mm`` is None or NaN.
    """
    ere_mm = np.asarray(ere_mm, dtype=np.float64)
    error = np.asarray(radial_error_mm, dtype=np.float64)
    if ere_threshold_mm is None or not np.isfinite(ere_threshold_mm):
        return np.zeros(ere_mm.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        return (ere_mm >= ere_threshold_mm) & (error <= outlier_threshold_mm)


def exercise_06_2(answer: Any, ere_mm: np.ndarray, radial_error_mm: np.ndarray, ere_threshold_mm: float | None,
                  outlier_threshold_mm: float = 4.0) -> bool:
    r"""Exercise 06.2: the false alarm with the largest ERE.

    A false alarm is a prediction that the ERE threshold :math:`t^\ast` flags
    (:math:`\mathrm{ERE} \ge t^\ast`) although it is not an outlier (its radial error is
    present and at most ``outlier_threshold_mm``). Expected answer:
    ``{"image_index": int, "landmark_index": int, "ere_mm": float}`` for the one with the
    largest ERE (any of them on a tie), or ``None`` when there is no false alarm (or no
    threshold).

    Parameters
    ----------
    answer : dict, None or Ellipsis
    ere_mm, radial_error_mm : ndarray, shape (N, K)
        ERE and true radial error in mm; NaN errors mark missing landmarks.
    ere_threshold_mm : float or None
        The run's ERE threshold; None (or NaN) when it has none.
    outlier_threshold_mm : float

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "06.2"
    if not is_attempted(answer):
        return not_attempted(name)
    ere_mm = np.asarray(ere_mm, dtype=np.float64)
    error = np.asarray(radial_error_mm, dtype=np.float64)
    alarm = false_alarms(ere_mm, error, ere_threshold_mm, outlier_threshold_mm)
    if not alarm.any():
        if answer is not None:
            why = ("the run has no ERE threshold" if ere_threshold_mm is None or not np.isfinite(ere_threshold_mm)
                   else f"no prediction has ERE >= {ere_threshold_mm:.3f} mm and an error <= "
                        f"{outlier_threshold_mm:g} mm")
            raise ExerciseError(f"Exercise {name}: there is no false alarm here ({why}), so the answer is None.")
        return correct(name, "there is no false alarm in this split")
    if answer is None:
        raise ExerciseError(f"Exercise {name}: there are {int(alarm.sum())} false alarms; answer with the one "
                            "whose ERE is largest. Hint: mask (ere >= threshold) & (error <= outlier mm).")
    given = fields(answer, ("image_index", "landmark_index", "ere_mm"), name)
    n = _count(given["image_index"], "image_index", name)
    k = _count(given["landmark_index"], "landmark_index", name)
    if not (0 <= n < ere_mm.shape[0] and 0 <= k < ere_mm.shape[1]):
        raise ExerciseError(f"Exercise {name}: ({n}, {k}) is not an (image, landmark) pair of shape {ere_mm.shape}.")
    largest = float(ere_mm[alarm].max())
    if not alarm[n, k]:
        if not np.isnan(error[n, k]) and error[n, k] > outlier_threshold_mm:
            why = (f"its radial error {error[n, k]:.2f} mm is above {outlier_threshold_mm:g} mm: flagging it is "
                   "right (a true alarm)")
        elif np.isnan(error[n, k]):
            why = "the landmark is missing there (no radial error)"
        else:
            why = f"its ERE {ere_mm[n, k]:.3f} mm is below the threshold {ere_threshold_mm:.3f} mm: it is not flagged"
        raise ExerciseError(f"Exercise {name}: ({n}, {k}) is not a false alarm: {why}. Hint: keep only the pairs with "
                            "ERE >= threshold AND error <= the outlier threshold, then take the largest ERE.")
    if not np.isclose(ere_mm[n, k], largest, rtol=1e-9, atol=0.0):
        raise ExerciseError(f"Exercise {name}: ({n}, {k}) is a false alarm, but with ERE {ere_mm[n, k]:.3f} mm; the "
                            f"largest false-alarm ERE is {largest:.3f} mm. Hint: np.argmax over the masked ERE "
                            "(set the other pairs to -inf) and np.unravel_index.")
    expect_close(number(given["ere_mm"], "ere_mm", name), largest, "ere_mm (mm)",
                 "report the ERE of the pair you chose, from the same array.", name)
    return correct(name, f"image {n}, landmark {k}: ERE {largest:.2f} mm with an error of {error[n, k]:.2f} mm "
                         f"({int(alarm.sum())} false alarms in all)")


def _ere_at(logits: np.ndarray, temperature: float, pixel_size_mm: np.ndarray, cutoff: float) -> float:
    """ERE (mm) of ``softmax(logits / temperature)`` for one (H, W) map, in float64."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    p = np.exp(scaled - scaled.max())
    heatmap = torch.from_numpy(p / p.sum())[None, None]
    pixel = torch.as_tensor(np.asarray(pixel_size_mm, dtype=np.float64).reshape(1, 2))
    return float(expected_radial_error(heatmap, pixel, cutoff)[0, 0])


#: What each choice of exercise 06.3 says; ``"c"`` is the one that holds for every heatmap.
VERDICTS_06_3 = {
    "a": "doubling T makes the ERE of every heatmap larger",
    "b": "doubling T makes the ERE of every heatmap smaller",
    "c": "doubling T makes the ERE of most heatmaps larger, but it can make it smaller",
}


def exercise_06_3(answer: Any, logits: np.ndarray, temperature: float, pixel_size_mm: Sequence[float],
                  cutoff: float = 0.05) -> bool:
    r"""Exercise 06.3: predict, then check whether doubling the temperature increases the ERE.

    Expected answer: ``{"verdict": str, "ere_at_T_mm": float, "ere_at_2T_mm": float,
    "larger_at_2T": bool}``: the letter of :data:`VERDICTS_06_3` predicted before
    computing (``"c"``: flattening adds pixels to :math:`S` and moves weight towards
    the low-ratio pixels, which are usually the far ones but need not be), then the
    EREs of :math:`\mathrm{softmax}(z / T)` and :math:`\mathrm{softmax}(z / 2T)` of
    the logits :math:`z` at the cutoff :math:`c`, and whether the second is the larger.
    The letter is checked first; a wrong one is explained.

    Parameters
    ----------
    answer : dict or Ellipsis
    logits : ndarray, shape (H, W)
        One landmark's logits :math:`z`.
    temperature : float
        :math:`T > 0`.
    pixel_size_mm : sequence of float, length 2
    cutoff : float

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "06.3"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("verdict", "ere_at_T_mm", "ere_at_2T_mm", "larger_at_2T"), name)
    verdict = choice(given["verdict"], VERDICTS_06_3, name)
    pixel = np.asarray(pixel_size_mm, dtype=np.float64)
    at_t = _ere_at(logits, temperature, pixel, cutoff)
    at_2t = _ere_at(logits, 2 * temperature, pixel, cutoff)
    explanation = (
        f"ERE {at_t:.3f} mm at T = {temperature:.3g}, {at_2t:.3f} mm at 2T. Doubling T halves every logit gap to "
        "the mode, so each pixel's ratio p(i) / max p is raised to the power 1/2: it grows towards 1, the small "
        "ratios the most. More pixels pass the cutoff (S can only grow) and the weights q inside S even out. For a "
        "heatmap whose ratio falls with the distance from the mode (one peak) the far pixels gain the most, so the "
        "ERE grows; when much of the mass already lies far from the mode (a strong second peak, or a flat heatmap "
        "whose S is nearly the whole image) the near low-ratio pixels gain weight at the far pixels' expense and "
        "the ERE can shrink. "
        + ("Here it grew, as for most single-peaked heatmaps." if at_2t > at_t
           else "Here it did not grow: this heatmap is one of the exceptions."))
    expected = "c"
    if verdict != expected:
        raise ExerciseError(f"Exercise {name}: your prediction ({verdict}) does not hold: the answer is ({expected}), "
                            f"{VERDICTS_06_3[expected]}. Why: {explanation}")
    hint = ("divide the logits by the temperature, subtract their maximum, exponentiate and normalise (a 2D "
            "softmax), then keep p / max p > c and average the distance in mm to the arg-max with weights p / sum_S p.")
    expect_close(number(given["ere_at_T_mm"], "ere_at_T_mm", name), at_t, "ere_at_T_mm (mm)", hint, name)
    expect_close(number(given["ere_at_2T_mm"], "ere_at_2T_mm", name), at_2t, "ere_at_2T_mm (mm)",
                 hint + " Use 2 T, not T / 2.", name)
    if flag(given["larger_at_2T"], "larger_at_2T", name) != (at_2t > at_t):
        raise ExerciseError(f"Exercise {name}: larger_at_2T should be {at_2t > at_t}. Why: {explanation}")
    return correct(name, f"({expected}) holds: {explanation}")

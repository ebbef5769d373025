"""Checks of notebook 01's exercises (data exploration: annotator disagreement and the network's pixel grid)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from chh_lib.data.dataset import resize_geometry
from chh_lib.data.disagreement import along_across_sd
from chh_lib.exercises.answers import (
    choice,
    RTOL,
    ExerciseError,
    correct,
    expect_close,
    fields,
    is_attempted,
    not_attempted,
    number,
    pair,
)


def _vector(value: Any, length: int, what: str, name: str) -> np.ndarray:
    """``value`` as a float64 vector of ``length``; an :class:`ExerciseError` otherwise."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ExerciseError(f"Exercise {name}: {what} should be {length} numbers, got {value!r:.60}.") from error
    if array.shape != (length,):
        raise ExerciseError(f"Exercise {name}: {what} should have shape ({length},), got {array.shape}.")
    return array


def _close(got: np.ndarray, expected: np.ndarray) -> bool:
    """Element-wise agreement within the exercises' tolerance, NaN matching NaN."""
    return bool(np.allclose(got, expected, rtol=RTOL, atol=1e-6, equal_nan=True))


def exercise_01_1(answer: Any, annotations_px: np.ndarray, pixel_size_mm: np.ndarray,
                  abbreviations: Sequence[str]) -> bool:
    r"""Exercise 01.1: the mean distance between the two annotators per landmark, in mm.

    Expected answer: ``{"mean_distance_mm": (K,) array, "largest": str}`` with

    .. math::

        \bar{D}_k = \frac{1}{N_k} \sum_n \bigl\lVert (\mathbf{a}^{(1)}_{nk} - \mathbf{a}^{(2)}_{nk})
            \odot \mathbf{s}_n \bigr\rVert

    over the ``N_k`` images where both annotators marked landmark ``k``, and
    ``largest`` the abbreviation of the landmark with the largest :math:`\bar{D}_k`.

    Parameters
    ----------
    answer : dict or Ellipsis
        The student's answer; ``...`` when not attempted.
    annotations_px : ndarray, shape (N, A, K, 2)
        (x, y) pixel positions of every annotator (A >= 2); NaN = missing.
    pixel_size_mm : ndarray, shape (N, 2)
        (x, y) pixel size of each image in mm.
    abbreviations : sequence of str, length K

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "01.1"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("mean_distance_mm", "largest"), name)
    annotations_px = np.asarray(annotations_px, dtype=np.float64)
    offset_px = annotations_px[:, 0] - annotations_px[:, 1]  # (N, K, 2)
    pixel = np.asarray(pixel_size_mm, dtype=np.float64)[:, None, :]  # (N, 1, 2)
    with np.errstate(invalid="ignore"):
        expected = np.nanmean(np.linalg.norm(offset_px * pixel, axis=-1), axis=0)  # (K,)
        in_pixels = np.nanmean(np.linalg.norm(offset_px, axis=-1), axis=0)
    got = _vector(given["mean_distance_mm"], len(abbreviations), "mean_distance_mm", name)
    if not _close(got, expected):
        hint = ("these are distances in pixels: multiply the (x, y) offsets by the pixel size before taking "
                "the norm." if _close(got, in_pixels) else
                "for every image and landmark take the Euclidean norm of (annotator 0 - annotator 1) times "
                "pixel_size_mm, then average over the images with np.nanmean (axis 0).")
        k = int(np.argmax(~np.isclose(got, expected, rtol=RTOL, atol=1e-6, equal_nan=True)))  # the first wrong one
        raise ExerciseError(f"Exercise {name}: mean_distance_mm of {abbreviations[k]} should be "
                            f"{expected[k]:.4g} mm, got {got[k]:.4g}. Hint: {hint}")
    largest = abbreviations[int(np.nanargmax(expected))]
    if given["largest"] != largest:
        raise ExerciseError(f"Exercise {name}: largest should be {largest!r} ({np.nanmax(expected):.2f} mm), "
                            f"got {given['largest']!r}. Hint: np.nanargmax of your distances, then the "
                            "abbreviation at that channel.")
    return correct(name, f"the annotators are {np.nanmean(expected):.2f} mm apart on average, most at "
                         f"{largest} ({np.nanmax(expected):.2f} mm)")


def exercise_01_2(answer: Any, difference_mm: np.ndarray, tangent_mm: np.ndarray, landmark: int) -> bool:
    r"""Exercise 01.2: the along/across ratio of one landmark from its contour tangent.

    Expected answer: ``{"sd_along_mm": float, "sd_across_mm": float, "ratio": float}``,
    the sample SDs (``ddof = 1``) of the difference projected on the unit tangent
    :math:`\mathbf{t}_n` and on the normal :math:`\mathbf{n}_n = (-t_y, t_x)`, and
    their ratio (:func:`chh_lib.data.disagreement.along_across_sd`).

    Parameters
    ----------
    answer : dict or Ellipsis
    difference_mm : ndarray, shape (N, K, 2)
        Inter-annotator differences in mm; NaN = missing.
    tangent_mm : ndarray, shape (N, K, 2)
        Contour tangents (any length) in mm space.
    landmark : int
        The channel ``k`` asked about.

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "01.2"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("sd_along_mm", "sd_across_mm", "ratio"), name)
    d = np.asarray(difference_mm, dtype=np.float64)[:, landmark : landmark + 1]  # (N, 1, 2)
    t = np.asarray(tangent_mm, dtype=np.float64)[:, landmark : landmark + 1]
    expected = along_across_sd(d, t)
    unit = t[:, 0] / np.linalg.norm(t[:, 0], axis=-1, keepdims=True)
    along = np.sum(d[:, 0] * unit, axis=-1)
    along = along[np.isfinite(along)]
    rms, population_sd = float(np.sqrt(np.mean(along**2))), float(np.std(along))
    got_along = number(given["sd_along_mm"], "sd_along_mm", name)
    hint = "project each difference on its own unit tangent (a dot product per image) and take np.std(..., ddof=1)."
    if math.isclose(got_along, rms, rel_tol=RTOL) and not math.isclose(rms, float(expected.sd_along_mm[0]),
                                                                          rel_tol=RTOL):
        hint = ("that is the RMS of the projections: an SD subtracts their mean first, so that a constant offset "
                "between the annotators (a bias) does not count.")
    elif math.isclose(got_along, population_sd, rel_tol=RTOL / 10):
        hint = "use the sample SD, np.std(..., ddof=1)."
    expect_close(got_along, float(expected.sd_along_mm[0]), "sd_along_mm (mm)", hint, name)
    expect_close(number(given["sd_across_mm"], "sd_across_mm", name), float(expected.sd_across_mm[0]),
                 "sd_across_mm (mm)", "the normal of a unit tangent (t_x, t_y) is (-t_y, t_x); project on it and "
                 "take the sample SD.", name)
    expect_close(number(given["ratio"], "ratio", name), float(expected.ratio[0]), "ratio",
                 "sd_along_mm / sd_across_mm.", name)
    return correct(name, f"SD {expected.sd_along_mm[0]:.2f} mm along, {expected.sd_across_mm[0]:.2f} mm across: "
                         f"ratio {expected.ratio[0]:.2f}")


def exercise_01_3(answer: Any, source_size: Sequence[int], pixel_size_mm: Sequence[float],
                  target_size: Sequence[int], point_px: Sequence[float]) -> bool:
    r"""Exercise 01.3: the pixel size and a point's position on the network's grid.

    An image of ``source_size`` (w, h) is padded right or at the bottom to the
    aspect of ``target_size`` (W, H) and resized to it
    (:func:`chh_lib.data.dataset.resize_geometry`); with
    :math:`\mathbf{s} = (W / w_{pad}, H / h_{pad})` the pixel size becomes
    ``pixel_size_mm / s`` and a point moves to :math:`(\mathbf{x} + 0.5) \odot \mathbf{s} - 0.5`.

    Expected answer: ``{"pixel_size_mm": (s_x, s_y), "point_px": (x, y)}``.

    Parameters
    ----------
    answer : dict or Ellipsis
    source_size : sequence of int
        (w, h) of the original image in pixels.
    pixel_size_mm : sequence of float
        (x, y) pixel size of the original image in mm.
    target_size : sequence of int
        (W, H) of the network input.
    point_px : sequence of float
        (x, y) of a point in the original image's pixels.

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "01.3"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("pixel_size_mm", "point_px"), name)
    geometry = resize_geometry(tuple(int(v) for v in source_size), tuple(int(v) for v in target_size))
    expected_pixel = np.asarray(pixel_size_mm, dtype=np.float64) / geometry.scale
    expected_point = geometry.to_target_px(np.asarray(point_px, dtype=np.float64))
    naive_scale = np.asarray(target_size, dtype=np.float64) / np.asarray(source_size, dtype=np.float64)
    got_pixel = np.array(pair(given["pixel_size_mm"], "pixel_size_mm", name))
    hint = ("pad first: the image is padded right or at the bottom to the network's aspect W / H, and only then "
            "resized; s = (W / w_padded, H / h_padded)." if _close(got_pixel, np.asarray(pixel_size_mm) / naive_scale)
            else "pixel_size_mm divided by the scale s = (W / w_padded, H / h_padded).")
    for axis, label in enumerate("xy"):
        expect_close(got_pixel[axis], expected_pixel[axis], f"pixel_size_mm[{axis}] ({label}, mm)", hint, name)
    got_point = pair(given["point_px"], "point_px", name)
    for axis, label in enumerate("xy"):
        expect_close(got_point[axis], expected_point[axis], f"point_px[{axis}] ({label}, network pixels)",
                     "pixel centres sit at integer coordinates, so x' = (x + 0.5) * s_x - 0.5 (not x * s_x).", name)
    return correct(name, f"padded to {geometry.padded_size[0]} x {geometry.padded_size[1]}, the network sees "
                         f"{expected_pixel[0]:.4g} x {expected_pixel[1]:.4g} mm pixels")


#: The relative difference below which the pooled and the tangent ratio of exercise 01.4 count as equal.
EQUAL_RATIO_RTOL = 1e-6

#: What each choice of exercise 01.4 says, for the explanation the check prints.
VERDICTS_01_4 = {
    "a": "the pooled ratio is lower than the ratio along the tangents",
    "b": "the pooled ratio is higher than the ratio along the tangents",
    "c": "the two ratios are equal",
}


def exercise_01_4(answer: Any, difference_mm: np.ndarray, tangent_mm: np.ndarray, landmark: int) -> bool:
    r"""Exercise 01.4: predict, then check, what the pooled 2-sigma ellipse makes of one landmark.

    Expected answer: ``{"verdict": str, "pooled_ratio": float, "major_axis_angle_deg": float}``:
    :math:`\sqrt{\lambda_1 / \lambda_2}` of the sample covariance (``np.cov``) of
    the landmark's present differences, the angle of the first eigenvector
    :math:`\mathbf{u}_1` from the +x axis towards +y (image rows, pointing down),
    in degrees in [0, 180) (an axis has no sign), and the letter of the statement
    (:data:`VERDICTS_01_4`) that holds when the pooled ratio is compared with the
    ratio along the tangents ``tangent_mm`` (:func:`chh_lib.data.disagreement.along_across_sd`):
    ``"a"`` lower, ``"b"`` higher, ``"c"`` equal within :data:`EQUAL_RATIO_RTOL`
    (which happens when the tangents are the principal axis itself, as on real data).

    Parameters
    ----------
    answer : dict or Ellipsis
    difference_mm : ndarray, shape (N, K, 2)
        Inter-annotator differences in mm; NaN = missing.
    tangent_mm : ndarray, shape (N, K, 2)
        The tangents exercise 01.2 projects on (any length).
    landmark : int
        The channel ``k`` asked about.

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong; for a wrong verdict the message explains the right one.
    """
    name = "01.4"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("verdict", "pooled_ratio", "major_axis_angle_deg"), name)
    verdict = choice(given["verdict"], VERDICTS_01_4, name)
    d = np.asarray(difference_mm, dtype=np.float64)[:, landmark]
    t = np.asarray(tangent_mm, dtype=np.float64)[:, landmark]
    along_tangents = float(along_across_sd(d[:, None], t[:, None]).ratio[0])
    d = d[np.isfinite(d).all(axis=1)]
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(d.T))  # ascending
    ratio = float(np.sqrt(eigenvalues[1] / eigenvalues[0]))
    angle = float(np.degrees(np.arctan2(eigenvectors[1, 1], eigenvectors[0, 1])) % 180.0)
    if math.isclose(ratio, along_tangents, rel_tol=EQUAL_RATIO_RTOL):
        expected = "c"
        why = ("here the tangents are one fixed direction per landmark, the principal axis itself (real data has "
               "no contours), so both ratios measure along the same axis. On the phantom, whose tangents turn from "
               "image to image, they differ.")
    else:
        expected = "a" if ratio < along_tangents else "b"
        why = ("one fixed axis cannot follow a contour that turns from image to image: part of the spread along "
               "the contour falls on the fixed 'across' direction, which lowers the pooled ratio."
               if expected == "a" else
               "the principal axis is the fixed direction that makes this sample look most elongated, and here "
               "that pull (strongest with few images) outweighs the turning of the contour, which lowers it.")
    if verdict != expected:
        raise ExerciseError(f"Exercise {name}: your prediction ({verdict}) does not hold: the answer is ({expected}), "
                            f"{VERDICTS_01_4[expected]} (pooled {ratio:.2f}, along the tangents "
                            f"{along_tangents:.2f}). Why: {why}")
    expect_close(number(given["pooled_ratio"], "pooled_ratio", name), ratio, "pooled_ratio",
                 "np.linalg.eigh(np.cov(d.T)) of the present rows d (N_k, 2); the square root of the larger "
                 "eigenvalue over the smaller.", name)
    got_angle = number(given["major_axis_angle_deg"], "major_axis_angle_deg", name)
    gap = abs((got_angle - angle + 90.0) % 180.0 - 90.0)  # the angle between two axes, in [0, 90]
    if gap > 0.05:
        raise ExerciseError(f"Exercise {name}: major_axis_angle_deg should be {angle:.2f} degrees (modulo 180), "
                            f"got {got_angle:.2f}. Hint: np.degrees(np.arctan2(u1[1], u1[0])) % 180 for the "
                            "eigenvector u1 of the LARGER eigenvalue (eigh sorts them ascending: the last column).")
    return correct(name, f"({verdict}) holds: pooled ratio {ratio:.2f} against {along_tangents:.2f} along the "
                         f"tangents, long axis at {angle:.1f} degrees. Why: {why}")

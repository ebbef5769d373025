"""How much two annotators disagree per landmark, and how much more along a contour than across it.

For image :math:`n` and landmark :math:`k`, the inter-annotator difference is
:math:`\\mathbf{d}_{nk} = (\\mathbf{a}^{(1)}_{nk} - \\mathbf{a}^{(2)}_{nk}) \\odot \\mathbf{s}_n`
in mm (pixel offsets times the (x, y) pixel size). Given the unit contour
tangent :math:`\\mathbf{t}_{nk}` and the normal
:math:`\\mathbf{n}_{nk} = (-t_y, t_x)`, the **along/across ratio** of landmark
:math:`k` is

.. math::

    \\rho_k = \\frac{\\operatorname{SD}_n(\\mathbf{d}_{nk} \\cdot \\mathbf{t}_{nk})}
                  {\\operatorname{SD}_n(\\mathbf{d}_{nk} \\cdot \\mathbf{n}_{nk})},

with the sample standard deviation (``ddof = 1``, so a constant offset between
the annotators, a bias, does not count). This is the one definition the kit uses
(`chh phantom`, `chh data check`, notebook 01). When the tangent is unknown (real
data without contours) it is estimated as one fixed direction per landmark, the
principal axis of the differences; the ratio is then
:math:`\\sqrt{\\lambda_1 / \\lambda_2}` of their covariance, which is lower than the
ratio with the true per-image tangent when the contour's direction varies
between images.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from chh_lib.data.formats import ImageRecord

__all__ = ["AlongAcross", "along_across_sd", "annotator_differences_mm", "principal_axes"]


class AlongAcross(NamedTuple):
    """Per-landmark spread of the inter-annotator difference along and across the contour.

    Attributes
    ----------
    sd_along_mm, sd_across_mm : ndarray, shape (K,)
        Sample SD (mm) of the difference projected on the tangent and on the normal.
    ratio : ndarray, shape (K,)
        ``sd_along_mm / sd_across_mm``; NaN where a landmark has fewer than two
        present differences or no tangent (a zero tangent marks a point landmark).
    num_pairs : ndarray, shape (K,), int
        Number of images whose difference and tangent are both present.
    """

    sd_along_mm: np.ndarray
    sd_across_mm: np.ndarray
    ratio: np.ndarray
    num_pairs: np.ndarray


def annotator_differences_mm(records: Sequence[ImageRecord], first: int = 0, second: int = 1) -> np.ndarray:
    """First minus second annotator's position of every landmark, in mm.

    Parameters
    ----------
    records : sequence of ImageRecord
        ``N`` images with at least two annotators each.
    first, second : int
        Annotator indices.

    Returns
    -------
    ndarray, shape (N, K, 2), float64
        (x, y) differences in mm; NaN where either annotator lacks the landmark.
    """
    if not records:
        raise ValueError("need at least one image")
    annotations = np.stack([r.annotations_px for r in records]).astype(np.float64)  # (N, A, K, 2)
    if annotations.shape[1] < 2:
        raise ValueError(f"need two annotators, the images have {annotations.shape[1]}")
    pixel_mm = np.array([r.pixel_size_mm for r in records], dtype=np.float64)[:, None, :]  # (N, 1, 2)
    return (annotations[:, first] - annotations[:, second]) * pixel_mm


def principal_axes(difference_mm: np.ndarray) -> np.ndarray:
    """Unit direction of largest variance of each landmark's differences (the covariance's first eigenvector).

    Parameters
    ----------
    difference_mm : ndarray, shape (N, K, 2)
        Differences in mm; rows with NaN are left out per landmark.

    Returns
    -------
    ndarray, shape (K, 2)
        Unit vectors (sign arbitrary); zero where a landmark has fewer than two present rows.
    """
    difference_mm = np.asarray(difference_mm, dtype=np.float64)
    axes = np.zeros(difference_mm.shape[1:], dtype=np.float64)
    for k in range(difference_mm.shape[1]):
        d = difference_mm[:, k]
        d = d[np.isfinite(d).all(axis=1)]
        if len(d) >= 2:
            axes[k] = np.linalg.eigh(np.cov(d.T))[1][:, -1]  # eigenvalues ascending: the last is the largest
    return axes


def along_across_sd(difference_mm: np.ndarray, tangent: np.ndarray | None = None) -> AlongAcross:
    """SD of the inter-annotator difference along and across the contour, and their ratio.

    Parameters
    ----------
    difference_mm : ndarray, shape (N, K, 2)
        Inter-annotator differences in mm (see :func:`annotator_differences_mm`);
        NaN marks a missing landmark.
    tangent : ndarray, shape (N, K, 2) or (K, 2), optional
        Contour tangent of each landmark (per image, or one per landmark) in mm
        space, i.e. a direction in the physical (x, y) plane; it need not be unit
        length. A zero vector marks a landmark without a contour (its result is
        NaN). None: one direction per landmark, the principal axis of the
        differences (:func:`principal_axes`), so that ``ratio`` is
        :math:`\\sqrt{\\lambda_1 / \\lambda_2}` of their covariance.

    Returns
    -------
    AlongAcross
        Per landmark: ``sd_along_mm``, ``sd_across_mm``, ``ratio`` and ``num_pairs``.
    """
    difference_mm = np.asarray(difference_mm, dtype=np.float64)
    if difference_mm.ndim != 3 or difference_mm.shape[-1] != 2:
        raise ValueError(f"difference_mm must have shape (N, K, 2), got {difference_mm.shape}")
    if tangent is None:
        tangent = principal_axes(difference_mm)
    tangent = np.broadcast_to(np.asarray(tangent, dtype=np.float64), difference_mm.shape)
    length = np.linalg.norm(tangent, axis=-1, keepdims=True)  # (N, K, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.where(length > 0, tangent / length, np.nan)
    normal = np.stack([-unit[..., 1], unit[..., 0]], axis=-1)
    along = np.sum(difference_mm * unit, axis=-1)  # (N, K)
    across = np.sum(difference_mm * normal, axis=-1)
    present = np.isfinite(along) & np.isfinite(across)
    num_pairs = present.sum(axis=0)
    sd_along, sd_across = (_sample_sd(values, present) for values in (along, across))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = sd_along / sd_across
    return AlongAcross(sd_along, sd_across, ratio, num_pairs)


def _sample_sd(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Column-wise sample SD (ddof 1) of ``values`` (N, K) over the ``present`` rows; NaN below two rows."""
    count = present.sum(axis=0)
    filled = np.where(present, values, 0.0)
    mean = filled.sum(axis=0) / np.maximum(count, 1)
    squares = np.where(present, (values - mean) ** 2, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count >= 2, np.sqrt(squares / (count - 1)), np.nan)

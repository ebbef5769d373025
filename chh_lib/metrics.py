r"""Landmark detection metrics in millimetres.

Radial error of landmark :math:`k` in image :math:`n`:

.. math:: e_{n,k} = \sqrt{((\hat x - x) s_x)^2 + ((\hat y - y) s_y)^2}

with :math:`(s_x, s_y)` the image's pixel size in mm. Missing landmarks (NaN
targets) give NaN errors and are left out of every summary.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def radial_error_mm(pred_px: np.ndarray, target_px: np.ndarray, pixel_size_mm: np.ndarray) -> np.ndarray:
    """Euclidean distance between prediction and target in mm.

    Parameters
    ----------
    pred_px, target_px : ndarray, shape (N, K, 2)
        (x, y) in pixels; NaN marks a missing landmark.
    pixel_size_mm : ndarray, shape (N, 2)
        (x, y) pixel size of each image in mm.

    Returns
    -------
    ndarray, shape (N, K), float64
        NaN where either point is missing.
    """
    pred_px = np.asarray(pred_px, dtype=np.float64)
    target_px = np.asarray(target_px, dtype=np.float64)
    pixel_size_mm = np.asarray(pixel_size_mm, dtype=np.float64)
    if pred_px.shape != target_px.shape or pred_px.shape[-1] != 2:
        raise ValueError(f"prediction {pred_px.shape} and target {target_px.shape} must both be (N, K, 2)")
    if pixel_size_mm.shape != (pred_px.shape[0], 2):
        raise ValueError(f"pixel_size_mm must be ({pred_px.shape[0]}, 2), got {pixel_size_mm.shape}")
    delta_mm = (pred_px - target_px) * pixel_size_mm[:, None, :]
    return np.hypot(delta_mm[..., 0], delta_mm[..., 1])


def mean_radial_error(radial_error_mm: np.ndarray) -> tuple[float, float]:
    """Mean radial error (MRE) and its standard deviation over present landmarks, in mm.

    Parameters
    ----------
    radial_error_mm : ndarray, any shape
        NaN entries (missing landmarks) are ignored.

    Returns
    -------
    (float, float)
        MRE and the population standard deviation; NaN if nothing is present.
    """
    present = _present(radial_error_mm)
    if present.size == 0:
        return float("nan"), float("nan")
    return float(present.mean()), float(present.std())


def success_detection_rate(
    radial_error_mm: np.ndarray,
    thresholds_mm: Sequence[float] = (2.0, 2.5, 3.0, 4.0),
    inclusive: bool = False,
) -> dict[float, float]:
    r"""Successful detection rate (SDR) in percent for each threshold.

    .. math:: \mathrm{SDR}(t) = 100 \cdot \frac{|\{e < t\}|}{|\{e\}|}

    Parameters
    ----------
    radial_error_mm : ndarray, any shape
        NaN entries are ignored.
    thresholds_mm : sequence of float
    inclusive : bool
        Count ``e <= t`` as a success (CL-Detection 2023) instead of the authors' strict ``e < t``.

    Returns
    -------
    dict
        Threshold in mm -> percent of present landmarks within it (NaN if none present).
    """
    present = _present(radial_error_mm)
    rates: dict[float, float] = {}
    for threshold in thresholds_mm:
        if present.size == 0:
            rates[float(threshold)] = float("nan")
            continue
        hits = present <= threshold if inclusive else present < threshold
        rates[float(threshold)] = float(100.0 * hits.mean())
    return rates


def _present(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[~np.isnan(values)]

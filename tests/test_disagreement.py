"""The along/across ratio of the inter-annotator difference (chh_lib.data.disagreement) on synthetic cases."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chh_lib.data.disagreement import (
    along_across_sd,
    annotator_differences_mm,
    principal_axes,
)
from chh_lib.data.formats import ImageRecord


def _standardised(values: np.ndarray) -> np.ndarray:
    """``values`` shifted and scaled to sample mean 0 and sample SD (ddof 1) exactly 1."""
    return (values - values.mean()) / values.std(ddof=1)


def _differences(along: np.ndarray, across: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, 2) differences with the given components along and across tangents at ``angle`` (N,) radians."""
    tangent = np.stack([np.cos(angle), np.sin(angle)], axis=-1)  # (N, 2)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=-1)
    return (along[:, None] * tangent + across[:, None] * normal)[:, None], tangent[:, None]


def test_known_ratio_with_a_tangent_per_image():
    rng = np.random.default_rng(0)
    n = 50
    # SD 3 mm along, 0.5 mm across (ratio 6), a 2 mm bias along that must not count, tangents all around
    along = 2.0 + 3.0 * _standardised(rng.standard_normal(n))
    across = 0.5 * _standardised(rng.standard_normal(n))
    difference, tangent = _differences(along, across, rng.uniform(0, 2 * np.pi, n))
    result = along_across_sd(difference, 7.0 * tangent)  # the tangent need not be unit length
    np.testing.assert_allclose(result.sd_along_mm, [3.0], rtol=1e-12)
    np.testing.assert_allclose(result.sd_across_mm, [0.5], rtol=1e-12)
    np.testing.assert_allclose(result.ratio, [6.0], rtol=1e-12)
    assert result.num_pairs.tolist() == [n]
    # the tangent's sign does not matter
    np.testing.assert_allclose(along_across_sd(difference, -tangent).ratio, [6.0], rtol=1e-12)


def test_known_ratio_from_random_draws():
    rng = np.random.default_rng(1)
    n = 20000
    difference, tangent = _differences(1.5 * rng.standard_normal(n), 0.3 * rng.standard_normal(n),
                                       rng.normal(0.3, 0.2, n))
    assert along_across_sd(difference, tangent).ratio[0] == pytest.approx(5.0, rel=0.03)


def test_without_a_tangent_the_principal_axis_is_used():
    rng = np.random.default_rng(2)
    n = 400
    along, across = 2.0 * rng.standard_normal(n), 0.4 * rng.standard_normal(n)
    fixed, fixed_tangent = _differences(along, across, np.full(n, 0.7))
    spread, spread_tangent = _differences(along, across, rng.normal(0.7, 0.35, n))  # the contour turns
    for difference in (fixed, spread):
        eigenvalues = np.linalg.eigvalsh(np.cov(difference[:, 0].T))
        result = along_across_sd(difference)
        np.testing.assert_allclose(result.ratio, [np.sqrt(eigenvalues[1] / eigenvalues[0])], rtol=1e-9)
        np.testing.assert_allclose(result.sd_along_mm ** 2, [eigenvalues[1]], rtol=1e-9)
    axis = principal_axes(fixed)[0]
    assert abs(axis @ [np.cos(0.7), np.sin(0.7)]) == pytest.approx(1.0, abs=1e-3)
    # One fixed direction fits a fixed tangent (the true ratio, about 5) but not a turning one,
    # whose ratio along the true per-image tangent stays near 5 while the pooled one drops.
    assert along_across_sd(fixed).ratio[0] == pytest.approx(along_across_sd(fixed, fixed_tangent).ratio[0], rel=1e-3)
    assert along_across_sd(spread, spread_tangent).ratio[0] == pytest.approx(5.0, rel=0.15)
    assert along_across_sd(spread).ratio[0] < 0.8 * along_across_sd(spread, spread_tangent).ratio[0]


def test_missing_values_and_landmarks_without_a_contour():
    # Landmark 0: tangent x; along +-1, across +-0.5 (ratio 2) on four images, missing on the fifth.
    # Landmark 1: the same differences but no contour (zero tangent). Landmark 2: present on one image only.
    d0 = np.array([[1.0, 0.5], [-1.0, 0.5], [1.0, -0.5], [-1.0, -0.5], [np.nan, np.nan]])
    d2 = np.full((5, 2), np.nan)
    d2[0] = [1.0, 0.5]
    difference = np.stack([d0, d0, d2], axis=1)  # (N=5, K=3, 2)
    tangent = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])  # (K, 2), shared by the images
    result = along_across_sd(difference, tangent)
    np.testing.assert_allclose(result.sd_along_mm[0], np.std([1, -1, 1, -1], ddof=1), rtol=1e-12)
    np.testing.assert_allclose(result.ratio[0], 2.0, rtol=1e-12)
    assert np.isnan(result.ratio[1]) and np.isnan(result.ratio[2])
    assert result.num_pairs.tolist() == [4, 0, 1]
    assert np.isnan(along_across_sd(difference).ratio[2])  # too few images for a principal axis too
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        along_across_sd(difference[..., 0])


def test_annotator_differences_are_in_mm():
    annotations = np.array([[[[10.0, 20.0], [5.0, 5.0]], [[12.0, 19.0], [np.nan, 5.0]]]])  # (1, A=2, K=2, 2)
    record = ImageRecord("a", Path("a.png"), annotations[0], (0.5, 2.0))
    difference = annotator_differences_mm([record])
    np.testing.assert_allclose(difference[0, 0], [(10 - 12) * 0.5, (20 - 19) * 2.0])
    assert np.isnan(difference[0, 1, 0]) and difference[0, 1, 1] == 0.0
    with pytest.raises(ValueError, match="two annotators"):
        annotator_differences_mm([ImageRecord("a", Path("a.png"), annotations[0, :1], (0.5, 2.0))])

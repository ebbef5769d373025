"""ERE, other uncertainty scores, calibration, correlation, outlier detection and bootstrap."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chh_lib.metrics import (
    RocCurve,
    adaptive_reliability_bins,
    binned_means,
    binned_pearson,
    bootstrap_ci,
    calibration_summary,
    chh_bin_edges,
    correct_within_pixel,
    expected_radial_error,
    heatmap_entropy,
    outliers,
    reliability_bins,
    roc_curve_for,
    score_threshold_at_tpr,
    spatial_spread_mm,
    spearman,
    split_by_score,
    uncertainty_scores,
)

# --------------------------------------------------------------------------- helpers


def slow_ere(heatmaps: torch.Tensor, pixel_size_mm: torch.Tensor, cutoff: float = 0.05) -> np.ndarray:
    """The definition, one pixel at a time (normalisation and threshold in the input dtype)."""
    n, k, height, width = heatmaps.shape
    out = np.zeros((n, k))
    for i in range(n):
        px, py = float(pixel_size_mm[i, 0]), float(pixel_size_mm[i, 1])
        for j in range(k):
            heatmap = heatmaps[i, j]
            norm = (heatmap / heatmap.max()).tolist()
            best, x_hat, y_hat = -math.inf, 0, 0
            values = heatmap.tolist()
            for y in range(height):  # first maximum in row-major order
                for x in range(width):
                    if values[y][x] > best:
                        best, x_hat, y_hat = values[y][x], x, y
            total = moment = 0.0
            for y in range(height):
                for x in range(width):
                    if norm[y][x] > cutoff:
                        total += norm[y][x]
                        moment += norm[y][x] * math.hypot((x - x_hat) * px, (y - y_hat) * py)
            out[i, j] = moment / total
    return out


def random_heatmaps(
    shape: tuple[int, int, int, int], seed: int, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Sharp round, elongated (contour-like) and bimodal heatmaps, each summing to 1."""
    n, k, height, width = shape
    gen = torch.Generator().manual_seed(seed)
    ys = torch.arange(height, dtype=torch.float64)[:, None]
    xs = torch.arange(width, dtype=torch.float64)[None, :]
    maps = torch.empty(n * k, height, width, dtype=torch.float64)
    for index in range(n * k):
        cx, cy = (torch.rand(2, generator=gen, dtype=torch.float64) * torch.tensor([width - 1, height - 1])).tolist()
        kind = index % 3
        if kind == 0:
            logit = -0.5 * ((xs - cx) ** 2 + (ys - cy) ** 2) / 1.5**2
        elif kind == 1:  # elongated along a rotated axis
            angle = float(torch.rand((), generator=gen)) * math.pi
            u = (xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)
            v = -(xs - cx) * math.sin(angle) + (ys - cy) * math.cos(angle)
            logit = -0.5 * (u / 4.0) ** 2 - 0.5 * (v / 0.8) ** 2
        else:  # bimodal
            logit = torch.logaddexp(
                -0.5 * ((xs - cx) ** 2 + (ys - cy) ** 2) / 1.2**2,
                -0.7 - 0.5 * ((xs - width + 1 + cx) ** 2 + (ys - height + 1 + cy) ** 2) / 1.2**2,
            )
        logit = logit + 0.3 * torch.randn(height, width, generator=gen, dtype=torch.float64)
        maps[index] = torch.softmax(logit.flatten(), 0).view(height, width)
    return maps.view(shape).to(dtype)


# --------------------------------------------------------------------------- ERE


def test_ere_matches_reference_vectors(reference_vectors):
    ere = expected_radial_error(
        torch.from_numpy(reference_vectors["heatmaps"]).double(),
        torch.from_numpy(reference_vectors["pixel_size_mm"]).double(),
    )
    assert ere.dtype == torch.float64 and ere.shape == (3, 19)
    np.testing.assert_allclose(ere.numpy(), reference_vectors["ere_mm"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(2, 3, 24, 20), (1, 4, 23, 17), (2, 2, 30, 31), (1, 3, 18, 9), (1, 3, 7, 40)])
def test_ere_matches_slow_loop(shape, dtype):
    heatmaps = random_heatmaps(shape, seed=sum(shape), dtype=dtype)
    pixel = torch.tensor([[0.1, 0.13], [0.25, 0.2]], dtype=torch.float64)[: shape[0]]
    ere = expected_radial_error(heatmaps, pixel)
    assert ere.dtype == dtype and ere.shape == shape[:2]
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(ere.double().numpy(), slow_ere(heatmaps, pixel), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ere_ties_resolve_to_first_maximum_in_row_major_order(dtype):
    height, width = 23, 17  # 23 is prime: bands of a single row
    peaks = [
        [(9, 2), (2, 15)],  # later row but earlier column: (2, 15) wins
        [(1, 10), (2, 3)],  # (1, 10)
        [(20, 16), (20, 0), (22, 5)],  # same row: (20, 0)
        [(0, 16), (22, 0)],  # first and last rows
    ]
    heatmaps = torch.full((1, len(peaks), height, width), 1e-3, dtype=dtype)
    for j, points in enumerate(peaks):
        for y, x in points:
            heatmaps[0, j, y, x] = 0.5
        heatmaps[0, j, 11, 8] = 0.2  # a significant pixel away from every peak
    pixel = torch.tensor([[0.3, 0.7]])
    ere = expected_radial_error(heatmaps, pixel)
    np.testing.assert_allclose(ere.double().numpy(), slow_ere(heatmaps, pixel), rtol=1e-6)
    # band of 4 rows (H = 24) with ties in different bands
    heatmaps = torch.full((1, 1, 24, 17), 1e-3, dtype=dtype)
    heatmaps[0, 0, 13, 1] = heatmaps[0, 0, 5, 16] = heatmaps[0, 0, 22, 0] = 0.3
    np.testing.assert_allclose(
        expected_radial_error(heatmaps, pixel).double().numpy(), slow_ere(heatmaps, pixel), rtol=1e-6
    )


def test_ere_one_hot_is_zero_and_ring_is_mass_times_radius():
    heatmaps = torch.zeros(1, 2, 21, 25, dtype=torch.float64)
    heatmaps[0, 0, 7, 3] = 1.0
    cy, cx, r = 10, 12, 5
    ring = [(0, 5), (0, -5), (5, 0), (-5, 0)] + [(sy * a, sx * b) for a, b in ((3, 4), (4, 3)) for sy in (1, -1) for sx in (1, -1)]
    assert all(dy * dy + dx * dx == r * r for dy, dx in ring)
    ring_mass = 0.6
    heatmaps[0, 1, cy, cx] = 1 - ring_mass
    for dy, dx in ring:
        heatmaps[0, 1, cy + dy, cx + dx] = ring_mass / len(ring)  # 0.05 / 0.4 > cutoff
    pixel = 0.2
    ere = expected_radial_error(heatmaps, torch.tensor([[pixel, pixel]], dtype=torch.float64))
    assert ere[0, 0] == 0.0
    assert float(ere[0, 1]) == pytest.approx(ring_mass * r * pixel, abs=1e-12)


def test_ere_cutoff_is_strict_and_relative_to_the_maximum():
    heatmaps = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    heatmaps[0, 0, 0, 0] = 0.5
    heatmaps[0, 0, 0, 4] = 0.5 * 0.25  # exactly 0.25 of the maximum
    heatmaps[0, 0, 4, 0] = 0.5 * 0.25
    pixel = torch.tensor([[1.0, 1.0]])
    assert float(expected_radial_error(heatmaps, pixel, cutoff=0.25)) == 0.0  # not kept: not strictly above
    assert float(expected_radial_error(heatmaps, pixel, cutoff=0.2)) == pytest.approx(4 * 0.5 / 1.5)


def test_ere_zero_map_is_nan_and_input_not_modified():
    heatmaps = random_heatmaps((1, 2, 12, 10), seed=3)
    heatmaps[0, 1] = 0
    before = heatmaps.clone()
    ere = expected_radial_error(heatmaps, torch.tensor([[0.1, 0.1]]))
    assert torch.isfinite(ere[0, 0]) and torch.isnan(ere[0, 1])
    assert torch.equal(heatmaps, before)


def test_ere_non_contiguous_input():
    heatmaps = random_heatmaps((2, 3, 16, 20), seed=5)
    pixel = torch.tensor([[0.1, 0.1], [0.2, 0.3]])
    transposed = heatmaps.transpose(-1, -2).contiguous().transpose(-1, -2)
    torch.testing.assert_close(expected_radial_error(transposed, pixel), expected_radial_error(heatmaps, pixel))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_ere_and_scores_on_cuda_match_cpu():
    heatmaps = random_heatmaps((2, 5, 40, 32), seed=7)
    pixel = torch.tensor([[0.1, 0.1], [0.12, 0.09]], dtype=torch.float64)
    cpu = uncertainty_scores(heatmaps, pixel)
    gpu = uncertainty_scores(heatmaps.cuda(), pixel.cuda())
    for name, value in cpu.items():
        assert gpu[name].device.type == "cuda"
        torch.testing.assert_close(gpu[name].cpu(), value, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- other scores


def test_entropy_uniform_and_one_hot():
    heatmaps = torch.zeros(1, 2, 6, 7, dtype=torch.float64)
    heatmaps[0, 0] = 1.0 / 42
    heatmaps[0, 1, 2, 3] = 1.0
    entropy = heatmap_entropy(heatmaps)
    assert float(entropy[0, 0]) == pytest.approx(math.log(42))
    assert float(entropy[0, 1]) == 0.0


def test_spread_of_two_point_map_by_hand():
    heatmaps = torch.zeros(1, 1, 10, 10, dtype=torch.float64)
    heatmaps[0, 0, 2, 1] = 0.25  # (x, y) = (1, 2)
    heatmaps[0, 0, 6, 5] = 0.75  # (x, y) = (5, 6)
    # Var_x = Var_y = 0.25 * 0.75 * 4^2 = 3; with pixel (0.5, 2): 3 * 0.25 + 3 * 4
    spread = spatial_spread_mm(heatmaps, torch.tensor([[0.5, 2.0]]))
    assert float(spread) == pytest.approx(math.sqrt(3 * 0.25 + 3 * 4))
    # unnormalised input gives the same spread
    assert float(spatial_spread_mm(heatmaps * 7, torch.tensor([[0.5, 2.0]]))) == pytest.approx(float(spread))


def test_uncertainty_scores_keys_and_values():
    heatmaps = random_heatmaps((2, 3, 12, 14), seed=11, dtype=torch.float32)
    pixel = torch.tensor([[0.1, 0.1], [0.2, 0.2]])
    scores = uncertainty_scores(heatmaps, pixel)
    assert set(scores) == {"ere", "neg_mode_prob", "entropy", "spread"}
    for value in scores.values():
        assert value.shape == (2, 3) and value.dtype == torch.float32
    torch.testing.assert_close(scores["neg_mode_prob"], -heatmaps.flatten(2).max(-1).values)
    torch.testing.assert_close(scores["ere"], expected_radial_error(heatmaps, pixel))


# --------------------------------------------------------------------------- calibration


def test_ece_matches_reference_vectors(reference_vectors):
    correct = correct_within_pixel(reference_vectors["ece_radial_error_mm"], reference_vectors["ece_pixel_size_mm"])
    bins = reliability_bins(reference_vectors["ece_mode_prob"], correct)
    assert bins.ece_percent == pytest.approx(float(reference_vectors["ece_percent"]), abs=1e-9)
    table = reference_vectors["ece_bin_table"]
    np.testing.assert_array_equal(bins.count, table[:, 1])
    np.testing.assert_allclose(bins.mean_confidence, table[:, 2], rtol=0, atol=1e-9)
    np.testing.assert_allclose(bins.accuracy, table[:, 3], rtol=0, atol=1e-9)
    summary = calibration_summary(reference_vectors["ece_mode_prob"], correct)
    assert summary["ece_percent"] == pytest.approx(float(reference_vectors["ece_percent"]), abs=1e-9)


def test_correct_within_pixel_uses_each_pixel_size():
    errors = np.array([0.3, 0.3, np.nan, 0.0])
    pixel = np.array([[0.5, 0.5], [0.1, 0.1], [1.0, 1.0], [0.1, 0.1]])
    # radius sqrt(0.25 / pi) = 0.282 and sqrt(0.01 / pi) = 0.056
    np.testing.assert_array_equal(correct_within_pixel(errors, pixel), [False, False, False, True])
    assert correct_within_pixel(np.array([0.28]), np.array([[0.5, 0.5]]))[0]


def test_chh_bin_edges():
    edges = chh_bin_edges()
    np.testing.assert_allclose(edges[:-1], np.linspace(0, 0.15, 11)[:-1])
    assert edges[-1] == 1.1 and edges.size == 11


def test_ece_of_hand_built_table_and_empty_bins():
    edges = np.array([0.0, 0.5, 0.8, 1.0])
    confidence = np.array([0.1, 0.3, 0.5, 0.7, 1.0, 1.0])  # 0.5 -> bin 1; 1.0 -> last (closed) bin
    correct = np.array([False, True, True, False, True, False])
    bins = reliability_bins(confidence, correct, edges)
    np.testing.assert_array_equal(bins.count, [2, 2, 2])
    np.testing.assert_allclose(bins.mean_confidence, [0.2, 0.6, 1.0])
    np.testing.assert_allclose(bins.accuracy, [0.5, 0.5, 0.5])
    assert bins.ece_percent == pytest.approx(100 * (2 / 6 * 0.3 + 2 / 6 * 0.1 + 2 / 6 * 0.5))
    assert bins.mce_percent == pytest.approx(50.0)
    empty = reliability_bins(np.array([0.01, 0.012, 0.5]), np.array([True, False, True]))
    assert np.isfinite(empty.ece_percent) and np.isfinite(empty.mce_percent)
    assert np.isnan(empty.accuracy[1]) and empty.count.sum() == 3
    assert empty.ece_percent == pytest.approx(100 * (2 / 3 * abs(0.5 - 0.011) + 1 / 3 * 0.5))


def test_ece_of_calibrated_predictions_is_near_zero():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0, 0.4, 200_000)
    correct = rng.random(confidence.size) < confidence
    summary = calibration_summary(confidence, correct)
    assert summary["ece_percent"] < 1.0 and summary["adaptive_ece_percent"] < 1.0
    over = calibration_summary(confidence, rng.random(confidence.size) < confidence / 2)
    assert over["ece_percent"] > 5.0


def test_adaptive_bins_have_equal_counts_with_ties():
    rng = np.random.default_rng(1)
    confidence = np.round(rng.uniform(0, 0.2, 1003), 2)  # many ties
    correct = rng.random(confidence.size) < 0.3
    bins = adaptive_reliability_bins(confidence, correct, num_bins=10)
    assert bins.count.sum() == 1003 and set(bins.count.tolist()) <= {100, 101}
    assert np.all(np.diff(bins.mean_confidence) >= 0)
    assert np.isfinite(bins.ece_percent)


# --------------------------------------------------------------------------- correlation


def test_binned_pearson_matches_reference_vectors(reference_vectors):
    r = binned_pearson(reference_vectors["corr_ere_mm"], reference_vectors["corr_radial_error_mm"])
    assert r == pytest.approx(float(reference_vectors["corr_binned_pearson"]), abs=1e-9)


def test_binned_pearson_by_hand_and_nan_handling():
    ere = np.array([4.0, 1.0, 3.0, 2.0, 5.0, np.nan])
    error = np.array([40.0, 10.0, 35.0, 20.0, 99.0, 1.0])
    # sorted by ERE: (1, 10), (2, 20) | (3, 35), (4, 40) | (5, 99) dropped
    assert binned_pearson(ere, error, bin_size=2) == pytest.approx(1.0)
    assert math.isnan(binned_pearson(ere, error, bin_size=3))  # one bin only
    assert spearman(ere, error) == pytest.approx(1.0)
    assert spearman(ere, -error) == pytest.approx(-1.0)


def test_binned_means_by_hand():
    ere = np.array([4.0, 1.0, 3.0, 2.0, 5.0, np.nan])
    error = np.array([40.0, 10.0, 35.0, 20.0, 99.0, 1.0])
    ere_means, error_means = binned_means(ere, error, bin_size=2)
    np.testing.assert_allclose(ere_means, [1.5, 3.5])
    np.testing.assert_allclose(error_means, [15.0, 37.5])


def test_the_remainder_is_dropped_or_joins_the_top_bin():
    ere = np.array([4.0, 1.0, 3.0, 2.0, 5.0, np.nan])
    error = np.array([40.0, 10.0, 35.0, 20.0, 99.0, 1.0])
    ere_means, error_means = binned_means(ere, error, bin_size=2, remainder="top")
    np.testing.assert_allclose(ere_means, [1.5, 4.0])  # (3, 4, 5) in the top bin
    np.testing.assert_allclose(error_means, [15.0, (35.0 + 40.0 + 99.0) / 3])
    assert binned_pearson(ere, error, bin_size=2, remainder="top") == pytest.approx(1.0)
    np.testing.assert_allclose(binned_means(ere, error, 5, remainder="top")[0], [3.0])  # no remainder to move
    assert binned_means(ere, error, 6, remainder="top")[0].size == 0  # no full bin
    with pytest.raises(ValueError, match="remainder"):
        binned_means(ere, error, remainder="last")


def test_binned_pearson_without_the_top_bins():
    # Five bins of one pair: four uncorrelated (error 3, 1, 4, 2 for ERE 1..4) and a far top bin.
    ere = np.array([1.0, 2.0, 3.0, 4.0, 50.0])
    error = np.array([3.0, 1.0, 4.0, 2.0, 60.0])
    assert binned_pearson(ere, error, bin_size=1) > 0.99  # the single extreme bin makes r
    assert binned_pearson(ere, error, bin_size=1, drop_top_bins=1) == pytest.approx(
        np.corrcoef([1, 2, 3, 4], [3, 1, 4, 2])[0, 1])  # 0.0 without it
    assert math.isnan(binned_pearson(ere, error, bin_size=1, drop_top_bins=4))  # one bin left
    with pytest.raises(ValueError, match="drop_top_bins"):
        binned_pearson(ere, error, drop_top_bins=-1)


# --------------------------------------------------------------------------- outliers


def test_roc_and_auroc():
    is_outlier = outliers(np.array([1.0, 5.0, 3.0, 4.0, 4.5, np.nan]))
    np.testing.assert_array_equal(is_outlier, [False, True, False, False, True, False])
    scores = np.array([0.1, 0.9, 0.2, 0.3, 0.8, 0.0])
    curve = roc_curve_for(scores, is_outlier)
    assert isinstance(curve, RocCurve) and curve.auroc == 1.0
    assert roc_curve_for(-scores, is_outlier).auroc == 0.0
    assert curve.fpr.shape == curve.tpr.shape == curve.thresholds.shape
    assert math.isnan(roc_curve_for(scores, np.zeros(6, dtype=bool)).auroc)


def test_score_threshold_at_tpr():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    is_outlier = np.array([True, False, True, False, True, True])
    assert score_threshold_at_tpr(scores, is_outlier, 0.5) == 0.7  # 2 of 4 outliers at >= 0.7
    assert score_threshold_at_tpr(scores, is_outlier, 0.25) == 0.9
    assert score_threshold_at_tpr(scores, is_outlier, 1.0) == 0.4
    assert math.isnan(score_threshold_at_tpr(scores, np.zeros(6, dtype=bool)))


def test_split_by_score_uses_the_score_not_the_true_error():
    errors = np.array([1.0, 1.5, 5.0, 6.0, 2.2, np.nan])
    scores = np.array([0.9, 0.1, 0.2, 0.8, 0.05, 0.99])  # flags a good prediction and misses a bad one
    result = split_by_score(scores, errors, threshold=0.5)
    bad, good = result["erroneous_set"], result["good_set"]
    assert bad["count"] == 2 and good["count"] == 3  # by true error (> 4 mm) it would be 2 and 3 too, but:
    assert bad["mre_mm"] == pytest.approx((1.0 + 6.0) / 2)  # by error it would be 5.5
    assert good["mre_mm"] == pytest.approx((1.5 + 5.0 + 2.2) / 3)
    assert good["sdr_percent"] == pytest.approx({"2": 100 / 3, "2.5": 200 / 3, "3": 200 / 3, "4": 200 / 3})
    assert set(bad["sdr_percent"]) == {"2", "2.5", "3", "4"}
    inclusive = split_by_score(scores, errors, 0.5, sdr_thresholds_mm=(1.5,), inclusive=True)
    assert inclusive["good_set"]["sdr_percent"] == pytest.approx({"1.5": 100 / 3})
    empty = split_by_score(scores, errors, threshold=2.0)
    assert empty["erroneous_set"]["count"] == 0 and math.isnan(empty["erroneous_set"]["mre_mm"])


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_mean_and_narrows():
    rng = np.random.default_rng(3)
    sample = rng.normal(5.0, 2.0, 400)
    intervals = []
    for size in (25, 400):
        values = sample[:size]
        low, high = bootstrap_ci(lambda index, v=values: float(v[index].mean()), size, num_resamples=400, seed=1)
        assert low < values.mean() < high
        intervals.append((low, high))
    widths = [high - low for low, high in intervals]
    assert widths[1] < widths[0] / 2.5  # about sqrt(16) = 4 times narrower
    again = bootstrap_ci(lambda index: float(sample[:25][index].mean()), 25, num_resamples=400, seed=1)
    assert again == intervals[0]  # same seed, same interval


def test_bootstrap_ignores_nan_statistics():
    values = np.array([0.0, 1.0, 2.0, 3.0])
    low, high = bootstrap_ci(lambda index: float(values[index].mean()) if 0 in index else float("nan"), 4, 200)
    assert 0.0 <= low <= high <= 3.0
    assert all(math.isnan(v) for v in bootstrap_ci(lambda index: float("nan"), 4, 10))


def test_adaptive_bins_with_fewer_predictions_than_bins_have_no_empty_bin():
    from chh_lib.metrics import adaptive_reliability_bins
    from chh_lib.plots import reliability_diagram

    bins = adaptive_reliability_bins(np.array([0.2, 0.1, 0.4]), np.array([True, False, True]), num_bins=10)
    assert bins.count.tolist() == [1, 1, 1]
    assert np.isfinite(bins.edges).all() and np.isfinite(bins.ece_percent)
    assert bins.ece_percent == pytest.approx(100 * (0.1 + 0.8 + 0.6) / 3)
    figure = reliability_diagram(bins, bins)
    assert all(np.isfinite(ax.get_xlim()).all() for ax in figure.axes)

"""The inspector's significant set is the ERE's (chh_lib.metrics), and small mode probabilities keep their digits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from chh_lib.metrics import expected_radial_error, is_significant, significant_mask
from chh_lib.widgets import HeatmapReading, reading_text, significant_set


def _ere_from_set(heatmap, selected, pixel_size_mm):
    """The ERE's definition, per pixel, over a given set (x = column, y = row; first maximum as the mode)."""
    mode_row, mode_col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    rows, cols = np.nonzero(selected)
    weight = heatmap[rows, cols] / heatmap.max()
    distance = np.hypot((cols - mode_col) * pixel_size_mm[0], (rows - mode_row) * pixel_size_mm[1])
    return float((weight * distance).sum() / weight.sum())


def _maps_with_values_at_the_cutoff(cutoff, seed=0):
    """(M, H, W) float64 maps, many pixels exactly at, just above and just below ``cutoff`` times the maximum."""
    rng = np.random.default_rng(seed)
    maps = rng.gamma(0.3, size=(12, 16, 20))
    for heatmap in maps:
        peak = heatmap.max()
        at = rng.choice(heatmap.size, size=30, replace=False)
        edge = cutoff * peak
        heatmap.flat[at[:10]] = edge
        heatmap.flat[at[10:20]] = np.nextafter(edge, np.inf)
        heatmap.flat[at[20:]] = np.nextafter(edge, -np.inf)
    return maps


@pytest.mark.parametrize("cutoff", [0.05, 0.25, 0.001])
def test_the_inspector_and_the_ere_select_the_same_pixels(cutoff):
    maps = _maps_with_values_at_the_cutoff(cutoff)
    tensor = torch.from_numpy(maps)
    mask = significant_mask(tensor, cutoff).numpy()
    spacing = np.array([0.1, 0.13])
    ere = expected_radial_error(tensor[None], torch.from_numpy(spacing[None]), cutoff)[0].numpy()
    for heatmap, selected, ere_mm in zip(maps, mask, ere):
        inspector = significant_set(heatmap, cutoff)
        np.testing.assert_array_equal(inspector, selected)
        np.testing.assert_array_equal(inspector, heatmap / heatmap.max() > cutoff)  # the rule as stated
        assert 0 < inspector.sum() < heatmap.size
        # adding or dropping any pixel of the boundary would move the ERE by far more than rounding
        assert ere_mm == pytest.approx(_ere_from_set(heatmap, inspector, spacing), rel=1e-12)


def test_the_rule_is_strict_and_empty_for_a_zero_map():
    assert is_significant(torch.tensor([0.25, np.nextafter(0.25, 1.0), 0.2, np.nan]), 0.25).tolist() == [
        False, True, False, False]
    heatmap = np.array([[0.0, 0.1, 0.02], [0.5, 0.3, 0.08]])
    np.testing.assert_array_equal(significant_set(heatmap, 0.2), [[False, False, False], [True, True, False]])
    assert significant_set(heatmap, 0.2).dtype == bool
    assert not significant_set(np.zeros((2, 2)), 0.05).any()
    assert not significant_mask(torch.zeros(3, 2, 2), 0.05).any()


def _reading(mode_prob):
    return HeatmapReading(
        image_index=0, landmark_index=0, image_id="test/001", landmark="Sella", temperature=1.5, ere_cutoff=0.05,
        heatmap=np.zeros((2, 2)), pixel_size_mm=np.array([0.1, 0.1]), prediction_px=np.zeros(2),
        target_px=np.zeros(2), annotators_px=np.zeros((2, 2)), ere_mm=1.25, radial_error_mm=0.5,
        mode_prob=mode_prob, significant_pixels=4, significant_area_mm2=0.04, ere_threshold_mm=None, flagged=None)


@pytest.mark.parametrize(("mode_prob", "shown"), [(0.000123456, "0.000123"), (0.0456789, "0.0457"), (0.5, "0.5"),
                                                  (0.98765, "0.988")])
def test_a_small_mode_probability_is_shown_with_three_significant_digits(mode_prob, shown):
    text = reading_text(_reading(mode_prob), "S")
    assert f"mode probability {shown}, |S| = 4 px" in text

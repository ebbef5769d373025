"""Uncertainty and calibration figures: content, labels, and no global matplotlib state."""
from __future__ import annotations

import io

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

from chh_lib.metrics import ReliabilityBins
from chh_lib.plots import (
    ere_vs_error,
    heatmap_overlay,
    per_landmark_heatmap,
    reliability_diagram,
    roc_curves,
)


@pytest.fixture()
def rc_unchanged():
    """Fail if the test changed ``matplotlib.rcParams``."""
    before = dict(matplotlib.rcParams)
    yield
    assert dict(matplotlib.rcParams) == before


def _chh_bins(ece: float, mce: float, shift: float = 0.0) -> ReliabilityBins:
    """Ten equal bins over [0, 0.15], the last running to 1.1; bins 4 and 8 are empty."""
    edges = np.linspace(0.0, 0.15, 11)
    edges[-1] = 1.1
    count = np.array([120, 300, 410, 380, 0, 150, 90, 40, 0, 25])
    confidence = np.array([0.008, 0.022, 0.037, 0.052, np.nan, 0.083, 0.097, 0.112, np.nan, 0.21])
    accuracy = confidence + shift
    return ReliabilityBins(edges, count, confidence, accuracy, ece, mce)


def _render(figure: Figure) -> None:
    """Draw the figure (small and in memory) so that drawing errors surface too."""
    figure.savefig(io.BytesIO(), format="png", dpi=30)


def _legend_texts(axes) -> list[str]:
    legend = axes.get_legend()
    assert legend is not None
    return [text.get_text() for text in legend.get_texts()]


def _has_unit(label: str) -> bool:
    return "(" in label and label.endswith(")")


def test_reliability_diagram_two_panels(rc_unchanged):
    figure = reliability_diagram(_chh_bins(1.27, 9.0, shift=0.02), _chh_bins(0.41, 2.0, shift=-0.003))
    assert isinstance(figure, Figure)
    _render(figure)
    assert len(figure.axes) == 4  # (reliability, counts) per panel
    before, before_counts, after, after_counts = figure.axes
    assert before.get_title() == "before temperature scaling" and after.get_title() == "after temperature scaling"
    assert any("ECE 1.27 %" in text for text in _legend_texts(before))
    assert any("MCE 9.00 %" in text for text in _legend_texts(before))
    assert any("ECE 0.41 %" in text for text in _legend_texts(after))
    for axes in (before, after):
        assert axes.get_ylabel() == "accuracy (fraction within one pixel's radius)"
        assert "perfect calibration" in _legend_texts(axes)
    for axes in (before_counts, after_counts):
        assert axes.get_xlabel() == "confidence (mode probability)"
        assert _has_unit(axes.get_xlabel()) and axes.get_ylabel()

    filled = 8  # two of the ten bins are empty
    for axes in figure.axes:
        for patch in axes.patches:  # no bar drawn with a NaN position or size
            assert np.isfinite([patch.get_x(), patch.get_y(), patch.get_width(), patch.get_height()]).all()
    assert len(before.containers) == 2 and all(len(bars) == filled for bars in before.containers)
    assert len(before_counts.patches) == filled
    # The accuracy bars span their bins edge to edge and the empty bins are skipped.
    lefts = sorted(round(bar.get_x(), 6) for bar in before.containers[0])
    assert lefts == [round(x, 6) for x in np.delete(np.linspace(0.0, 0.15, 11)[:-1], [4, 8])]
    # The axis ends just past the data (accuracy 0.23 of the wide last bin), not at its edge 1.1.
    low, high = before.get_xlim()
    assert low == 0.0 and 0.23 < high < 0.3
    assert before.get_ylim() == after.get_ylim() == (0.0, high)
    last_bar = max(before.containers[0], key=lambda bar: bar.get_x())
    assert last_bar.get_x() + last_bar.get_width() == pytest.approx(high)


def test_reliability_diagram_single_panel_and_all_empty(rc_unchanged):
    figure = reliability_diagram(_chh_bins(1.27, 9.0))
    assert len(figure.axes) == 2
    edges = np.linspace(0.0, 1.0, 5)
    empty = ReliabilityBins(edges, np.zeros(4, dtype=int), np.full(4, np.nan), np.full(4, np.nan), 0.0, 0.0)
    figure = reliability_diagram(empty)
    assert len(figure.axes[0].patches) == 0 and len(figure.axes[1].patches) == 0
    _render(figure)


def test_ere_vs_error_binned_means(rc_unchanged):
    rng = np.random.default_rng(0)
    ere = rng.lognormal(0.3, 0.5, (20, 19))  # 380 pairs
    error = ere * rng.lognormal(-0.2, 0.7, ere.shape)
    figure = ere_vs_error(ere, error, bin_size=36, binned_r=0.934, spearman_rho=0.412)
    assert len(figure.axes) == 1
    axes = figure.axes[0]
    assert axes.get_xlabel() == "ERE (mm)" and axes.get_ylabel() == "radial error (mm)"
    raw, binned = axes.collections
    assert len(raw.get_offsets()) == 380
    assert len(binned.get_offsets()) == 380 // 36
    # The binned means are the means of consecutive runs of 36 sorted by ERE, the remainder dropped.
    order = np.argsort(ere.ravel())[: 10 * 36].reshape(10, 36)
    np.testing.assert_allclose(binned.get_offsets()[:, 0], ere.ravel()[order].mean(axis=1))
    np.testing.assert_allclose(binned.get_offsets()[:, 1], error.ravel()[order].mean(axis=1))
    texts = " | ".join(_legend_texts(axes))
    assert "r = 0.93" in texts and "0.41" in texts and "n = 380" in texts
    assert axes.get_xscale() == "log" and axes.get_yscale() == "log"
    _render(figure)


def test_ere_vs_error_computes_correlations_and_skips_nan(rc_unchanged):
    ere = np.arange(1.0, 101.0)
    error = ere.copy()
    error[0] = np.nan
    figure = ere_vs_error(ere, 2.0 * error, bin_size=10, log_scale=False)
    axes = figure.axes[0]
    assert len(axes.collections[1].get_offsets()) == 99 // 10
    texts = " | ".join(_legend_texts(axes))
    assert "Pearson r = 1.00" in texts and "\u03c1 (all landmarks) = 1.00" in texts
    assert axes.get_xscale() == "linear" and axes.get_xlim()[0] == 0.0
    _render(figure)


def test_roc_curves_labels_and_operating_point(rc_unchanged):
    x = np.linspace(0.0, 1.0, 30)
    figure = roc_curves(
        {"ERE": (x, x**0.3), "mode probability": (x, x**0.6)},
        {"ERE": 0.85, "mode probability": 0.7},
        {"ERE": (0.80, 0.89)},
        operating_point=(0.12, 0.5),
    )
    assert len(figure.axes) == 1
    axes = figure.axes[0]
    assert axes.get_xlabel() == "false positive rate" and axes.get_ylabel() == "true positive rate"
    texts = _legend_texts(axes)
    assert "ERE: AUROC 0.85 [0.80, 0.89]" in texts
    assert "mode probability: AUROC 0.70" in texts
    assert any("FPR 0.12, TPR 0.50" in text for text in texts)
    assert any("chance" in text for text in texts)
    assert axes.get_aspect() == 1.0
    marker = [line for line in axes.get_lines() if "operating point" in line.get_label()]
    assert len(marker) == 1 and tuple(marker[0].get_xydata()[0]) == (0.12, 0.5)
    _render(figure)


def test_per_landmark_heatmap(rc_unchanged):
    table = pd.DataFrame({
        "abbreviation": ["S", "N", "Or", "Po"],
        "mre_mm": [1.0, 2.0, 3.0, np.nan],
        "ere_mm": [1.5, 1.5, 2.5, 3.5],
        "temperature": [0.9, 1.1, 1.0, 1.2],
    })
    figure = per_landmark_heatmap(table)
    assert len(figure.axes) == 2  # heatmap and its colour bar
    axes = figure.axes[0]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["MRE (mm)", "ERE (mm)", "temperature (unitless)"]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["S", "N", "Or", "Po"]
    shown = [text.get_text() for text in axes.texts]
    assert "3.50" in shown and "0.90" in shown and "nan" not in shown
    # Colour is normalised per column: the largest value of every column maps to 1.
    colours = np.ma.filled(axes.collections[0].get_array(), np.nan).reshape(4, 3)
    np.testing.assert_allclose(np.nanmax(colours, axis=0), 1.0)
    np.testing.assert_allclose(np.nanmin(colours, axis=0), 0.0)
    assert np.isnan(colours[3, 0])
    figure = per_landmark_heatmap(table.drop(columns="abbreviation"), columns=["mre_mm"], labels={"mre_mm": "MRE, mm"})
    assert [label.get_text() for label in figure.axes[0].get_xticklabels()] == ["MRE, mm"]
    _render(figure)


def _overlay_inputs():
    height, width = 60, 80
    rows, cols = np.mgrid[:height, :width]
    heatmap = np.exp(-(((cols - 40) / 3.0) ** 2 + ((rows - 25) / 6.0) ** 2))
    return np.linspace(0.0, 1.0, height * width).reshape(height, width), heatmap / heatmap.sum()


def test_heatmap_overlay_crop_keeps_pixel_coordinates(rc_unchanged):
    image, heatmap = _overlay_inputs()
    figure = heatmap_overlay(image, heatmap, prediction_px=(41.5, 24.0), target_px=(39.0, 26.0),
                             annotators_px=np.array([[38.0, 25.0], [40.0, 27.0], [np.nan, np.nan]]),
                             crop_half_size_px=10)
    assert len(figure.axes) == 2  # image axes and colour bar
    axes, colorbar_axes = figure.axes
    assert axes.get_xlabel() == "x (px)" and axes.get_ylabel() == "y (px)"
    assert colorbar_axes.get_ylabel() == "log10 probability"
    assert axes.get_xlim() == pytest.approx((31.5, 51.5))
    assert axes.get_ylim() == pytest.approx((34.0, 14.0))  # y grows downwards, as in the image
    grey, overlay = axes.images
    left, right, bottom, top = grey.get_extent()
    assert left <= 31.5 and right >= 51.5 and top <= 14.0 and bottom >= 34.0
    # The cropped array is placed so that pixel (col, row) is centred on (x, y) = (col, row).
    shown = grey.get_array()
    assert shown.shape == (round(bottom - top), round(right - left))
    assert shown[0, 0] == image[int(top + 0.5), int(left + 0.5)]
    assert overlay.get_extent() == grey.get_extent()
    peak = np.log10(heatmap.max())
    assert overlay.get_clim() == pytest.approx((peak - 6.0, peak))
    texts = _legend_texts(axes)
    assert texts == ["annotator 1", "annotator 2", "ground truth", "prediction"]
    _render(figure)


def test_heatmap_overlay_crop_on_target_and_linear_scale(rc_unchanged):
    image, heatmap = _overlay_inputs()
    figure = heatmap_overlay(image, heatmap, target_px=(5.0, 4.0), crop_half_size_px=8, log_scale=False)
    axes = figure.axes[0]
    assert axes.get_xlim() == pytest.approx((-3.0, 13.0)) and axes.get_ylim() == pytest.approx((12.0, -4.0))
    assert figure.axes[1].get_ylabel() == "probability"
    figure = heatmap_overlay(image, heatmap)
    assert figure.axes[0].get_xlim() == (-0.5, 79.5) and figure.axes[0].get_ylim() == (59.5, -0.5)
    assert figure.axes[0].get_legend() is None


def test_heatmap_overlay_draws_into_given_axes(rc_unchanged):
    image, heatmap = _overlay_inputs()
    figure = Figure()
    panels = [figure.add_subplot(1, 2, index + 1) for index in range(2)]
    returned = heatmap_overlay(image, heatmap, prediction_px=(40.0, 25.0), crop_half_size_px=5, ax=panels[1],
                               colorbar=False)
    assert returned is figure
    assert len(figure.axes) == 2 and len(panels[0].images) == 0 and len(panels[1].images) == 2
    assert panels[1].get_xlim() == pytest.approx((35.0, 45.0))
    _render(figure)
    subfigure = Figure().subfigures(1, 2)[0]
    axes = subfigure.add_subplot()
    assert heatmap_overlay(image, heatmap, ax=axes) is subfigure.figure


def test_heatmap_overlay_rejects_bad_shapes():
    image, heatmap = _overlay_inputs()
    with pytest.raises(ValueError):
        heatmap_overlay(image, heatmap[:-1])
    with pytest.raises(ValueError):
        heatmap_overlay(image, heatmap, prediction_px=(500.0, 500.0), crop_half_size_px=4)


def test_heatmap_overlay_outlines_the_significant_set(rc_unchanged):
    image, heatmap = _overlay_inputs()
    figure = heatmap_overlay(image, heatmap, prediction_px=(40.0, 25.0), crop_half_size_px=20, colorbar=False,
                             significant_cutoff=0.05)
    axes = figure.axes[0]
    # p / max p = exp(-(dx / 3)^2 - (dy / 6)^2) > 0.05: an ellipse with half-axes 3 sqrt(ln 20) and 6 sqrt(ln 20).
    (outline,) = [c for c in axes.collections if isinstance(c, ContourSet)]
    vertices = np.concatenate([path.vertices for path in outline.get_paths()])
    half_x, half_y = 3 * np.sqrt(np.log(20)), 6 * np.sqrt(np.log(20))
    assert vertices[:, 0].min() == pytest.approx(40 - half_x, abs=0.3)
    assert vertices[:, 0].max() == pytest.approx(40 + half_x, abs=0.3)
    assert vertices[:, 1].min() == pytest.approx(25 - half_y, abs=0.3)
    assert vertices[:, 1].max() == pytest.approx(25 + half_y, abs=0.3)
    assert "significant set S (p > 0.05 max)" in _legend_texts(axes)
    _render(figure)
    with pytest.raises(ValueError, match="cutoff"):
        heatmap_overlay(image, heatmap, significant_cutoff=1.5)

"""Figures for the notebooks and reports.

Every function returns a new :class:`matplotlib.figure.Figure` built with the
object-oriented API; none changes global state such as ``rcParams`` or the
current figure.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from chh_lib.data.dataset import LandmarkDataset
from chh_lib.metrics import ReliabilityBins

if TYPE_CHECKING:  # pandas is only needed by the caller that builds the table
    import pandas


def augmentation_preview(
    dataset: LandmarkDataset, index: int = 0, num_samples: int = 6, first_seed: int = 0, columns: int = 3
) -> Figure:
    """A grid of augmented versions of one image with its landmarks.

    Parameters
    ----------
    dataset : LandmarkDataset
        A data set with an augmenter (see :func:`chh_lib.engine.make_training_dataset`).
    index : int
        The image to show.
    num_samples : int
        Panels; the first shows the image without augmentation.
    first_seed : int
        Epoch of the first augmented panel; panel ``i`` shows epoch ``first_seed + i - 1``.

    Returns
    -------
    Figure
        Axes in pixels of the network grid; ground truth (mean of the annotators) as dots.
    """
    rows = int(np.ceil(num_samples / columns))
    figure = Figure(figsize=(3.2 * columns, 4.0 * rows), layout="constrained")
    augmenter, epoch = dataset.augmenter, dataset.epoch
    try:
        for panel in range(num_samples):
            axes = figure.add_subplot(rows, columns, panel + 1)
            dataset.augmenter = augmenter if panel > 0 else None
            dataset.set_epoch(first_seed + panel - 1)
            item = dataset[index]
            axes.imshow(item["image"][0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
            target = item["target_px"].numpy()
            axes.scatter(target[:, 0], target[:, 1], s=12, c="tab:red", edgecolors="white", linewidths=0.5)
            axes.set_title("original" if panel == 0 else f"augmented (epoch {first_seed + panel - 1})", fontsize=9)
            axes.set_xlabel("x (px)")
            axes.set_ylabel("y (px)")
    finally:
        dataset.augmenter, dataset.epoch = augmenter, epoch
    return figure


# ---------------------------------------------------------------------------
# Uncertainty and calibration figures
# ---------------------------------------------------------------------------

_ACCURACY_COLOUR = "tab:blue"
_GAP_COLOUR = "tab:red"

#: Column labels (with units) used by :func:`per_landmark_heatmap` when the caller gives none.
DEFAULT_COLUMN_LABELS: dict[str, str] = {
    "mre_mm": "MRE (mm)",
    "ere_mm": "ERE (mm)",
    "temperature": "temperature (unitless)",
    "sdr_2mm_percent": "SDR 2 mm (%)",
    "sdr_2_5mm_percent": "SDR 2.5 mm (%)",
    "sdr_3mm_percent": "SDR 3 mm (%)",
    "sdr_4mm_percent": "SDR 4 mm (%)",
    "ece_percent": "ECE (%)",
    "nll": "NLL (nats)",
}


def reliability_diagram(
    before: ReliabilityBins,
    after: ReliabilityBins | None = None,
    titles: tuple[str, str] = ("before temperature scaling", "after temperature scaling"),
) -> Figure:
    """Reliability diagram(s) of the mode probability, side by side, with the counts per bin below.

    Each panel draws, for every non-empty bin, a bar of its accuracy spanning the
    bin from its lower to its upper edge (edge-to-edge bars read best for the
    equal-width bins used here, and show where the bin lies), a red hatched bar
    from the accuracy to the bin's mean confidence (the gap to the diagonal that
    the ECE averages), a black dot at (mean confidence, accuracy), and the
    identity line. Empty bins (count 0, NaN statistics) are not drawn at all.

    The confidence axis is cut where the data end, not at the last edge: the CHH
    bins are ten equal bins over [0, 0.15] whose last one runs to 1.1, and almost
    every mode probability is below 0.15. The right limit (shared by all panels,
    and used for the accuracy axis as well so that the identity line stays at
    45 degrees) is 5 % beyond the largest of: the upper edge of each non-empty
    bin, capped for a wide bin at its lower edge plus the typical (median) bin
    width; each bin's mean confidence; each bin's accuracy. A bin wider than that
    is drawn up to the right edge of the axes, lighter than the others so that it
    does not dominate, and a note gives its true upper edge.

    Parameters
    ----------
    before : ReliabilityBins
        Bins of the uncalibrated model (``edges`` shape (B + 1,), statistics shape (B,)).
    after : ReliabilityBins or None
        Bins after temperature scaling; ``None`` draws a single panel.
    titles : (str, str)
        Panel titles for ``before`` and ``after``.

    Returns
    -------
    Figure
        Two axes per panel, in the order (reliability, counts) for ``before`` then
        ``after``: the reliability axes (confidence and accuracy as fractions in
        [0, 1]; legend with ECE and MCE in percent, two decimals) and below them
        the number of predictions per bin on the same confidence axis.
    """
    panels = [before] if after is None else [before, after]
    limit = max(_reliability_right_end(bins) for bins in panels) * 1.05
    figure = Figure(figsize=(5.4 * len(panels), 6.2), layout="constrained")
    grid = figure.add_gridspec(2, len(panels), height_ratios=(3.2, 1.0))
    first: Axes | None = None
    for column, bins in enumerate(panels):
        axes = figure.add_subplot(grid[0, column], sharex=first, sharey=first)
        counts_axes = figure.add_subplot(grid[1, column], sharex=axes)
        first = first or axes
        _draw_reliability_panel(axes, counts_axes, bins, limit)
        axes.set_title(titles[column] if column < len(titles) else "")
    return figure


def _reliability_right_end(bins: ReliabilityBins) -> float:
    """Where the data of ``bins`` end on the confidence (and accuracy) axis, without margin."""
    edges = np.asarray(bins.edges, dtype=np.float64)
    confidence = np.asarray(bins.mean_confidence, dtype=np.float64)
    accuracy = np.asarray(bins.accuracy, dtype=np.float64)
    filled = _filled_bins(bins)
    if not filled.any():
        return float(min(edges[-1], 1.0))
    widths = np.diff(edges)
    typical_width = float(np.median(widths[np.isfinite(widths)])) if np.isfinite(widths).any() else 0.0
    upper = np.minimum(edges[1:], np.maximum(edges[:-1] + typical_width, confidence))
    return float(max(upper[filled].max(), confidence[filled].max(), accuracy[filled].max()))


def _filled_bins(bins: ReliabilityBins) -> np.ndarray:
    return (
        (np.asarray(bins.count) > 0)
        & np.isfinite(np.asarray(bins.mean_confidence, dtype=np.float64))
        & np.isfinite(np.asarray(bins.accuracy, dtype=np.float64))
    )


def _draw_reliability_panel(axes: Axes, counts_axes: Axes, bins: ReliabilityBins, limit: float) -> None:
    edges = np.asarray(bins.edges, dtype=np.float64)
    filled = _filled_bins(bins)
    left = edges[:-1][filled]
    true_right = edges[1:][filled]
    width = np.minimum(true_right, limit) - left
    confidence = np.asarray(bins.mean_confidence, dtype=np.float64)[filled]
    accuracy = np.asarray(bins.accuracy, dtype=np.float64)[filled]
    count = np.asarray(bins.count)[filled]
    bin_widths = np.diff(edges)
    wide = (true_right - left) > 1.5 * float(np.median(bin_widths))

    accuracy_bars = axes.bar(left, accuracy, width=width, align="edge", color=_ACCURACY_COLOUR, alpha=0.85,
                             edgecolor="white", linewidth=0.8, label="accuracy per bin")
    for bar, is_wide in zip(accuracy_bars, wide):
        if is_wide:  # lighter, so that the wide last bin does not dominate the panel
            bar.set_alpha(0.35)
    axes.bar(left, confidence - accuracy, bottom=accuracy, width=width, align="edge",
             facecolor=(1.0, 0.0, 0.0, 0.15), edgecolor=_GAP_COLOUR, hatch="///", linewidth=0.8,
             label="gap to mean confidence")
    axes.plot(confidence, accuracy, "o", color="black", markersize=3.5, label="(mean confidence, accuracy)")
    axes.plot([0.0, limit], [0.0, limit], linestyle="--", color="0.35", linewidth=1.2, label="perfect calibration")
    handles, _ = axes.get_legend_handles_labels()
    handles.append(Line2D([], [], linestyle="none",
                          label=f"ECE {bins.ece_percent:.2f} %, MCE {bins.mce_percent:.2f} %"))
    axes.legend(handles=handles, loc="best", fontsize=8.5, framealpha=0.9)
    axes.set_xlim(0.0, limit)
    axes.set_ylim(0.0, limit)
    axes.set_ylabel("accuracy (fraction within one pixel's radius)")
    axes.tick_params(labelbottom=False)
    axes.grid(alpha=0.3)

    bars = counts_axes.bar(left, count, width=width, align="edge", color="0.55", edgecolor="white", linewidth=0.8)
    for bar, is_wide in zip(bars, wide):
        if is_wide:
            bar.set_alpha(0.45)
    counts_axes.bar_label(bars, fontsize=7, padding=1)
    counts_axes.set_ylim(0, max(1, int(count.max()) if count.size else 1) * 1.3)
    counts_axes.set_xlabel("confidence (mode probability)")
    counts_axes.set_ylabel("predictions per bin")
    counts_axes.grid(alpha=0.3, axis="y")
    clipped = true_right > limit
    if clipped.any():
        counts_axes.text(0.99, 0.93, f"last bin runs to {true_right[clipped].max():.2f} \u2192",
                         transform=counts_axes.transAxes, ha="right", va="top", fontsize=8, color="0.25")


def ere_vs_error(
    ere_mm: np.ndarray,
    radial_error_mm: np.ndarray,
    bin_size: int = 36,
    binned_r: float | None = None,
    spearman_rho: float | None = None,
    *,
    log_scale: bool = True,
) -> Figure:
    """Expected radial error (ERE) against the radial error actually made.

    Raw (image, landmark) pairs are drawn as small transparent points. The binned
    means are computed as in the CHH paper: pairs are sorted by ERE, cut into
    consecutive bins of ``bin_size``, and the remainder (the ``len % bin_size``
    pairs with the highest ERE) is dropped; each bin gives one large marker at
    (mean ERE, mean radial error). Pairs where either value is NaN are left out
    first. The identity line (radial error = ERE) is drawn for reference.

    By default both axes are logarithmic (same limits on both, so the identity
    line is at 45 degrees): radial errors are heavy-tailed, and on linear axes a
    few gross failures squeeze the bulk of the points into a corner. On log axes
    pairs with a non-positive value cannot be shown; they still count in the bin
    means and the correlations, and the legend says how many were hidden.

    Parameters
    ----------
    ere_mm, radial_error_mm : ndarray, same shape (any, e.g. (N, K))
        ERE and radial error of each (image, landmark) in mm.
    bin_size : int
        Pairs per bin of the binned means.
    binned_r : float or None
        Pearson correlation of the binned means to show; ``None`` computes it here
        from the binned means (NaN with fewer than two bins).
    spearman_rho : float or None
        Spearman rank correlation to show; ``None`` computes it here over all
        raw pairs (ranks with ties averaged).
    log_scale : bool
        Log-log axes (default) or linear axes from 0.

    Returns
    -------
    Figure
        One axes: x "ERE (mm)", y "radial error (mm)"; correlations (two decimals)
        in the legend. The binned means are its second line/collection
        (``axes.collections[1]``, ``len(ere) // bin_size`` points).
    """
    ere = np.asarray(ere_mm, dtype=np.float64).ravel()
    error = np.asarray(radial_error_mm, dtype=np.float64).ravel()
    if ere.shape != error.shape:
        raise ValueError(f"ere_mm ({np.shape(ere_mm)}) and radial_error_mm ({np.shape(radial_error_mm)}) differ in size")
    if bin_size < 1:
        raise ValueError(f"bin_size must be at least 1, got {bin_size}")
    present = np.isfinite(ere) & np.isfinite(error)
    ere, error = ere[present], error[present]
    num_bins = ere.size // bin_size
    order = np.argsort(ere, kind="stable")[: num_bins * bin_size].reshape(num_bins, bin_size)
    binned_ere, binned_error = ere[order].mean(axis=1), error[order].mean(axis=1)
    if binned_r is None:
        binned_r = float(np.corrcoef(binned_ere, binned_error)[0, 1]) if num_bins >= 2 else float("nan")
    if spearman_rho is None:
        spearman_rho = _spearman(ere, error)

    figure = Figure(figsize=(6.4, 7.0), layout="constrained")
    axes = figure.add_subplot()
    shown = (ere > 0) & (error > 0) if log_scale else np.ones(ere.shape, dtype=bool)
    hidden = int(ere.size - shown.sum())
    raw_label = f"landmarks (n = {ere.size})" + (f", {hidden} \u2264 0 not shown" if hidden else "")
    axes.scatter(ere[shown], error[shown], s=5, alpha=0.25, color="tab:blue", edgecolors="none",
                 rasterized=True, label=raw_label)
    axes.scatter(binned_ere, binned_error, s=42, color="tab:orange", edgecolors="black", linewidths=0.7, zorder=3,
                 label=f"means of {bin_size} consecutive by ERE ({num_bins} bins), Pearson r = {binned_r:.2f}")
    axes.plot([], [], linestyle="none", label=f"Spearman \u03c1 (all landmarks) = {spearman_rho:.2f}")

    values = np.concatenate([ere[shown], error[shown]])
    if log_scale:
        axes.set_xscale("log")
        axes.set_yscale("log")
        low, high = (values.min() / 1.4, values.max() * 1.4) if values.size else (0.1, 10.0)
        axes.set_title("log-log axes: radial errors are heavy-tailed", fontsize=10)
    else:
        low, high = 0.0, (values.max() * 1.05 if values.size else 1.0)
    axes.plot([low, high], [low, high], linestyle="--", color="0.35", linewidth=1.2, label="radial error = ERE")
    axes.set_xlim(low, high)
    axes.set_ylim(low, high)
    axes.set_aspect("equal")
    axes.set_xlabel("ERE (mm)")
    axes.set_ylabel("radial error (mm)")
    axes.grid(alpha=0.3, which="major")
    # below the axes: inside, it would hide the pairs of small ERE and large error
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8.5, markerscale=1.5)
    return figure


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2:
        return float("nan")
    rank_a, rank_b = _average_ranks(a), _average_ranks(b)
    if rank_a.std() == 0 or rank_b.std() == 0:
        return float("nan")
    return float(np.corrcoef(rank_a, rank_b)[0, 1])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with tied values given the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    stops = np.r_[starts[1:], values.size]
    for start, stop in zip(starts, stops):
        ranks[order[start:stop]] = (start + stop + 1) / 2.0
    return ranks


def roc_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    auroc: dict[str, float],
    auroc_ci95: dict[str, tuple[float, float]] | None = None,
    operating_point: tuple[float, float] | None = None,
    *,
    operating_label: str = "operating point",
) -> Figure:
    """ROC curves of several uncertainty scores at detecting failed landmarks.

    Parameters
    ----------
    curves : dict
        Score name -> (false positive rate, true positive rate), two ndarrays of
        shape (T,), fractions in [0, 1], in threshold order.
    auroc : dict
        Score name -> area under the curve; shown with two decimals. A name
        missing here is labelled with its name only.
    auroc_ci95 : dict or None
        Score name -> (lower, upper) 95 % confidence interval of the AUROC, shown
        as ``"name: AUROC 0.85 [0.80, 0.89]"``.
    operating_point : (float, float) or None
        (false positive rate, true positive rate) to mark, e.g. the ERE threshold
        that reaches a true positive rate of 0.5.
    operating_label : str
        Legend text before the point's rates.

    Returns
    -------
    Figure
        One square axes, both rates in [0, 1], with the chance diagonal.
    """
    figure = Figure(figsize=(5.8, 5.8), layout="constrained")
    axes = figure.add_subplot()
    for name, (fpr, tpr) in curves.items():
        label = name
        if name in auroc:
            label = f"{name}: AUROC {auroc[name]:.2f}"
            if auroc_ci95 is not None and name in auroc_ci95:
                lower, upper = auroc_ci95[name]
                label += f" [{lower:.2f}, {upper:.2f}]"
        axes.plot(np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64), linewidth=2.0, label=label)
    axes.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="0.5", linewidth=1.0, label="chance (AUROC 0.50)")
    if operating_point is not None:
        fpr_point, tpr_point = operating_point
        axes.plot([fpr_point], [tpr_point], marker="o", markersize=8, linestyle="none", color="black",
                  markerfacecolor="none", markeredgewidth=2.0, zorder=4,
                  label=f"{operating_label} (FPR {fpr_point:.2f}, TPR {tpr_point:.2f})")
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_aspect("equal")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8.5, framealpha=0.9)
    return figure


def per_landmark_heatmap(
    table: pandas.DataFrame,
    columns: Sequence[str] = ("mre_mm", "ere_mm", "temperature"),
    labels: dict[str, str] | None = None,
    *,
    fmt: str = ".2f",
    cmap: str = "rocket_r",
) -> Figure:
    """A table of per-landmark values as a colour-coded, annotated seaborn heatmap.

    Rows are landmarks, labelled by the table's ``abbreviation`` column if it has
    one, else its ``landmark`` column, else its index. Each column is coloured on
    its own scale (its minimum to its maximum over the landmarks), so that values
    in mm and a unitless temperature do not share a colour scale; the cells show
    the raw values. NaN cells are left blank.

    Parameters
    ----------
    table : pandas.DataFrame, shape (K, ...)
        One row per landmark.
    columns : sequence of str
        Columns to show, left to right.
    labels : dict or None
        Column -> header with its unit, e.g. ``{"mre_mm": "MRE (mm)"}``; columns not
        given use :data:`DEFAULT_COLUMN_LABELS`, else a ``_mm`` suffix becomes
        ``(mm)`` and a ``_percent`` suffix ``(%)``.
    fmt : str
        Format of the annotated values.
    cmap : str
        Colour map; the default goes from light (lowest in the column) to dark.

    Returns
    -------
    Figure
        The heatmap axes and its colour-bar axes (normalised value, 0 = column
        minimum, 1 = column maximum).
    """
    import seaborn  # only this figure needs it; importing it changes no global state

    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"table has no column(s) {missing}; it has {list(table.columns)}")
    if "abbreviation" in table.columns:
        row_labels = [str(value) for value in table["abbreviation"]]
    elif "landmark" in table.columns:
        row_labels = [str(value) for value in table["landmark"]]
    else:
        row_labels = [str(value) for value in table.index]
    values = table[list(columns)].to_numpy(dtype=np.float64)
    normalised = np.full(values.shape, np.nan)
    for column in range(values.shape[1]):
        finite = np.isfinite(values[:, column])
        if not finite.any():
            continue
        low, high = values[finite, column].min(), values[finite, column].max()
        span = high - low
        normalised[finite, column] = (values[finite, column] - low) / span if span > 0 else 0.5
    annotations = np.array([[format(value, fmt) if np.isfinite(value) else "" for value in row] for row in values])
    headers = [_column_label(column, labels) for column in columns]

    figure = Figure(figsize=(1.55 * len(columns) + 2.6, 0.34 * len(row_labels) + 1.7), layout="constrained")
    axes = figure.add_subplot()
    seaborn.heatmap(normalised, ax=axes, annot=annotations, fmt="", cmap=cmap, vmin=0.0, vmax=1.0,
                    linewidths=0.6, linecolor="white", xticklabels=headers, yticklabels=row_labels,
                    annot_kws={"fontsize": 8.5},
                    cbar_kws={"label": "colour: within-column scale (0 = min, 1 = max)", "shrink": 0.8})
    axes.set_ylabel("landmark")
    axes.set_xlabel("")
    axes.xaxis.tick_top()
    axes.tick_params(axis="x", rotation=0, length=0)
    axes.tick_params(axis="y", rotation=0, length=0)
    return figure


def _column_label(column: str, labels: dict[str, str] | None) -> str:
    if labels and column in labels:
        return labels[column]
    if column in DEFAULT_COLUMN_LABELS:
        return DEFAULT_COLUMN_LABELS[column]
    if column.endswith("_mm"):
        return f"{column[:-3].replace('_', ' ')} (mm)"
    if column.endswith("_percent"):
        return f"{column[:-8].replace('_', ' ')} (%)"
    return column.replace("_", " ")


def heatmap_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    prediction_px: np.ndarray | Sequence[float] | None = None,
    target_px: np.ndarray | Sequence[float] | None = None,
    annotators_px: np.ndarray | None = None,
    crop_half_size_px: int | None = None,
    log_scale: bool = True,
    ax: Axes | None = None,
    *,
    floor_fraction: float = 1e-6,
    colorbar: bool = True,
    title: str | None = None,
    significant_cutoff: float | None = None,
) -> Figure:
    """A predicted heatmap over its grey image, with prediction, ground truth and annotators.

    The heatmap is drawn with ``inferno`` and a per-pixel opacity that grows with
    the shown value (0 at the floor, 0.8 at the maximum), so the image stays
    visible where the probability is negligible. With ``log_scale`` the values are
    ``log10(max(p, floor_fraction * max p))``, which shows the contour-hugging
    shape of the tails; otherwise the raw probabilities from 0 to their maximum.

    Coordinates are pixels of ``image`` with pixel centres at integers (matplotlib's
    ``imshow`` convention): the crop shows only the pixels it needs but draws
    them with their true extent, so ticks and markers keep full-image coordinates.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Grey image, any range (shown from its minimum to its maximum).
    heatmap : ndarray, shape (H, W)
        Probabilities (or any non-negative scores) on the same grid.
    prediction_px, target_px : array-like, shape (2,), or None
        (x, y) in pixels; NaN or ``None`` draws nothing.
    annotators_px : ndarray, shape (A, 2), or None
        (x, y) of each annotator; rows with NaN are skipped.
    crop_half_size_px : int or None
        Show the square ``[c - h, c + h]`` in x and y around ``c``, the prediction,
        else the target, else the heatmap's maximum; the window stays centred (it
        may extend beyond the image, shown blank). ``None`` shows the whole image.
    log_scale : bool
        Log10 colour scale with a floor, or linear probability.
    ax : Axes or None
        Draw into these axes (and add the colour bar beside them) and return their
        figure; ``None`` creates a new Figure.
    floor_fraction : float
        Floor of the log scale as a fraction of the heatmap's maximum.
    colorbar : bool
        Add a colour bar ("log10 probability" or "probability").
    title : str or None
        Axes title.
    significant_cutoff : float or None
        When given, outline (white) the significant set ``S = {i : p(i) / max p > c}``
        of the expected radial error, here the contour of ``p / max p`` at level ``c``
        through the pixel centres. ``None`` draws no outline.

    Returns
    -------
    Figure
        A new figure (axes and colour bar) or the figure that holds ``ax``.
    """
    image = np.asarray(image, dtype=np.float64)
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if image.ndim != 2 or heatmap.shape != image.shape:
        raise ValueError(f"image {image.shape} and heatmap {heatmap.shape} must both be (H, W)")
    height, width = image.shape
    if ax is None:
        figure = Figure(figsize=(6.4, 5.6), layout="constrained")
        axes = figure.add_subplot()
    else:
        axes = ax
        figure = _root_figure(axes)

    peak = float(np.nanmax(heatmap)) if np.isfinite(heatmap).any() else 0.0
    if log_scale:
        floor = floor_fraction * peak if peak > 0 else floor_fraction
        shown = np.log10(np.maximum(np.nan_to_num(heatmap, nan=0.0), floor))
        vmin, vmax = float(np.log10(floor)), float(np.log10(max(peak, floor)))
        colour_label = "log10 probability"
    else:
        shown = np.nan_to_num(heatmap, nan=0.0)
        vmin, vmax = 0.0, peak
        colour_label = "probability"
    span = vmax - vmin if vmax > vmin else 1.0
    opacity = 0.8 * np.clip((shown - vmin) / span, 0.0, 1.0)

    prediction = _point_or_none(prediction_px)
    target = _point_or_none(target_px)
    if crop_half_size_px is None:
        x_limits, y_limits = (-0.5, width - 0.5), (height - 0.5, -0.5)
        rows, cols = slice(0, height), slice(0, width)
    else:
        if prediction is not None:
            centre = prediction
        elif target is not None:
            centre = target
        else:
            row, col = np.unravel_index(int(np.argmax(np.nan_to_num(heatmap, nan=-np.inf))), heatmap.shape)
            centre = np.array([float(col), float(row)])
        half = float(crop_half_size_px)
        x_limits = (centre[0] - half, centre[0] + half)
        y_limits = (centre[1] + half, centre[1] - half)
        col0, col1 = max(0, int(np.floor(x_limits[0]))), min(width, int(np.ceil(x_limits[1])) + 1)
        row0, row1 = max(0, int(np.floor(y_limits[1]))), min(height, int(np.ceil(y_limits[0])) + 1)
        if col0 >= col1 or row0 >= row1:
            raise ValueError(f"the crop around {tuple(centre)} lies outside the {width} x {height} image")
        rows, cols = slice(row0, row1), slice(col0, col1)
    extent = (cols.start - 0.5, cols.stop - 0.5, rows.stop - 0.5, rows.start - 0.5)

    finite_image = image[np.isfinite(image)]
    grey_range = (float(finite_image.min()), float(finite_image.max())) if finite_image.size else (0.0, 1.0)
    axes.imshow(image[rows, cols], cmap="gray", vmin=grey_range[0], vmax=grey_range[1], extent=extent,
                interpolation="nearest")
    overlay = axes.imshow(shown[rows, cols], cmap="inferno", vmin=vmin, vmax=vmax, alpha=opacity[rows, cols],
                          extent=extent, interpolation="nearest")
    if significant_cutoff is not None and peak > 0:
        _outline_significant_set(axes, np.nan_to_num(heatmap, nan=0.0) / peak, significant_cutoff, rows, cols)

    if annotators_px is not None:
        annotators = np.asarray(annotators_px, dtype=np.float64).reshape(-1, 2)
        for number, point in enumerate(annotators):
            if np.isfinite(point).all():
                axes.scatter([point[0]], [point[1]], s=36, marker="^v<>sD"[number % 6], color="tab:cyan",
                             edgecolors="black", linewidths=0.6, zorder=3, label=f"annotator {number + 1}")
    if target is not None:
        axes.scatter([target[0]], [target[1]], s=110, marker="o", facecolors="none", edgecolors="lime",
                     linewidths=2.0, zorder=4, label="ground truth")
    if prediction is not None:
        axes.scatter([prediction[0]], [prediction[1]], s=80, marker="x", color="red", linewidths=2.2, zorder=5,
                     label="prediction")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(loc="upper right", fontsize=8, framealpha=0.85)

    axes.set_xlim(*x_limits)
    axes.set_ylim(*y_limits)
    axes.set_xlabel("x (px)")
    axes.set_ylabel("y (px)")
    if title is not None:
        axes.set_title(title, fontsize=10)
    if colorbar:
        axes.get_figure().colorbar(overlay, ax=axes, label=colour_label, shrink=0.85)
    return figure


def _outline_significant_set(axes: Axes, normalised: np.ndarray, cutoff: float, rows: slice, cols: slice) -> None:
    """Outline ``normalised > cutoff`` (shape (H, W), values in [0, 1]) on the shown window, with a legend entry."""
    if not 0 < cutoff < 1:
        raise ValueError(f"the significant cutoff must lie in (0, 1), got {cutoff}")
    window = np.pad(normalised[rows, cols], 1)  # zeros around: a set touching the window's edge is closed
    ys = np.arange(rows.start - 1, rows.stop + 1, dtype=np.float64)
    xs = np.arange(cols.start - 1, cols.stop + 1, dtype=np.float64)
    if window.max() > cutoff:
        axes.contour(xs, ys, window, levels=[cutoff], colors="white", linewidths=1.0, zorder=2)
    axes.plot([], [], color="white", linewidth=1.0, label=f"significant set S (p > {cutoff:g} max)")


def _point_or_none(point: np.ndarray | Sequence[float] | None) -> np.ndarray | None:
    if point is None:
        return None
    point = np.asarray(point, dtype=np.float64).reshape(-1)
    if point.shape != (2,):
        raise ValueError(f"a point must be (x, y), got shape {point.shape}")
    return point if np.isfinite(point).all() else None


def _root_figure(axes: Axes) -> Figure:
    figure = axes.get_figure()
    while not isinstance(figure, Figure):  # a SubFigure: walk up to the figure that holds it
        figure = figure.figure
    return figure


def learning_curves(
    history: pandas.DataFrame,
    uniform_loss: float | None = None,
    loss_label: str = "NLL (nats)",
    ax: Axes | None = None,
    reference_label: str = "uniform heatmap",
) -> Figure:
    r"""The training loss per epoch, the held-out loss beside it when recorded, and the learning rate.

    Parameters
    ----------
    history : DataFrame
        One row per epoch with ``epoch``, ``loss`` and ``lr``, and optionally ``held_out_loss``
        (as :func:`chh_lib.workflow.training_history` returns it).
    uniform_loss : float, optional
        Drawn as a dashed line: the loss of a uniform heatmap, :math:`\log HW` for the NLL.
    loss_label : str
        Label of the loss axis.
    ax : Axes, optional
        Where to draw (its figure is returned); a new figure otherwise.
    reference_label : str
        Legend entry of the dashed line (followed by its value).

    Returns
    -------
    Figure
        Loss on the left axis (from 0), learning rate on a logarithmic right axis.
    """
    if ax is None:
        figure = Figure(figsize=(7.5, 4), layout="constrained")
        ax = figure.add_subplot()
    else:
        figure = _root_figure(ax)
    epochs = np.asarray(history["epoch"], dtype=np.float64)
    ax.plot(epochs, np.asarray(history["loss"], dtype=np.float64), marker="o", markersize=3, color="tab:blue",
            label="training")
    if "held_out_loss" in history and np.isfinite(np.asarray(history["held_out_loss"], dtype=np.float64)).any():
        ax.plot(epochs, np.asarray(history["held_out_loss"], dtype=np.float64), marker="s", markersize=3,
                color="tab:red", label="held-out")
    if uniform_loss is not None:
        ax.axhline(uniform_loss, color="grey", linestyle="--", linewidth=1, label=f"{reference_label} ({uniform_loss:.2f})")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(loss_label)
    ax.set_ylim(bottom=0)
    lr_axes = ax.twinx()
    lr_axes.step(epochs, np.asarray(history["lr"], dtype=np.float64), where="mid", color="tab:orange", linewidth=1,
                 label="learning rate")
    lr_axes.set_yscale("log")
    lr_axes.set_ylabel("learning rate")
    handles = ax.get_legend_handles_labels()[0] + lr_axes.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="best", fontsize=8)
    return figure

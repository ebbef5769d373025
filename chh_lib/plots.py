"""Figures for the notebooks and reports.

Every function returns a new :class:`matplotlib.figure.Figure` built with the
object-oriented API; none changes global state such as ``rcParams`` or the
current figure.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from chh_lib.data.dataset import LandmarkDataset


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

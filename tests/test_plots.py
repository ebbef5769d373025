"""Figures are built without touching global matplotlib state."""
from __future__ import annotations

import matplotlib
import numpy as np
from helpers import make_tiny_isbi

from chh_lib.config import profile_config
from chh_lib.data.formats import read_landmark_data
from chh_lib.engine import make_training_dataset
from chh_lib.plots import augmentation_preview


def test_augmentation_preview(tmp_path):
    make_tiny_isbi(tmp_path, images_per_split=2, size=(64, 80))
    config = profile_config("cpu")
    config.data.image_size = (64, 80)
    dataset = make_training_dataset(config, read_landmark_data(tmp_path).split("train"), None)
    rc_before = dict(matplotlib.rcParams)
    figure = augmentation_preview(dataset, index=1, num_samples=4, columns=2)
    assert dict(matplotlib.rcParams) == rc_before
    assert len(figure.axes) == 4
    assert all(ax.get_xlabel() == "x (px)" for ax in figure.axes)
    shown = [ax.images[0].get_array() for ax in figure.axes]
    assert not np.array_equal(shown[0], shown[1]) and not np.array_equal(shown[1], shown[2])
    assert dataset.augmenter is not None and dataset.epoch == 0


def test_learning_curves_draws_both_losses_and_the_learning_rate():
    import pandas as pd

    from chh_lib.plots import learning_curves

    history = pd.DataFrame({"epoch": [1, 2, 3], "loss": [8.0, 6.0, 5.0], "held_out_loss": [8.5, 7.0, 6.5],
                            "lr": [1e-3, 1e-3, 1e-4]})
    rc_before = dict(matplotlib.rcParams)
    figure = learning_curves(history, uniform_loss=8.5)
    assert dict(matplotlib.rcParams) == rc_before
    loss_axes, lr_axes = figure.axes
    assert [line.get_label() for line in loss_axes.lines] == ["training", "held-out", "uniform heatmap (8.50)"]
    np.testing.assert_array_equal(loss_axes.lines[1].get_ydata(), [8.5, 7.0, 6.5])
    assert loss_axes.lines[2].get_ydata()[0] == 8.5  # the uniform heatmap's loss
    assert loss_axes.get_xlabel() == "epoch" and loss_axes.get_ylabel() == "NLL (nats)"
    assert lr_axes.get_yscale() == "log" and lr_axes.get_ylabel() == "learning rate"
    assert [t.get_text() for t in loss_axes.get_legend().get_texts()] == [
        "training", "held-out", "uniform heatmap (8.50)", "learning rate"]
    # no held-out column: one loss curve only
    only_training = learning_curves(history.drop(columns="held_out_loss"), 12.57, "MSE", reference_label="zero output")
    assert [line.get_label() for line in only_training.axes[0].lines] == ["training", "zero output (12.57)"]
    assert only_training.axes[0].get_ylabel() == "MSE"

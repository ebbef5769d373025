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

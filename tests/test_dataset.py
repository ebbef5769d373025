"""LandmarkDataset: padding, resizing, targets, missing landmarks and the cache."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_tiny_isbi

from chh_lib.data.dataset import LandmarkDataset, pad_and_resize, resize_geometry
from chh_lib.data.formats import ImageRecord, read_landmark_data, write_isbi_case
from chh_lib.errors import DataFormatError
from chh_lib.heatmaps import MISSING_INDEX


def test_geometry_pads_bottom_for_a_wide_image_like_isbi():
    geometry = resize_geometry((1935, 2400), (640, 800))
    assert geometry.padded_size == (1935, 2419)
    pixel_size_mm = 0.1 / geometry.scale
    assert pixel_size_mm[0] == pytest.approx(0.1 * 1935 / 640)  # the authors' 0.30234 mm
    assert pixel_size_mm[1] == pytest.approx(0.1 * 2419 / 800)


def test_geometry_pads_right_for_a_tall_image():
    geometry = resize_geometry((50, 100), (40, 50))
    assert geometry.padded_size == (80, 100)
    np.testing.assert_allclose(geometry.scale, [0.5, 0.5])


def test_points_follow_the_image_through_pad_and_resize():
    image = np.zeros((100, 50), dtype=np.uint8)
    image[60:64, 20:24] = 255  # a 4x4 block centred at (21.5, 61.5)
    geometry = resize_geometry((50, 100), (40, 50))
    resized = pad_and_resize(image, geometry)
    assert resized.shape == (50, 40)
    rows, cols = np.nonzero(resized > 200)
    centre = np.array([cols.mean(), rows.mean()])
    np.testing.assert_allclose(geometry.to_target_px(np.array([21.5, 61.5])), centre, atol=1e-9)
    np.testing.assert_allclose(geometry.to_source_px(geometry.to_target_px([[3.0, 7.0]])), [[3.0, 7.0]])


def test_points_outside_the_image_become_missing_not_clipped():
    geometry = resize_geometry((50, 100), (40, 50))
    moved = geometry.to_target_px(np.array([[-3.0, 10.0], [10.0, 120.0], [49.4, 99.4], [60.0, 10.0]]))
    assert np.isnan(moved[0]).all() and np.isnan(moved[1]).all() and np.isnan(moved[3]).all()
    assert np.isfinite(moved[2]).all()


def test_dataset_items(tmp_path):
    annotations = make_tiny_isbi(tmp_path, images_per_split=2, size=(40, 50))
    data = read_landmark_data(tmp_path)
    dataset = LandmarkDataset(data.split("train"), (32, 40), cache_dir=tmp_path / "cache")
    item = dataset[1]
    assert item["image"].shape == (1, 40, 32) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    expected = (annotations["TrainingData/002"].mean(axis=0) + 0.5) * 0.8 - 0.5
    np.testing.assert_allclose(item["target_px"].numpy(), expected, atol=1e-5)
    rounded = np.round(expected)
    np.testing.assert_array_equal(item["target_index"].numpy(), rounded[:, 1] * 32 + rounded[:, 0])
    np.testing.assert_allclose(item["pixel_size_mm"].numpy(), [0.125, 0.125])
    assert item["annotations_px"].shape == (2, 19, 2)


def test_landmark_outside_image_is_missing_in_target_and_index(tmp_path):
    image = np.zeros((50, 40), dtype=np.uint8)
    points = np.full((2, 19, 2), 10.0)
    points[:, 3] = (45.0, 10.0)  # x beyond the 40-px width
    write_isbi_case(tmp_path, "TrainingData", "001", image, points)
    record = ImageRecord("TrainingData/001", tmp_path / "RawImage/TrainingData/001.bmp", points, (0.1, 0.1))
    item = LandmarkDataset([record], (32, 40))[0]
    assert torch.isnan(item["target_px"][3]).all()
    assert item["target_index"][3].item() == MISSING_INDEX
    assert (item["target_index"][[0, 1, 2, 4]] >= 0).all()


def test_cache_is_reused_and_matches_a_fresh_resize(tmp_path):
    make_tiny_isbi(tmp_path, images_per_split=1)
    data = read_landmark_data(tmp_path)
    dataset = LandmarkDataset(data.split("train"), (32, 40), cache_dir=tmp_path / "cache")
    first = dataset.load_resized(0)
    cached = list((tmp_path / "cache").rglob("*.npy"))
    assert len(cached) == 1
    again = LandmarkDataset(data.split("train"), (32, 40), cache_dir=tmp_path / "cache").load_resized(0)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, LandmarkDataset(data.split("train"), (32, 40)).load_resized(0))


def test_corrupt_image_is_named_and_cache_untouched(tmp_path):
    make_tiny_isbi(tmp_path, images_per_split=2)
    data = read_landmark_data(tmp_path)
    dataset = LandmarkDataset(data.split("train"), (32, 40), cache_dir=tmp_path / "cache")
    dataset.load_resized(0)
    before = {p: p.read_bytes() for p in (tmp_path / "cache").rglob("*.npy")}
    bad = tmp_path / "RawImage" / "TrainingData" / "002.bmp"
    header = bad.read_bytes()[:100]
    bad.write_bytes(header)
    with pytest.raises(DataFormatError, match="002.bmp"):
        LandmarkDataset(data.split("train"), (32, 40), cache_dir=tmp_path / "cache").load_resized(1)
    assert {p: p.read_bytes() for p in (tmp_path / "cache").rglob("*.npy")} == before


def test_empty_record_list_is_refused():
    with pytest.raises(DataFormatError, match="empty"):
        LandmarkDataset([], (32, 40))

"""ISBI 2015 layout: reading back what was written, and refusing bad input clearly."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import make_tiny_descriptor, make_tiny_isbi

from chh_lib.data.formats import (
    parse_isbi_annotation,
    read_image,
    read_isbi_annotation,
    read_landmark_data,
)
from chh_lib.errors import DataFormatError
from chh_lib.landmarks import ISBI_2015


def test_isbi_layout_reads_back_exactly(tmp_path):
    written = make_tiny_isbi(tmp_path, images_per_split=2)
    data = read_landmark_data(tmp_path)
    assert data.landmarks == ISBI_2015
    assert data.annotators == ("400_senior", "400_junior")
    assert {name: len(records) for name, records in data.splits.items()} == {
        "train": 2, "calibration": 0, "test": 2, "test2": 2}
    for records in data.splits.values():
        for record in records:
            np.testing.assert_allclose(record.annotations_px, written[record.image_id], atol=1e-9)
            assert record.pixel_size_mm == (0.1, 0.1)
    assert [r.image_id for r in data.split("train")] == ["TrainingData/001", "TrainingData/002"]


def test_descriptor_sets_landmarks_and_spacing(tmp_path):
    make_tiny_isbi(tmp_path, num_landmarks=5)
    make_tiny_descriptor(tmp_path, num_landmarks=5, pixel_size_mm=0.25)
    data = read_landmark_data(tmp_path)
    assert data.landmarks.names == ("L0", "L1", "L2", "L3", "L4")
    assert data.split("test")[0].pixel_size_mm == (0.25, 0.25)
    assert data.split("test")[0].annotations_px.shape == (2, 5, 2)


def test_image_round_trip_is_exact(tmp_path):
    make_tiny_isbi(tmp_path, images_per_split=1, size=(13, 9))
    image = read_image(tmp_path / "RawImage" / "TrainingData" / "001.bmp")
    assert image.shape == (9, 13) and image.dtype == np.uint8


def test_missing_data_directory(tmp_path):
    with pytest.raises(DataFormatError, match="nowhere: data directory not found"):
        read_landmark_data(tmp_path / "nowhere")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a readable image"),
    ],
)
def test_bad_image_files(tmp_path, content, message):
    path = tmp_path / "bad.bmp"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=f"bad.bmp: .*{message}"):
        read_image(path)


def test_truncated_image(tmp_path):
    make_tiny_isbi(tmp_path, images_per_split=1)
    path = tmp_path / "RawImage" / "TrainingData" / "001.bmp"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataFormatError, match="001.bmp: not a readable image"):
        read_image(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,2\n" * 18, "expected at least 19 'x,y' lines, found 18"),
        ("1,2\n" * 5 + "a,b\n" + "1,2\n" * 13, "line 6 is not numeric"),
        ("1,2\n" * 3 + "nan,2\n" + "1,2\n" * 15, "line 4 holds a non-finite value"),
        ("1,2\n" * 2 + "1;2\n" + "1,2\n" * 16, "line 3 is not 'x,y'"),
    ],
)
def test_bad_annotation_files(tmp_path, text, message):
    path = tmp_path / "042.txt"
    path.write_text(text)
    with pytest.raises(DataFormatError, match=f"042.txt: {message}"):
        read_isbi_annotation(path)


def test_extra_lines_are_ignored():
    points = parse_isbi_annotation("1,2\n3.5, 4.25\n7\n8\n", 2, "x.txt")
    np.testing.assert_array_equal(points, [[1.0, 2.0], [3.5, 4.25]])


def test_annotation_missing_for_one_annotator(tmp_path):
    make_tiny_isbi(tmp_path, images_per_split=1)
    (tmp_path / "AnnotationsByMD" / "400_junior" / "002.txt").unlink()
    with pytest.raises(DataFormatError, match="400_junior/002.txt"):
        read_landmark_data(tmp_path)


def test_short_annotation_in_a_data_set_names_the_file(tmp_path):
    make_tiny_isbi(tmp_path, images_per_split=1)
    (tmp_path / "AnnotationsByMD" / "400_senior" / "003.txt").write_text("1,2\n" * 18)
    with pytest.raises(DataFormatError, match="400_senior/003.txt: expected at least 19"):
        read_landmark_data(tmp_path)


def test_empty_split_is_refused_when_used(tmp_path):
    make_tiny_isbi(tmp_path, images_per_split=1)
    for path in (tmp_path / "RawImage" / "Test2Data").iterdir():
        path.unlink()
    data = read_landmark_data(tmp_path)
    with pytest.raises(DataFormatError, match="split 'test2' is empty"):
        data.split("test2")
    with pytest.raises(DataFormatError, match="no split named 'validation'"):
        data.split("validation")

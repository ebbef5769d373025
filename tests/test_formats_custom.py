"""labelme and CSV data sets, ISBI protocols, and their bad-input errors (with fuzzing)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_tiny_csv, make_tiny_isbi, make_tiny_labelme, write_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chh_lib.config import load_yaml, save_yaml
from chh_lib.data.formats import (
    ProblemLog,
    parse_isbi_annotation,
    parse_labelme,
    parse_landmark_csv,
    read_image,
    read_landmark_data,
)
from chh_lib.errors import DataFormatError

LABELS = {"a": 0, "b": 1, "c": 2}


# ---------------------------------------------------------------- labelme


def test_labelme_reads_back_exactly(tmp_path):
    truth = make_tiny_labelme(tmp_path)
    data = read_landmark_data(tmp_path)
    assert data.format == "labelme" and data.annotators == ("senior", "junior")
    assert data.landmarks.names == ("alpha point", "beta point", "gamma point")
    assert [r.image_id for r in data.split("train")] == ["case00.tif", "case01.png", "case02.png", "case03.tif"]
    assert [r.image_id for r in data.split("test")] == ["case04.png", "case05.png"]
    for record in data.split("train") + data.split("test"):
        np.testing.assert_allclose(record.annotations_px, truth[record.image_id], atol=1e-9, equal_nan=True)
    assert data.split("train")[1].pixel_size_mm == (0.4, 0.6)
    assert data.split("train")[0].pixel_size_mm == (0.5, 0.5)
    assert np.isnan(data.split("train")[2].annotations_px[1, 2]).all()


def test_labelme_images_of_every_depth_read_as_grey(tmp_path):
    make_tiny_labelme(tmp_path)
    assert read_image(tmp_path / "images" / "case01.png").dtype == np.uint8  # RGB -> grey
    assert read_image(tmp_path / "images" / "case02.png").dtype == np.uint16  # 16-bit stays 16-bit
    assert read_image(tmp_path / "images" / "case00.tif").shape == (60, 48)


def _edit_labelme(tmp_path, edit):
    path = tmp_path / "labelme" / "junior" / "case01.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["shapes"].append(dict(d["shapes"][0])), "label 'a' appears more than once"),
        (lambda d: d["shapes"][0].update(label="zz"), "label 'zz' is not a landmark"),
        (lambda d: d["shapes"][1].update(shape_type="polygon"), "is a 'polygon', not a point"),
        (lambda d: d.update(imagePath="other.png"), "imagePath 'other.png' does not match"),
        (lambda d: d.update(imageWidth=99), "image size 99x60 in the file, but the image is 48x60"),
        (lambda d: d["shapes"][0].update(points=[["x", 1]]), "not one pair of finite numbers"),
    ],
)
def test_labelme_problems_name_the_file(tmp_path, edit, message):
    make_tiny_labelme(tmp_path)
    path = _edit_labelme(tmp_path, edit)
    with pytest.raises(DataFormatError, match=message) as raised:
        read_landmark_data(tmp_path)
    assert str(path) in str(raised.value)


def test_labelme_problem_can_be_collected_and_the_image_skipped(tmp_path):
    make_tiny_labelme(tmp_path)
    _edit_labelme(tmp_path, lambda d: d["shapes"].append(dict(d["shapes"][0])))
    log = ProblemLog(collect=True)
    data = read_landmark_data(tmp_path, log=log)
    assert len(log.problems) == 2  # the duplicated label, then the split naming the skipped image
    assert "case01.png" not in [r.image_id for r in data.split("train")]


def test_annotators_disagreeing_on_the_image_list(tmp_path):
    make_tiny_labelme(tmp_path)
    (tmp_path / "labelme" / "junior" / "case03.json").unlink()
    with pytest.raises(DataFormatError, match=r"case03.tif: not annotated by every annotator; missing junior"):
        read_landmark_data(tmp_path)


def test_descriptor_naming_a_missing_folder(tmp_path):
    make_tiny_labelme(tmp_path)
    descriptor = load_yaml(tmp_path / "dataset.yaml")
    descriptor["annotators"]["junior"] = "labelme/nobody"
    save_yaml(descriptor, tmp_path / "dataset.yaml")
    with pytest.raises(DataFormatError, match="labelme/nobody: folder of annotator 'junior' not found"):
        read_landmark_data(tmp_path)


def test_an_image_in_two_splits_is_refused(tmp_path):
    make_tiny_labelme(tmp_path)
    descriptor = load_yaml(tmp_path / "dataset.yaml")
    descriptor["splits"]["test"].append("case00.tif")
    save_yaml(descriptor, tmp_path / "dataset.yaml")
    with pytest.raises(DataFormatError, match="'case00.tif' is in splits 'train' and 'test'"):
        read_landmark_data(tmp_path)


# ---------------------------------------------------------------- CSV


def test_csv_reads_back_exactly_with_seeded_fraction_splits(tmp_path):
    truth = make_tiny_csv(tmp_path)
    data = read_landmark_data(tmp_path)
    assert data.format == "csv" and data.annotators == ("senior", "junior")
    sizes = {name: len(records) for name, records in data.splits.items()}
    assert sizes == {"train": 6, "calibration": 2, "test": 2}
    ids = [r.image_id for records in data.splits.values() for r in records]
    assert sorted(ids) == sorted(truth)
    for records in data.splits.values():
        for record in records:
            np.testing.assert_allclose(record.annotations_px, truth[record.image_id], atol=1e-9, equal_nan=True)
            assert record.pixel_size_mm == (0.2, 0.25)
    again = read_landmark_data(tmp_path)
    assert [r.image_id for r in again.split("test")] == [r.image_id for r in data.split("test")]


def test_csv_without_annotator_column_has_one_annotator(tmp_path):
    write_image(tmp_path / "images" / "x.png", np.zeros((10, 12), np.uint8))
    (tmp_path / "annotations.csv").write_text("image,P_x,P_y\nx.png,3.5,4\n")
    save_yaml({"format": "csv", "landmarks": ["P"], "pixel_size_mm": 1.0,
               "splits": {"train": ["x.png"]}}, tmp_path / "dataset.yaml")
    data = read_landmark_data(tmp_path)
    assert data.annotators == ("default",)
    np.testing.assert_array_equal(data.split("train")[0].annotations_px, [[[3.5, 4.0]]])


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,L1_x,L1_y\n", "no 'image' column"),
        ("image,L9_x,L9_y\n", "column 'L9_x' is not"),
        ("image,L1_x\n", "landmark .L1. has an _x or _y column but not both"),
        ("image,L1_x,L1_y\na.png,1,oops\n", "line 2, column 'L1_y' is not numeric"),
        ("image,L1_x,L1_y\na.png,1,nan\n", "line 2, column 'L1_y' is not finite"),
        ("image,L1_x,L1_y\na.png,1\n", "line 2 has 2 fields, the header 3"),
        ("image,L1_x,L1_y\na.png,1,2\na.png,3,4\n", "line 3 repeats image 'a.png'"),
        ("image,L1_x,L1_y\na.png,1,\n", "line 2 gives only x or only y"),
    ],
)
def test_csv_problems(text, message):
    with pytest.raises(DataFormatError, match=f"lm.csv: {message}"):
        parse_landmark_csv(text, {"L1": 0}, 1, "lm.csv")


# ---------------------------------------------------------------- ISBI protocols


def test_isbi_protocols(tmp_path):
    make_tiny_isbi(tmp_path, images_per_split=10, size=(30, 30))
    clean = read_landmark_data(tmp_path)
    assert clean.protocol == "clean"
    assert {k: len(v) for k, v in clean.splits.items()} == {"train": 8, "calibration": 2, "test": 10, "test2": 10}
    train_ids = {r.image_id for r in clean.split("train")}
    calibration_ids = {r.image_id for r in clean.split("calibration")}
    assert not train_ids & calibration_ids
    assert all(i.startswith("TrainingData/") for i in train_ids | calibration_ids)
    paper = read_landmark_data(tmp_path, protocol="paper")
    assert {k: len(v) for k, v in paper.splits.items()} == {
        "train": 10, "calibration": 5, "selection": 5, "test": 10, "test2": 10}
    assert [r.image_id for r in paper.split("calibration")] == [f"Test1Data/{i:03d}" for i in range(11, 16)]
    assert [r.image_id for r in paper.split("selection")] == [f"Test1Data/{i:03d}" for i in range(16, 21)]
    with pytest.raises(DataFormatError, match="unknown protocol 'dirty'"):
        read_landmark_data(tmp_path, protocol="dirty")


def test_isbi_descriptor_may_not_list_splits(tmp_path):
    make_tiny_isbi(tmp_path, images_per_split=1)
    save_yaml({"format": "isbi2015", "splits": {"train": ["001.bmp"]}}, tmp_path / "dataset.yaml")
    with pytest.raises(DataFormatError, match="come from 'protocol'"):
        read_landmark_data(tmp_path)


# ---------------------------------------------------------------- fuzzing


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_fuzz_isbi_parser(text):
    try:
        points = parse_isbi_annotation(text, 3, "f.txt")
    except DataFormatError as error:
        assert str(error).startswith("f.txt: ")
    else:
        assert points.shape == (3, 2) and np.isfinite(points).all()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_csv_parser(text):
    try:
        table = parse_landmark_csv(text, {"L1": 0, "L2": 1}, 2, "f.csv")
    except DataFormatError as error:
        assert str(error).startswith("f.csv: ")
    else:
        assert all(v.shape == (2, 2) for v in table.values())


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps),
                 st.fixed_dictionaries({"shapes": st.lists(st.dictionaries(
                     st.sampled_from(["label", "points", "shape_type"]),
                     st.sampled_from(["a", "b", "point", "line", None, [[1, 2]], [1, "x"], [[float("inf"), 2]]])),
                     max_size=4)}).map(json.dumps)))
def test_fuzz_labelme_parser(text):
    try:
        points = parse_labelme(text, LABELS, 3, "f.json")
    except DataFormatError as error:
        assert str(error).startswith("f.json: ")
    else:
        assert points.shape == (3, 2)
        assert np.all(np.isfinite(points) | np.isnan(points))

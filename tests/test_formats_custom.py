"""labelme and CSV data sets, ISBI protocols, and their bad-input errors (with fuzzing)."""
from __future__ import annotations

import base64
import binascii
import json

import numpy as np
import pytest
from helpers import (
    make_labelme_export,
    make_tiny_csv,
    make_tiny_isbi,
    make_tiny_labelme,
    write_image,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chh_lib.config import load_yaml, save_yaml
from chh_lib.data.formats import (
    ProblemLog,
    labelme_image_name,
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


# ---------------------------------------------------------------- labelme exports: imagePath, imageData

NUM_EXPORTED = 10
WARNING = "labelme files name another imagePath; paired by file name"


def _set_image_path_rule(root, rule):
    descriptor = load_yaml(root / "dataset.yaml")
    descriptor["image_path"] = rule
    save_yaml(descriptor, root / "dataset.yaml")


@pytest.mark.parametrize(
    "value, name",
    [
        ("C:\\data\\img\\001.png", "001.png"),
        ("D:001.png", "001.png"),
        ("\\\\server\\share\\cephs\\001.png", "001.png"),
        ("../images/001.png", "001.png"),
        ("..\\images\\001.png", "001.png"),
        ("/home/me/cephs/001.png", "001.png"),
        ("001.png", "001.png"),
        (" 001.png ", "001.png"),
        ("", None),
        (None, None),
        (7, None),
    ],
)
def test_labelme_image_name_strips_any_directory(value, name):
    assert labelme_image_name({"imagePath": value}) == name
    assert labelme_image_name({}) is None


@pytest.mark.parametrize(
    "templates, expected_warned",
    [
        (["{n}.tif"], NUM_EXPORTED),                                    # no zero-padding, as in the issue
        (["C:\\data\\img\\{n}.tif"], NUM_EXPORTED),                     # Windows path, another name
        (["/home/me/labelme/{n}.tif"], NUM_EXPORTED),                   # absolute POSIX path, another name
        (["C:\\data\\img\\{stem}.tif"], 0),                             # Windows path, the same name
        (["/home/me/labelme/{stem}.tif", "../images/{stem}.tif", "{stem}.tif"], 0),
        (["{next_stem}.tif"], NUM_EXPORTED),                            # names a neighbour that exists
        (["{n}.tif", "{stem}.tif", "D:\\x\\{n}.tif", "../{stem}.tif", "/abs/{n}.tif"], 6),
    ],
)
def test_labelme_export_is_paired_by_file_name_with_one_warning(tmp_path, templates, expected_warned):
    image_paths = [templates[i % len(templates)] for i in range(NUM_EXPORTED)]
    truth = make_labelme_export(tmp_path, image_paths)
    log = ProblemLog(collect=True)
    data = read_landmark_data(tmp_path, log=log)
    assert log.problems == []
    records = [r for split in data.splits.values() for r in split]
    assert sorted(r.image_id for r in records) == [f"{i:03d}.tif" for i in range(1, NUM_EXPORTED + 1)]
    for record in records:
        assert record.image_path == tmp_path / "cephalograms" / record.image_id
        np.testing.assert_array_equal(record.annotations_px, truth[record.image_id])
    if expected_warned == 0:
        assert log.warnings == []
    else:
        assert len(log.warnings) == 1
        assert log.warnings[0].startswith(f"{expected_warned} {WARNING} (e.g. ")
        assert log.warnings[0].endswith("; image sizes agree)")
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 7, "calibration": 1, "test": 2}


def test_labelme_warning_names_the_first_file_and_counts_files_without_a_size(tmp_path):
    make_labelme_export(tmp_path, ["{n}.tif"] * 3)
    path = tmp_path / "cephalograms" / "002.json"
    document = json.loads(path.read_text())
    del document["imageWidth"], document["imageHeight"]
    path.write_text(json.dumps(document))
    log = ProblemLog(collect=True)
    read_landmark_data(tmp_path, log=log)
    first = tmp_path / "cephalograms" / "001.json"
    assert log.warnings == [
        f"3 {WARNING} (e.g. {first}: imagePath '1.tif', image '001.tif'; 1 of them store no image size to confirm it)"
    ]


def test_labelme_size_mismatch_is_still_a_problem_naming_the_file(tmp_path):
    make_labelme_export(tmp_path, ["{n}.tif"] * NUM_EXPORTED)
    path = tmp_path / "cephalograms" / "004.json"
    document = json.loads(path.read_text())
    document["imageWidth"] = 99
    path.write_text(json.dumps(document))
    message = f"{path}: image size 99x30 in the file, but the image is 40x30; its imagePath names '4.tif', not '004.tif'"
    with pytest.raises(DataFormatError) as raised:
        read_landmark_data(tmp_path)
    assert str(raised.value) == message
    log = ProblemLog(collect=True)
    data = read_landmark_data(tmp_path, log=log)
    assert log.problems == [message]
    assert "004.tif" not in [r.image_id for split in data.splits.values() for r in split]
    assert len(log.warnings) == 1 and log.warnings[0].startswith(f"{NUM_EXPORTED - 1} {WARNING}")


def test_labelme_size_mismatch_with_an_agreeing_image_path_has_no_hint(tmp_path):
    make_labelme_export(tmp_path, ["../cephalograms/{stem}.tif"] * 3)
    path = tmp_path / "cephalograms" / "002.json"
    document = json.loads(path.read_text())
    document["imageHeight"] = 31
    path.write_text(json.dumps(document))
    log = ProblemLog(collect=True)
    read_landmark_data(tmp_path, log=log)
    assert log.problems == [f"{path}: image size 40x31 in the file, but the image is 40x30"]
    assert log.warnings == []


def test_image_path_strict_restores_the_check_by_image_path(tmp_path):
    make_labelme_export(tmp_path, ["{n}.tif"] * NUM_EXPORTED)
    _set_image_path_rule(tmp_path, "strict")
    first = tmp_path / "cephalograms" / "001.json"
    with pytest.raises(DataFormatError) as raised:
        read_landmark_data(tmp_path)
    assert str(raised.value) == f"{first}: imagePath '1.tif' does not match the image '001.tif'"
    log = ProblemLog(collect=True)
    data = read_landmark_data(tmp_path, log=log)
    assert log.problems == [
        f"{tmp_path / 'cephalograms' / f'{i:03d}.json'}: imagePath '{i}.tif' does not match the image '{i:03d}.tif'"
        for i in range(1, NUM_EXPORTED + 1)
    ]
    assert log.warnings == [] and all(not split for split in data.splits.values())


def test_image_path_strict_accepts_any_directory_around_the_right_name(tmp_path):
    truth = make_labelme_export(tmp_path, ["C:\\data\\img\\{stem}.tif", "/data/{stem}.tif", "../x/{stem}.tif"])
    _set_image_path_rule(tmp_path, "strict")
    log = ProblemLog(collect=True)
    data = read_landmark_data(tmp_path, log=log)
    assert log.problems == [] and log.warnings == []
    assert sorted(r.image_id for split in data.splits.values() for r in split) == sorted(truth)


def test_image_path_strict_on_the_tiny_labelme_set(tmp_path):
    make_tiny_labelme(tmp_path)
    _set_image_path_rule(tmp_path, "strict")
    path = _edit_labelme(tmp_path, lambda d: d.update(imagePath="other.png"))
    with pytest.raises(DataFormatError, match="imagePath 'other.png' does not match the image 'case01.png'") as raised:
        read_landmark_data(tmp_path)
    assert str(path) in str(raised.value)
    _set_image_path_rule(tmp_path, "by_name")
    log = ProblemLog(collect=True)
    read_landmark_data(tmp_path, log=log)
    assert log.problems == [] and len(log.warnings) == 1 and log.warnings[0].startswith("1 labelme file names another")


@pytest.mark.parametrize("rule", ["loose", "Strict", ["strict"], 1])
def test_unknown_image_path_rule_names_the_descriptor(tmp_path, rule):
    make_labelme_export(tmp_path, ["{n}.tif"] * 2)
    _set_image_path_rule(tmp_path, rule)
    with pytest.raises(DataFormatError) as raised:
        read_landmark_data(tmp_path)
    assert str(raised.value) == f"{tmp_path / 'dataset.yaml'}: 'image_path' must be one of by_name, strict, got {rule!r}"


def test_embedded_image_data_is_never_decoded(tmp_path, monkeypatch):
    truth = make_labelme_export(tmp_path, ["{n}.tif"] * 3)
    json_size = (tmp_path / "cephalograms" / "001.json").stat().st_size
    assert json_size > 4 / 3 * (tmp_path / "cephalograms" / "001.tif").stat().st_size  # the image is in there

    def refuse(*args, **kwargs):
        raise AssertionError("imageData was decoded")

    for module, name in ((base64, "b64decode"), (base64, "standard_b64decode"), (base64, "decodebytes"),
                         (binascii, "a2b_base64")):
        monkeypatch.setattr(module, name, refuse)
    log = ProblemLog(collect=True)
    data = read_landmark_data(tmp_path, log=log)
    assert log.problems == []
    for record in (r for split in data.splits.values() for r in split):
        np.testing.assert_array_equal(record.annotations_px, truth[record.image_id])


def test_labelme_problem_can_be_collected_and_the_image_skipped(tmp_path):
    make_tiny_labelme(tmp_path)
    _edit_labelme(tmp_path, lambda d: d["shapes"].append(dict(d["shapes"][0])))
    log = ProblemLog(collect=True)
    data = read_landmark_data(tmp_path, log=log)
    assert len(log.problems) == 1  # the duplicated label; the split naming the skipped image adds no second line
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

"""The descriptor's policies for messy data: duplicated labelme labels, bad images, images in no split."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_tiny_labelme, write_image

from chh_lib.cli import main
from chh_lib.config import load_yaml, save_yaml
from chh_lib.data.check import check_data, format_report
from chh_lib.data.formats import labelme_points, read_landmark_data
from chh_lib.errors import DataFormatError

LABELS = {"a": 0, "b": 1, "c": 2}


def _set(root, **keys):
    descriptor = load_yaml(root / "dataset.yaml")
    descriptor.update(keys)
    save_yaml(descriptor, root / "dataset.yaml")


def _place_twice(root, stem="case01", annotator="junior", label="a", shift=(4.0, -2.0)):
    """Add a second point for ``label``; returns (first point, second point)."""
    path = root / "labelme" / annotator / f"{stem}.json"
    document = json.loads(path.read_text())
    shape = next(s for s in document["shapes"] if s["label"] == label)
    first = np.array(shape["points"][0], dtype=float)
    second = first + np.array(shift)
    document["shapes"].append({**shape, "points": [second.tolist()]})
    path.write_text(json.dumps(document))
    return first, second


@pytest.mark.parametrize("policy", ["first", "mean", "missing"])
def test_a_duplicated_label_is_repaired_by_the_policy_and_listed(tmp_path, policy):
    make_tiny_labelme(tmp_path)
    first, second = _place_twice(tmp_path)
    _set(tmp_path, on_duplicate_label=policy)
    data = read_landmark_data(tmp_path)
    record = next(r for r in data.split("train") if r.image_id == "case01.png")
    junior_a = record.annotations_px[1, 0]
    expected = {"first": first, "mean": (first + second) / 2, "missing": np.full(2, np.nan)}[policy]
    np.testing.assert_allclose(junior_a, expected, equal_nan=True)
    assert len(data.repairs) == 1 and "case01.json: label 'a' appears 2 times" in data.repairs[0]
    assert f"on_duplicate_label: {policy}" in data.repairs[0]
    assert data.handling()["policies"] == {"on_duplicate_label": policy, "on_bad_image": "error"}
    report = check_data(tmp_path)
    assert report.ok and report.repairs == list(data.repairs)
    text = format_report(report)
    assert f"1 labels repaired (on_duplicate_label: {policy})" in text and "case01.json" in text


def test_a_duplicated_label_is_an_error_by_default_with_the_way_out(tmp_path):
    make_tiny_labelme(tmp_path)
    _place_twice(tmp_path)
    with pytest.raises(DataFormatError, match="case01.json: label 'a' appears more than once .*on_duplicate_label"):
        read_landmark_data(tmp_path)
    document = {"shapes": [{"label": "a", "points": [[1, 2]]}, {"label": "a", "points": [[3, 4]]}]}
    with pytest.raises(ValueError, match="unknown duplicate-label policy"):
        labelme_points(document, LABELS, 3, "x.json", on_duplicate="last")


def test_an_unknown_policy_value_names_the_descriptor(tmp_path):
    make_tiny_labelme(tmp_path)
    _set(tmp_path, on_bad_image="ignore")
    with pytest.raises(DataFormatError, match=r"dataset.yaml: 'on_bad_image' must be one of error, skip, got 'ignore'"):
        read_landmark_data(tmp_path)


def test_bad_images_are_skipped_and_listed_under_skip(tmp_path):
    make_tiny_labelme(tmp_path)
    (tmp_path / "images" / "case05.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # header unreadable
    tif = tmp_path / "images" / "case03.tif"
    tif.write_bytes(tif.read_bytes()[:300])  # the header survives, the pixels do not
    (tmp_path / "labelme" / "senior" / "case01.json").write_text("{ not json")
    _set(tmp_path, on_bad_image="skip")
    data = read_landmark_data(tmp_path)
    assert [r.image_id for r in data.split("train")] == ["case00.tif", "case02.png"]
    assert [r.image_id for r in data.split("test")] == ["case04.png"]
    assert len(data.skipped) == 3
    for name in ("case05.png", "case03.tif", "case01.json"):
        assert sum(name in message for message in data.skipped) == 1, name
    report = check_data(tmp_path)
    assert report.ok and len(report.skipped) == 3
    assert "3 images skipped (on_bad_image: skip)" in format_report(report)
    _set(tmp_path, on_bad_image="error")
    assert not check_data(tmp_path).ok
    with pytest.raises(DataFormatError):
        read_landmark_data(tmp_path)


def test_training_lists_what_was_skipped_in_its_log_and_manifest(tmp_path, capsys):
    make_tiny_labelme(tmp_path / "data", num_images=12, size=(64, 80))
    data_dir = tmp_path / "data"
    _place_twice(data_dir, stem="case02", annotator="senior", label="b")
    (data_dir / "images" / "case01.png").write_bytes(b"broken")
    _set(data_dir, on_bad_image="skip", on_duplicate_label="mean",
         splits={"train": [f"case{i:02d}.{'tif' if i % 3 == 0 else 'png'}" for i in range(8)],
                 "calibration": ["case08.png", "case09.tif"], "test": ["case10.png", "case11.png"]})
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(data_dir), "--run-dir", str(run_dir), "--profile", "smoke",
                 "--device", "cpu", "--no-progress", "--epochs", "1"]) == 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    handling = manifest["data"]
    assert handling["policies"] == {"on_duplicate_label": "mean", "on_bad_image": "skip"}
    assert len(handling["skipped"]) == 1 and "case01.png" in handling["skipped"][0]
    assert len(handling["repaired"]) == 1 and "case02.json" in handling["repaired"][0]
    log = (run_dir / "train.log").read_text()
    assert "skipped (on_bad_image: skip):" in log and "case01.png" in log
    assert "repaired:" in log and "case02.json" in log


def test_an_image_in_no_split_is_never_read(tmp_path, monkeypatch):
    make_tiny_labelme(tmp_path, num_images=8)
    descriptor = load_yaml(tmp_path / "dataset.yaml")
    listed = descriptor["splits"]["train"] + descriptor["splits"]["test"][:2]  # case06, case07 in no split
    descriptor["splits"] = {"train": descriptor["splits"]["train"], "test": descriptor["splits"]["test"][:2]}
    save_yaml(descriptor, tmp_path / "dataset.yaml")
    (tmp_path / "labelme" / "senior" / "case06.tif".replace(".tif", ".json")).write_text("{ broken")
    (tmp_path / "images" / "case07.png").write_bytes(b"broken")
    opened = []
    from chh_lib.data import formats

    real_read_text, real_size = formats._read_text, formats.image_size_of
    monkeypatch.setattr(formats, "_read_text", lambda path: (opened.append(path.name), real_read_text(path))[1])
    monkeypatch.setattr(formats, "image_size_of", lambda path: (opened.append(path.name), real_size(path))[1])
    data = read_landmark_data(tmp_path)  # the broken files are in no split: no error
    assert sorted(r.image_id for s in data.splits.values() for r in s) == sorted(listed)
    assert not any(name.startswith(("case06", "case07")) for name in opened)
    assert data.unlisted == ("case06.tif", "case07.png") and data.handling()["not_in_any_split"] == 2
    report = check_data(tmp_path)
    assert report.ok and any("2 images are in no split" in w for w in report.warnings)


def test_the_policies_apply_to_an_image_named_in_a_split_but_absent(tmp_path):
    make_tiny_labelme(tmp_path)
    descriptor = load_yaml(tmp_path / "dataset.yaml")
    descriptor["splits"]["test"].append("absent.png")
    descriptor["on_bad_image"] = "skip"
    save_yaml(descriptor, tmp_path / "dataset.yaml")
    data = read_landmark_data(tmp_path)
    assert [r.image_id for r in data.split("test")] == ["case04.png", "case05.png"]
    assert len(data.skipped) == 1 and "'absent.png'" in data.skipped[0]


def test_a_skipped_16_bit_image_does_not_hide_the_others(tmp_path):
    make_tiny_labelme(tmp_path)
    write_image(tmp_path / "images" / "case02.png", np.zeros((60, 48), dtype=np.uint16))  # still readable
    _set(tmp_path, on_bad_image="skip")
    data = read_landmark_data(tmp_path)
    assert data.skipped == () and len(data.split("train")) == 4


def test_a_landmark_outside_its_image_is_left_out_of_the_disagreement_statistics(tmp_path):
    make_tiny_labelme(tmp_path)
    clean = check_data(tmp_path).annotator_distance_mm
    path = tmp_path / "labelme" / "junior" / "case01.json"
    document = json.loads(path.read_text())
    next(s for s in document["shapes"] if s["label"] == "b")["points"] = [[-30.0, 20.0]]
    path.write_text(json.dumps(document))
    report = check_data(tmp_path)
    assert any("lies outside the 48x60 image (treated as missing)" in w for w in report.warnings)
    others = [r for r in read_landmark_data(tmp_path).split("train") + read_landmark_data(tmp_path).split("test")
              if r.image_id != "case01.png"]
    expected = np.nanmean([np.hypot(*((r.annotations_px[0, 1] - r.annotations_px[1, 1])
                                      * np.asarray(r.pixel_size_mm))) for r in others])
    assert report.annotator_distance_mm[1] == pytest.approx(expected)
    assert report.annotator_distance_mm[0] == pytest.approx(clean[0])


def test_a_bad_image_is_reported_once(tmp_path):
    make_tiny_labelme(tmp_path)
    (tmp_path / "labelme" / "senior" / "case01.json").write_text("{ not json")
    report = check_data(tmp_path)
    assert sum("case01" in problem for problem in report.problems) == 1
    _set(tmp_path, on_bad_image="skip")
    assert read_landmark_data(tmp_path).skipped[0].startswith("case01.png left out: ")


def test_a_training_stopped_by_bad_data_says_why_in_its_log(tmp_path, capsys):
    make_tiny_labelme(tmp_path / "data")
    (tmp_path / "data" / "labelme" / "senior" / "case01.json").write_text("{ not json")
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "data"), "--run-dir", str(run_dir), "--profile", "smoke",
                 "--device", "cpu", "--no-progress"]) == 2
    assert "case01.json: not valid JSON" in capsys.readouterr().err
    assert "case01.json: not valid JSON" in (run_dir / "train.log").read_text()


def test_half_a_stored_image_size_is_named_and_an_unread_data_set_says_so(tmp_path):
    make_tiny_labelme(tmp_path)
    path = tmp_path / "labelme" / "junior" / "case01.json"
    document = json.loads(path.read_text())
    del document["imageWidth"]
    path.write_text(json.dumps(document))
    with pytest.raises(DataFormatError, match="case01.json: stores only one of imageWidth and imageHeight"):
        read_landmark_data(tmp_path)
    text = format_report(check_data(tmp_path, protocol="paper"))
    assert "could not be read" in text and "format None" not in text

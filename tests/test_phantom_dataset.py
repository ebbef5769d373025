"""`chh phantom` on disk: the ISBI layout, byte-identical output, the descriptor, the printed table."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from chh_lib.cli import main
from chh_lib.config import load_yaml
from chh_lib.data.disagreement import along_across_sd, annotator_differences_mm
from chh_lib.data.formats import read_landmark_data
from chh_lib.data.phantom_dataset import (
    phantom_tangents_mm,
    split_sizes,
    write_phantom_dataset,
)
from chh_lib.errors import DataFormatError
from chh_lib.landmarks import ISBI_2015


def _all_bytes(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_arguments_give_byte_identical_files(tmp_path):
    args = ["--num-images", "9", "--seed", "5", "--image-size", "160", "200"]
    assert main(["phantom", str(tmp_path / "a"), *args]) == 0
    assert main(["phantom", str(tmp_path / "b"), *args]) == 0
    first, second = _all_bytes(tmp_path / "a"), _all_bytes(tmp_path / "b")
    assert first == second
    assert len(first) == 9 * 3 + 1
    assert main(["phantom", str(tmp_path / "c"), *args[:2], "--seed", "6", *args[4:]]) == 0
    assert _all_bytes(tmp_path / "c") != first


def test_layout_descriptor_and_reader_agree(tmp_path):
    summary = write_phantom_dataset(tmp_path, num_images=12, seed=1, image_size=(160, 200), hard_fraction=0.25)
    assert summary.split_counts == {"TrainingData": 4, "Test1Data": 4, "Test2Data": 4}
    assert summary.num_hard == 3
    descriptor = load_yaml(tmp_path / "dataset.yaml")
    assert descriptor["landmarks"] == list(ISBI_2015.names)
    assert descriptor["pixel_size_mm"] == [1.2, 1.2]
    assert descriptor["generator"] == {
        "name": "chh phantom", "version": "1", "seed": 1, "num_images": 12,
        "image_size": [160, 200], "hard_fraction": 0.25,
    }
    assert descriptor["protocol"] == "clean"
    data = read_landmark_data(tmp_path)
    held_out = [r.image_id for r in data.split("calibration")]
    assert len(held_out) == 1
    assert sorted([r.image_id for r in data.split("train")] + held_out) == [f"TrainingData/{i:03d}" for i in range(1, 5)]
    assert data.split("test")[0].pixel_size_mm == (1.2, 1.2)
    lines = (tmp_path / "AnnotationsByMD" / "400_senior" / "001.txt").read_text().splitlines()
    assert len(lines) == 21 and lines[19] in ("0", "1")
    for records in data.splits.values():
        for record in records:
            assert record.annotations_px.shape == (2, 19, 2)
            assert np.isfinite(record.annotations_px).all()


def test_split_sizes_follow_isbi_proportions():
    assert split_sizes(400) == (150, 150, 100)
    assert split_sizes(3) == (1, 1, 1)
    assert sum(split_sizes(17)) == 17


def test_rerun_is_a_no_op_and_other_content_is_protected(tmp_path, capsys):
    args = ["--num-images", "6", "--image-size", "160", "200"]
    assert main(["phantom", str(tmp_path / "p"), *args]) == 0
    before = _all_bytes(tmp_path / "p")
    assert main(["phantom", str(tmp_path / "p"), *args]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert _all_bytes(tmp_path / "p") == before
    assert main(["phantom", str(tmp_path / "p"), "--num-images", "7", "--image-size", "160", "200"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _all_bytes(tmp_path / "p") == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataFormatError, match="not empty"):
        write_phantom_dataset(tmp_path / "other", num_images=6, image_size=(160, 200))
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_printed_table_reports_contour_ratios_above_two(tmp_path, capsys):
    assert main(["phantom", str(tmp_path / "p"), "--num-images", "40", "--image-size", "160", "200"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[2:21]]
    ratios = [row[-1] for row in rows]
    assert ratios[0] == "-"  # sella is not a contour landmark
    assert all(float(r) > 2 for r in ratios[1:])
    distances = [float(row[-2]) for row in rows]
    assert all(0.5 < d < 4 for d in distances)


def test_cli_and_notebook_report_the_same_along_across_ratio(tmp_path, capsys):
    # `chh phantom` (fresh and up to date) and notebook 01 compute the ratio through one function.
    args = ["--num-images", "12", "--seed", "2", "--image-size", "160", "200"]
    fresh = write_phantom_dataset(tmp_path, num_images=12, seed=2, image_size=(160, 200))
    again = write_phantom_dataset(tmp_path, num_images=12, seed=2, image_size=(160, 200))
    assert fresh.written and not again.written
    data = read_landmark_data(tmp_path)
    records = [r for name in ("train", "calibration", "test", "test2") for r in data.splits[name]]
    tangents = phantom_tangents_mm(data, records)
    assert tangents.shape == (12, 19, 2)
    expected = along_across_sd(annotator_differences_mm(records), tangents).ratio
    np.testing.assert_allclose(fresh.along_across_ratio, expected, rtol=1e-12)
    np.testing.assert_allclose(again.along_across_ratio, expected, rtol=1e-12)
    assert np.isnan(expected[0]) and (expected[1:] > 1).all()
    assert main(["phantom", str(tmp_path), *args]) == 0
    rows = capsys.readouterr().out.splitlines()[2:21]
    anterior_nasal_spine = ISBI_2015.index("anterior nasal spine")
    assert rows[anterior_nasal_spine].split()[-1] == f"{expected[anterior_nasal_spine]:.1f}"


def test_tangents_only_for_a_phantom_of_this_version(tmp_path):
    write_phantom_dataset(tmp_path, num_images=3, seed=0, image_size=(160, 200))
    data = read_landmark_data(tmp_path)
    records = data.split("test")
    assert phantom_tangents_mm(data, records).shape == (1, 19, 2)
    older = dataclasses.replace(data, descriptor={**data.descriptor, "generator": {
        **data.descriptor["generator"], "version": "0"}})
    assert phantom_tangents_mm(older, records) is None
    assert phantom_tangents_mm(dataclasses.replace(data, descriptor={}), records) is None

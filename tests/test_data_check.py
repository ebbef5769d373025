"""`chh data check`: counts, disagreement, problems and warnings, exit status."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import (
    make_labelme_export,
    make_tiny_csv,
    make_tiny_isbi,
    make_tiny_labelme,
)

from chh_lib.cli import main
from chh_lib.config import load_yaml, save_yaml
from chh_lib.data.check import check_data
from chh_lib.data.formats import write_isbi_case
from chh_lib.data.phantom_dataset import write_phantom_dataset


def test_clean_isbi_data_set(tmp_path, capsys):
    written = make_tiny_isbi(tmp_path, images_per_split=5, size=(40, 50))
    report = check_data(tmp_path)
    assert report.ok and report.problems == []
    assert report.split_counts == {"train": 4, "calibration": 1, "test": 5, "test2": 5}
    expected = np.mean([np.hypot(*((a[0] - a[1]) * 0.1).T) for a in written.values()], axis=0)
    np.testing.assert_allclose(report.annotator_distance_mm, expected, rtol=1e-9)
    assert main(["data", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "images per split: train 4, calibration 1, test 5, test2 5" in out
    assert "OK: no problem" in out


def test_problems_make_the_check_fail_and_are_all_listed(tmp_path, capsys):
    make_tiny_isbi(tmp_path, images_per_split=3, size=(40, 50))
    (tmp_path / "RawImage" / "TrainingData" / "001.bmp").write_bytes(b"")
    (tmp_path / "AnnotationsByMD" / "400_senior" / "005.txt").write_text("1,2\n" * 18)
    (tmp_path / "AnnotationsByMD" / "400_junior" / "008.txt").unlink()
    report = check_data(tmp_path)
    assert not report.ok
    joined = "\n".join(report.problems)
    assert "001.bmp: image file is empty" in joined
    assert "005.txt: expected at least 19 'x,y' lines, found 18" in joined
    assert "008.bmp: no annotation by every annotator" in joined
    assert main(["data", "check", str(tmp_path)]) == 1
    assert "NOT OK" in capsys.readouterr().out


def test_point_outside_the_image_is_a_warning(tmp_path):
    make_tiny_isbi(tmp_path, images_per_split=2, size=(40, 50))
    points = np.full((2, 19, 2), 10.0)
    points[1, 4] = (75.0, 10.0)
    write_isbi_case(tmp_path, "Test1Data", "003", np.zeros((50, 40), np.uint8), points)
    report = check_data(tmp_path)
    assert report.ok
    assert any("subspinale" in w and "400_junior" in w and "outside the 40x50 image" in w for w in report.warnings)


def test_an_image_without_any_landmark_is_one_problem_and_training_leaves_it_out(tmp_path, caplog):
    from chh_lib.config import profile_config
    from chh_lib.data.formats import read_landmark_data
    from chh_lib.engine import make_training_dataset

    make_tiny_isbi(tmp_path, images_per_split=4, size=(40, 50))
    write_isbi_case(tmp_path, "TrainingData", "002", np.zeros((1, 1), np.uint8), np.full((2, 19, 2), 10.0))
    report = check_data(tmp_path)
    assert not report.ok
    [problem] = [p for p in report.problems if "002" in p]
    assert problem.endswith("002.bmp: no landmark lies inside the 1x1 image (all 19 are missing or outside it); "
                            "training leaves the image out")
    assert not any("002.bmp" in w for w in report.warnings)  # one line, not 38 warnings
    data = read_landmark_data(tmp_path)
    records = data.split("train")
    assert "TrainingData/002" in [r.image_id for r in records]
    with caplog.at_level("WARNING"):
        dataset = make_training_dataset(profile_config("smoke"), records, None)
    assert dataset.image_ids == [r.image_id for r in records if r.image_id != "TrainingData/002"]
    assert caplog.text.count("skipping 1 training image(s) with no landmark inside the image: TrainingData/002") == 1


def test_missing_data_directory_is_a_problem_not_a_crash(tmp_path):
    report = check_data(tmp_path / "absent")
    assert not report.ok and "data directory not found" in report.problems[0]


def test_labelme_and_csv_sets_check(tmp_path):
    make_tiny_labelme(tmp_path / "lm")
    report = check_data(tmp_path / "lm")
    assert report.ok and report.split_counts == {"train": 4, "test": 2}
    assert report.missing_landmarks == 1
    assert any("pixel spacing varies" in w for w in report.warnings)
    make_tiny_csv(tmp_path / "csv")
    report = check_data(tmp_path / "csv")
    assert report.ok and sum(report.split_counts.values()) == 10
    assert any("different x and y pixel spacing" in w for w in report.warnings)
    path = tmp_path / "lm" / "labelme" / "senior" / "case04.json"
    document = json.loads(path.read_text())
    document["shapes"].append(document["shapes"][0])
    path.write_text(json.dumps(document))
    report = check_data(tmp_path / "lm")
    assert not report.ok and any("appears more than once" in p for p in report.problems)


def test_along_across_ratio_without_and_with_known_contours(tmp_path, capsys):
    # Real-looking data: no contours known, so the ratio is taken along each landmark's principal axis.
    written = make_tiny_isbi(tmp_path / "isbi", images_per_split=5, size=(40, 50))
    report = check_data(tmp_path / "isbi")
    assert report.tangent_source == "principal axis"
    difference = np.stack([(a[0] - a[1]) * 0.1 for a in written.values()])  # (N, K, 2) mm
    for k in (0, 7):
        eigenvalues = np.linalg.eigvalsh(np.cov(difference[:, k].T))
        assert report.along_across_ratio[k] == pytest.approx(np.sqrt(eigenvalues[1] / eigenvalues[0]), rel=1e-9)
    # A phantom: along the generator's tangents, the same numbers `chh phantom` prints.
    summary = write_phantom_dataset(tmp_path / "phantom", num_images=9, seed=1, image_size=(160, 200))
    report = check_data(tmp_path / "phantom")
    assert report.tangent_source == "phantom generator"
    np.testing.assert_allclose(report.along_across_ratio, summary.along_across_ratio, rtol=1e-12)
    assert main(["data", "check", str(tmp_path / "phantom")]) == 0
    out = capsys.readouterr().out
    assert "SD along/across" in out and "phantom generator" in out


def test_labelme_export_with_other_image_paths_checks_ok_with_one_warning(tmp_path, capsys):
    # As published: 001.json beside 001.tif, "imagePath": "1.tif", the image embedded in imageData.
    make_labelme_export(tmp_path, ["{n}.tif"] * 10)
    report = check_data(tmp_path)
    assert report.ok and report.problems == []
    assert report.split_counts == {"train": 7, "calibration": 1, "test": 2}
    assert len(report.warnings) == 1
    assert report.warnings[0].startswith("10 labelme files name another imagePath; paired by file name (e.g. ")
    assert main(["data", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("another imagePath") == 1 and "1 warnings:" in out and "OK: no problem" in out


def test_labelme_export_size_mismatch_and_strict_image_path_fail_the_check(tmp_path, capsys):
    make_labelme_export(tmp_path, ["C:\\data\\img\\{n}.tif"] * 10)
    path = tmp_path / "cephalograms" / "007.json"
    document = json.loads(path.read_text())
    document["imageHeight"] = 300
    path.write_text(json.dumps(document))
    report = check_data(tmp_path)
    assert not report.ok
    assert report.problems == [
        f"{path}: image size 40x300 in the file, but the image is 40x30; its imagePath names '7.tif', not '007.tif'"
    ]
    assert len(report.warnings) == 1 and report.warnings[0].startswith("9 labelme files name another imagePath")
    descriptor = load_yaml(tmp_path / "dataset.yaml")
    descriptor["image_path"] = "strict"
    save_yaml(descriptor, tmp_path / "dataset.yaml")
    report = check_data(tmp_path)
    assert len(report.problems) == 11  # every file, then the empty training split
    assert report.problems[0] == (
        f"{tmp_path / 'cephalograms' / '001.json'}: imagePath '1.tif' does not match the image '001.tif'"
    )
    assert report.problems[-1] == f"{tmp_path}: the 'train' split has no usable image"
    assert main(["data", "check", str(tmp_path)]) == 1
    assert "NOT OK" in capsys.readouterr().out

"""`chh phantom --format labelme --plant-mess`: the stand-in of a messy labelme export.

The planted mess must be found exactly as planted (every duplicate a problem of the
default policy and a repair of the others, one imagePath warning counting the files
that name another file, the corrupt image a problem of the check), the files must
be byte-identical for the same arguments, and the points of untouched files must be
the phantom's.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from chh_lib.cli import main
from chh_lib.config import load_yaml, save_yaml
from chh_lib.data.formats import ProblemLog, read_landmark_data
from chh_lib.data.messy_labelme import (
    STRAY_CLICK_MM,
    MessCounts,
    write_labelme_phantom,
)
from chh_lib.data.phantom import generate_phantom
from chh_lib.landmarks import ISBI_2015

NUM_IMAGES = 20
SIZE = (160, 200)  # 1.2 mm pixels
ARGS = ["--format", "labelme", "--plant-mess", "--num-images", str(NUM_IMAGES), "--image-size", *map(str, SIZE)]


def _all_bytes(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("messy") / "export"
    assert main(["phantom", str(root), *ARGS]) == 0
    return root


def _copy_with_policies(messy: Path, tmp_path: Path, **policies: str) -> Path:
    root = tmp_path / "export"
    shutil.copytree(messy, root)
    descriptor = load_yaml(root / "dataset.yaml")
    descriptor.update(policies)
    save_yaml(descriptor, root / "dataset.yaml")
    return root


def _planted(root: Path) -> dict:
    return load_yaml(root / "dataset.yaml")["generator"]["planted"]


def _messy_images(planted: dict) -> set[str]:
    """Image file names that carry some mess."""
    files = [entry["file"] for kind in ("duplicate_labels", "old_names", "windows_paths", "windows_same_name")
             for entry in planted[kind]]
    return {Path(f).stem + ".png" for f in files} | {Path(f).name for f in planted["corrupt_images"]}


def test_layout_and_plan(messy):
    counts = MessCounts()
    planted = _planted(messy)
    assert {kind: len(entries) for kind, entries in planted.items()} == {
        "duplicate_labels": counts.duplicate_labels, "old_names": counts.old_names,
        "windows_paths": counts.windows_paths, "windows_same_name": counts.windows_same_name,
        "corrupt_images": counts.corrupt_images,
    }
    assert len(_messy_images(planted)) == counts.num_images  # one kind per image
    assert sorted(p.name for p in (messy / "cephalograms").glob("*.png")) == [f"{i:03d}.png" for i in range(1, 21)]
    assert len(list((messy / "cephalograms").glob("*.json"))) == NUM_IMAGES
    assert len(list((messy / "junior").glob("*.json"))) == NUM_IMAGES
    touched = {e["file"] for kind in planted.values() for e in kind if isinstance(e, dict)}
    stem = next(f"{i:03d}" for i in range(1, 21) if f"junior/{i:03d}.json" not in touched)
    document = json.loads((messy / "junior" / f"{stem}.json").read_text())
    assert document["imagePath"] == f"../cephalograms/{stem}.png"
    assert json.loads((messy / "cephalograms" / f"{stem}.json").read_text())["imagePath"] in (
        f"{stem}.png", f"D:\\export\\{stem}.png")
    assert document["version"] == "5.4.1" and document["imageData"] is None
    assert (document["imageWidth"], document["imageHeight"]) == SIZE
    for entry in planted["old_names"]:
        named = json.loads((messy / entry["file"]).read_text())["imagePath"]
        assert named == entry["imagePath"] == f"{int(Path(entry['file']).stem)}.png"
        assert named != Path(entry["file"]).stem + ".png"
    for entry in planted["duplicate_labels"]:
        labels = [s["label"] for s in json.loads((messy / entry["file"]).read_text())["shapes"]]
        assert len(labels) == 20 and labels.count(entry["label"]) == 2 and labels[-1] == entry["label"]
    descriptor = load_yaml(messy / "dataset.yaml")
    assert descriptor["on_duplicate_label"] == "error" and descriptor["on_bad_image"] == "error"
    assert descriptor["pixel_size_mm"] == 1.2
    assert descriptor["annotators"] == {"senior": "cephalograms", "junior": "junior"}


def test_same_arguments_give_byte_identical_files(messy, tmp_path):
    assert main(["phantom", str(tmp_path / "again"), *ARGS]) == 0
    first = _all_bytes(messy)
    assert first == _all_bytes(tmp_path / "again")
    assert len(first) == 3 * NUM_IMAGES + 1
    assert main(["phantom", str(tmp_path / "other"), *ARGS, "--seed", "1"]) == 0
    assert _all_bytes(tmp_path / "other") != first


def test_the_reader_finds_the_planted_mess_exactly(messy):
    planted = _planted(messy)
    log = ProblemLog(collect=True)
    data = read_landmark_data(messy, log=log)
    expected = sorted(f"{messy / e['file']}: label {e['label']!r} appears more than once"
                      for e in planted["duplicate_labels"])
    assert sorted(p.split(" (set on_duplicate_label")[0] for p in log.problems) == expected
    assert len(log.warnings) == 1
    num_other = len(planted["old_names"]) + len(planted["windows_paths"])  # the same-name Windows paths agree
    assert log.warnings[0].startswith(f"{num_other} labelme files name another imagePath; paired by file name")
    assert sum(len(split) for split in data.splits.values()) == NUM_IMAGES - len(planted["duplicate_labels"])


def test_data_check_fails_with_the_default_policies(messy, capsys):
    planted = _planted(messy)
    assert main(["data", "check", str(messy)]) == 1
    out = capsys.readouterr().out
    num_problems = len(planted["duplicate_labels"]) + len(planted["corrupt_images"])
    assert f"\n{num_problems} problems:\n" in out
    for entry in planted["duplicate_labels"]:
        assert f"{messy / entry['file']}: label {entry['label']!r} appears more than once" in out
    assert f"{messy / planted['corrupt_images'][0]}: not a readable image" in out
    assert "NOT OK" in out


@pytest.mark.parametrize("policy", ["missing", "mean"])
def test_data_check_passes_with_repairing_policies(messy, tmp_path, capsys, policy):
    root = _copy_with_policies(messy, tmp_path, on_duplicate_label=policy, on_bad_image="skip")
    planted = _planted(root)
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"\n{len(planted['duplicate_labels'])} labels repaired (on_duplicate_label: {policy}):\n" in out
    assert f"\n1 images skipped (on_bad_image: skip):\n  - {root / planted['corrupt_images'][0]}: " in out
    assert "8 labelme files name another imagePath" in out
    assert "OK: no problem that would make training wrong" in out
    counts = out.split("images per split: ")[1].splitlines()[0].replace(",", "").split()[1::2]
    assert sum(map(int, counts)) == NUM_IMAGES - 1


def test_points_are_the_phantoms_and_repairs_do_what_they_say(messy, tmp_path):
    planted = _planted(messy)
    messy_images = _messy_images(planted)
    cases = {f"{i + 1:03d}.png": case for i, case in enumerate(generate_phantom(NUM_IMAGES, 0, SIZE, 0.1))}
    duplicated = {(Path(e["file"]).stem + ".png", 0 if e["file"].startswith("cephalograms/") else 1):
                  ISBI_2015.abbreviations.index(e["label"]) for e in planted["duplicate_labels"]}
    for policy in ("first", "mean", "missing"):
        root = _copy_with_policies(messy, tmp_path / policy, on_duplicate_label=policy, on_bad_image="skip")
        data = read_landmark_data(root)
        records = {r.image_id: r for split in data.splits.values() for r in split}
        assert len(records) == NUM_IMAGES - 1
        assert Path(planted["corrupt_images"][0]).name not in records
        for name, record in records.items():
            truth = cases[name].annotations_px  # (2, 19, 2)
            if name not in messy_images or policy == "first":
                np.testing.assert_array_equal(record.annotations_px, truth)
        for (name, annotator), landmark in duplicated.items():
            got, truth = records[name].annotations_px, cases[name].annotations_px
            others = np.ones(got.shape[:2], dtype=bool)
            others[annotator, landmark] = False
            np.testing.assert_array_equal(got[others], truth[others])
            if policy == "missing":
                assert np.isnan(got[annotator, landmark]).all()
            elif policy == "mean":
                shift_mm = np.hypot(*((got[annotator, landmark] - truth[annotator, landmark]) * 1.2))
                assert shift_mm == pytest.approx(STRAY_CLICK_MM / 2, abs=1e-9)


def test_one_annotator_and_a_clean_export(tmp_path, capsys):
    root = tmp_path / "clean"
    assert main(["phantom", str(root), "--format", "labelme", "--annotators", "1", "--num-images", "6",
                 "--image-size", "80", "100"]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["cephalograms", "dataset.yaml"]
    capsys.readouterr()
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "warnings" not in out and "problems" not in out
    data = read_landmark_data(root)
    assert data.annotators == ("senior",)
    first = {r.image_id: r for split in data.splits.values() for r in split}["001.png"]
    np.testing.assert_array_equal(first.annotations_px, next(generate_phantom(6, 0, (80, 100), 0.1)).annotations_px[:1])


def test_refusals_and_an_edited_descriptor_kept(messy, tmp_path, capsys):
    assert main(["phantom", str(tmp_path / "isbi"), "--plant-mess", "--num-images", "5"]) == 2
    assert "apply to --format labelme only" in capsys.readouterr().err
    assert main(["phantom", str(tmp_path / "few"), "--format", "labelme", "--plant-mess", "--num-images", "10"]) == 2
    assert "the planted mess needs 16 images" in capsys.readouterr().err
    assert main(["phantom", str(messy), *ARGS, "--seed", "3"]) == 2
    assert "folder is not empty" in capsys.readouterr().err
    root = _copy_with_policies(messy, tmp_path, on_duplicate_label="missing")
    assert main(["phantom", str(root), *ARGS]) == 0
    assert "already up to date" in capsys.readouterr().out
    assert load_yaml(root / "dataset.yaml")["on_duplicate_label"] == "missing"
    with pytest.raises(ValueError, match="num_annotators"):
        write_labelme_phantom(tmp_path / "bad", num_annotators=3)

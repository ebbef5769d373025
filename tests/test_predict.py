"""`chh predict` and `chh_lib.predict`: new images in, positions in the original pixels out."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from helpers import make_tiny_descriptor, make_tiny_isbi, write_image

import chh_lib
from chh_lib.cli import main
from chh_lib.data.formats import read_landmark_data
from chh_lib.engine import LAST_CHECKPOINT, load_checkpoint
from chh_lib.errors import CheckpointError, ConfigError, DataFormatError
from chh_lib.landmarks import ISBI_2015
from chh_lib.metrics import radial_error_mm
from chh_lib.prediction import TABLE_COLUMNS, image_paths, predict_images
from chh_lib.pretrained import write_pretrained_run


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    """Phantom (24 images of 240 x 300, so the network's 64 x 80 grid is a real resize) -> smoke train ->
    calibrate -> evaluate on test."""
    root = tmp_path_factory.mktemp("predict")
    data_dir, run_dir = root / "phantom", root / "run"
    assert main(["phantom", str(data_dir), "--num-images", "24", "--image-size", "240", "300", "--seed", "5"]) == 0
    assert main(["train", "--data", str(data_dir), "--run-dir", str(run_dir), "--profile", "smoke",
                 "--device", "cpu", "--no-progress"]) == 0
    assert main(["calibrate", "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    assert main(["evaluate", "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    return data_dir, run_dir


def _test_records(data_dir):
    return read_landmark_data(data_dir).split("test")


def test_predicting_the_test_images_reproduces_evaluate(calibrated_run):
    data_dir, run_dir = calibrated_run
    records = _test_records(data_dir)
    table = chh_lib.predict(run_dir, [r.image_path for r in records])
    assert list(table.columns) == list(TABLE_COLUMNS) and len(table) == 19 * len(records)
    evaluated = pd.read_csv(run_dir / "eval_test" / "predictions.csv")
    assert len(evaluated) == len(table)
    # the same points, after mapping back to each original image's pixels
    np.testing.assert_allclose(table[["x_px", "y_px"]].to_numpy(), evaluated[["x_px", "y_px"]].to_numpy(),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(table["ere_mm"], evaluated["ere_mm"], rtol=1e-5)
    np.testing.assert_allclose(table["mode_prob"], evaluated["mode_prob"], rtol=1e-5)
    assert (table["flagged"].to_numpy(dtype=bool) == evaluated["flagged"].to_numpy(dtype=bool)).all()
    # in original pixels against the annotations, the errors give evaluate's MRE
    positions = table[["x_px", "y_px"]].to_numpy().reshape(len(records), 19, 2)
    targets = np.stack([r.annotations_px.mean(axis=0) for r in records])
    spacing = np.array([r.pixel_size_mm for r in records])
    metrics = json.loads((run_dir / "eval_test" / "metrics.json").read_text())
    assert np.nanmean(radial_error_mm(positions, targets, spacing)) == pytest.approx(metrics["mre_mm"], abs=1e-9)
    # mm columns: the run stores the phantom's spacing; ERE in px is ERE in mm over it
    assert table["x_mm"].to_numpy() == pytest.approx(table["x_px"].to_numpy() * spacing[0, 0])
    assert table["ere_px"].to_numpy() == pytest.approx(table["ere_mm"].to_numpy() / spacing[0, 0], rel=1e-5)


def test_flags_follow_the_threshold_stored_by_calibrate(calibrated_run):
    data_dir, run_dir = calibrated_run
    threshold = json.loads((run_dir / "calibration.json").read_text())["ere_threshold"]["ere_threshold_mm"]
    result = predict_images(run_dir, [r.image_path for r in _test_records(data_dir)])
    table = result.table
    assert result.calibrated and (table["ere_threshold_mm"] == threshold).all()
    assert (table["flagged"].to_numpy(dtype=bool) == (table["ere_mm"] > threshold).to_numpy()).all()
    assert 0 < table["mode_prob"].min() and table["mode_prob"].max() <= 1


def test_a_folder_with_corrupt_images_is_predicted_except_those(calibrated_run, tmp_path, capsys):
    data_dir, run_dir = calibrated_run
    folder = tmp_path / "new"
    folder.mkdir()
    good = _test_records(data_dir)[:3]
    for record in good:
        shutil.copy(record.image_path, folder / record.image_path.name)
    truncated = folder / "truncated.png"
    truncated.write_bytes(good[0].image_path.read_bytes()[:200])
    (folder / "notes.png").write_text("not an image")
    out = tmp_path / "predictions.csv"
    status = main(["predict", "--run-dir", str(run_dir), "--images", str(folder), "--out", str(out),
                   "--overlay-dir", str(tmp_path / "overlays"), "--heatmaps-dir", str(tmp_path / "maps"),
                   "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    assert status == 1
    assert "truncated.png" in captured.err and "notes.png" in captured.err and "2 of 5 images skipped" in captured.err
    assert "predicted 57 landmarks on 3 images" in captured.out
    table = pd.read_csv(out)
    assert len(table) == 57 and sorted(table["image"].map(lambda p: p.rsplit("/", 1)[-1]).unique()) == sorted(
        r.image_path.name for r in good)
    overlays = sorted(p.name for p in (tmp_path / "overlays").iterdir())
    assert overlays == sorted(r.image_path.stem + ".png" for r in good)
    with np.load(tmp_path / "maps" / f"{good[0].image_path.stem}.npz") as maps:
        assert maps["heatmaps"].shape == (19, 80, 64)
        assert maps["heatmaps"].astype(np.float64).sum(axis=(1, 2)) == pytest.approx(np.ones(19), abs=0.02)
        assert tuple(maps["source_size"]) == (240, 300)


def test_the_api_raises_on_a_bad_image_by_default_and_skips_when_asked(calibrated_run, tmp_path):
    data_dir, run_dir = calibrated_run
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    good = _test_records(data_dir)[0].image_path
    with pytest.raises(DataFormatError, match="bad.png: not a readable image"):
        chh_lib.predict(run_dir, [good, bad])
    table = chh_lib.predict(run_dir, [good, bad], on_bad_image="skip")
    assert len(table) == 19 and list(table.attrs["skipped"]) == [str(bad)]


def test_quadratic_decoding_moves_points_by_at_most_half_a_network_pixel(calibrated_run):
    data_dir, run_dir = calibrated_run
    images = [r.image_path for r in _test_records(data_dir)]
    argmax = chh_lib.predict(run_dir, images)
    quadratic = chh_lib.predict(run_dir, images, decode="quadratic")
    shift_px = np.abs(quadratic[["x_px", "y_px"]].to_numpy() - argmax[["x_px", "y_px"]].to_numpy())
    source_px_per_grid_px = 240 / 64
    assert shift_px.max() <= 0.5 * source_px_per_grid_px + 1e-9 and shift_px.max() > 0
    with pytest.raises(ConfigError, match="unknown decoding"):
        chh_lib.predict(run_dir, images, decode="local-mean")


def test_a_given_spacing_scales_the_mm_columns(calibrated_run):
    data_dir, run_dir = calibrated_run
    image = _test_records(data_dir)[0].image_path
    stored = chh_lib.predict(run_dir, image)
    given = chh_lib.predict(run_dir, image, pixel_size_mm=2.0)
    assert given["x_mm"].to_numpy() == pytest.approx(2.0 * given["x_px"].to_numpy())
    assert given["ere_mm"].to_numpy() == pytest.approx(2.0 * stored["ere_px"].to_numpy(), rel=1e-5)
    assert (given["x_px"] == stored["x_px"]).all()


def test_image_paths_accepts_folders_patterns_and_files(tmp_path):
    folder = tmp_path / "images"
    for name in ("b.png", "a.png"):
        write_image(folder / name, np.zeros((10, 10), dtype=np.uint8))
    (folder / "readme.txt").write_text("x")
    assert [p.name for p in image_paths(folder)] == ["a.png", "b.png"]
    assert [p.name for p in image_paths(str(folder / "b*"))] == ["b.png"]
    assert [p.name for p in image_paths([folder / "readme.txt"])] == ["readme.txt"]
    with pytest.raises(DataFormatError, match="no such image"):
        image_paths(tmp_path / "absent")
    with pytest.raises(DataFormatError, match="no image found"):
        image_paths(str(tmp_path / "*.tif"))


def test_an_exported_checkpoint_predicts_alike_in_a_new_run(calibrated_run, tmp_path, capsys):
    data_dir, run_dir = calibrated_run
    exported = tmp_path / "shared.pt"
    assert main(["export", str(run_dir), str(exported)]) == 0
    payload = load_checkpoint(exported)
    assert payload["landmarks"]["names"] == list(ISBI_2015.names) and payload["pixel_size_mm"] is not None
    assert payload["ere_threshold"]["ere_threshold_mm"] > 0 and "optimizer_state" not in payload
    new_run = tmp_path / "elsewhere"
    assert main(["pretrained", str(new_run), "--checkpoint", str(exported)]) == 0  # no data set needed
    image = _test_records(data_dir)[1].image_path
    pd.testing.assert_frame_equal(chh_lib.predict(new_run, image), chh_lib.predict(run_dir, image))


def test_a_checkpoint_for_other_landmarks_is_refused(calibrated_run, tmp_path, capsys):
    _, run_dir = calibrated_run
    other = tmp_path / "five"
    make_tiny_isbi(other, num_landmarks=5)
    make_tiny_descriptor(other, 5)
    exported = tmp_path / "shared.pt"
    assert main(["export", str(run_dir), str(exported)]) == 0
    status = main(["pretrained", str(tmp_path / "run5"), "--checkpoint", str(exported), "--data", str(other)])
    assert status == 2
    assert "trained for 19 landmarks but the data set" in capsys.readouterr().err
    assert not (tmp_path / "run5" / LAST_CHECKPOINT).exists()
    renamed = tmp_path / "renamed"
    make_tiny_isbi(renamed, num_landmarks=19)
    make_tiny_descriptor(renamed, 19)
    with pytest.raises(CheckpointError, match="landmark 1: 'sella' in the checkpoint, 'L0' in the data set"):
        write_pretrained_run(tmp_path / "run19", renamed, exported)


def test_an_uncalibrated_run_flags_nothing(calibrated_run, tmp_path):
    data_dir, _ = calibrated_run
    run_dir = tmp_path / "shipped"
    write_pretrained_run(run_dir)  # the shipped model, never calibrated
    table = predict_images(run_dir, _test_records(data_dir)[0].image_path).table
    assert table["flagged"].isna().all() and np.isnan(table["ere_threshold_mm"]).all()
    assert np.isfinite(table["ere_mm"]).all()


def test_an_overlay_draws_flagged_predictions_in_red():
    from chh_lib.prediction import overlay_image

    image = np.full((300, 240), 128, dtype=np.uint16) * 257
    rows = pd.DataFrame({"x_px": [60.0, 180.0], "y_px": [80.0, 200.0], "ere_px": [10.0, 20.0],
                         "flagged": pd.array([True, pd.NA], dtype="boolean"), "abbreviation": ["A", "B"]})
    picture = overlay_image(image, rows)
    assert picture.shape == (300, 240, 3) and picture.dtype == np.uint8
    red = (picture[..., 2] > 200) & (picture[..., 1] < 50)
    green = (picture[..., 1] > 150) & (picture[..., 2] < 50)
    assert red[60:100, 40:80].any() and not red[170:230, 150:210].any()
    assert green[170:230, 150:210].any()
    # the ERE circle of the second point passes 20 px to its right
    assert green[195:206, 198:203].any()


def test_an_image_with_non_finite_output_is_skipped_or_refused(calibrated_run, monkeypatch):
    from chh_lib import prediction

    data_dir, run_dir = calibrated_run
    images = [r.image_path for r in _test_records(data_dir)[:3]]
    real = prediction.float32_logits

    def poisoned(model, batch):
        logits = real(model, batch)
        logits[1, 4, 0, 0] = float("nan")  # the second image of the batch
        return logits

    monkeypatch.setattr(prediction, "float32_logits", poisoned)
    with pytest.raises(DataFormatError, match=f"{images[1].name}: the network's output holds NaN"):
        predict_images(run_dir, images)
    result = predict_images(run_dir, images, on_bad_image="skip")
    assert list(result.skipped) == [str(images[1])] and result.num_images == 2
    assert set(result.table["image"]) == {str(images[0]), str(images[2])}


def test_a_bad_spacing_argument_is_one_line(calibrated_run, capsys, tmp_path):
    data_dir, run_dir = calibrated_run
    image = str(_test_records(data_dir)[0].image_path)
    args = ["predict", "--run-dir", str(run_dir), "--images", image, "--out", str(tmp_path / "p.csv")]
    assert main([*args, "--pixel-size-mm", "0.1", "0.1", "0.1"]) == 2
    assert "--pixel-size-mm takes one value or two" in capsys.readouterr().err
    assert main([*args, "--pixel-size-mm", "-1"]) == 2
    assert "pixel spacing must be one or two positive numbers" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
    assert main([*args, "--no-progress"]) == 0
    flagged = pd.read_csv(tmp_path / "p.csv")["flagged"]
    assert flagged.dtype == bool and len(flagged) == 19


def test_8_and_16_bit_images_in_one_batch_are_each_scaled_by_their_own_depth(calibrated_run, tmp_path):
    from chh_lib.data.formats import read_image

    data_dir, run_dir = calibrated_run
    source = _test_records(data_dir)[0].image_path
    eight = tmp_path / "eight.png"
    shutil.copy(source, eight)
    sixteen = tmp_path / "sixteen.png"
    write_image(sixteen, read_image(source).astype(np.uint16) * 257)  # the same picture at 16 bits
    alone = chh_lib.predict(run_dir, eight)
    together = chh_lib.predict(run_dir, [eight, sixteen])
    for name in (str(eight), str(sixteen)):
        rows = together[together["image"] == name].reset_index(drop=True)
        np.testing.assert_array_equal(rows[["x_px", "y_px"]].to_numpy(), alone[["x_px", "y_px"]].to_numpy())
        np.testing.assert_allclose(rows["ere_mm"], alone["ere_mm"], rtol=1e-4)


def test_a_floating_point_image_is_refused(calibrated_run, tmp_path):
    from PIL import Image

    _, run_dir = calibrated_run
    path = tmp_path / "float.tif"
    Image.fromarray(np.random.default_rng(0).random((300, 240), dtype=np.float32)).save(path)
    with pytest.raises(DataFormatError, match="float.tif: a floating-point image .* save it as 8- or 16-bit"):
        chh_lib.predict(run_dir, path)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(DataFormatError, match=r"notes.png: not a readable image \(unknown or corrupt image format\)$"):
        chh_lib.predict(run_dir, text)


def test_images_sharing_a_stem_get_their_own_overlays(calibrated_run, tmp_path):
    from chh_lib.prediction import output_stems

    data_dir, run_dir = calibrated_run
    source = _test_records(data_dir)[0].image_path
    for name in ("a/x.png", "b/x.png", "a/y.png", "a/y.bmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, tmp_path / name)
    images = [tmp_path / n for n in ("a/x.png", "b/x.png", "a/y.png", "a/y.bmp")]
    stems = output_stems(images)
    assert list(stems.values()) == ["a_x_png", "b_x_png", "a_y_png", "a_y_bmp"]
    assert list(output_stems([tmp_path / "p/a/x.png", tmp_path / "q/a/x.png"]).values()) == ["a_x_png", "a_x_png_2"]
    predict_images(run_dir, images, overlay_dir=tmp_path / "overlays", heatmaps_dir=tmp_path / "maps")
    assert sorted(p.stem for p in (tmp_path / "overlays").iterdir()) == sorted(stems.values())
    assert len(list((tmp_path / "maps").iterdir())) == 4
    with pytest.raises(ConfigError, match="not a folder"):
        predict_images(run_dir, images[0], overlay_dir=images[1])


def test_predict_with_no_readable_image_or_a_folder_as_out_exits_2(calibrated_run, tmp_path, capsys):
    _, run_dir = calibrated_run
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    out = tmp_path / "p.csv"
    assert main(["predict", "--run-dir", str(run_dir), "--images", str(bad), "--out", str(out)]) == 2
    assert "none of the 1 images could be read; no CSV written" in capsys.readouterr().err
    assert not out.exists()
    assert main(["predict", "--run-dir", str(run_dir), "--images", str(bad), "--out", str(tmp_path)]) == 2
    assert "is a folder; --out names the CSV file" in capsys.readouterr().err

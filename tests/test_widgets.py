"""The heatmap inspector (chh_lib.widgets): the logits cache, the reader, and the widgets driven headless."""
from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.contour import ContourSet

from chh_lib.heatmaps import softmax_2d
from chh_lib.metrics import expected_radial_error, radial_error_mm
from chh_lib.widgets import (
    HeatmapInspector,
    HeatmapReader,
    LogitsCache,
    SplitScores,
    descending_order,
    flag_text,
    significant_set,
    small_multiples,
    threshold_description,
)
from chh_lib.workflow import ensure_calibrated, ensure_phantom, ensure_trained_run

pytest.importorskip("ipywidgets")


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> HeatmapReader:
    """A smoke-trained, calibrated run on the smoke phantom (a few seconds), read on its test split."""
    base = tmp_path_factory.mktemp("widgets")
    data_dir = ensure_phantom(base / "phantom", "smoke")
    run_dir = ensure_trained_run(base / "model", data_dir, "smoke", device="cpu")
    ensure_calibrated(run_dir, data_dir, device="cpu")
    return HeatmapReader(run_dir, "test", "cpu", data_dir=data_dir)


@pytest.fixture
def inspector(reader) -> HeatmapInspector:
    return HeatmapInspector(reader)


def _png(inspector: HeatmapInspector) -> str:
    return inspector.output.outputs[0]["data"]["image/png"]


def _with_threshold(reader: HeatmapReader, stored: dict | None) -> HeatmapReader:
    """A reader of the same run whose checkpoint stores ``stored`` as its ERE threshold (None: none stored)."""
    payload = {key: value for key, value in reader.run.payload.items() if key != "ere_threshold"}
    if stored is not None:
        payload["ere_threshold"] = stored
    return HeatmapReader(dataclasses.replace(reader.run, payload=payload), reader.split, "cpu")


# --------------------------------------------------------------------------- the logits cache


def test_cache_evicts_the_least_recently_used_image():
    cache = LogitsCache(max_images=2)
    entries = {i: (torch.full((1, 1, 2, 2), float(i)), np.zeros((2, 2), np.float32)) for i in range(4)}
    assert cache.put(0, *entries[0]) == [] and cache.put(1, *entries[1]) == []
    assert cache.keys == [0, 1]
    assert cache.get(0)[0][0, 0, 0, 0] == 0.0  # a hit makes 0 the most recently used
    assert cache.keys == [1, 0]
    assert cache.put(2, *entries[2]) == [1]  # 1 is now the least recently used
    assert cache.keys == [0, 2] and 1 not in cache and len(cache) == 2 and cache.evictions == 1
    assert cache.get(1) is None
    assert cache.put(3, *entries[3]) == [0] and cache.evictions == 2
    assert cache.nbytes == 2 * (4 * 4 + 4 * 4)  # two entries of 4 float32 logits and 4 float32 pixels


def test_cache_needs_room_for_one_image():
    with pytest.raises(ValueError, match="at least one image"):
        LogitsCache(0)
    cache = LogitsCache(1)
    cache.put(5, torch.zeros(1), np.zeros(1))
    cache.put(6, torch.zeros(1), np.zeros(1))
    assert cache.keys == [6]


def test_reader_keeps_at_most_cache_images(reader):
    small = HeatmapReader(reader.run, "test", "cpu", cache_images=2)
    first = small.logits(0).clone()
    small.logits(1)
    small.logits(0)  # a hit: no forward pass
    assert small.forward_passes == 2 and small.cache.keys == [1, 0]
    small.image(2)  # evicts image 1, the least recently used
    assert small.cache.keys == [0, 2] and small.forward_passes == 3 and small.cache.evictions == 1
    small.logits(1)  # computed again (evicting 0)
    assert small.forward_passes == 4 and small.cache.keys == [2, 1]
    small.logits(0)
    torch.testing.assert_close(small.logits(0), first)  # eval mode: a recomputed image gives the same logits
    for i in range(small.num_images):
        small.read(i, 0)
        assert len(small.cache) <= 2


def test_logits_are_computed_once_per_image(reader):
    first = reader.logits(0)
    assert first.shape == (1, reader.landmarks.num_landmarks, *reader.run.config.data.image_size[::-1])
    passes = reader.forward_passes
    assert reader.logits(0) is first and reader.forward_passes == passes
    with pytest.raises(IndexError):
        reader.logits(reader.num_images)


# --------------------------------------------------------------------------- readings


def test_reading_matches_the_metrics(reader):
    temperature = 2.0
    reading = reader.read(1, 3, temperature)
    heatmap = softmax_2d(reader.logits(1)[:, 3:4] / temperature).double()
    np.testing.assert_allclose(reading.heatmap, heatmap[0, 0].numpy(), rtol=1e-6, atol=1e-12)
    assert math.isclose(reading.heatmap.sum(), 1.0, rel_tol=1e-5)
    pixel = torch.as_tensor(reader.dataset.pixel_size_mm[1:2], dtype=torch.float64)
    ere = float(expected_radial_error(torch.as_tensor(reading.heatmap)[None, None], pixel, reader.ere_cutoff))
    assert math.isclose(reading.ere_mm, ere, rel_tol=1e-9) and reading.ere_cutoff == reader.ere_cutoff
    row, col = np.unravel_index(np.argmax(reading.heatmap), reading.heatmap.shape)
    np.testing.assert_array_equal(reading.prediction_px, [col, row])
    error = radial_error_mm(reading.prediction_px[None, None], reader.dataset.target_px[1:2, 3:4],
                            reader.dataset.pixel_size_mm[1:2])
    assert math.isclose(reading.radial_error_mm, float(error[0, 0]), rel_tol=1e-9)
    assert math.isclose(reading.mode_prob, reading.heatmap.max())
    assert reading.annotators_px.shape == (2, 2)
    np.testing.assert_array_equal(reading.pixel_size_mm, reader.dataset.pixel_size_mm[1])


def test_significant_set_size_and_area(reader):
    reading = reader.read(0, 5, cutoff=0.05)
    count = int((reading.heatmap > 0.05 * reading.heatmap.max()).sum())
    assert reading.significant_pixels == count > 0
    s_x, s_y = reader.dataset.pixel_size_mm[0]
    assert reading.significant_area_mm2 == pytest.approx(count * s_x * s_y)
    wide = reader.read(0, 5, cutoff=0.001)
    narrow = reader.read(0, 5, cutoff=0.5)
    assert wide.significant_pixels >= count >= narrow.significant_pixels >= 1  # the mode is always in S
    pixel = torch.as_tensor(reader.dataset.pixel_size_mm[0:1], dtype=torch.float64)
    for r in (wide, narrow):
        expected = expected_radial_error(torch.as_tensor(r.heatmap)[None, None], pixel, r.ere_cutoff)
        assert r.ere_mm == pytest.approx(float(expected), rel=1e-9)
    with pytest.raises(ValueError, match="cutoff"):
        reader.read(0, 5, cutoff=1.0)


def test_significant_set_of_a_hand_built_map():
    heatmap = np.array([[0.0, 0.1, 0.02], [0.5, 0.3, 0.08]])
    np.testing.assert_array_equal(significant_set(heatmap, 0.05), [[False, True, False], [True, True, True]])
    np.testing.assert_array_equal(significant_set(heatmap, 0.2), [[False, False, False], [True, True, False]])
    assert not significant_set(np.zeros((2, 2)), 0.05).any()


def test_default_temperature_is_the_fitted_one(reader):
    assert reader.read(0, 2).temperature == pytest.approx(reader.fitted_temperatures[2])


def test_temperature_flattens_but_does_not_move_the_prediction(reader):
    readings = [reader.read(2, 0, t) for t in (0.5, 1.0, 2.0, 8.0)]
    mode = [r.mode_prob for r in readings]
    assert all(a > b for a, b in itertools.pairwise(mode))
    for reading in readings[1:]:
        np.testing.assert_array_equal(reading.prediction_px, readings[0].prediction_px)
        assert reading.radial_error_mm == readings[0].radial_error_mm


# --------------------------------------------------------------------------- the stored ERE threshold


def test_reader_uses_the_threshold_stored_by_calibration(reader):
    stored = reader.run.payload["ere_threshold"]
    assert reader.ere_threshold_mm == pytest.approx(stored["ere_threshold_mm"])
    reading = reader.read(3, 4)
    assert reading.ere_threshold_mm == reader.ere_threshold_mm
    assert reading.flagged is (reading.ere_mm >= reader.ere_threshold_mm)
    assert f"{stored['ere_threshold_mm']:.2f} mm" in reader.threshold_note


def test_flag_follows_the_threshold(reader):
    ere = reader.read(3, 4).ere_mm
    low = _with_threshold(reader, {"ere_threshold_mm": ere - 0.01, "split": "calibration"})
    high = _with_threshold(reader, {"ere_threshold_mm": ere + 0.01, "split": "calibration"})
    assert low.read(3, 4).flagged is True and high.read(3, 4).flagged is False
    none = _with_threshold(reader, None)
    assert none.ere_threshold_mm is None and none.read(3, 4).flagged is None
    assert "no ERE threshold is stored" in none.threshold_note
    undefined = _with_threshold(reader, {"ere_threshold_mm": float("nan"), "split": "calibration",
                                         "outlier_threshold_mm": 4.0})
    assert undefined.ere_threshold_mm is None and "undefined" in undefined.threshold_note


def test_threshold_description():
    assert "no ERE threshold" in threshold_description(None)
    text = threshold_description({"ere_threshold_mm": 2.345, "split": "selection", "target_tpr": 0.5,
                                  "num_outliers": 12, "outlier_threshold_mm": 4.0})
    assert text == ("ERE threshold 2.35 mm, chosen on split 'selection' to flag 0.5 of its 12 outliers "
                    "(radial error > 4 mm)")
    assert "no prediction with an error above 4 mm" in threshold_description(
        {"ere_threshold_mm": float("nan"), "split": "calibration", "outlier_threshold_mm": 4.0})


def test_flag_text(reader):
    reading = reader.read(3, 4)
    flagged = dataclasses.replace(reading, ere_mm=3.0, ere_threshold_mm=2.5, flagged=True)
    assert flag_text(flagged) == "FLAGGED: ERE 3.00 mm ≥ threshold 2.50 mm (a likely error)"
    quiet = dataclasses.replace(reading, ere_mm=2.0, ere_threshold_mm=2.5, flagged=False)
    assert flag_text(quiet) == "not flagged: ERE 2.00 mm < threshold 2.50 mm"
    assert "only indicative" in flag_text(quiet, fitted_temperature=reading.temperature * 2, threshold_cutoff=0.05)
    assert "only indicative" not in flag_text(quiet, reading.temperature, reading.ere_cutoff)
    assert flag_text(quiet, fitted_temperature=reading.temperature * 2).endswith(
        "the threshold was chosen at the fitted T, so with other settings the comparison is only indicative")
    missing = dataclasses.replace(reading, ere_threshold_mm=None, flagged=None)
    assert flag_text(missing, note="none here") == "no flag: none here"


# --------------------------------------------------------------------------- navigation tables


def test_descending_order_puts_nan_last():
    np.testing.assert_array_equal(descending_order(np.array([1.0, np.nan, 3.0, 1.0, 2.0])), [2, 4, 0, 3, 1])


def test_split_scores_orders_outliers_and_false_alarms():
    ere = np.array([[5.0, 1.0], [3.0, 4.0], [0.5, 9.0]])  # (N = 3, K = 2)
    error = np.array([[6.0, 0.2], [1.0, np.nan], [8.0, 2.0]])
    scores = SplitScores(ere, error, ere_threshold_mm=3.0, outlier_threshold_mm=4.0)
    np.testing.assert_array_equal(scores.order(0, "ere"), [0, 1, 2])
    np.testing.assert_array_equal(scores.order(0, "error"), [2, 0, 1])
    np.testing.assert_array_equal(scores.order(1, "error"), [2, 0, 1])  # the missing landmark last
    np.testing.assert_array_equal(scores.outlier_pairs(), [[2, 0], [0, 0]])  # errors 8 and 6 mm
    # ERE >= 3 and error <= 4: (2, 1) with ERE 9 and (1, 0) with ERE 3; (1, 1) is missing, (0, 0) an outlier
    np.testing.assert_array_equal(scores.false_alarm_pairs(), [[2, 1], [1, 0]])
    assert dataclasses.replace(scores, ere_threshold_mm=None).false_alarm_pairs().shape == (0, 2)
    with pytest.raises(ValueError, match="sort order"):
        scores.order(0, "name")


def test_split_scores_agree_with_the_readings(reader):
    scores = reader.split_scores()
    assert reader.split_scores() is scores  # computed once
    k_total = reader.landmarks.num_landmarks
    assert scores.ere_mm.shape == scores.radial_error_mm.shape == (reader.num_images, k_total)
    for n, k in ((0, 0), (2, 7), (reader.num_images - 1, k_total - 1)):
        reading = reader.read(n, k)
        assert scores.ere_mm[n, k] == pytest.approx(reading.ere_mm, rel=1e-3, abs=1e-3)
        assert scores.radial_error_mm[n, k] == pytest.approx(reading.radial_error_mm)
    assert scores.ere_threshold_mm == reader.ere_threshold_mm and scores.outlier_threshold_mm == 4.0


# --------------------------------------------------------------------------- the widgets


def test_widget_tree_holds_the_controls(inspector):
    import ipywidgets as widgets

    def walk(widget):
        yield widget
        for child in getattr(widget, "children", ()):
            yield from walk(child)

    found = list(walk(inspector.widget))
    for kind in (widgets.Dropdown, widgets.FloatLogSlider, widgets.IntSlider, widgets.ToggleButtons,
                 widgets.Button, widgets.HTML, widgets.Output):
        assert any(isinstance(w, kind) for w in found), kind.__name__
    assert all(control in found for control in inspector.controls)
    assert len(inspector.controls) == 12
    assert inspector.rank.max == inspector.reader.num_images
    assert len(inspector.landmark.options) == 19 and "sella" in inspector.landmark.options[0][0]
    assert inspector.temperature.value == pytest.approx(inspector.fitted_temperature, rel=1e-6)
    assert inspector.cutoff.value == pytest.approx(inspector.reader.ere_cutoff)


def test_rank_walks_the_sort_order(reader):
    inspector = HeatmapInspector(reader, landmark_index=3)
    scores = reader.split_scores()
    by_ere = np.argsort(-scores.ere_mm[:, 3], kind="stable")
    assert inspector.image_index == 0 and inspector.rank.value == int(np.flatnonzero(by_ere == 0)[0]) + 1
    inspector.rank.value = 1
    assert inspector.image_index == by_ere[0] and inspector.reading.ere_mm == pytest.approx(
        scores.ere_mm[:, 3].max(), rel=1e-3)
    assert inspector.status.value.startswith(f"rank 1 of {reader.num_images} by ERE for")
    inspector.rank.value = reader.num_images
    assert inspector.image_index == by_ere[-1]
    inspector.next.click()  # wraps round to rank 1
    assert inspector.rank.value == 1 and inspector.image_index == by_ere[0]
    inspector.previous.click()
    assert inspector.rank.value == reader.num_images
    inspector.next.click()
    inspector.next.click()
    assert inspector.rank.value == 2 and inspector.image_index == by_ere[1]
    shown = inspector.image_index
    inspector.order.value = "error"  # the same image, at its rank by radial error
    by_error = np.argsort(-scores.radial_error_mm[:, 3], kind="stable")
    assert inspector.image_index == shown and inspector.rank.value == int(np.flatnonzero(by_error == shown)[0]) + 1
    assert "by radial error" in inspector.status.value
    inspector.rank.value = 1
    assert inspector.reading.radial_error_mm == pytest.approx(np.nanmax(scores.radial_error_mm[:, 3]))


def test_controls_update_numbers_and_figure(inspector):
    text, title, png = inspector.text, inspector.figure.axes[1].get_title(), _png(inspector)
    inspector.rank.value = inspector.rank.value % inspector.reader.num_images + 1
    assert inspector.text != text and inspector.reading.image_id in inspector.numbers.value
    assert _png(inspector) != png
    image = inspector.image_index
    text = inspector.text
    inspector.landmark.value = 4  # the same image, another landmark, its fitted temperature
    assert inspector.reading.landmark_index == 4 and inspector.image_index == image and inspector.text != text
    assert inspector.figure.axes[1].get_title() != title
    assert inspector.temperature.value == pytest.approx(inspector.fitted_temperature, rel=1e-6)
    before = inspector.reading
    inspector.temperature.value = before.temperature * 4
    assert inspector.reading.mode_prob < before.mode_prob
    np.testing.assert_array_equal(inspector.reading.prediction_px, before.prediction_px)
    assert f"T = {inspector.reading.temperature:.3g}" in inspector.figure.axes[1].get_title()
    inspector.reset.click()
    assert inspector.reading.temperature == pytest.approx(inspector.fitted_temperature, rel=1e-6)
    inspector.scale.value = "linear"
    assert inspector.figure.axes[-1].get_ylabel() == "probability"  # the colour bar


def test_cutoff_slider_redraws_the_significant_set(inspector):
    def outline(axes):
        (contour,) = [c for c in axes.collections if isinstance(c, ContourSet)]
        return contour

    assert list(outline(inspector.figure.axes[1]).levels) == [pytest.approx(inspector.reader.ere_cutoff)]
    before = inspector.reading
    inspector.cutoff.value = 0.2
    after = inspector.reading
    assert after.ere_cutoff == pytest.approx(0.2) and after.significant_pixels <= before.significant_pixels
    assert after.significant_pixels == int((after.heatmap > 0.2 * after.heatmap.max()).sum())
    assert list(outline(inspector.figure.axes[1]).levels) == [pytest.approx(0.2)]
    assert "c = 0.2" in inspector.figure.axes[1].get_title()
    assert f"|S| = {after.significant_pixels} px" in inspector.figure.axes[1].get_title()
    assert f"{after.significant_pixels} px" in inspector.numbers.value and "c = 0.2" in inspector.text


def test_crop_slider_sets_the_window(inspector):
    inspector.crop.value = 6
    low, high = inspector.figure.axes[1].get_xlim()
    assert high - low == pytest.approx(12.0)
    assert inspector.figure.axes[1].get_xlim()[0] == pytest.approx(inspector.reading.prediction_px[0] - 6)
    inspector.crop.value = 15
    low, high = inspector.figure.axes[1].get_xlim()
    assert high - low == pytest.approx(30.0)


def test_next_outlier_walks_the_largest_errors(inspector):
    scores = inspector.scores
    pairs = scores.outlier_pairs()
    assert len(pairs) >= 2  # a two-epoch model makes many
    inspector.next_outlier.click()
    first = inspector.reading
    assert (first.image_index, first.landmark_index) == tuple(pairs[0])
    assert first.radial_error_mm == pytest.approx(np.nanmax(scores.radial_error_mm))
    assert inspector.status.value.startswith(f"outlier 1 of {len(pairs)}")
    assert inspector.temperature.value == pytest.approx(inspector.fitted_temperature, rel=1e-6)
    inspector.next_outlier.click()
    assert (inspector.reading.image_index, inspector.reading.landmark_index) == tuple(pairs[1])
    assert inspector.reading.radial_error_mm <= first.radial_error_mm
    assert inspector.status.value.startswith(f"outlier 2 of {len(pairs)}")


def test_next_false_alarm_and_wrapping(inspector):
    real = inspector.scores
    threshold = float(np.median(real.ere_mm))
    # Hand-made errors: all small except one pair, so every pair with ERE >= the threshold but that one is a
    # false alarm.
    errors = np.full(real.ere_mm.shape, 1.0)
    top = np.unravel_index(np.argmax(real.ere_mm), real.ere_mm.shape)
    errors[top] = 50.0
    inspector.scores = SplitScores(real.ere_mm, errors, threshold, 4.0)
    alarms = inspector.scores.false_alarm_pairs()
    inspector.next_false_alarm.click()
    shown = inspector.reading
    assert (shown.image_index, shown.landmark_index) == tuple(alarms[0]) != top
    assert inspector.status.value.startswith(f"false alarm 1 of {len(alarms)}")
    inspector.next_outlier.click()  # the only outlier
    assert (inspector.reading.image_index, inspector.reading.landmark_index) == tuple(int(i) for i in top)
    inspector.next_outlier.click()  # wraps round to it again
    assert inspector.status.value.startswith("outlier 1 of 1")
    inspector.next_false_alarm.click()
    assert (inspector.reading.image_index, inspector.reading.landmark_index) == tuple(alarms[1])


def test_no_false_alarm_leaves_the_selection(inspector):
    inspector.scores = dataclasses.replace(inspector.scores, ere_threshold_mm=1e9)
    before = (inspector.image_index, inspector.landmark.value)
    inspector.next_false_alarm.click()
    assert (inspector.image_index, inspector.landmark.value) == before
    assert inspector.status.value.startswith("no false alarm in this split")


def test_flag_is_visible_text(reader):
    ere = reader.read(0, 0).ere_mm
    stored = {"ere_threshold_mm": ere - 0.01, "split": "calibration", "target_tpr": 0.5, "num_outliers": 3,
              "outlier_threshold_mm": 4.0}
    flagged = HeatmapInspector(_with_threshold(reader, stored))
    assert flagged.flag.value.count("FLAGGED") == 1 and "FLAGGED" in flagged.text
    assert "FLAGGED" in flagged.figure.axes[1].get_title()
    calm = HeatmapInspector(_with_threshold(reader, {**stored, "ere_threshold_mm": ere + 0.01}))
    assert "not flagged" in calm.flag.value and "FLAGGED" not in calm.flag.value
    calm.temperature.value = calm.fitted_temperature * 3
    assert "only indicative" in calm.flag.value


def test_a_run_without_a_threshold_says_so(reader):
    inspector = HeatmapInspector(_with_threshold(reader, None))
    assert inspector.next_false_alarm.disabled
    assert "no ERE threshold is stored" in inspector.flag.value and "no flag" in inspector.text
    before = inspector.image_index
    inspector.go_to_next_false_alarm()
    assert inspector.image_index == before and inspector.status.value.startswith("no false alarms to show")


def test_small_multiples_have_one_axes_per_landmark(reader, inspector):
    assert len(small_multiples(reader, 0).axes) == reader.landmarks.num_landmarks
    inspector.show_small_multiples()
    assert inspector.output.outputs[0]["data"]["text/plain"] == "small multiples"


def test_a_run_directory_is_accepted(reader):
    inspector = HeatmapInspector(Path(reader.run.run_dir), data_dir=reader.run.data_dir, image_index=1,
                                 landmark_index=2, log_scale=False, order="error", cutoff=0.1, crop_half_size_px=9)
    assert inspector.reading.image_index == 1 and inspector.reading.landmark_index == 2
    assert inspector.scale.value == "linear" and inspector.order.value == "error"
    assert inspector.reading.ere_cutoff == pytest.approx(0.1) and inspector.crop.value == 9
    with pytest.raises(IndexError):
        HeatmapInspector(reader, image_index=reader.num_images)


def test_show_figure_sets_the_outputs_without_capturing_display():
    import base64

    import ipywidgets
    from matplotlib.figure import Figure

    from chh_lib.widgets import show_figure

    output = ipywidgets.Output()
    figure = Figure(figsize=(2, 1))
    figure.add_subplot().plot([0, 1], [1, 0])
    show_figure(output, figure, "a line")
    (shown,) = output.outputs
    assert shown["output_type"] == "display_data" and shown["data"]["text/plain"] == "a line"
    assert base64.b64decode(shown["data"]["image/png"]).startswith(b"\x89PNG")
    show_figure(output, figure, "again")
    assert len(output.outputs) == 1 and output.outputs[0]["data"]["text/plain"] == "again"

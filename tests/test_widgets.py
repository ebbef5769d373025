"""The heatmap inspector (chh_lib.widgets), driven headless through its widgets."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from chh_lib.heatmaps import softmax_2d
from chh_lib.metrics import expected_radial_error, radial_error_mm
from chh_lib.widgets import HeatmapInspector, HeatmapReader, small_multiples
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


def test_logits_are_computed_once_per_image(reader):
    first = reader.logits(0)
    assert first.shape == (1, reader.landmarks.num_landmarks, *reader.run.config.data.image_size[::-1])
    assert reader.logits(0) is first


def test_reading_matches_the_metrics(reader):
    temperature = 2.0
    reading = reader.read(1, 3, temperature)
    heatmap = softmax_2d(reader.logits(1)[:, 3:4] / temperature).double()
    np.testing.assert_allclose(reading.heatmap, heatmap[0, 0].numpy(), rtol=1e-6, atol=1e-12)
    assert math.isclose(reading.heatmap.sum(), 1.0, rel_tol=1e-5)
    pixel = torch.as_tensor(reader.dataset.pixel_size_mm[1:2], dtype=torch.float64)
    ere = float(expected_radial_error(torch.as_tensor(reading.heatmap)[None, None], pixel, reader.ere_cutoff))
    assert math.isclose(reading.ere_mm, ere, rel_tol=1e-9)
    row, col = np.unravel_index(np.argmax(reading.heatmap), reading.heatmap.shape)
    np.testing.assert_array_equal(reading.prediction_px, [col, row])
    error = radial_error_mm(reading.prediction_px[None, None], reader.dataset.target_px[1:2, 3:4],
                            reader.dataset.pixel_size_mm[1:2])
    assert math.isclose(reading.radial_error_mm, float(error[0, 0]), rel_tol=1e-9)
    assert math.isclose(reading.mode_prob, reading.heatmap.max())
    assert reading.annotators_px.shape == (2, 2)


def test_default_temperature_is_the_fitted_one(reader):
    assert reader.read(0, 2).temperature == pytest.approx(reader.fitted_temperatures[2])


def test_temperature_flattens_but_does_not_move_the_prediction(reader):
    readings = [reader.read(2, 0, t) for t in (0.5, 1.0, 2.0, 8.0)]
    mode = [r.mode_prob for r in readings]
    assert all(a > b for a, b in itertools.pairwise(mode))
    for reading in readings[1:]:
        np.testing.assert_array_equal(reading.prediction_px, readings[0].prediction_px)
        assert reading.radial_error_mm == readings[0].radial_error_mm


def test_widget_tree_holds_the_controls(inspector):
    import ipywidgets as widgets

    def walk(widget):
        yield widget
        for child in getattr(widget, "children", ()):
            yield from walk(child)

    found = list(walk(inspector.widget))
    for kind in (widgets.Dropdown, widgets.FloatLogSlider, widgets.ToggleButtons, widgets.Button,
                 widgets.HTML, widgets.Output):
        assert any(isinstance(w, kind) for w in found), kind.__name__
    assert all(control in found for control in inspector.controls)
    assert len(inspector.image.options) == inspector.reader.num_images
    assert len(inspector.landmark.options) == 19 and "sella" in inspector.landmark.options[0][0]
    assert inspector.temperature.value == pytest.approx(inspector.fitted_temperature, rel=1e-6)


def test_controls_update_numbers_and_figure(inspector):
    text, title, png = inspector.text, inspector.figure.axes[1].get_title(), _png(inspector)
    inspector.image.value = 1
    assert inspector.reading.image_index == 1 and inspector.text != text
    assert inspector.reading.image_id in inspector.numbers.value
    assert _png(inspector) != png
    text, png = inspector.text, _png(inspector)
    inspector.landmark.value = 4
    assert inspector.reading.landmark_index == 4 and inspector.text != text
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


def test_small_multiples_have_one_axes_per_landmark(reader, inspector):
    assert len(small_multiples(reader, 0).axes) == reader.landmarks.num_landmarks
    inspector.show_small_multiples()
    assert inspector.output.outputs[0]["data"]["text/plain"] == "small multiples"


def test_a_run_directory_is_accepted(reader):
    inspector = HeatmapInspector(Path(reader.run.run_dir), data_dir=reader.run.data_dir, image_index=1,
                                 landmark_index=2, log_scale=False)
    assert inspector.reading.image_index == 1 and inspector.reading.landmark_index == 2
    assert inspector.scale.value == "linear"


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

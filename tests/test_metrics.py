"""Radial error, MRE and SDR on hand-built inputs."""
from __future__ import annotations

import numpy as np
import pytest

from chh_lib.metrics import mean_radial_error, radial_error_mm, success_detection_rate


def test_radial_error_uses_anisotropic_pixel_size_per_image():
    pred = np.array([[[3.0, 4.0], [0.0, 0.0]], [[1.0, 1.0], [5.0, 5.0]]])
    target = np.array([[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [np.nan, 5.0]]])
    pixel_size = np.array([[1.0, 1.0], [0.3, 0.4]])
    errors = radial_error_mm(pred, target, pixel_size)
    assert errors[0, 0] == pytest.approx(5.0)
    assert errors[0, 1] == 0.0
    assert errors[1, 0] == pytest.approx(0.5)  # hypot(0.3, 0.4)
    assert np.isnan(errors[1, 1])


def test_radial_error_checks_shapes():
    with pytest.raises(ValueError, match="pixel_size_mm"):
        radial_error_mm(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), np.ones((3, 2)))


def test_mre_and_sd_ignore_missing():
    errors = np.array([[1.0, np.nan], [3.0, 2.0]])
    mre, sd = mean_radial_error(errors)
    assert mre == pytest.approx(2.0)
    assert sd == pytest.approx(np.std([1.0, 3.0, 2.0]))
    assert all(np.isnan(v) for v in mean_radial_error(np.array([np.nan])))


def test_sdr_strict_and_inclusive():
    errors = np.array([1.0, 2.0, 2.5, 3.9, 4.0, np.nan])
    strict = success_detection_rate(errors, (2.0, 2.5, 4.0))
    assert strict == {2.0: pytest.approx(20.0), 2.5: pytest.approx(40.0), 4.0: pytest.approx(80.0)}
    inclusive = success_detection_rate(errors, (2.0, 2.5, 4.0), inclusive=True)
    assert inclusive == {2.0: pytest.approx(40.0), 2.5: pytest.approx(60.0), 4.0: pytest.approx(100.0)}

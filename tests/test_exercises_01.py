"""The exercise checks of notebook 01 (chh_lib.exercises.notebook_01) on tiny hand-built inputs.

Each check: a right answer returns True, the placeholder ``...`` returns False
and prints "not attempted", a wrong answer raises ExerciseError saying what was
expected (with a hint).
"""
from __future__ import annotations

import numpy as np
import pytest

from chh_lib import exercises as check
from chh_lib.exercises import ExerciseError

# --------------------------------------------------------------------------- 01.1


@pytest.fixture
def annotations() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Two images, two annotators, two landmarks; landmark 1 is missing for annotator 1 on image 1."""
    a = np.zeros((2, 2, 2, 2))  # (N, A, K, 2) pixels
    a[0, 1, 0] = [3.0, 4.0]  # 5 px apart
    a[1, 1, 0] = [0.0, 2.0]  # 2 px apart
    a[0, 1, 1] = [1.0, 0.0]  # 1 px apart
    a[1, 1, 1] = np.nan
    pixel = np.array([[0.5, 0.5], [2.0, 2.0]])  # (N, 2) mm
    return a, pixel, ["S", "N"]


def test_01_1_right_answer(annotations, capsys):
    # landmark 0: (5 * 0.5 + 2 * 2) / 2 = 3.25 mm; landmark 1: 1 * 0.5 = 0.5 mm (image 1 missing)
    assert check.exercise_01_1({"mean_distance_mm": [3.25, 0.5], "largest": "S"}, *annotations) is True
    assert "correct" in capsys.readouterr().out


def test_01_1_not_attempted(annotations, capsys):
    assert check.exercise_01_1(..., *annotations) is False
    out = capsys.readouterr().out
    assert "not attempted" in out and out.count("\n") == 1


def test_01_1_wrong_answers(annotations):
    with pytest.raises(ExerciseError, match=r"S should be 3\.25 mm, got 3\.5.*distances in pixels"):
        check.exercise_01_1({"mean_distance_mm": [3.5, 1.0], "largest": "S"}, *annotations)
    with pytest.raises(ExerciseError, match=r"N should be 0\.5 mm, got nan.*nanmean"):
        check.exercise_01_1({"mean_distance_mm": [3.25, np.nan], "largest": "S"}, *annotations)
    with pytest.raises(ExerciseError, match=r"largest should be 'S' \(3\.25 mm\), got 'N'"):
        check.exercise_01_1({"mean_distance_mm": [3.25, 0.5], "largest": "N"}, *annotations)
    with pytest.raises(ExerciseError, match=r"shape \(2,\)"):
        check.exercise_01_1({"mean_distance_mm": [3.25], "largest": "S"}, *annotations)
    with pytest.raises(ExerciseError, match="lacks the keys"):
        check.exercise_01_1({"mean_distance_mm": [3.25, 0.5]}, *annotations)


# --------------------------------------------------------------------------- 01.2


@pytest.fixture
def contour_differences() -> tuple[np.ndarray, np.ndarray]:
    """Four images of one landmark whose tangent turns; along 1 +- 2 mm (a 1 mm bias), across +-0.5 mm."""
    angle = np.array([0.0, 0.5, 1.0, 1.5])
    tangent = np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=-1)
    along = np.array([3.0, -1.0, 3.0, -1.0])
    across = np.array([0.5, 0.5, -0.5, -0.5])
    difference = along[:, None] * tangent + across[:, None] * normal
    return difference[:, None], 3.0 * tangent[:, None]  # (N, 1, 2); the tangent need not be unit length


def test_01_2_right_answer(contour_differences, capsys):
    sd_along, sd_across = np.std([3, -1, 3, -1], ddof=1), np.std([0.5, 0.5, -0.5, -0.5], ddof=1)
    answer = {"sd_along_mm": sd_along, "sd_across_mm": sd_across, "ratio": sd_along / sd_across}
    assert sd_along / sd_across == pytest.approx(4.0)
    assert check.exercise_01_2(answer, *contour_differences, 0) is True
    assert "ratio 4.00" in capsys.readouterr().out


def test_01_2_not_attempted(contour_differences, capsys):
    assert check.exercise_01_2(..., *contour_differences, 0) is False
    assert "not attempted" in capsys.readouterr().out


def test_01_2_wrong_answers(contour_differences):
    sd_along, sd_across = np.std([3, -1, 3, -1], ddof=1), np.std([0.5, 0.5, -0.5, -0.5], ddof=1)
    right = {"sd_along_mm": sd_along, "sd_across_mm": sd_across, "ratio": 4.0}
    with pytest.raises(ExerciseError, match=r"sd_along_mm \(mm\) should be 2\.3094, got 2\.23607.*RMS"):
        check.exercise_01_2({**right, "sd_along_mm": np.sqrt(5.0)}, *contour_differences, 0)  # RMS of 3, -1, 3, -1
    with pytest.raises(ExerciseError, match=r"sd_along_mm \(mm\) should be 2\.3094, got 2\b.*ddof=1"):
        check.exercise_01_2({**right, "sd_along_mm": 2.0}, *contour_differences, 0)  # np.std with ddof 0
    with pytest.raises(ExerciseError, match=r"sd_across_mm \(mm\) should be 0\.57735.*normal"):
        check.exercise_01_2({**right, "sd_across_mm": 0.5}, *contour_differences, 0)
    with pytest.raises(ExerciseError, match=r"ratio should be 4, got 0\.25"):
        check.exercise_01_2({**right, "ratio": 0.25}, *contour_differences, 0)


# --------------------------------------------------------------------------- 01.3


def test_01_3_right_answer(capsys):
    # ISBI 1935 x 2400 at 0.1 mm into 160 x 200: padded to 1935 x 2419 (aspect 0.8), s = (160 / 1935, 200 / 2419)
    scale = np.array([160 / 1935, 200 / 2419])
    answer = {"pixel_size_mm": tuple(0.1 / scale), "point_px": tuple((np.array([1000.0, 1200.0]) + 0.5) * scale - 0.5)}
    assert check.exercise_01_3(answer, (1935, 2400), (0.1, 0.1), (160, 200), (1000.0, 1200.0)) is True
    assert "padded to 1935 x 2419" in capsys.readouterr().out
    # the phantom: no padding, 0.3 mm pixels become 1.2 mm
    assert check.exercise_01_3({"pixel_size_mm": (1.2, 1.2), "point_px": (79.5, 99.5)},
                               (640, 800), (0.3, 0.3), (160, 200), (319.5, 399.5)) is True


def test_01_3_not_attempted(capsys):
    assert check.exercise_01_3(..., (1935, 2400), (0.1, 0.1), (160, 200), (1000.0, 1200.0)) is False
    assert "not attempted" in capsys.readouterr().out


def test_01_3_wrong_answers():
    args = ((1935, 2400), (0.1, 0.1), (160, 200), (1000.0, 1200.0))
    scale = np.array([160 / 1935, 200 / 2419])
    right_point = tuple((np.array([1000.0, 1200.0]) + 0.5) * scale - 0.5)
    with pytest.raises(ExerciseError, match=r"pixel_size_mm\[1\] \(y, mm\) should be 1\.2095, got 1\.2.*pad first"):
        check.exercise_01_3({"pixel_size_mm": (0.1 * 1935 / 160, 0.1 * 2400 / 200), "point_px": right_point}, *args)
    with pytest.raises(ExerciseError, match=r"point_px\[0\] \(x, network pixels\).*\(x \+ 0\.5\)"):
        unshifted = tuple(np.array([1000.0, 1200.0]) * scale)  # forgot the half-pixel shift
        check.exercise_01_3({"pixel_size_mm": tuple(0.1 / scale), "point_px": unshifted}, *args)
    with pytest.raises(ExerciseError, match="two numbers"):
        check.exercise_01_3({"pixel_size_mm": 0.1, "point_px": right_point}, *args)


# --------------------------------------------------------------------------- 01.4


@pytest.fixture
def ellipse_differences() -> np.ndarray:
    """Differences spread along the direction 30 degrees below +x (image y down): SD 2 along, 0.5 across."""
    angle = np.radians(30.0)
    u1, u2 = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
    along, across = np.array([2.0, -2.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.5, -0.5])
    d = along[:, None] * u1 + across[:, None] * u2
    d = np.concatenate([d, [[np.nan, np.nan]]])  # a missing image
    return d[:, None]  # (N, 1, 2)


def _tangents(*angles_deg: float) -> np.ndarray:
    """One unit tangent per image of ``ellipse_differences`` (the missing one included), shape (N, 1, 2)."""
    angles = np.radians(np.array(angles_deg))
    return np.stack([np.cos(angles), np.sin(angles)], axis=-1)[:, None]


#: Tangents along the long axis (30 degrees) for every image: the ratio along them is the pooled one.
FIXED_AXIS = (30.0, 30.0, 30.0, 30.0, 30.0)
#: The two images that differ across the long axis have tangents turned by 60 degrees: their across
#: projections halve (0.25 mm), so the ratio along the tangents, about 8.2, exceeds the pooled 4.
TURNING = (30.0, 30.0, 90.0, 90.0, 30.0)
#: Tangents across the long axis: the ratio along them is 1/4, below the pooled 4.
CROSSWISE = (120.0, 120.0, 120.0, 120.0, 120.0)


def test_01_4_right_answer(ellipse_differences, capsys):
    answer = {"verdict": "c", "pooled_ratio": 4.0, "major_axis_angle_deg": 30.0}
    assert check.exercise_01_4(answer, ellipse_differences, _tangents(*FIXED_AXIS), 0) is True
    out = capsys.readouterr().out
    assert "(c) holds: pooled ratio 4.00 against 4.00" in out and "30.0 degrees" in out and "principal axis" in out
    # an axis has no sign: 210 and -150 degrees are the same axis; the letter may come as "(A)"
    assert check.exercise_01_4({**answer, "verdict": " (A) ", "major_axis_angle_deg": -150.0},
                               ellipse_differences, _tangents(*TURNING), 0)
    assert "against 8.19 along the tangents" in capsys.readouterr().out
    assert check.exercise_01_4({**answer, "verdict": "b"}, ellipse_differences, _tangents(*CROSSWISE), 0)
    assert "most elongated" in capsys.readouterr().out


def test_01_4_not_attempted(ellipse_differences, capsys):
    assert check.exercise_01_4(..., ellipse_differences, _tangents(*FIXED_AXIS), 0) is False
    assert "not attempted" in capsys.readouterr().out


def test_01_4_wrong_answers(ellipse_differences):
    turning = _tangents(*TURNING)
    with pytest.raises(ExerciseError, match=r"prediction \(b\) does not hold: the answer is \(a\).*pooled 4\.00, "
                                            r"along the tangents 8\.19.*cannot follow a contour that turns"):
        check.exercise_01_4({"verdict": "b", "pooled_ratio": 4.0, "major_axis_angle_deg": 30.0},
                            ellipse_differences, turning, 0)
    with pytest.raises(ExerciseError, match=r"the answer is \(c\), the two ratios are equal"):
        check.exercise_01_4({"verdict": "a", "pooled_ratio": 4.0, "major_axis_angle_deg": 30.0},
                            ellipse_differences, _tangents(*FIXED_AXIS), 0)
    with pytest.raises(ExerciseError, match=r"verdict should be one of the letters \['a', 'b', 'c'\], got 'lower'"):
        check.exercise_01_4({"verdict": "lower", "pooled_ratio": 4.0, "major_axis_angle_deg": 30.0},
                            ellipse_differences, turning, 0)
    with pytest.raises(ExerciseError, match=r"lacks the keys \['verdict'\]"):
        check.exercise_01_4({"pooled_ratio": 4.0, "major_axis_angle_deg": 30.0}, ellipse_differences, turning, 0)
    with pytest.raises(ExerciseError, match=r"pooled_ratio should be 4, got 16.*square root"):
        check.exercise_01_4({"verdict": "a", "pooled_ratio": 16.0, "major_axis_angle_deg": 30.0},
                            ellipse_differences, turning, 0)
    with pytest.raises(ExerciseError, match=r"should be 30\.00 degrees.*LARGER eigenvalue"):
        check.exercise_01_4({"verdict": "a", "pooled_ratio": 4.0, "major_axis_angle_deg": 120.0},
                            ellipse_differences, turning, 0)

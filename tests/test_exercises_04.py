"""The exercise checks of notebook 04 (chh_lib.exercises.notebook_04) on tiny hand-built inputs.

Each check: a right answer returns True, the placeholder ``...`` returns False
and prints "not attempted", a wrong answer raises ExerciseError saying what was
expected (with a hint).
"""
from __future__ import annotations

import numpy as np
import pytest

from chh_lib import exercises as check
from chh_lib.exercises import ExerciseError
from chh_lib.exercises.notebook_04 import SAME_SIZE_MARGIN, size_verdict_04_3


def test_exercise_error_is_an_assertion_error():
    assert issubclass(ExerciseError, AssertionError)
    assert check.is_attempted(0) and check.is_attempted(None) and not check.is_attempted(...)


# --------------------------------------------------------------------------- 04.1


@pytest.fixture
def toy_heatmap() -> np.ndarray:
    """Notebook 04's toy map: half the mass on the mode, a quarter on each horizontal neighbour, a far 4 % pixel."""
    toy = np.zeros((5, 9))
    toy[2, 4], toy[2, 3], toy[2, 5], toy[0, 8] = 0.5, 0.25, 0.25, 0.02
    return toy


def test_04_1_right_answer(toy_heatmap, capsys):
    # ERE = 0.5 * 0 + 2 * 0.25 * 0.5 mm = 0.25 mm; the far pixel (0.02 / 0.5 = 4 % < 5 %) is discarded.
    answer = {"ere_mm": 0.25, "discarded_mass": 0.02 / 1.02}
    assert check.exercise_04_1(answer, toy_heatmap, (0.5, 0.5)) is True
    assert "correct" in capsys.readouterr().out
    # float32 rounding is tolerated; the check keeps no state, so a second call agrees
    assert check.exercise_04_1({"ere_mm": np.float32(0.25), "discarded_mass": np.float32(0.02 / 1.02)},
                               toy_heatmap, (0.5, 0.5)) is True


def test_04_1_not_attempted(toy_heatmap, capsys):
    assert check.exercise_04_1(..., toy_heatmap, (0.5, 0.5)) is False
    out = capsys.readouterr().out
    assert "not attempted" in out and out.count("\n") == 1


def test_04_1_wrong_answers(toy_heatmap):
    with pytest.raises(ExerciseError, match=r"ere_mm \(mm\) should be 0\.25, got 0\.288.*Hint: keep the pixels"):
        # the far pixel (4 columns, 2 rows away) kept, no cutoff: (0.25 + 0.02 * 0.5 * hypot(4, 2)) / 1.02 mm
        check.exercise_04_1({"ere_mm": (0.25 + 0.02 * 0.5 * np.hypot(4, 2)) / 1.02, "discarded_mass": 0.02 / 1.02},
                            toy_heatmap, (0.5, 0.5))
    with pytest.raises(ExerciseError, match=r"discarded_mass should be 0\.0196.*Hint"):
        check.exercise_04_1({"ere_mm": 0.25, "discarded_mass": 0.02}, toy_heatmap, (0.5, 0.5))
    with pytest.raises(ExerciseError, match=r"lacks the keys \['discarded_mass'\]"):
        check.exercise_04_1({"ere_mm": 0.25}, toy_heatmap, (0.5, 0.5))
    with pytest.raises(ExerciseError, match="should be a dict"):
        check.exercise_04_1(0.25, toy_heatmap, (0.5, 0.5))
    with pytest.raises(ExerciseError, match="should be one number"):
        check.exercise_04_1({"ere_mm": "small", "discarded_mass": 0.0}, toy_heatmap, (0.5, 0.5))


def test_04_1_uses_the_pixel_size_per_axis(toy_heatmap):
    # Pixels 0.5 mm wide and 2 mm tall: the horizontal spread is still 0.25 mm.
    assert check.exercise_04_1({"ere_mm": 0.25, "discarded_mass": 0.02 / 1.02}, toy_heatmap, (0.5, 2.0))
    vertical = toy_heatmap.T.copy()  # the spread is now along y
    with pytest.raises(ExerciseError, match="should be 1, got 0.25"):
        check.exercise_04_1({"ere_mm": 0.25, "discarded_mass": 0.02 / 1.02}, vertical, (0.5, 2.0))


# --------------------------------------------------------------------------- 04.2


@pytest.fixture
def cutoff_data() -> tuple[np.ndarray, list[float], np.ndarray]:
    """Two images, three landmarks (one missing): ERE twice the error at 0.001, equal to it at 0.05."""
    errors = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, np.nan]])  # (N, K)
    ere_by_cutoff = np.stack([2 * errors, errors], axis=-1)  # (N, K, 2)
    ere_by_cutoff[1, 2] = [100.0, 50.0]  # a missing landmark's ERE must be ignored
    return ere_by_cutoff, [0.001, 0.05], errors


def test_04_2_right_answer(cutoff_data, capsys):
    # Present pairs: errors 1..5, mean 3; means 6 and 3 mm (a 100 % change), Spearman 1 and 1 (no change).
    answer = {"mean_ere_mm": (6.0, 3.0), "spearman": (1.0, 1.0), "rank_correlation_changes_less": True}
    assert check.exercise_04_2(answer, *cutoff_data) is True
    assert "correct" in capsys.readouterr().out


def test_04_2_not_attempted(cutoff_data, capsys):
    assert check.exercise_04_2(..., *cutoff_data) is False
    assert "not attempted" in capsys.readouterr().out


def test_04_2_wrong_answers(cutoff_data):
    right = {"mean_ere_mm": (6.0, 3.0), "spearman": (1.0, 1.0), "rank_correlation_changes_less": True}
    with pytest.raises(ExerciseError, match=r"mean_ere_mm at cutoff 0\.001 should be 6.*present pairs only"):
        # the missing landmark included: (30 + 100) / 6
        check.exercise_04_2({**right, "mean_ere_mm": (130 / 6, 3.0)}, *cutoff_data)
    with pytest.raises(ExerciseError, match=r"spearman at cutoff 0\.05 should be 1, got -1.*Hint"):
        check.exercise_04_2({**right, "spearman": (1.0, -1.0)}, *cutoff_data)
    with pytest.raises(ExerciseError, match=r"rank_correlation_changes_less should be True.*100\.0 %.*Hint"):
        check.exercise_04_2({**right, "rank_correlation_changes_less": False}, *cutoff_data)
    with pytest.raises(ExerciseError, match="should be True or False"):
        check.exercise_04_2({**right, "rank_correlation_changes_less": "yes"}, *cutoff_data)
    with pytest.raises(ExerciseError, match="two numbers"):
        check.exercise_04_2({**right, "mean_ere_mm": 6.0}, *cutoff_data)


def test_04_2_the_flag_follows_the_data():
    # The same mean at both cutoffs but the ranking reversed: the rank correlation changes MORE.
    errors = np.array([[1.0, 2.0, 3.0]])
    ere_by_cutoff = np.stack([errors, errors[:, ::-1]], axis=-1)
    answer = {"mean_ere_mm": (2.0, 2.0), "spearman": (1.0, -1.0), "rank_correlation_changes_less": False}
    assert check.exercise_04_2(answer, ere_by_cutoff, [0.001, 0.05], errors) is True


# --------------------------------------------------------------------------- 04.3


@pytest.fixture
def landmark_data() -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Landmark 0 is the point landmark; landmark 2 of image 1 is missing."""
    ere = np.array([[1.0, 5.0, 7.0], [3.0, 9.0, 100.0]])
    errors = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, np.nan]])
    return ere, errors, [0]


def test_04_3_right_answer(landmark_data, capsys):
    # contour pairs 5, 7, 9 -> median 7; point pairs 1, 3 -> median 2: ratio 3.5, verdict (a)
    answer = {"verdict": "(A)", "median_ere_contour_mm": 7.0, "median_ere_point_mm": 2.0}
    assert check.exercise_04_3(answer, *landmark_data) is True
    out = capsys.readouterr().out
    assert "correct" in out and "ratio of 3.50" in out


def test_04_3_not_attempted(landmark_data, capsys):
    assert check.exercise_04_3(..., *landmark_data) is False
    assert "not attempted" in capsys.readouterr().out


def test_04_3_wrong_answers(landmark_data):
    right = {"verdict": "a", "median_ere_contour_mm": 7.0, "median_ere_point_mm": 2.0}
    with pytest.raises(ExerciseError, match=r"your prediction \(b\) does not hold: the answer is \(a\).*ratio of 3.50"):
        check.exercise_04_3({**right, "verdict": "b"}, *landmark_data)
    with pytest.raises(ExerciseError, match="one of the letters"):
        check.exercise_04_3({**right, "verdict": "d"}, *landmark_data)
    with pytest.raises(ExerciseError, match=r"median_ere_contour_mm \(mm\) should be 7, got 8.*Hint"):
        check.exercise_04_3({**right, "median_ere_contour_mm": 8.0}, *landmark_data)  # missing pair included
    with pytest.raises(ExerciseError, match=r"median_ere_point_mm \(mm\) should be 2, got 1"):
        check.exercise_04_3({**right, "median_ere_point_mm": 1.0}, *landmark_data)


@pytest.mark.parametrize(("contour_mm", "point_mm", "letter"), [
    (1.21, 1.0, "a"), (1.19, 1.0, "b"), (0.81, 1.0, "b"), (0.79, 1.0, "c"), (0.60, 0.80, "c"), (0.68, 0.80, "b"),
])
def test_04_3_verdict_margin(contour_mm, point_mm, letter):
    assert SAME_SIZE_MARGIN == 0.2
    assert size_verdict_04_3(contour_mm, point_mm) == letter


def test_04_3_needs_both_kinds_of_landmark(landmark_data):
    ere, errors, _ = landmark_data
    right = {"verdict": "a", "median_ere_contour_mm": 7.0, "median_ere_point_mm": 2.0}
    assert check.exercise_04_3(..., ere, errors, []) is False  # not attempted: nothing to compute
    with pytest.raises(ValueError, match="point landmark"):
        check.exercise_04_3(right, ere, errors, [])

"""The exercise checks of notebook 06 (chh_lib.exercises.notebook_06) on tiny hand-built inputs.

Each check: a right answer returns True, the placeholder ``...`` returns False
and prints "not attempted", a wrong answer raises ExerciseError saying what was
expected (with a hint).
"""
from __future__ import annotations

import numpy as np
import pytest

from chh_lib import exercises as check
from chh_lib.exercises import ExerciseError
from chh_lib.exercises.notebook_06 import false_alarms

# --------------------------------------------------------------------------- 06.1


@pytest.fixture
def heatmap() -> np.ndarray:
    """Ratios to the maximum: 1, 0.5, 0.2 (exactly at the 0.2 cutoff), 0.1 and 0.01 (twice)."""
    p = np.array([[1.0, 0.5, 0.2], [0.1, 0.01, 0.01]])
    return p / p.sum()


def test_06_1_right_answer(heatmap, capsys):
    # c = 0.05: 1, 0.5, 0.2, 0.1 -> 4 px; c = 0.2: 1, 0.5 (0.2 is not > 0.2) -> 2 px; a pixel is 0.5 x 2 = 1 mm²
    answer = {"pixels": (4, 2), "area_mm2": (4.0, 2.0)}
    assert check.exercise_06_1(answer, heatmap, (0.5, 2.0)) is True
    out = capsys.readouterr().out
    assert "correct" in out and "|S| = 4 px" in out
    assert check.exercise_06_1({"pixels": (4, 2), "area_mm2": (1.0, 0.5)}, heatmap, (0.5, 0.5)) is True


def test_06_1_not_attempted(heatmap, capsys):
    assert check.exercise_06_1(..., heatmap, (0.5, 2.0)) is False
    out = capsys.readouterr().out
    assert "not attempted" in out and out.count("\n") == 1


def test_06_1_wrong_answers(heatmap):
    with pytest.raises(ExerciseError, match=r"pixels at cutoff 0\.2 should be 2, got 3.*strictly greater"):
        check.exercise_06_1({"pixels": (4, 3), "area_mm2": (4.0, 3.0)}, heatmap, (0.5, 2.0))  # >= instead of >
    with pytest.raises(ExerciseError, match=r"pixels at cutoff 0\.05 should be 4, got 6.*p / p\.max\(\)"):
        check.exercise_06_1({"pixels": (6, 2), "area_mm2": (6.0, 2.0)}, heatmap, (0.5, 2.0))
    with pytest.raises(ExerciseError, match=r"area_mm2 at cutoff 0\.05 \(mm²\) should be 4, got 2.*s_x \* s_y"):
        check.exercise_06_1({"pixels": (4, 2), "area_mm2": (2.0, 1.0)}, heatmap, (0.5, 2.0))  # s_x only
    with pytest.raises(ExerciseError, match="whole number"):
        check.exercise_06_1({"pixels": (4.5, 2), "area_mm2": (4.0, 2.0)}, heatmap, (0.5, 2.0))
    with pytest.raises(ExerciseError, match=r"lacks the keys \['area_mm2'\]"):
        check.exercise_06_1({"pixels": (4, 2)}, heatmap, (0.5, 2.0))
    with pytest.raises(ExerciseError, match="two numbers"):
        check.exercise_06_1({"pixels": 4, "area_mm2": (4.0, 2.0)}, heatmap, (0.5, 2.0))


def test_06_1_follows_the_cutoffs(heatmap):
    assert check.exercise_06_1({"pixels": (6, 1), "area_mm2": (6.0, 1.0)}, heatmap, (1.0, 1.0), cutoffs=(0.001, 0.6))


# --------------------------------------------------------------------------- 06.2


@pytest.fixture
def scores() -> tuple[np.ndarray, np.ndarray]:
    """ERE and error (N = 2, K = 3): threshold 3 mm, outliers above 4 mm."""
    ere = np.array([[5.0, 3.5, 1.0], [9.0, 3.0, 8.0]])
    error = np.array([[1.0, 2.0, 0.5], [7.0, 4.0, np.nan]])
    # flagged (ERE >= 3): (0, 0), (0, 1), (1, 0), (1, 1), (1, 2); (1, 0) is an outlier, (1, 2) missing
    return ere, error


def test_false_alarm_mask(scores):
    np.testing.assert_array_equal(false_alarms(*scores, 3.0, 4.0), [[True, True, False], [False, True, False]])
    assert not false_alarms(*scores, None, 4.0).any() and not false_alarms(*scores, float("nan"), 4.0).any()


def test_06_2_right_answer(scores, capsys):
    answer = {"image_index": 0, "landmark_index": 0, "ere_mm": 5.0}
    assert check.exercise_06_2(answer, *scores, 3.0, 4.0) is True
    assert "3 false alarms in all" in capsys.readouterr().out


def test_06_2_none_when_there_is_no_false_alarm(scores, capsys):
    assert check.exercise_06_2(None, *scores, 10.0, 4.0) is True
    assert "no false alarm" in capsys.readouterr().out
    assert check.exercise_06_2(None, *scores, None, 4.0) is True
    with pytest.raises(ExerciseError, match="the run has no ERE threshold.*None"):
        check.exercise_06_2({"image_index": 0, "landmark_index": 0, "ere_mm": 5.0}, *scores, None, 4.0)
    with pytest.raises(ExerciseError, match=r"no prediction has ERE >= 10\.000 mm"):
        check.exercise_06_2({"image_index": 0, "landmark_index": 0, "ere_mm": 5.0}, *scores, 10.0, 4.0)


def test_06_2_not_attempted(scores, capsys):
    assert check.exercise_06_2(..., *scores, 3.0, 4.0) is False
    assert "not attempted" in capsys.readouterr().out


def test_06_2_wrong_answers(scores):
    with pytest.raises(ExerciseError, match=r"\(1, 0\) is not a false alarm: its radial error 7\.00 mm.*true alarm"):
        check.exercise_06_2({"image_index": 1, "landmark_index": 0, "ere_mm": 9.0}, *scores, 3.0, 4.0)
    with pytest.raises(ExerciseError, match=r"\(1, 2\) is not a false alarm: the landmark is missing"):
        check.exercise_06_2({"image_index": 1, "landmark_index": 2, "ere_mm": 8.0}, *scores, 3.0, 4.0)
    with pytest.raises(ExerciseError, match=r"\(0, 2\) is not a false alarm: its ERE 1\.000 mm is below"):
        check.exercise_06_2({"image_index": 0, "landmark_index": 2, "ere_mm": 1.0}, *scores, 3.0, 4.0)
    with pytest.raises(ExerciseError, match=r"with ERE 3\.500 mm; the largest false-alarm ERE is 5\.000 mm"):
        check.exercise_06_2({"image_index": 0, "landmark_index": 1, "ere_mm": 3.5}, *scores, 3.0, 4.0)
    with pytest.raises(ExerciseError, match=r"ere_mm \(mm\) should be 5, got 9"):
        check.exercise_06_2({"image_index": 0, "landmark_index": 0, "ere_mm": 9.0}, *scores, 3.0, 4.0)
    with pytest.raises(ExerciseError, match="there are 3 false alarms"):
        check.exercise_06_2(None, *scores, 3.0, 4.0)
    with pytest.raises(ExerciseError, match="is not an"):
        check.exercise_06_2({"image_index": 2, "landmark_index": 0, "ere_mm": 5.0}, *scores, 3.0, 4.0)


def test_06_2_an_error_exactly_at_the_outlier_threshold_is_not_an_outlier(scores):
    ere, error = scores
    only = np.where([[False, False, False], [False, True, False]], ere, 0.0)  # (1, 1): ERE 3.0, error 4.0
    assert check.exercise_06_2({"image_index": 1, "landmark_index": 1, "ere_mm": 3.0}, only, error, 3.0, 4.0)


# --------------------------------------------------------------------------- 06.3


def _ring_logits() -> np.ndarray:
    """Logits of a 9 x 9 map: 0 at the centre, -1 on its 4 neighbours, -10 elsewhere."""
    z = np.full((9, 9), -10.0)
    z[4, 4] = 0.0
    z[3, 4] = z[5, 4] = z[4, 3] = z[4, 5] = -1.0
    return z


def _ere_by_hand(temperature: float, pixel: float, cutoff: float = 0.05) -> float:
    """ERE of softmax(_ring_logits() / T): only the centre and its 4 neighbours (one pixel away) can pass the cutoff."""
    neighbour = np.exp(-1.0 / temperature)  # ratio to the maximum
    far = np.exp(-10.0 / temperature)
    assert far <= cutoff  # the far pixels stay out at the temperatures used below
    if neighbour <= cutoff:
        return 0.0
    return 4 * neighbour * pixel / (1 + 4 * neighbour)


def test_06_3_right_answer(capsys):
    z = _ring_logits()
    at_t, at_2t = _ere_by_hand(1.0, 0.5), _ere_by_hand(2.0, 0.5)
    answer = {"verdict": "c", "ere_at_T_mm": at_t, "ere_at_2T_mm": at_2t, "larger_at_2T": True}
    assert check.exercise_06_3(answer, z, 1.0, (0.5, 0.5)) is True
    out = capsys.readouterr().out
    assert "correct" in out and "(c) holds" in out and "Here it grew" in out
    assert check.exercise_06_3({**answer, "verdict": " (C) "}, z, 1.0, (0.5, 0.5)) is True
    # at T = 0.25 the neighbours' ratio exp(-4) < 0.05: ERE 0; at 2T = 0.5, exp(-2) > 0.05
    answer = {"verdict": "c", "ere_at_T_mm": 0.0, "ere_at_2T_mm": _ere_by_hand(0.5, 0.5), "larger_at_2T": True}
    assert check.exercise_06_3(answer, z, 0.25, (0.5, 0.5)) is True


def test_06_3_not_attempted(capsys):
    assert check.exercise_06_3(..., _ring_logits(), 1.0, (0.5, 0.5)) is False
    assert "not attempted" in capsys.readouterr().out


def test_06_3_wrong_answers():
    z = _ring_logits()
    at_t, at_2t = _ere_by_hand(1.0, 0.5), _ere_by_hand(2.0, 0.5)
    right = {"verdict": "c", "ere_at_T_mm": at_t, "ere_at_2T_mm": at_2t, "larger_at_2T": True}
    # the letter is checked first: (a) "every heatmap" fails even where this one grows
    with pytest.raises(ExerciseError, match=r"your prediction \(a\) does not hold: the answer is \(c\).*Here it grew"):
        check.exercise_06_3({**right, "verdict": "a"}, z, 1.0, (0.5, 0.5))
    with pytest.raises(ExerciseError, match=r"letters \['a', 'b', 'c'\]"):
        check.exercise_06_3({**right, "verdict": "d"}, z, 1.0, (0.5, 0.5))
    with pytest.raises(ExerciseError, match="lacks the keys"):
        check.exercise_06_3({key: value for key, value in right.items() if key != "verdict"}, z, 1.0, (0.5, 0.5))
    with pytest.raises(ExerciseError, match=r"ere_at_2T_mm \(mm\) should be.*Use 2 T, not T / 2"):
        check.exercise_06_3({**right, "ere_at_2T_mm": _ere_by_hand(0.5, 0.5)}, z, 1.0, (0.5, 0.5))
    with pytest.raises(ExerciseError, match=r"ere_at_T_mm \(mm\) should be.*2D softmax"):
        check.exercise_06_3({**right, "ere_at_T_mm": at_t * 2}, z, 1.0, (0.5, 0.5))  # pixel size 1 mm
    with pytest.raises(ExerciseError, match="larger_at_2T should be True. Why: ERE .* mm at T = 1, .*S can only grow"):
        check.exercise_06_3({**right, "larger_at_2T": False}, z, 1.0, (0.5, 0.5))
    with pytest.raises(ExerciseError, match="should be True or False"):
        check.exercise_06_3({**right, "larger_at_2T": 1}, z, 1.0, (0.5, 0.5))


def test_06_3_large_logits_do_not_overflow():
    z = _ring_logits() + 1000.0  # exp(1000) overflows without the max subtraction
    answer = {"verdict": "c", "ere_at_T_mm": _ere_by_hand(1.0, 0.5), "ere_at_2T_mm": _ere_by_hand(2.0, 0.5),
              "larger_at_2T": True}
    assert check.exercise_06_3(answer, z, 1.0, (0.5, 0.5)) is True


def test_06_3_a_strong_far_peak_makes_the_ere_shrink(capsys):
    # Mode at (5, 5) (logit 0), a second peak 10 px to the right (logit -0.1, ratio 0.905 at T = 1) and the four
    # neighbours of the mode at -3.5 (ratio 0.030 < 0.05 at T = 1, 0.174 at 2T); the rest far below.
    # T = 1: S = {mode, peak}, ERE = 10 * 0.905 / 1.905 = 4.75 px. 2T: the neighbours join and pull the ERE in:
    # (10 * 0.951 + 4 * 0.174) / (1 + 0.951 + 4 * 0.174) = 3.86 px: (a) "every heatmap larger" is false.
    z = np.full((11, 21), -100.0)
    z[5, 5], z[5, 15] = 0.0, -0.1
    for row, col in ((4, 5), (6, 5), (5, 4), (5, 6)):
        z[row, col] = -3.5
    ratio_peak, ratio_near = np.exp(-0.1), np.exp(-3.5)
    at_t = 10 * ratio_peak / (1 + ratio_peak)
    at_2t = (10 * ratio_peak ** 0.5 + 4 * ratio_near ** 0.5) / (1 + ratio_peak ** 0.5 + 4 * ratio_near ** 0.5)
    assert at_2t < at_t
    answer = {"verdict": "c", "ere_at_T_mm": at_t, "ere_at_2T_mm": at_2t, "larger_at_2T": False}
    assert check.exercise_06_3(answer, z, 1.0, (1.0, 1.0)) is True
    assert "Here it did not grow" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match=r"larger_at_2T should be False"):
        check.exercise_06_3({**answer, "larger_at_2T": True}, z, 1.0, (1.0, 1.0))

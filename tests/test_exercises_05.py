"""The exercise checks of notebook 05 (chh_lib.exercises.notebook_05) on tiny hand-built inputs.

Each check: a right answer returns True, the placeholder ``...`` returns False
and prints "not attempted", a wrong answer raises ExerciseError saying what was
expected (with a hint).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from chh_lib import exercises as check
from chh_lib.exercises import ExerciseError
from chh_lib.exercises import notebook_05 as check_05


def rank_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """The Mann-Whitney form of the AUROC, written out (the student's route)."""
    ranks = rankdata(scores)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


# --------------------------------------------------------------------------- 05.1


@pytest.fixture
def roc_data() -> dict:
    """Three images of two landmarks; image 2 is hard (its outlier is easy to catch)."""
    is_outlier = np.array([[True, False], [False, True], [True, False]])
    scores = {
        # non-hard pairs (rows 0, 1): outliers 5, 2 against inliers 3, 1 -> 3 of 4 pairs ordered: AUROC 0.75
        "ere": np.array([[5.0, 3.0], [1.0, 2.0], [9.0, 0.5]]),
        # a tie between an outlier and an inlier counts one half: (1 + 0.5 + 1 + 0) / 4 = 0.625
        "entropy": np.array([[2.0, 2.0], [1.0, 1.5], [3.0, 0.1]]),
    }
    present = np.ones_like(is_outlier)
    non_hard = present & np.array([True, True, False])[:, None]
    return {"scores": scores, "is_outlier": is_outlier, "non_hard": non_hard, "present": present}


def test_05_1_right_answer(roc_data, capsys):
    assert check.exercise_05_1({"ere": 0.75, "entropy": 0.625}, **roc_data) is True
    out = capsys.readouterr().out
    assert "correct" in out and "over 2 outliers and 2 inliers" in out
    # the rank formula agrees with the library, ties included
    mask = roc_data["non_hard"]
    answer = {name: rank_auroc(roc_data["scores"][name][mask], roc_data["is_outlier"][mask])
              for name in ("ere", "entropy")}
    assert answer == pytest.approx({"ere": 0.75, "entropy": 0.625})
    assert check.exercise_05_1(answer, **roc_data) is True


def test_05_1_not_attempted(roc_data, capsys):
    assert check.exercise_05_1(..., **roc_data) is False
    out = capsys.readouterr().out
    assert "not attempted" in out and out.count("\n") == 1


def test_05_1_wrong_answers(roc_data):
    with pytest.raises(ExerciseError, match=r"AUROC of ere should be 0\.75, got 0\.25 = 1 - AUROC.*OUTLIERS"):
        check.exercise_05_1({"ere": 0.25, "entropy": 0.625}, **roc_data)
    # over all three images the ERE orders (9, 5, 2) against (3, 1, 0.5): 8 of 9 pairs
    with pytest.raises(ExerciseError, match=r"should be 0\.75, got 0\.888889, which is its value on ALL images"):
        check.exercise_05_1({"ere": 8 / 9, "entropy": 0.625}, **roc_data)
    # ties counted as wins: 4 / 4 instead of 0.625
    with pytest.raises(ExerciseError, match=r"AUROC of entropy should be 0\.625, got 0\.75.*average rank"):
        check.exercise_05_1({"ere": 0.75, "entropy": 0.75}, **roc_data)
    with pytest.raises(ExerciseError, match=r"lacks the keys \['entropy'\]"):
        check.exercise_05_1({"ere": 0.75}, **roc_data)
    with pytest.raises(ExerciseError, match="should be a dict"):
        check.exercise_05_1(0.75, **roc_data)


def test_05_1_one_class_only(roc_data):
    roc_data["is_outlier"] = np.zeros_like(roc_data["is_outlier"])
    assert check.exercise_05_1({"ere": float("nan"), "entropy": float("nan")}, **roc_data) is True
    with pytest.raises(ExerciseError, match="only one class"):
        check.exercise_05_1({"ere": 0.5, "entropy": float("nan")}, **roc_data)


# --------------------------------------------------------------------------- 05.2


@pytest.fixture
def threshold_data() -> tuple[np.ndarray, np.ndarray, float, float]:
    """Errors 1, 5, 6 and 2 mm (outliers > 4 mm: two), one missing; flag ERE >= 3 mm."""
    errors = np.array([[1.0, 5.0, np.nan], [6.0, 2.0, 4.0]])
    ere = np.array([[3.0, 4.0, 99.0], [1.0, 0.5, 3.0]])  # the missing pair's ERE is ignored
    return ere, errors, 3.0, 4.0


def test_05_2_right_answer(threshold_data, capsys):
    # flagged: (0, 0) inlier, (0, 1) outlier, (1, 2) inlier (4 mm is not > 4 mm); outliers (0, 1), (1, 0)
    answer = {"tpr": 1 / 2, "fpr": 2 / 3, "precision": 1 / 3}
    assert check.exercise_05_2(answer, *threshold_data) is True
    assert "TPR 0.500, FPR 0.667, precision 0.333" in capsys.readouterr().out


def test_05_2_not_attempted(threshold_data, capsys):
    assert check.exercise_05_2(..., *threshold_data) is False
    assert "not attempted" in capsys.readouterr().out


def test_05_2_wrong_answers(threshold_data):
    right = {"tpr": 1 / 2, "fpr": 2 / 3, "precision": 1 / 3}
    with pytest.raises(ExerciseError, match=r"fpr should be 0, got 0\.666667.*inliers"):
        # at 3.5 mm only (0, 1) is flagged: TPR still 1/2, but FPR 0 and precision 1
        ere, errors, _, outlier_mm = threshold_data
        check.exercise_05_2(right, ere, errors, 3.5, outlier_mm)
    with pytest.raises(ExerciseError, match=r"precision should be 0\.333333, got 0\.25.*flagged pairs"):
        check.exercise_05_2({**right, "precision": 1 / 4}, *threshold_data)  # the missing pair counted
    with pytest.raises(ExerciseError, match=r"tpr should be 0\.5, got 1.*calibration threshold"):
        check.exercise_05_2({**right, "tpr": 1.0}, *threshold_data)
    with pytest.raises(ExerciseError, match="one number"):
        check.exercise_05_2({**right, "tpr": [0.5, 0.5]}, *threshold_data)


def test_05_2_nothing_flagged(threshold_data):
    ere, errors, _, outlier_mm = threshold_data
    answer = {"tpr": 0.0, "fpr": 0.0, "precision": float("nan")}
    assert check.exercise_05_2(answer, ere, errors, 100.0, outlier_mm) is True


# --------------------------------------------------------------------------- 05.3


@pytest.fixture
def score_data() -> tuple[np.ndarray, np.ndarray]:
    """ERE with a tie between an outlier and an inlier: AUROC (2 + 2 + 1.5) / 6 = 11 / 12."""
    ere = np.array([0.5, 1.0, 2.0, 4.0, 2.0])
    is_outlier = np.array([False, False, True, True, False])
    return ere, is_outlier


def test_05_3_right_answer(score_data, capsys):
    ere, is_outlier = score_data
    random_scores = np.array([0.9, 0.1, 0.5, 0.05, 0.3])  # outliers 0.5, 0.05 against 0.9, 0.1, 0.3: 2 of 6
    answer = {"auroc_negative_ere": 1 - 11 / 12, "random_scores": random_scores, "auroc_random": 2 / 6}
    assert check.exercise_05_3(answer, ere, is_outlier) is True
    out = capsys.readouterr().out
    assert "0.083 = 1 - 0.917" in out and "from 0.5, over 2 outliers and 3 inliers" in out
    # a fresh random draw works as well
    drawn = np.random.default_rng(0).random(ere.size)
    assert check.exercise_05_3({**answer, "random_scores": drawn,
                                "auroc_random": rank_auroc(drawn, is_outlier)}, ere, is_outlier) is True


def test_05_3_not_attempted(score_data, capsys):
    assert check.exercise_05_3(..., *score_data) is False
    assert "not attempted" in capsys.readouterr().out


def test_05_3_wrong_answers(score_data):
    ere, is_outlier = score_data
    right = {"auroc_negative_ere": 1 / 12, "random_scores": np.array([0.9, 0.1, 0.5, 0.05, 0.3]),
             "auroc_random": 1 / 3}
    with pytest.raises(ExerciseError, match=r"should be 0\.0833333, got the AUROC of the ERE itself.*-ere"):
        check.exercise_05_3({**right, "auroc_negative_ere": 11 / 12}, ere, is_outlier)
    with pytest.raises(ExerciseError, match=r"auroc_negative_ere should be 0\.0833333, got 0.*1 - the AUROC"):
        check.exercise_05_3({**right, "auroc_negative_ere": 0.0}, ere, is_outlier)
    with pytest.raises(ExerciseError, match=r"auroc_random should be 0\.333333, got 0\.5"):
        check.exercise_05_3({**right, "auroc_random": 0.5}, ere, is_outlier)  # typed 0.5 instead of computing
    with pytest.raises(ExerciseError, match="one number per present pair"):
        check.exercise_05_3({**right, "random_scores": np.zeros(3)}, ere, is_outlier)
    with pytest.raises(ExerciseError, match="is the ERE itself"):
        check.exercise_05_3({**right, "random_scores": ere, "auroc_random": 11 / 12}, ere, is_outlier)
    with pytest.raises(ExerciseError, match="differ"):
        check.exercise_05_3({**right, "random_scores": np.ones(5), "auroc_random": 0.5}, ere, is_outlier)


@pytest.fixture
def pooled_data() -> tuple:
    """Pool: outliers (> 4 mm) have ERE 1 and 2, so TPR 0.5 is reached at 2 mm; test: one outlier of two
    flagged at 2 mm (TPR 0.5, FPR 0.5), none at the calibration threshold 2.6 mm (TPR 0)."""
    pool_ere = np.array([[1.0], [2.0], [3.0], [4.0]])
    pool_errors = np.array([[5.0], [5.0], [0.0], [0.0]])
    test_ere = np.array([[2.5], [1.5], [0.5], [3.0], [9.0]])
    test_errors = np.array([[6.0], [6.0], [1.0], [1.0], [np.nan]])  # the last landmark is missing
    return pool_ere, pool_errors, test_ere, test_errors, 2.6, 4.0, 0.5


def test_05_4_pooled_threshold(pooled_data):
    pooled = check_05.pooled_threshold_05_4(*pooled_data[:4], 4.0, 0.5)
    assert pooled == {"threshold_mm": 2.0, "num_outliers": 2, "test_tpr": 0.5, "test_fpr": 0.5,
                      "test_num_outliers": 2}


def test_05_4_right_answer(pooled_data, capsys):
    answer = {"verdict": "a", "threshold_mm": 2.0, "num_outliers": 2, "test_tpr": 0.5, "test_fpr": 0.5}
    assert check.exercise_05_4(answer, *pooled_data) is True
    out = capsys.readouterr().out
    assert "correct" in out and "rests on 2 outliers" in out and "+-0.707" in out  # 2 * sqrt(0.25 / 2)


def test_05_4_not_attempted(pooled_data, capsys):
    assert check.exercise_05_4(..., *pooled_data) is False
    assert "not attempted" in capsys.readouterr().out


def test_05_4_wrong_answers(pooled_data):
    right = {"verdict": "a", "threshold_mm": 2.0, "num_outliers": 2, "test_tpr": 0.5, "test_fpr": 0.5}
    with pytest.raises(ExerciseError, match=r"your prediction \(b\) does not hold: the answer is \(a\)"):
        check.exercise_05_4({**right, "verdict": "b"}, *pooled_data)
    with pytest.raises(ExerciseError, match="threshold_mm"):
        check.exercise_05_4({**right, "threshold_mm": 3.0}, *pooled_data)
    with pytest.raises(ExerciseError, match="num_outliers should be 2, got 3"):
        check.exercise_05_4({**right, "num_outliers": 3}, *pooled_data)
    with pytest.raises(ExerciseError, match="test_fpr"):
        check.exercise_05_4({**right, "test_fpr": 0.25}, *pooled_data)


def test_05_4_same_threshold_is_verdict_c(pooled_data):
    pool_ere, pool_errors, test_ere, test_errors, _, outlier_mm, target = pooled_data
    answer = {"verdict": "c", "threshold_mm": 2.0, "num_outliers": 2, "test_tpr": 0.5, "test_fpr": 0.5}
    assert check.exercise_05_4(answer, pool_ere, pool_errors, test_ere, test_errors, 2.0, outlier_mm, target) is True


def test_05_4_says_which_tpr_lies_within_the_noise(capsys):
    # pool outliers at ERE 1 and 9: TPR 0.5 is reached at 9 mm. Test: 16 outliers at ERE 1..16 and 4 inliers at 0;
    # at 9 mm 8 of 16 are flagged (TPR 0.5), at the calibration threshold 15 mm 2 of 16 (TPR 0.125).
    # Chance band: 2 sqrt(0.25 / 16) = 0.25, which the calibration threshold's gap 0.375 exceeds.
    pool_ere, pool_errors = np.array([[1.0], [9.0], [20.0]]), np.array([[5.0], [5.0], [0.0]])
    test_ere = np.concatenate([np.arange(1.0, 17.0), np.zeros(4)])[:, None]
    test_errors = np.concatenate([np.full(16, 5.0), np.ones(4)])[:, None]
    answer = {"verdict": "a", "threshold_mm": 9.0, "num_outliers": 2, "test_tpr": 0.5, "test_fpr": 0.0}
    assert check.exercise_05_4(answer, pool_ere, pool_errors, test_ere, test_errors, 15.0, 4.0, 0.5) is True
    out = capsys.readouterr().out
    assert "(a) the pooled threshold's test TPR is closer to the target" in out
    assert "+-0.250 of the target" in out and "calibration threshold 15.00 mm gives 0.125 (FPR 0.000)" in out
    assert "The pooled threshold's test TPR is within that noise of the target (off by 0.000)" in out
    assert "The calibration threshold's test TPR misses the target by more than that noise (0.375)" in out
    with pytest.raises(ExerciseError, match="num_outliers should be one number"):
        check.exercise_05_4({**answer, "num_outliers": "many"}, pool_ere, pool_errors, test_ere, test_errors, 15.0,
                            4.0, 0.5)


def test_tpr_noise_band():
    assert check_05.tpr_noise_band(0.5, 16) == pytest.approx(0.25)
    assert check_05.tpr_noise_band(0.2, 100) == pytest.approx(2 * 0.04)
    assert np.isnan(check_05.tpr_noise_band(0.5, 0))

"""The exercise checks of notebook 03 (chh_lib.exercises.notebook_03) on small hand-built inputs."""
from __future__ import annotations

import numpy as np
import pytest

from chh_lib import exercises as check
from chh_lib.exercises import ExerciseError

#: Logits of two pixels, 0 and log 3: at T = 1 the softmax is (1/4, 3/4).
TWO_PIXELS = np.array([0.0, np.log(3.0)])


def test_03_1_right_answer(capsys):
    # nine pixels at logit 0 and one at log 9: at T = 2 the mode is 3 / (3 + 9) = 0.25
    logits = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, np.log(9.0)])  # nine 0s and log 9
    # mode probability at T: 9^(1/T) / (9^(1/T) + 9); equals 0.2 when 9^(1/T) = 9 / 4, T = ln 9 / ln 2.25
    answer = {"mode_probability": 3.0 / 12.0, "argmax": 9, "temperature_for_0_2": np.log(9.0) / np.log(2.25)}
    assert check.exercise_03_1(answer, logits) is True
    assert "correct" in capsys.readouterr().out


def test_03_1_wrong_answers():
    logits = np.array([0.0] * 9 + [np.log(9.0)])
    right = {"mode_probability": 0.25, "argmax": 9, "temperature_for_0_2": np.log(9.0) / np.log(2.25)}
    with pytest.raises(ExerciseError, match="mode_probability should be 0.25"):
        check.exercise_03_1({**right, "mode_probability": 0.5}, logits)  # the T = 1 value
    with pytest.raises(ExerciseError, match="never moves the arg-max"):
        check.exercise_03_1({**right, "argmax": 0}, logits)
    with pytest.raises(ExerciseError, match="bisect"):
        check.exercise_03_1({**right, "temperature_for_0_2": 2.0}, logits)
    with pytest.raises(ExerciseError, match="lacks the keys"):
        check.exercise_03_1({"mode_probability": 0.25}, logits)


def test_03_1_not_attempted(capsys):
    assert check.exercise_03_1(..., TWO_PIXELS) is False
    assert "not attempted" in capsys.readouterr().out


def test_03_2_right_and_wrong_answers(capsys):
    # Two bins used: [0, 0.1) with confidences 0.05, 0.05 (one correct: accuracy 0.5, gap 0.45) and
    # [0.9, 1.0] with 0.95, 0.95 (both correct: gap 0.05). ECE = 100 (2/4 0.45 + 2/4 0.05) = 25; MCE = 45.
    # Each bin holds half of the predictions: at the threshold of one half, verdict (a).
    confidence = np.array([0.05, 0.05, 0.95, 0.95])
    correct_prediction = np.array([True, False, True, True])
    answer = {"verdict": "a", "ece_percent": 25.0, "mce_percent": 45.0, "largest_bin_share": 0.5}
    assert check.exercise_03_2(answer, confidence, correct_prediction) is True
    out = capsys.readouterr().out
    assert "ECE 25.00 %" in out and "(a) holds" in out and "50.0 % of the predictions" in out
    assert check.exercise_03_2({**answer, "verdict": " (A) "}, confidence, correct_prediction) is True
    with pytest.raises(ExerciseError, match="ece_percent should be 25"):
        check.exercise_03_2({**answer, "ece_percent": 0.25}, confidence, correct_prediction)  # not in percent
    with pytest.raises(ExerciseError, match="mce_percent should be 45"):
        check.exercise_03_2({**answer, "mce_percent": 5.0}, confidence, correct_prediction)
    with pytest.raises(ExerciseError, match="largest_bin_share"):
        check.exercise_03_2({**answer, "largest_bin_share": 2}, confidence, correct_prediction)
    with pytest.raises(ExerciseError, match="lacks the keys"):
        check.exercise_03_2({"ece_percent": 25.0, "mce_percent": 45.0, "largest_bin_share": 0.5}, confidence,
                            correct_prediction)
    assert check.exercise_03_2(..., confidence, correct_prediction) is False


def test_03_2_verdict_follows_the_largest_share():
    # Three bins used, 0.25 (x2), 0.55, 0.85: the fullest holds 2 of 4 = half -> (a); add a fifth in its own
    # bin (0.45) and the fullest holds 2 of 5 = 0.4 < 0.5 -> (b).
    half = np.array([0.25, 0.25, 0.55, 0.85])
    hits = np.array([True, False, True, False])
    with pytest.raises(ExerciseError, match=r"your prediction \(b\) does not hold: the answer is \(a\)"):
        check.exercise_03_2({"verdict": "b", "ece_percent": 0, "mce_percent": 0, "largest_bin_share": 0.5},
                            half, hits)
    spread = np.append(half, 0.45)
    spread_hits = np.append(hits, True)
    with pytest.raises(ExerciseError, match=r"the answer is \(b\).*40.0 % of the predictions"):
        check.exercise_03_2({"verdict": "a", "ece_percent": 0, "mce_percent": 0, "largest_bin_share": 0.4},
                            spread, spread_hits)
    # (c) is never right: the share counts predictions, correctness does not enter
    with pytest.raises(ExerciseError, match=r"\(c\) is never the answer"):
        check.exercise_03_2({"verdict": "c", "ece_percent": 0, "mce_percent": 0, "largest_bin_share": 0.4},
                            spread, spread_hits)
    with pytest.raises(ExerciseError, match="one of the letters"):
        check.exercise_03_2({"verdict": "d", "ece_percent": 0, "mce_percent": 0, "largest_bin_share": 0.4},
                            spread, spread_hits)
    with pytest.raises(ExerciseError, match="one of the letters"):
        check.exercise_03_2({"verdict": 1, "ece_percent": 0, "mce_percent": 0, "largest_bin_share": 0.4},
                            spread, spread_hits)


def test_03_3_right_and_wrong_answers(capsys):
    def test_nll_at(temperature):
        return (temperature - 2.0) ** 2 + 1.5  # a stand-in for the model's test NLL

    answer = {"global_temperature": 1.99, "test_nll": test_nll_at(1.99), "beats_per_landmark_on_test": True}
    assert check.exercise_03_3(answer, 2.0, test_nll_at, nll_test_per_landmark=1.6) is True
    assert "T = 1.990" in capsys.readouterr().out
    with pytest.raises(ExerciseError, match="global_temperature should be 2"):
        check.exercise_03_3({**answer, "global_temperature": 1.5}, 2.0, test_nll_at, 1.6)
    with pytest.raises(ExerciseError, match="test_nll should be"):
        check.exercise_03_3({**answer, "test_nll": 1.6}, 2.0, test_nll_at, 1.6)
    with pytest.raises(ExerciseError, match="beats_per_landmark_on_test should be False"):
        check.exercise_03_3(answer, 2.0, test_nll_at, nll_test_per_landmark=1.4)
    with pytest.raises(ExerciseError, match="positive"):
        check.exercise_03_3({**answer, "global_temperature": -2.0}, 2.0, test_nll_at, 1.6)
    with pytest.raises(ExerciseError, match="True or False"):
        check.exercise_03_3({**answer, "beats_per_landmark_on_test": "yes"}, 2.0, test_nll_at, 1.6)
    assert check.exercise_03_3(..., 2.0, test_nll_at, 1.6) is False

"""The exercise checks of notebook 02 (chh_lib.exercises.notebook_02) on tiny hand-built inputs.

Each check: a right answer returns True, the placeholder ``...`` returns False
and prints "not attempted", a wrong answer raises ExerciseError saying what was
expected (with a hint).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import make_tiny_isbi

from chh_lib import exercises as check
from chh_lib.data.dataset import LandmarkDataset
from chh_lib.data.formats import read_landmark_data
from chh_lib.exercises import ExerciseError
from chh_lib.exercises.notebook_02 import blurred_sd_ratio, elongated_q, quantisation_floor_mm

# --------------------------------------------------------------------------- 02.1


@pytest.fixture
def toy_logits() -> torch.Tensor:
    """A 3 x 4 logit map: log 2 at (row 1, column 2), 0 elsewhere, so p = 2/13 there and 1/13 elsewhere."""
    logits = torch.zeros(3, 4)
    logits[1, 2] = math.log(2.0)
    return logits


def test_02_1_right_answer(toy_logits, capsys):
    target = 1 * 4 + 2  # the target pixel is the hot one: gradient 2/13 - 1 there, 1/13 elsewhere
    gradient = np.full((3, 4), 1 / 13)
    gradient[1, 2] = 2 / 13 - 1
    assert check.exercise_02_1({"gradient": gradient, "max_abs_difference": 0.0}, toy_logits, target) is True
    assert "correct" in capsys.readouterr().out
    # a tensor answer and a float32 difference are fine too
    assert check.exercise_02_1({"gradient": torch.from_numpy(gradient).float(), "max_abs_difference": 3e-8},
                               toy_logits, target) is True


def test_02_1_not_attempted(toy_logits, capsys):
    assert check.exercise_02_1(..., toy_logits, 0) is False
    out = capsys.readouterr().out
    assert "not attempted" in out and out.count("\n") == 1


def test_02_1_wrong_answers(toy_logits):
    p = np.full((3, 4), 1 / 13)
    p[1, 2] = 2 / 13
    one_hot = np.zeros((3, 4))
    one_hot[0, 0] = 1.0
    with pytest.raises(ExerciseError, match=r"differs from p - onehot by up to 1.*sign is flipped"):
        check.exercise_02_1({"gradient": one_hot - p, "max_abs_difference": 0.0}, toy_logits, 0)
    with pytest.raises(ExerciseError, match=r"that is p alone"):
        check.exercise_02_1({"gradient": p, "max_abs_difference": 0.0}, toy_logits, 0)
    with pytest.raises(ExerciseError, match=r"Hint: p is the 2D softmax over ALL pixels"):
        check.exercise_02_1({"gradient": p - np.roll(one_hot, 1), "max_abs_difference": 0.0}, toy_logits, 0)
    with pytest.raises(ExerciseError, match=r"max_abs_difference should be a tiny non-negative number.*got 0\.5\. Hint.*backward"):
        check.exercise_02_1({"gradient": p - one_hot, "max_abs_difference": 0.5}, toy_logits, 0)
    with pytest.raises(ExerciseError, match=r"tiny non-negative number"):
        check.exercise_02_1({"gradient": p - one_hot, "max_abs_difference": -1e-7}, toy_logits, 0)
    with pytest.raises(ExerciseError, match=r"should have shape \(3, 4\), got \(12,\)"):
        check.exercise_02_1({"gradient": (p - one_hot).ravel(), "max_abs_difference": 0.0}, toy_logits, 0)
    with pytest.raises(ExerciseError, match=r"lacks the keys \['max_abs_difference'\]"):
        check.exercise_02_1({"gradient": p - one_hot}, toy_logits, 0)


# --------------------------------------------------------------------------- 02.2


@pytest.fixture
def q_and_p() -> tuple[np.ndarray, np.ndarray]:
    """q: half on each of two pixels; p: 1/4 on each of four pixels (two of them q's)."""
    q = np.zeros((2, 3))
    q[0, 0] = q[0, 1] = 0.5
    p = np.zeros((2, 3))
    p[0, 0] = p[0, 1] = p[1, 0] = p[1, 1] = 0.25
    return q, p


def test_02_2_right_answer(q_and_p, capsys):
    q, p = q_and_p
    # E_q[-log p] = log 4; H(q) = log 2; KL = log 2 (p puts half its mass outside q's support)
    answer = {"expected_nll": math.log(4), "entropy": math.log(2), "kl": math.log(2)}
    assert check.exercise_02_2(answer, q, p) is True
    assert "= H(q) 0.693 + KL 0.693 nats" in capsys.readouterr().out
    # p = q: the KL is zero and the expected NLL is the entropy
    assert check.exercise_02_2({"expected_nll": math.log(2), "entropy": math.log(2), "kl": 0.0}, q, q) is True


def test_02_2_not_attempted(q_and_p, capsys):
    assert check.exercise_02_2(..., *q_and_p) is False
    assert "not attempted" in capsys.readouterr().out


def test_02_2_wrong_answers(q_and_p):
    q, p = q_and_p
    with pytest.raises(ExerciseError, match=r"entropy \(nats\) should be 0\.693147, got 1.*natural logarithm"):
        check.exercise_02_2({"expected_nll": 2.0, "entropy": 1.0, "kl": 1.0}, q, p)  # log base 2
    with pytest.raises(ExerciseError, match=r"expected_nll \(nats\) should be 1\.38629"):
        check.exercise_02_2({"expected_nll": math.log(2), "entropy": math.log(2), "kl": math.log(2)}, q, p)
    with pytest.raises(ExerciseError, match=r"kl \(nats\) should be 0\.693147, got -0\.693147"):
        check.exercise_02_2({"expected_nll": math.log(4), "entropy": math.log(2), "kl": -math.log(2)}, q, p)
    with pytest.raises(ValueError, match="sums to 1"):
        check.exercise_02_2({"expected_nll": 0.0, "entropy": 0.0, "kl": 0.0}, 2 * q, p)


# --------------------------------------------------------------------------- 02.3


def test_quantisation_floor_by_hand():
    """Offsets (0.5, 0) px at 1 mm and (0.3, 0.4) px at 0.25 mm; a missing landmark is ignored."""
    target = np.array([[[10.5 + 1e-9, 3.0], [np.nan, np.nan]], [[42.3, 12.4], [1.0, 2.0]]])
    pixel = np.array([[1.0, 1.0], [0.25, 0.25]])
    assert quantisation_floor_mm(target, pixel) == pytest.approx((0.5 + 0.125 + 0.0) / 3)


@pytest.fixture
def test_records(tmp_path):
    make_tiny_isbi(tmp_path / "data", images_per_split=3, size=(64, 80))
    return read_landmark_data(tmp_path / "data").split("test")


def _floors(records) -> tuple[float, float]:
    small, large = (LandmarkDataset(records, size, None) for size in ((16, 20), (64, 80)))
    return (quantisation_floor_mm(small.target_px, small.pixel_size_mm),
            quantisation_floor_mm(large.target_px, large.pixel_size_mm))


def test_02_3_right_answer(test_records, capsys):
    here, paper = _floors(test_records)
    assert 0 < paper < here  # four times coarser pixels: a higher floor
    answer = {"floor_mm": here, "floor_paper_mm": paper, "ratio": here / paper}
    assert check.exercise_02_3(answer, test_records, (16, 20), (64, 80)) is True
    assert f"{here / paper:.1f} times lower" in capsys.readouterr().out


def test_02_3_not_attempted(test_records, capsys):
    assert check.exercise_02_3(..., test_records, (16, 20), (64, 80)) is False
    assert "not attempted" in capsys.readouterr().out


def test_02_3_wrong_answers(test_records):
    here, paper = _floors(test_records)
    with pytest.raises(ExerciseError, match=r"floor_mm \(mm\) should be .*np\.round"):
        check.exercise_02_3({"floor_mm": here / 2, "floor_paper_mm": paper, "ratio": here / paper},
                            test_records, (16, 20), (64, 80))
    with pytest.raises(ExerciseError, match=r"floor_paper_mm \(mm\) should be .*\(64, 80\)"):
        check.exercise_02_3({"floor_mm": here, "floor_paper_mm": here, "ratio": 1.0}, test_records, (16, 20), (64, 80))
    with pytest.raises(ExerciseError, match=r"ratio should be .*ratio of the pixel sizes"):
        check.exercise_02_3({"floor_mm": here, "floor_paper_mm": paper, "ratio": paper / here},
                            test_records, (16, 20), (64, 80))


# --------------------------------------------------------------------------- 02.4


def test_elongated_q_by_hand():
    """Along x with SDs 2 and 0.5 px on a 13 x 9 grid: sums to 1, peaks at the centre, wider along x, cut at 4 SD."""
    q = elongated_q((6.0, 4.0), (3.0, 0.0), 2.0, 0.5, 13, 9)
    assert q.shape == (9, 13) and q.sum() == pytest.approx(1.0) and (q >= 0).all()
    assert np.unravel_index(np.argmax(q), q.shape) == (4, 6)
    assert q[4, 8] / q[4, 6] == pytest.approx(math.exp(-0.5))  # one SD along x: 2 px
    assert q[5, 6] / q[4, 6] == pytest.approx(math.exp(-2.0))  # two SDs across: 1 px
    assert q[4, 0] > 0  # 3 SDs along (6 px): inside the 4-SD cut
    assert q[6, 6] > 0 and q[7, 6] == 0.0  # 4 SDs across (2 px) is on the cut and kept; 6 SDs (3 px) is not
    turned = elongated_q((4.0, 6.0), (0.0, -1.0), 2.0, 0.5, 9, 13)  # the same along y (direction's sign is free)
    np.testing.assert_allclose(turned, q.T, atol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        elongated_q((6.0, 4.0), (1.0, 0.0), 0.0, 0.5, 13, 9)


def test_blurred_sd_ratio():
    assert blurred_sd_ratio(2.0, 0.5, 1.0) == pytest.approx(2.0)  # sqrt(5 / 1.25)
    assert blurred_sd_ratio(6.0, 1.0, 0.0) == pytest.approx(6.0)  # no blur: q's own ratio


@pytest.fixture
def toy_q() -> np.ndarray:
    """q: SD 2 px along x and 0.5 px across, on a 13 x 9 grid (a short horizontal 'contour')."""
    return elongated_q((6.0, 4.0), (1.0, 0.0), 2.0, 0.5, 13, 9)


def _blurred(q: np.ndarray, sigma: float) -> np.ndarray:
    rows, cols = np.mgrid[0:q.shape[0], 0:q.shape[1]]
    total = np.zeros(q.shape)
    for (r, c), weight in np.ndenumerate(q):
        total += weight * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * sigma**2))
    return total


TOY = (1.0, 2.0, 0.5)  # sigma_px, sd_along_px, sd_across_px: the predicted SD ratio is sqrt(5 / 1.25) = 2


def test_02_4_right_answer(toy_q, capsys):
    optimum = _blurred(toy_q, 1.0)
    assert check.exercise_02_4({"verdict": "c", "sd_ratio": 2.0, "optimal_heatmap": optimum}, toy_q, *TOY) is True
    out = capsys.readouterr().out
    assert "(c) holds" in out and "predicted 2.00" in out and "drops from q's 4.00 to 2.00" in out
    # the optimum is elongated along the row, like q, but less: two pixels from the centre, higher along x
    assert optimum[4, 4] > optimum[2, 6]
    # a prediction within 2 % and the letter written "(C)" are fine
    assert check.exercise_02_4({"verdict": "(C)", "sd_ratio": 2.03, "optimal_heatmap": optimum}, toy_q, *TOY)


def test_02_4_not_attempted(toy_q, capsys):
    assert check.exercise_02_4(..., toy_q, *TOY) is False
    assert "not attempted" in capsys.readouterr().out


def test_02_4_wrong_answers(toy_q):
    optimum = _blurred(toy_q, 1.0)
    right = {"verdict": "c", "sd_ratio": 2.0, "optimal_heatmap": optimum}
    with pytest.raises(ExerciseError, match=r"prediction \(a\) does not hold: the answer is \(c\).*variances of a "
                                            r"convolution add"):
        check.exercise_02_4({**right, "verdict": "a"}, toy_q, *TOY)
    with pytest.raises(ExerciseError, match=r"prediction \(b\) does not hold"):
        check.exercise_02_4({**right, "verdict": "b"}, toy_q, *TOY)
    with pytest.raises(ExerciseError, match=r"verdict should be one of the letters"):
        check.exercise_02_4({**right, "verdict": 3}, toy_q, *TOY)
    with pytest.raises(ExerciseError, match=r"sd_ratio should be 2, got 4.*variances add"):
        check.exercise_02_4({**right, "sd_ratio": 4.0}, toy_q, *TOY)  # q's own ratio: the blur forgotten
    with pytest.raises(ExerciseError, match=r"do not normalise"):
        check.exercise_02_4({**right, "optimal_heatmap": optimum / optimum.sum()}, toy_q, *TOY)
    with pytest.raises(ExerciseError, match=r"differs from sum_t q\(t\) g_t.*mean of the targets"):
        # a single Gaussian at the mean position: round, not elongated
        point = np.zeros(toy_q.shape)
        point[4, 6] = 1.0
        check.exercise_02_4({**right, "optimal_heatmap": _blurred(point, 1.0)}, toy_q, *TOY)
    with pytest.raises(ExerciseError, match=r"lacks the keys \['verdict', 'sd_ratio'\]"):
        check.exercise_02_4({"optimal_heatmap": optimum}, toy_q, *TOY)

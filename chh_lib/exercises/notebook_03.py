"""Checks of notebook 03's exercises (temperature scaling and calibration error)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from chh_lib.exercises.answers import (
    choice,
    ExerciseError,
    correct,
    expect_close,
    fields,
    flag,
    is_attempted,
    not_attempted,
    number,
)
from chh_lib.metrics import reliability_bins

#: The equal-width bins of exercise 03.2 (Naeini et al. 2015; Guo et al. 2017).
TEN_EQUAL_BINS = np.linspace(0.0, 1.0, 11)


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    p = np.exp(scaled - scaled.max())
    return p / p.sum()


def _temperature_for_mode(logits: np.ndarray, mode_probability: float, low: float = 0.1, high: float = 10.0) -> float:
    """The temperature in [low, high] whose softmax has the given mode probability (bisection; it falls with T)."""
    for _ in range(200):
        middle = 0.5 * (low + high)
        if _softmax(logits, middle).max() > mode_probability:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def exercise_03_1(answer: Any, toy_logits: np.ndarray, temperature: float = 2.0, target_mode: float = 0.2) -> bool:
    r"""Exercise 03.1: a softmax with a temperature by hand, and the temperature of a given mode probability.

    Expected answer: ``{"mode_probability": float, "argmax": int, "temperature_for_0_2": float}``
    for :math:`p_T(i) = e^{z_i/T} / \sum_j e^{z_j/T}` at ``temperature``, and the
    :math:`T^\star \in [0.1, 10]` with :math:`\max_i p_{T^\star}(i) = 0.2` (to 0.1 %).

    Parameters
    ----------
    answer : dict or Ellipsis
    toy_logits : ndarray, shape (P,)
        The logits of a 1D toy distribution.
    temperature, target_mode : float

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "03.1"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("mode_probability", "argmax", "temperature_for_0_2"), name)
    p = _softmax(toy_logits, temperature)
    expect_close(number(given["mode_probability"], "mode_probability", name), float(p.max()), "mode_probability",
                 f"divide the logits by T = {temperature:g}, exponentiate (subtract the maximum first), normalise "
                 "to sum 1, and take the largest value.", name)
    expected_argmax = int(np.argmax(p))
    if number(given["argmax"], "argmax", name) != expected_argmax:
        raise ExerciseError(f"Exercise {name}: argmax should be {expected_argmax}, got {given['argmax']!r}. Hint: a "
                            "temperature never moves the arg-max; it is the arg-max of the logits themselves.")
    expected_temperature = _temperature_for_mode(toy_logits, target_mode)
    expect_close(number(given["temperature_for_0_2"], "temperature_for_0_2", name), expected_temperature,
                 "temperature_for_0_2", "bisect on T in [0.1, 10]: where the mode probability is above 0.2 the "
                 "temperature is too low, so move the lower end up.", name)
    return correct(name, f"mode probability {p.max():.4f} at T = {temperature:g}; it is {target_mode:g} at "
                         f"T = {expected_temperature:.4f}")


#: The share of the predictions in one bin from which the equal-width ECE counts as one global gap (exercise 03.2).
ONE_BIN_SHARE = 0.5

#: What each choice of exercise 03.2 says, for the explanation the check prints.
VERDICTS_03_2 = {
    "a": "one bin holds at least half of the predictions, so the ECE is about one gap between accuracy and "
         "mean confidence",
    "b": "no bin holds half of the predictions, so the bins resolve how calibration varies with the confidence",
    "c": "the share of the fullest bin is the fraction of correct predictions",
}


def exercise_03_2(answer: Any, confidence: np.ndarray, correct_prediction: np.ndarray) -> bool:
    r"""Exercise 03.2: predict, then check what ten equal-width bins over [0, 1] make of these confidences.

    Expected answer: ``{"verdict": str, "ece_percent": float, "mce_percent": float,
    "largest_bin_share": float}``: the ECE and MCE as
    :func:`chh_lib.metrics.reliability_bins` with the edges :data:`TEN_EQUAL_BINS`,
    the largest fraction of the predictions in any one of those bins, and the
    letter of the statement that holds (:data:`VERDICTS_03_2`): ``"a"`` when that
    fraction is at least :data:`ONE_BIN_SHARE`, ``"b"`` otherwise; ``"c"`` is
    never right (a bin's share counts predictions by confidence; whether they are
    correct does not enter).

    Parameters
    ----------
    answer : dict or Ellipsis
    confidence : ndarray, shape (M,)
        Mode probabilities.
    correct_prediction : ndarray, shape (M,), bool
        Whether each prediction is correct (within the pixel's radius).

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong; for a wrong verdict the message explains the right one.
    """
    name = "03.2"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("verdict", "ece_percent", "mce_percent", "largest_bin_share"), name)
    verdict = choice(given["verdict"], VERDICTS_03_2, name)
    confidence = np.asarray(confidence, dtype=np.float64)
    bins = reliability_bins(confidence, np.asarray(correct_prediction, dtype=bool), TEN_EQUAL_BINS)
    largest = float(bins.count.max() / bins.count.sum()) if bins.count.sum() else 0.0
    fullest = int(np.argmax(bins.count))
    low, high = TEN_EQUAL_BINS[fullest], TEN_EQUAL_BINS[fullest + 1]
    expected = "a" if largest >= ONE_BIN_SHARE else "b"
    accuracy = float(np.mean(correct_prediction)) if len(confidence) else float("nan")
    explanation = (
        f"the fullest bin, [{low:.1f}, {high:.1f}{']' if fullest == len(bins.count) - 1 else ')'}, holds "
        f"{100 * largest:.1f} % of the predictions, "
        + ("so most of the ECE is the gap of that one bin: the bins cannot say where the model is over- or "
           "under-confident (equal-mass bins can)." if expected == "a" else
           "so several bins hold a good part of the predictions and the ECE compares accuracy and confidence "
           "at several levels.")
        + f" A bin's share counts predictions by their confidence; whether they are correct does not enter "
          f"(here {100 * accuracy:.1f} % are correct), so (c) is never the answer."
    )
    if verdict != expected:
        raise ExerciseError(f"Exercise {name}: your prediction ({verdict}) does not hold: the answer is ({expected}), "
                            f"{VERDICTS_03_2[expected]}. Why: {explanation}")
    expect_close(number(given["ece_percent"], "ece_percent", name), bins.ece_percent, "ece_percent",
                 "weight each non-empty bin's |accuracy - mean confidence| by its share of the predictions, sum, and "
                 "multiply by 100; bins are [a, b), the last one [0.9, 1.0] closed.", name)
    expect_close(number(given["mce_percent"], "mce_percent", name), bins.mce_percent, "mce_percent",
                 "the largest |accuracy - mean confidence| over the non-empty bins, times 100.", name)
    expect_close(number(given["largest_bin_share"], "largest_bin_share", name), largest, "largest_bin_share",
                 "count the predictions in each bin and divide the largest count by the total (a number between "
                 "0 and 1).", name)
    return correct(name, f"({verdict}) holds: {explanation} ECE {bins.ece_percent:.2f} %, MCE "
                         f"{bins.mce_percent:.2f} %.")


def exercise_03_3(answer: Any, global_temperature: float,
                  test_nll_at: Callable[[float], float], nll_test_per_landmark: float) -> bool:
    r"""Exercise 03.3: one global temperature by a grid search, and its test NLL against the per-landmark fit.

    Expected answer: ``{"global_temperature": float, "test_nll": float, "beats_per_landmark_on_test": bool}``.
    The temperature must minimise the pooled calibration NLL to within the grid's
    resolution: it is compared with the continuous optimum ``global_temperature`` to
    1 %. ``test_nll`` is checked by ``test_nll_at`` at the student's own temperature.

    Parameters
    ----------
    answer : dict or Ellipsis
    global_temperature : float
        The L-BFGS optimum of one temperature for all landmarks.
    test_nll_at : callable
        Mean test NLL (nats) at one temperature for all landmarks.
    nll_test_per_landmark : float
        Mean test NLL (nats) with the per-landmark temperatures.

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "03.3"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("global_temperature", "test_nll", "beats_per_landmark_on_test"), name)
    temperature = number(given["global_temperature"], "global_temperature", name)
    if not temperature > 0:
        raise ExerciseError(f"Exercise {name}: a temperature must be positive, got {temperature:g}.")

    expect_close(temperature, global_temperature, "global_temperature",
                 "evaluate pooled_nll(held_out.logits, held_out.target_index, torch.tensor([T])) over the grid and "
                 "take the T of the smallest value.", name, rtol=0.01)
    expected_test_nll = float(test_nll_at(temperature))
    expect_close(number(given["test_nll"], "test_nll", name), expected_test_nll, "test_nll",
                 "predict(model, test_set, torch_device, batch_size, np.full(K, T)).nll, averaged with np.nanmean.",
                 name)
    expected_flag = bool(expected_test_nll < nll_test_per_landmark)
    if flag(given["beats_per_landmark_on_test"], "beats_per_landmark_on_test", name) != expected_flag:
        raise ExerciseError(f"Exercise {name}: beats_per_landmark_on_test should be {expected_flag}: the test NLL is "
                            f"{expected_test_nll:.4f} nats at your T against {nll_test_per_landmark:.4f} with the "
                            "per-landmark temperatures (lower is better).")
    return correct(name, f"T = {temperature:.3f}; test NLL {expected_test_nll:.4f} nats against "
                         f"{nll_test_per_landmark:.4f} per landmark")


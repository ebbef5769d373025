"""Checks of notebook 05's exercises (the uncertainty scores as outlier detectors)."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from chh_lib.exercises.answers import (
    ExerciseError,
    choice,
    correct,
    expect_close,
    fields,
    is_attempted,
    not_attempted,
    number,
)
from chh_lib.metrics import outliers, roc_curve_for
from chh_lib.uncertainty import choose_ere_threshold

#: Absolute tolerance of an AUROC (a rank statistic: exact up to float rounding).
AUROC_ATOL = 1e-6


def _auroc_or_nan(scores: np.ndarray, is_outlier: np.ndarray) -> float:
    """The library's AUROC (NaN with one class only)."""
    return roc_curve_for(scores, is_outlier).auroc


def exercise_05_1(answer: Any, scores: Mapping[str, np.ndarray], is_outlier: np.ndarray, non_hard: np.ndarray,
                  present: np.ndarray | None = None) -> bool:
    r"""Exercise 05.1: the AUROC of the ERE and of the entropy on the non-hard images, by the rank formula.

    Expected answer: ``{"ere": float, "entropy": float}``, each the AUROC of that
    score over the (image, landmark) pairs selected by ``non_hard``: with the
    :math:`n_1` outliers and :math:`n_0` inliers ranked together (average ranks
    for ties) and :math:`R_1` the sum of the outliers' ranks,

    .. math::

        \mathrm{AUROC} = \frac{R_1 - n_1 (n_1 + 1) / 2}{n_1\, n_0}
        \quad \bigl(= P(s_\text{outlier} > s_\text{inlier}) + \tfrac12 P(s_\text{outlier} = s_\text{inlier})\bigr).

    The expected values come from :func:`chh_lib.metrics.roc_curve_for`.

    Parameters
    ----------
    answer : dict or Ellipsis
        The student's answer; ``...`` when not attempted.
    scores : mapping of str to ndarray, shape (N, K)
        At least ``"ere"`` and ``"entropy"``; higher = more likely an outlier.
    is_outlier : ndarray, shape (N, K), bool
    non_hard : ndarray, shape (N, K), bool
        The pairs to use: present landmarks of the images not marked hard.
    present : ndarray, shape (N, K), bool, optional
        All present pairs; only used to recognise an answer computed over every
        image instead of the non-hard ones.

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "05.1"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("ere", "entropy"), name)
    labels = np.asarray(is_outlier, dtype=bool)
    mask = np.asarray(non_hard, dtype=bool)
    results = {}
    for key in ("ere", "entropy"):
        score = np.asarray(scores[key], dtype=np.float64)
        expected = _auroc_or_nan(score[mask], labels[mask])
        got = number(given[key], key, name)
        results[key] = expected
        if math.isnan(expected):
            if not math.isnan(got):
                raise ExerciseError(f"Exercise {name}: the non-hard pairs hold only one class (no outlier or no "
                                    f"inlier), so the AUROC of {key} is undefined: answer float('nan').")
            continue
        if math.isclose(got, 1.0 - expected, abs_tol=AUROC_ATOL) and not math.isclose(got, expected,
                                                                                    abs_tol=AUROC_ATOL):
            raise ExerciseError(f"Exercise {name}: the AUROC of {key} should be {expected:.6g}, got {got:.6g} = 1 - "
                                f"AUROC. Hint: sum the ranks of the OUTLIERS (the positives), not of the inliers.")
        if present is not None:
            everywhere = _auroc_or_nan(score[np.asarray(present, dtype=bool)], labels[np.asarray(present, dtype=bool)])
            if (math.isclose(got, everywhere, abs_tol=AUROC_ATOL)
                    and not math.isclose(got, expected, abs_tol=AUROC_ATOL)):
                raise ExerciseError(f"Exercise {name}: the AUROC of {key} should be {expected:.6g}, got {got:.6g}, "
                                    f"which is its value on ALL images. Hint: keep only the pairs where non_hard "
                                    f"is True.")
        expect_close(got, expected, f"the AUROC of {key}",
                     "rank all the selected scores together (scipy.stats.rankdata gives tied scores their average "
                     "rank), add up the ranks R1 of the n1 outliers, and compute (R1 - n1 (n1 + 1) / 2) / (n1 n0).",
                     name, rtol=0.0, atol=AUROC_ATOL)
    selected = labels[mask]
    return correct(name, f"on the non-hard images AUROC {results['ere']:.3f} (ERE) and {results['entropy']:.3f} "
                         f"(entropy) over {int(selected.sum())} outliers and {int((~selected).sum())} inliers, as "
                         f"chh_lib.metrics.roc_curve_for gives")


def exercise_05_2(answer: Any, ere_mm: np.ndarray, radial_error_mm: np.ndarray, threshold_mm: float,
                  outlier_mm: float) -> bool:
    r"""Exercise 05.2: the rates of the calibration-chosen ERE threshold on the test split.

    Expected answer: ``{"tpr": float, "fpr": float, "precision": float}`` over the
    present pairs (radial error not NaN), flagging :math:`\mathrm{ERE} \ge t^\ast`
    and calling a pair an outlier when its error exceeds ``outlier_mm``:

    .. math::

        \mathrm{TPR} = \frac{TP}{TP + FN}, \qquad \mathrm{FPR} = \frac{FP}{FP + TN}, \qquad
        \mathrm{precision} = \frac{TP}{TP + FP}

    (NaN where the denominator is 0).

    Parameters
    ----------
    answer : dict or Ellipsis
    ere_mm, radial_error_mm : ndarray, shape (N, K)
        ERE and true radial error of the test split in mm; NaN error marks a missing landmark.
    threshold_mm : float
        :math:`t^\ast`, chosen on the calibration split.
    outlier_mm : float
        Radial error (mm) above which a prediction is an outlier.

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "05.2"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("tpr", "fpr", "precision"), name)
    error = np.asarray(radial_error_mm, dtype=np.float64)
    present = ~np.isnan(error)
    ere = np.asarray(ere_mm, dtype=np.float64)[present]
    is_outlier = outliers(error[present], outlier_mm)
    flagged = ere >= threshold_mm
    true_positives = int((flagged & is_outlier).sum())
    rates = {
        "tpr": true_positives / int(is_outlier.sum()) if is_outlier.any() else float("nan"),
        "fpr": int((flagged & ~is_outlier).sum()) / int((~is_outlier).sum()) if (~is_outlier).any() else float("nan"),
        "precision": true_positives / int(flagged.sum()) if flagged.any() else float("nan"),
    }
    hints = {
        "tpr": "among the outliers (error > outlier_mm), the share with ERE >= the threshold.",
        "fpr": "among the inliers (error <= outlier_mm), the share with ERE >= the threshold.",
        "precision": "among the flagged pairs (ERE >= the threshold), the share that are outliers.",
    }
    for key in ("tpr", "fpr", "precision"):
        expect_close(number(given[key], key, name), rates[key], key,
                     f"{hints[key]} Use the present pairs of the test split and the calibration threshold "
                     f"(ere_threshold), not the oracle.", name, rtol=0.0, atol=1e-9)
    return correct(name, f"TPR {rates['tpr']:.3f}, FPR {rates['fpr']:.3f}, precision {rates['precision']:.3f} at "
                         f"ERE >= {threshold_mm:.2f} mm")


def exercise_05_3(answer: Any, ere: np.ndarray, is_outlier: np.ndarray) -> bool:
    r"""Exercise 05.3: two reference points of the AUROC, the reversed score and a random score.

    Expected answer::

        {"auroc_negative_ere": float, "random_scores": ndarray (M,), "auroc_random": float}

    with ``auroc_negative_ere`` the AUROC of :math:`-\mathrm{ERE}` (which is
    :math:`1 - \mathrm{AUROC}` of the ERE, ties included), ``random_scores`` one
    random number per pair (drawn independently of the data) and
    ``auroc_random`` their AUROC. The check recomputes both AUROCs with
    :func:`chh_lib.metrics.roc_curve_for` and reports how far the random one lies
    from 0.5 in units of its standard error under no association,
    :math:`\sqrt{(n_0 + n_1 + 1) / (12\, n_0 n_1)}`.

    Parameters
    ----------
    answer : dict or Ellipsis
    ere : ndarray, shape (M,)
        ERE (mm) of the present pairs.
    is_outlier : ndarray, shape (M,), bool

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "05.3"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("auroc_negative_ere", "random_scores", "auroc_random"), name)
    ere = np.asarray(ere, dtype=np.float64).ravel()
    labels = np.asarray(is_outlier, dtype=bool).ravel()
    auroc_ere = _auroc_or_nan(ere, labels)
    expected_negative = _auroc_or_nan(-ere, labels)
    got_negative = number(given["auroc_negative_ere"], "auroc_negative_ere", name)
    if math.isclose(got_negative, auroc_ere, abs_tol=AUROC_ATOL) and not math.isclose(
            got_negative, expected_negative, abs_tol=AUROC_ATOL):
        raise ExerciseError(f"Exercise {name}: auroc_negative_ere should be {expected_negative:.6g}, got the AUROC "
                            f"of the ERE itself ({auroc_ere:.6g}). Hint: pass -ere as the score.")
    expect_close(got_negative, expected_negative, "auroc_negative_ere",
                 "the AUROC of -ere over the same pairs; it should equal 1 - the AUROC of the ERE.", name,
                 rtol=0.0, atol=AUROC_ATOL)
    try:
        random_scores = np.asarray(given["random_scores"], dtype=np.float64).ravel()
    except (TypeError, ValueError) as error:
        raise ExerciseError(f"Exercise {name}: random_scores should be an array of numbers.") from error
    if random_scores.shape != labels.shape:
        raise ExerciseError(f"Exercise {name}: random_scores should hold one number per present pair "
                            f"({labels.size}), got {random_scores.size}.")
    if np.array_equal(random_scores, ere) or np.array_equal(random_scores, -ere):
        raise ExerciseError(f"Exercise {name}: random_scores is the ERE itself; draw new numbers that know nothing "
                            f"of the data (e.g. np.random.default_rng(seed).random(len(ere))).")
    if not np.isfinite(random_scores).all() or np.unique(random_scores).size < 2:
        raise ExerciseError(f"Exercise {name}: random_scores should be finite random numbers that differ "
                            f"(e.g. np.random.default_rng(seed).random(len(ere))).")
    expected_random = _auroc_or_nan(random_scores, labels)
    expect_close(number(given["auroc_random"], "auroc_random", name), expected_random, "auroc_random",
                 "the AUROC of random_scores against the same outlier labels.", name, rtol=0.0, atol=AUROC_ATOL)
    if math.isnan(expected_random):
        return correct(name, "with one class only, every AUROC is undefined")
    positives, negatives = int(labels.sum()), int((~labels).sum())
    standard_error = math.sqrt((positives + negatives + 1) / (12 * positives * negatives))
    return correct(name, f"-ERE gives {expected_negative:.3f} = 1 - {auroc_ere:.3f}; the random score gives "
                         f"{expected_random:.3f}, {abs(expected_random - 0.5) / standard_error:.1f} standard errors "
                         f"({standard_error:.3f}) from 0.5, over {positives} outliers and {negatives} inliers")


#: What each choice of exercise 05.4 says, for the explanation the check prints.
VERDICTS_05_4 = {
    "a": "the pooled threshold's test TPR is closer to the target than the calibration threshold's",
    "b": "the pooled threshold's test TPR is farther from the target than the calibration threshold's",
    "c": "both thresholds give the same test TPR",
}


#: Half-width of the band around the target TPR, in binomial standard errors of the test TPR (exercise 05.4).
NOISE_STANDARD_ERRORS = 2.0


def tpr_noise_band(target_tpr: float, num_outliers: int) -> float:
    r"""Half-width of the band around ``target_tpr`` within which a test TPR falls by chance alone.

    :data:`NOISE_STANDARD_ERRORS` binomial standard errors of a TPR measured on
    ``num_outliers`` outliers, each :math:`\sqrt{t (1 - t) / n}` at :math:`t` = ``target_tpr``.

    Returns
    -------
    float
        A rate in [0, 1]; NaN without outliers.
    """
    if num_outliers <= 0:
        return float("nan")
    return float(NOISE_STANDARD_ERRORS * math.sqrt(target_tpr * (1 - target_tpr) / num_outliers))


def _within_band(which: str, gap: float, band: float) -> str:
    """One sentence: whether a threshold's test TPR lies within ``band`` of the target (``gap`` = |TPR - target|)."""
    if not (np.isfinite(gap) and np.isfinite(band)):
        return f"The {which} threshold's test TPR is undefined (no outlier on the test split)."
    if gap <= band:
        return f"The {which} threshold's test TPR is within that noise of the target (off by {gap:.3f})."
    return f"The {which} threshold's test TPR misses the target by more than that noise ({gap:.3f})."


def _test_rates(ere_mm: np.ndarray, radial_error_mm: np.ndarray, threshold_mm: float,
                outlier_mm: float) -> tuple[float, float, int]:
    """(TPR, FPR, number of outliers) of flagging ERE >= threshold over the present pairs."""
    error = np.asarray(radial_error_mm, dtype=np.float64)
    present = ~np.isnan(error)
    is_outlier = outliers(error[present], outlier_mm)
    flagged = np.asarray(ere_mm, dtype=np.float64)[present] >= threshold_mm
    tpr = float(flagged[is_outlier].mean()) if is_outlier.any() else float("nan")
    fpr = float(flagged[~is_outlier].mean()) if (~is_outlier).any() else float("nan")
    return tpr, fpr, int(is_outlier.sum())


def pooled_threshold_05_4(pool_ere_mm: np.ndarray, pool_errors_mm: np.ndarray, test_ere_mm: np.ndarray,
                          test_errors_mm: np.ndarray, outlier_mm: float, target_tpr: float) -> dict[str, Any]:
    """The ERE threshold chosen on the pooled held-out images and its rates on the test split.

    Parameters
    ----------
    pool_ere_mm, pool_errors_mm : ndarray, shape (N_pool, K)
        ERE and radial error (mm) of the pooled held-out images (calibration and test2).
    test_ere_mm, test_errors_mm : ndarray, shape (N, K)
        The same for the test split; NaN errors mark missing landmarks.
    outlier_mm : float
        Radial error (mm) above which a prediction is an outlier.
    target_tpr : float
        Share of the pool's outliers the threshold must flag.

    Returns
    -------
    dict
        ``threshold_mm``, ``num_outliers`` (of the pool), ``test_tpr``, ``test_fpr`` and
        ``test_num_outliers``.
    """
    chosen = choose_ere_threshold(np.asarray(pool_ere_mm, dtype=np.float64),
                                  np.asarray(pool_errors_mm, dtype=np.float64), outlier_mm, target_tpr)
    threshold = float(chosen["ere_threshold_mm"])
    tpr, fpr, test_outliers = _test_rates(test_ere_mm, test_errors_mm, threshold, outlier_mm)
    return {"threshold_mm": threshold, "num_outliers": chosen["num_outliers"], "test_tpr": tpr, "test_fpr": fpr,
            "test_num_outliers": test_outliers}


def exercise_05_4(answer: Any, pool_ere_mm: np.ndarray, pool_errors_mm: np.ndarray, test_ere_mm: np.ndarray,
                  test_errors_mm: np.ndarray, calibration_threshold_mm: float, outlier_mm: float,
                  target_tpr: float) -> bool:
    r"""Exercise 05.4: predict, then check whether a threshold from more outliers reaches the target TPR better.

    Expected answer::

        {"verdict": str, "threshold_mm": float, "num_outliers": int, "test_tpr": float, "test_fpr": float}

    the ERE threshold that :func:`chh_lib.uncertainty.choose_ere_threshold` picks on
    the pooled held-out images for ``target_tpr``, the pool's number of outliers,
    the rates of flagging :math:`\mathrm{ERE} \ge t` on the test split, and the
    letter of :data:`VERDICTS_05_4` comparing :math:`|\mathrm{TPR} - \text{target}|`
    with that of ``calibration_threshold_mm`` (equal within :math:`10^{-9}`: ``"c"``).
    The verdict is checked first; a wrong one is explained.

    Parameters
    ----------
    answer : dict or Ellipsis
    pool_ere_mm, pool_errors_mm : ndarray, shape (N_pool, K)
        The pooled held-out images (calibration and test2), mm.
    test_ere_mm, test_errors_mm : ndarray, shape (N, K)
        The test split, mm; NaN errors mark missing landmarks.
    calibration_threshold_mm : float
        The threshold chosen on the calibration split alone.
    outlier_mm, target_tpr : float

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "05.4"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("verdict", "threshold_mm", "num_outliers", "test_tpr", "test_fpr"), name)
    verdict = choice(given["verdict"], VERDICTS_05_4, name)
    pooled = pooled_threshold_05_4(pool_ere_mm, pool_errors_mm, test_ere_mm, test_errors_mm, outlier_mm, target_tpr)
    plain_tpr, plain_fpr, test_outliers = _test_rates(test_ere_mm, test_errors_mm, calibration_threshold_mm,
                                                      outlier_mm)
    gap_pooled, gap_plain = abs(pooled["test_tpr"] - target_tpr), abs(plain_tpr - target_tpr)
    expected = "c" if abs(gap_pooled - gap_plain) <= 1e-9 else ("a" if gap_pooled < gap_plain else "b")
    band = tpr_noise_band(target_tpr, test_outliers)
    explanation = (
        f"the pooled threshold {pooled['threshold_mm']:.2f} mm rests on {pooled['num_outliers']} outliers and gives "
        f"test TPR {pooled['test_tpr']:.3f} (FPR {pooled['test_fpr']:.3f}); the calibration threshold "
        f"{calibration_threshold_mm:.2f} mm gives {plain_tpr:.3f} (FPR {plain_fpr:.3f}); target {target_tpr:g}. "
        f"More outliers make the threshold a less noisy estimate, but the test TPR is itself measured on only "
        f"{test_outliers} outliers: even a perfect threshold would land within about +-{band:.3f} of the target "
        f"({NOISE_STANDARD_ERRORS:g} binomial standard errors). "
        + _within_band("pooled", gap_pooled, band) + " " + _within_band("calibration", gap_plain, band))
    if verdict != expected:
        raise ExerciseError(f"Exercise {name}: your prediction ({verdict}) does not hold: the answer is ({expected}), "
                            f"{VERDICTS_05_4[expected]}. Why: {explanation}")
    hint = ("pass pool_ere_mm and pool_errors_mm with outlier_mm and target_tpr to choose_ere_threshold, then flag the "
            "present test pairs with predictions.ere_mm >= that threshold and compare with errors > outlier_mm.")
    expect_close(number(given["threshold_mm"], "threshold_mm", name), pooled["threshold_mm"], "threshold_mm (mm)",
                 hint, name)
    if number(given["num_outliers"], "num_outliers", name) != pooled["num_outliers"]:
        raise ExerciseError(f"Exercise {name}: num_outliers should be {pooled['num_outliers']}, got "
                            f"{given['num_outliers']}. Hint: count the pooled pairs with an error above outlier_mm.")
    for key in ("test_tpr", "test_fpr"):
        expect_close(number(given[key], key, name), pooled[key], key, hint, name)
    return correct(name, f"({expected}) {VERDICTS_05_4[expected]}: {explanation}")

"""Checks of notebook 02's exercises (one-hot heatmap training)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from chh_lib.data.dataset import LandmarkDataset
from chh_lib.data.formats import ImageRecord
from chh_lib.exercises.answers import (
    choice,
    ExerciseError,
    correct,
    expect_close,
    fields,
    is_attempted,
    not_attempted,
    number,
)
from chh_lib.heatmaps import gaussian_heatmaps, one_hot_nll
from chh_lib.metrics import mean_radial_error, radial_error_mm

#: Absolute tolerance of a gradient or heatmap entry computed in float32.
ARRAY_ATOL = 1e-5


def _numpy(value: Any) -> Any:
    """A tensor as a float64 NumPy array; anything else unchanged."""
    return value.detach().cpu().double().numpy() if torch.is_tensor(value) else value


def _array(value: Any, shape: tuple[int, ...], what: str, name: str) -> np.ndarray:
    """``value`` as a float64 array of ``shape``; an :class:`ExerciseError` otherwise."""
    value = _numpy(value)
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ExerciseError(f"Exercise {name}: {what} should be an array of shape {shape}, got {value!r:.60}.") from error
    if array.shape != shape:
        raise ExerciseError(f"Exercise {name}: {what} should have shape {shape}, got {array.shape}.")
    return array


def _distribution(values: Any, what: str) -> np.ndarray:
    """A non-negative (H, W) map that sums to 1, as float64 (a ValueError for the notebook's author otherwise)."""
    array = np.asarray(_numpy(values), dtype=np.float64)
    if array.ndim != 2 or (array < 0).any() or not np.isclose(array.sum(), 1.0, atol=1e-4):
        raise ValueError(f"{what} must be a non-negative (H, W) map that sums to 1")
    return array


def exercise_02_1(answer: Any, logits: Any, target_index: int) -> bool:
    r"""Exercise 02.1: the gradient of the one-hot NLL with respect to the logits, by hand and by autograd.

    For one landmark, :math:`\mathcal{L} = -\log p(t)` with :math:`p = \mathrm{softmax}_{2D}(z)`, and

    .. math:: \frac{\partial \mathcal{L}}{\partial z(i)} = p(i) - [i = t].

    Expected answer: ``{"gradient": (H, W) array, "max_abs_difference": float}``, the gradient
    computed by hand and its largest absolute difference from the gradient that autograd gives
    for :func:`chh_lib.heatmaps.one_hot_nll`.

    Parameters
    ----------
    answer : dict or Ellipsis
        The student's answer; ``...`` when not attempted.
    logits : Tensor or ndarray, shape (H, W)
        One landmark's logits.
    target_index : int
        Flat (row-major) index of the target pixel.

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "02.1"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("gradient", "max_abs_difference"), name)
    z = torch.as_tensor(logits).detach().cpu().float()
    if z.ndim != 2:
        raise ValueError("exercise 02.1 needs one landmark's (H, W) logits")
    target_index = int(target_index)
    leaf = z[None, None].clone().requires_grad_(True)  # (1, 1, H, W)
    one_hot_nll(leaf, torch.tensor([[target_index]])).backward()
    autograd = leaf.grad[0, 0].double().numpy()  # (H, W)
    gradient = _array(given["gradient"], tuple(z.shape), "gradient", name)
    one_hot = np.zeros(z.shape)
    one_hot.flat[target_index] = 1.0
    by_formula = torch.softmax(z.double().flatten(), dim=0).reshape(z.shape).numpy() - one_hot
    error = float(np.abs(gradient - by_formula).max())
    if error > ARRAY_ATOL:
        if np.abs(gradient + by_formula).max() <= ARRAY_ATOL:
            hint = "the sign is flipped: the loss is MINUS log p(t), so the gradient is p - onehot, not onehot - p."
        elif np.abs(gradient - (by_formula + one_hot)).max() <= ARRAY_ATOL:
            hint = "that is p alone: subtract 1 at the target pixel (the one-hot target)."
        else:
            hint = ("p is the 2D softmax over ALL pixels of the map (subtract the maximum, exponentiate, divide by "
                    "the sum); then subtract 1 at the flat index target_index (row-major: row * W + column).")
        raise ExerciseError(f"Exercise {name}: gradient differs from p - onehot by up to {error:.3g}. Hint: {hint}")
    measured = float(np.abs(gradient - autograd).max())
    reported = number(given["max_abs_difference"], "max_abs_difference", name)
    if not 0.0 <= reported <= ARRAY_ATOL:
        raise ExerciseError(
            f"Exercise {name}: max_abs_difference should be a tiny non-negative number (your gradient and "
            f"autograd's differ by {measured:.1e} here), got {reported:.6g}. Hint: compute the loss with "
            "one_hot_nll on a (1, 1, H, W) copy of the logits with requires_grad, call .backward(), and take "
            "np.abs(your gradient - that copy's .grad[0, 0]).max().")
    return correct(name, f"p - onehot matches autograd to {measured:.1e}")


def exercise_02_2(answer: Any, q: Any, p: Any) -> bool:
    r"""Exercise 02.2: the expected NLL under the annotators' distribution is entropy plus KL divergence.

    .. math::

        \mathbb{E}_{t \sim q}\left[-\log p(t)\right] = -\sum_i q(i) \log p(i)
        = \underbrace{-\sum_i q(i) \log q(i)}_{H(q)}
        + \underbrace{\sum_i q(i) \log \frac{q(i)}{p(i)}}_{\mathrm{KL}(q \,\|\, p)}

    Expected answer: ``{"expected_nll": float, "entropy": float, "kl": float}``, all in nats
    (natural logarithms; :math:`0 \log 0 = 0`).

    Parameters
    ----------
    answer : dict or Ellipsis
    q : ndarray, shape (H, W)
        The annotators' distribution (non-negative, sums to 1; zeros allowed).
    p : ndarray or Tensor, shape (H, W)
        A predicted heatmap (positive where ``q`` is, sums to 1).

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "02.2"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("expected_nll", "entropy", "kl"), name)
    q, p = _distribution(q, "q"), _distribution(p, "p")
    support = q > 0
    expected_nll = float(-(q[support] * np.log(p[support])).sum())
    entropy = float(-(q[support] * np.log(q[support])).sum())
    kl = float((q[support] * np.log(q[support] / p[support])).sum())
    expect_close(number(given["entropy"], "entropy", name), entropy, "entropy (nats)",
                 "H(q) = -sum q log q over the pixels where q > 0, with the natural logarithm (np.log).", name)
    expect_close(number(given["expected_nll"], "expected_nll", name), expected_nll, "expected_nll (nats)",
                 "the average of -log p(t) when t is drawn from q: -sum_i q(i) log p(i), over the pixels where q > 0.",
                 name)
    expect_close(number(given["kl"], "kl", name), kl, "kl (nats)",
                 "KL(q || p) = sum q log(q / p) over the pixels where q > 0; it is expected_nll - entropy.", name)
    return correct(name, f"{expected_nll:.3f} = H(q) {entropy:.3f} + KL {kl:.3f} nats")


def quantisation_floor_mm(target_px: np.ndarray, pixel_size_mm: np.ndarray) -> float:
    r"""MRE in mm of a perfect model that answers the pixel centre nearest each target.

    Parameters
    ----------
    target_px : ndarray, shape (N, K, 2)
        (x, y) in pixels; NaN marks a missing landmark.
    pixel_size_mm : ndarray, shape (N, 2)

    Returns
    -------
    float
        :math:`\frac{1}{|P|}\sum_{(n,k)} \lVert (\mathrm{round}(\mathbf{t}_{nk}) - \mathbf{t}_{nk})
        \odot \mathbf{s}_n \rVert` over the present pairs.
    """
    target = np.asarray(target_px, dtype=np.float64)
    return mean_radial_error(radial_error_mm(np.round(target), target, np.asarray(pixel_size_mm)))[0]


def exercise_02_3(answer: Any, records: Sequence[ImageRecord], image_size: tuple[int, int],
                  paper_image_size: tuple[int, int] = (640, 800)) -> bool:
    r"""Exercise 02.3: the arg-max quantisation floor at this profile's grid and at the paper's.

    A perfect model that must answer a pixel centre predicts the target rounded to the grid; the
    floor is its MRE (:func:`quantisation_floor_mm`) over the present pairs.

    Expected answer: ``{"floor_mm": float, "floor_paper_mm": float, "ratio": float}``, the floors
    on the ``image_size`` and ``paper_image_size`` grids and ``ratio = floor_mm / floor_paper_mm``.

    Parameters
    ----------
    answer : dict or Ellipsis
    records : sequence of ImageRecord
        The images (e.g. the test split); a :class:`LandmarkDataset` at each size gives the targets
        and pixel sizes.
    image_size, paper_image_size : (int, int)
        (width, height) of the two grids.

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong.
    """
    name = "02.3"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("floor_mm", "floor_paper_mm", "ratio"), name)
    grids = [LandmarkDataset(list(records), size, None) for size in (image_size, paper_image_size)]
    here, paper = (quantisation_floor_mm(grid.target_px, grid.pixel_size_mm) for grid in grids)
    hint = ("round each target to the nearest pixel centre (np.round), take radial_error_mm(rounded, target_px, "
            "pixel_size_mm) and average it over the present pairs (np.nanmean).")
    expect_close(number(given["floor_mm"], "floor_mm", name), here, "floor_mm (mm)", hint, name)
    expect_close(number(given["floor_paper_mm"], "floor_paper_mm", name), paper, "floor_paper_mm (mm)",
                 hint + f" Use the target_px and pixel_size_mm of a LandmarkDataset at {paper_image_size}.", name)
    expect_close(number(given["ratio"], "ratio", name), here / paper, "ratio",
                 "floor_mm / floor_paper_mm (about the ratio of the pixel sizes).", name)
    return correct(name, f"floor {here:.3f} mm here, {paper:.3f} mm at {paper_image_size[0]} x {paper_image_size[1]}: "
                         f"{here / paper:.1f} times lower with pixels that much smaller")


def elongated_q(centre_px: Sequence[float], direction: Sequence[float], sd_along_px: float, sd_across_px: float,
                width: int, height: int, cutoff_sd: float = 4.0) -> np.ndarray:
    r"""A toy annotators' distribution: an anisotropic Gaussian over the pixel centres, long along ``direction``.

    .. math:: q(i) \propto \exp\left(-\frac{u_i^2}{2 a^2} - \frac{v_i^2}{2 c^2}\right)
        \quad \text{where } (u_i, v_i) \text{ is } \mathbf{x}_i - \mathbf{c}
        \text{ along the unit direction and across it, } a, c \text{ the two SDs,}

    set to zero beyond ``cutoff_sd`` SDs (Mahalanobis distance) and normalised to sum to 1.

    Parameters
    ----------
    centre_px : (float, float)
        (x, y) of the centre in pixels.
    direction : (float, float)
        (x, y) of the long axis (any length, not zero).
    sd_along_px, sd_across_px : float
        SDs along and across the long axis, in pixels (positive).
    width, height : int
        Size of the grid.
    cutoff_sd : float
        Mahalanobis radius beyond which ``q`` is zero.

    Returns
    -------
    ndarray, shape (height, width), float64
        Non-negative, sums to 1.
    """
    if sd_along_px <= 0 or sd_across_px <= 0:
        raise ValueError(f"the SDs must be positive, got {sd_along_px} and {sd_across_px}")
    unit = np.asarray(direction, dtype=np.float64)
    unit = unit / np.linalg.norm(unit)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    dx, dy = cols - float(centre_px[0]), rows - float(centre_px[1])
    along, across = dx * unit[0] + dy * unit[1], -dx * unit[1] + dy * unit[0]
    distance2 = (along / sd_along_px) ** 2 + (across / sd_across_px) ** 2
    q = np.where(distance2 <= cutoff_sd**2, np.exp(-0.5 * distance2), 0.0)
    if q.sum() == 0:
        raise ValueError("the toy distribution has no pixel on the grid: move its centre inside")
    return q / q.sum()


def blurred_sd_ratio(sd_along_px: float, sd_across_px: float, sigma_px: float) -> float:
    r"""SD along over SD across of :math:`q \ast g` when the variances add: :math:`\sqrt{(a^2 + \sigma^2) / (c^2 + \sigma^2)}`."""
    return float(np.sqrt((sd_along_px**2 + sigma_px**2) / (sd_across_px**2 + sigma_px**2)))


def _sd_ratio(weights: np.ndarray) -> float:
    """Square root of the eigenvalue ratio of the weighted covariance of the pixel positions of ``weights`` (H, W)."""
    rows, cols = np.mgrid[0:weights.shape[0], 0:weights.shape[1]].astype(np.float64)
    w = weights / weights.sum()
    points = np.stack([cols.ravel(), rows.ravel()])  # (2, H W)
    centred = points - (points * w.ravel()).sum(axis=1, keepdims=True)
    eigenvalues = np.linalg.eigvalsh((centred * w.ravel()) @ centred.T)  # ascending
    return float(np.sqrt(eigenvalues[1] / eigenvalues[0]))


#: What each choice of exercise 02.4 says, for the explanation the check prints.
VERDICTS_02_4 = {
    "a": "h* is round: the Gaussian target fixes the heatmap's shape",
    "b": "h* is elongated exactly as much as q",
    "c": "h* is elongated, but less than q: the Gaussian's variance adds to q's along every direction",
}


#: Relative tolerance of the predicted SD ratio of exercise 02.4 (against the formula).
SD_RATIO_RTOL = 0.02


def exercise_02_4(answer: Any, q: Any, sigma_px: float, sd_along_px: float, sd_across_px: float) -> bool:
    r"""Exercise 02.4: predict, then check, the shape of the MSE-optimal heatmap under label noise.

    When the target position :math:`t` is drawn from :math:`q`, the output that minimises
    :math:`\mathbb{E}_{t \sim q} \sum_i (h(i) - g_t(i))^2` is, pixel by pixel, the mean target

    .. math:: h^*(i) = \sum_t q(t)\, g_t(i), \qquad g_t(i) = \exp\left(-\lVert \mathbf{x}_i - \mathbf{x}_t
        \rVert^2 / 2\sigma^2\right),

    the convolution of :math:`q` with the (unnormalised) Gaussian, whose variances are those of
    :math:`q` plus :math:`\sigma^2` along every direction.

    Expected answer: ``{"verdict": str, "sd_ratio": float, "optimal_heatmap": (H, W) array}``: the
    letter of the statement that holds (:data:`VERDICTS_02_4`; ``"c"``, or ``"a"`` for a round
    ``q``), the predicted SD along over SD across of :math:`h^*` (:func:`blurred_sd_ratio`, within
    :data:`SD_RATIO_RTOL`), and :math:`h^*` itself.

    Parameters
    ----------
    answer : dict or Ellipsis
    q : ndarray, shape (H, W)
        The annotators' distribution over pixel centres (non-negative, sums to 1), e.g. :func:`elongated_q`.
    sigma_px : float
        Width of the Gaussian target in pixels.
    sd_along_px, sd_across_px : float
        The SDs ``q`` was built with (pixels).

    Returns
    -------
    bool
        True when correct, False when not attempted.

    Raises
    ------
    ExerciseError
        When the answer is wrong; for a wrong verdict the message explains the right one.
    """
    name = "02.4"
    if not is_attempted(answer):
        return not_attempted(name)
    given = fields(answer, ("verdict", "sd_ratio", "optimal_heatmap"), name)
    verdict = choice(given["verdict"], VERDICTS_02_4, name)
    q = _distribution(q, "q")
    predicted = blurred_sd_ratio(sd_along_px, sd_across_px, sigma_px)
    q_ratio = sd_along_px / sd_across_px
    expected_verdict = "a" if np.isclose(q_ratio, 1.0) else "c"
    why = (f"h* = q * g, and the variances of a convolution add: along the contour {sd_along_px:g}^2 + "
           f"{sigma_px:g}^2, across it {sd_across_px:g}^2 + {sigma_px:g}^2 (pixels^2), so the SD ratio drops from "
           f"q's {q_ratio:.2f} to {predicted:.2f}. The MSE heatmap still follows the contour, only blurred; the wider "
           f"the target, the rounder it looks.")
    if verdict != expected_verdict:
        raise ExerciseError(f"Exercise {name}: your prediction ({verdict}) does not hold: the answer is "
                            f"({expected_verdict}), {VERDICTS_02_4[expected_verdict]}. Why: {why}")
    expect_close(number(given["sd_ratio"], "sd_ratio", name), predicted, "sd_ratio",
                 "the variances add: sqrt((sd_along^2 + sigma^2) / (sd_across^2 + sigma^2)).", name,
                 rtol=SD_RATIO_RTOL)
    height, width = q.shape
    rows, cols = np.nonzero(q)
    centres = torch.tensor(np.stack([cols, rows], axis=-1)[None], dtype=torch.float32)  # (1, M, 2) as (x, y)
    targets = gaussian_heatmaps(centres, width, height, sigma_px)[0].double().numpy()  # (M, H, W)
    expected = np.tensordot(q[rows, cols], targets, axes=1)  # (H, W)
    heatmap = _array(given["optimal_heatmap"], q.shape, "optimal_heatmap", name)
    error = float(np.abs(heatmap - expected).max())
    if error > ARRAY_ATOL:
        hint = ("for each pixel, the best constant under a squared error is the mean of the targets: add up the "
                "Gaussians g_t centred on every pixel t where q > 0, each weighted by q(t) (peak 1, not normalised).")
        if np.isclose(heatmap.sum(), 1.0) and not np.isclose(expected.sum(), 1.0):
            hint = "do not normalise: each Gaussian target has peak 1, so h* sums to 2 pi sigma^2, not 1. " + hint
        raise ExerciseError(f"Exercise {name}: optimal_heatmap differs from sum_t q(t) g_t by up to {error:.3g}. "
                            f"Hint: {hint}")
    return correct(name, f"({verdict}) holds, and your h* has an SD ratio of {_sd_ratio(expected):.2f} (q: "
                         f"{_sd_ratio(q):.2f}, measured on the grid; predicted {predicted:.2f}). Why: {why}")

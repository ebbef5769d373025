"""2D softmax, one-hot NLL, arg-max decoding and mode probability."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chh_lib.errors import NonFiniteError
from chh_lib.heatmaps import (
    MISSING_INDEX,
    argmax_2d,
    check_finite,
    gaussian_heatmaps,
    gaussian_mse,
    gaussian_mse_per_landmark,
    log_softmax_2d,
    mode_probability,
    one_hot_nll,
    softmax_2d,
    target_flat_index,
)


def test_softmax_2d_matches_torch_softmax_over_flattened_pixels():
    logits = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    expected = torch.softmax(logits.reshape(2, 3, -1), dim=-1).reshape(2, 3, 5, 7)
    result = softmax_2d(logits)
    assert result.dtype == torch.float32
    assert torch.allclose(result.double(), expected, atol=1e-6)
    assert torch.allclose(result.sum(dim=(-2, -1)), torch.ones(2, 3), atol=1e-5)


def test_log_softmax_2d_is_finite_for_huge_logits():
    logits = torch.zeros(1, 2, 4, 4)
    logits[0, 0, 1, 2] = 1e4
    logits[0, 1] = -1e4
    logits[0, 1, 3, 3] = 1e4
    log_p = log_softmax_2d(logits)
    assert torch.isfinite(log_p).all()
    assert log_p[0, 0, 1, 2].item() == pytest.approx(0.0, abs=1e-6)
    assert softmax_2d(logits)[0, 1, 3, 3].item() == pytest.approx(1.0)


def test_bf16_logits_are_promoted_to_float32():
    logits = torch.randn(1, 1, 4, 4).bfloat16()
    assert log_softmax_2d(logits).dtype == torch.float32


def test_one_hot_nll_equals_minus_log_probability_at_target():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 3, 4)
    target_index = torch.tensor([[5, MISSING_INDEX], [0, 11]])
    log_p = log_softmax_2d(logits).flatten(2)
    expected = -(log_p[0, 0, 5] + log_p[1, 0, 0] + log_p[1, 1, 11]) / 3
    assert one_hot_nll(logits, target_index).item() == pytest.approx(expected.item(), rel=1e-6)


def test_one_hot_nll_refuses_a_batch_without_landmarks():
    with pytest.raises(ValueError, match="no landmark"):
        one_hot_nll(torch.zeros(1, 2, 3, 3), torch.full((1, 2), MISSING_INDEX))


def test_target_flat_index_rounds_and_marks_outside_or_nan_missing():
    target_px = torch.tensor([[2.4, 1.6], [3.5, 0.2], [-0.6, 1.0], [float("nan"), 1.0], [4.6, 0.0]])
    index = target_flat_index(target_px, width=5, height=3)
    # (2, 2) -> 12; (4, 0) -> 4 (round half to even gives 4); x=-1 outside; NaN missing; x=5 outside
    assert index.tolist() == [12, 4, MISSING_INDEX, MISSING_INDEX, MISSING_INDEX]


def test_argmax_2d_returns_float_xy_of_first_maximum():
    maps = torch.zeros(1, 2, 4, 5)
    maps[0, 0, 2, 3] = 1.0
    maps[0, 1, 1, 4] = 2.0
    maps[0, 1, 3, 0] = 2.0  # a tie later in row-major order loses
    xy = argmax_2d(maps)
    assert xy.dtype == torch.float32
    assert xy.tolist() == [[[3.0, 2.0], [4.0, 1.0]]]


def test_mode_probability_equals_max_of_softmax():
    logits = torch.randn(3, 4, 6, 5) * 3
    expected = softmax_2d(logits).flatten(2).max(dim=-1).values
    assert torch.allclose(mode_probability(logits), expected, atol=1e-6)


def test_check_finite_names_the_place():
    logits = torch.zeros(1, 1, 2, 2)
    logits[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="batch 3"):
        check_finite(logits, "batch 3")
    check_finite(torch.zeros(1, 1, 2, 2), "fine")


def test_reference_vectors_softmax_and_argmax(reference_vectors):
    logits = torch.from_numpy(reference_vectors["logits"])
    temperatures = torch.from_numpy(reference_vectors["temperatures"])
    scaled = logits / temperatures[None, :, None, None]
    heatmaps = softmax_2d(scaled.double()).double().numpy()
    np.testing.assert_allclose(heatmaps, reference_vectors["heatmaps"], atol=1e-7, rtol=1e-5)
    np.testing.assert_array_equal(argmax_2d(scaled).numpy(), reference_vectors["argmax_xy"])


def test_target_nll_per_pair_with_nan_for_missing():
    from chh_lib.heatmaps import target_nll

    logits = torch.randn(2, 3, 4, 5)
    target_index = torch.tensor([[0, 7, MISSING_INDEX], [19, MISSING_INDEX, 3]])
    nll = target_nll(logits, target_index)
    log_p = log_softmax_2d(logits).flatten(2)
    assert nll[0, 1].item() == pytest.approx(-log_p[0, 1, 7].item(), rel=1e-6)
    assert nll[1, 0].item() == pytest.approx(-log_p[1, 0, 19].item(), rel=1e-6)
    assert torch.isnan(nll[0, 2]) and torch.isnan(nll[1, 1])
    present = target_index != MISSING_INDEX
    assert nll[present].mean().item() == pytest.approx(one_hot_nll(logits, target_index).item(), rel=1e-6)


def test_one_hot_nll_gradient_is_softmax_minus_one_hot():
    """d(-log p_t)/dz = p - onehot, divided by the number of present pairs."""
    torch.manual_seed(1)
    logits = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    target_index = torch.tensor([[5, 11]])
    one_hot_nll(logits, target_index).backward()
    expected = softmax_2d(logits.detach()).double().flatten(2)  # (1, 2, 12)
    expected[0, 0, 5] -= 1.0
    expected[0, 1, 11] -= 1.0
    np.testing.assert_allclose(logits.grad.flatten(2).numpy(), expected.numpy() / 2, atol=1e-6)


def test_gaussian_heatmaps_peak_width_and_missing():
    target = torch.tensor([[[2.0, 1.0], [float("nan"), 1.0], [0.5, 0.0]]])  # (1, 3, 2): (x, y)
    maps = gaussian_heatmaps(target, width=5, height=3, sigma_px=2.0)
    assert maps.shape == (1, 3, 3, 5) and maps.dtype == torch.float32
    assert maps[0, 0, 1, 2].item() == pytest.approx(1.0)
    assert maps[0, 0, 1, 4].item() == pytest.approx(math.exp(-4 / 8))  # 2 px right: exp(-d^2 / 2 sigma^2)
    assert maps[0, 0, 0, 1].item() == pytest.approx(math.exp(-2 / 8))  # (-1, -1): d^2 = 2
    assert torch.equal(maps[0, 1], torch.zeros(3, 5))  # missing: no target
    assert maps[0, 2, 0, 0].item() == pytest.approx(maps[0, 2, 0, 1].item())  # x = 0.5: between two columns
    with pytest.raises(ValueError, match="sigma_px must be positive"):
        gaussian_heatmaps(target, 5, 3, sigma_px=0.0)
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        gaussian_heatmaps(target[0], 5, 3)


def test_gaussian_mse_per_landmark_and_mean_over_present():
    target = torch.tensor([[[1.0, 1.0], [float("nan"), float("nan")]], [[3.0, 2.0], [0.0, 0.0]]])  # (2, 2, 2)
    outputs = torch.zeros(2, 2, 3, 4)
    outputs[1, 1, 0, 0] = 1.0  # exactly its Gaussian's peak; the rest of that map is 0
    per_landmark = gaussian_mse_per_landmark(outputs, target, sigma_px=1.0)
    targets = gaussian_heatmaps(torch.nan_to_num(target), 4, 3, 1.0)
    assert per_landmark[0, 0].item() == pytest.approx((targets[0, 0] ** 2).sum().item())
    assert torch.isnan(per_landmark[0, 1])
    expected_11 = ((targets[1, 1] - outputs[1, 1]) ** 2).sum().item()
    assert per_landmark[1, 1].item() == pytest.approx(expected_11)
    present = ~torch.isnan(per_landmark)
    assert gaussian_mse(outputs, target, 1.0).item() == pytest.approx(per_landmark[present].mean().item())
    assert gaussian_mse(gaussian_heatmaps(target, 4, 3, 1.0), target, 1.0).item() == pytest.approx(0.0, abs=1e-12)
    leaf = outputs.clone().requires_grad_(True)
    gaussian_mse(leaf, target, 1.0).backward()
    assert torch.isfinite(leaf.grad).all() and torch.equal(leaf.grad[0, 1], torch.zeros(3, 4))  # missing: no gradient
    with pytest.raises(ValueError, match="no landmark"):
        gaussian_mse(outputs[:, 1:] * 0, torch.full((2, 1, 2), float("nan")), 1.0)
    with pytest.raises(ValueError, match="does not match"):
        gaussian_mse_per_landmark(outputs, target[:, :1], 1.0)
    # a zero output away from the borders scores sum g^2 = about pi sigma^2, whatever the grid
    centre = torch.tensor([[[50.0, 40.0]]])
    assert gaussian_mse(torch.zeros(1, 1, 80, 100), centre, 2.0).item() == pytest.approx(math.pi * 4, rel=1e-4)


def _gaussian_logits(centres_xy, sigmas_xy, height=40, width=32):
    """Log of axis-aligned Gaussian heatmaps (up to a constant), shape (1, M, H, W)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    maps = [-((xs - cx) ** 2) / (2 * sx**2) - ((ys - cy) ** 2) / (2 * sy**2)
            for (cx, cy), (sx, sy) in zip(centres_xy, sigmas_xy)]
    return torch.stack(maps)[None].float()


def test_quadratic_peak_recovers_a_known_subpixel_peak():
    from chh_lib.heatmaps import quadratic_peak_2d

    rng = np.random.default_rng(0)
    centres = rng.uniform([3, 3], [28, 36], size=(20, 2))
    sigmas = rng.uniform(0.7, 4.0, size=(20, 2))  # round and elongated along x or y
    logits = _gaussian_logits(centres, sigmas)
    found = quadratic_peak_2d(logits)[0].numpy()
    assert np.abs(found - centres).max() < 0.05  # in pixels
    assert np.abs(argmax_2d(logits)[0].numpy() - centres).max() > 0.3  # the arg-max alone cannot
    # a temperature and a constant shift change neither the arg-max nor the parabola's peak
    np.testing.assert_allclose(quadratic_peak_2d(logits / 2.5 + 7.0)[0].numpy(), found, atol=1e-3)


def test_quadratic_peak_stays_on_the_arg_max_at_borders_and_flat_maps():
    from chh_lib.heatmaps import quadratic_peak_2d

    border = _gaussian_logits([(0.2, 39.0)], [(1.0, 1.0)])  # mode on the corner pixel (0, 39): no neighbours
    np.testing.assert_array_equal(quadratic_peak_2d(border)[0, 0].numpy(), [0.0, 39.0])
    flat = torch.zeros(1, 1, 5, 4)
    np.testing.assert_array_equal(quadratic_peak_2d(flat)[0, 0].numpy(), argmax_2d(flat)[0, 0].numpy())
    step = torch.zeros(1, 1, 5, 4)
    step[0, 0, 2, 1:] = 1.0  # a plateau: not concave along x, so no offset there
    offset = quadratic_peak_2d(step)[0, 0] - argmax_2d(step)[0, 0]
    assert abs(float(offset[0])) <= 0.5 and float(offset[1]) == 0.0

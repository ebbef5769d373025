"""Temperature scaling: recovery of known temperatures, invariance of the arg-max, refusal of test splits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from chh_lib.calibration import (
    HeldOutLogits,
    check_calibration_split,
    fit_temperatures_nll,
    per_landmark_nll,
    pooled_nll,
)
from chh_lib.errors import ConfigError
from chh_lib.heatmaps import MISSING_INDEX, TemperatureScaling, argmax_2d, scale_logits, softmax_2d


def _sampled(temperatures: torch.Tensor, num_images: int = 4000, size: int = 12, seed: int = 0) -> HeldOutLogits:
    """Logits and targets drawn from softmax(logits / T): the NLL's minimum lies at T."""
    generator = torch.Generator().manual_seed(seed)
    k = len(temperatures)
    logits = 3.0 * torch.randn(num_images, k, size, size, generator=generator)
    probabilities = softmax_2d(scale_logits(logits, temperatures)).flatten(2)  # (N, K, H*W)
    target = torch.multinomial(probabilities.reshape(-1, size * size), 1, generator=generator).reshape(num_images, k)
    target[0, 0] = MISSING_INDEX  # a missing landmark is left out
    return HeldOutLogits(logits, target, np.zeros((num_images, k, 2)), np.ones((num_images, 2)))


def test_fit_recovers_known_per_landmark_temperatures():
    truth = torch.tensor([0.5, 1.0, 2.0, 3.5])
    result = fit_temperatures_nll(_sampled(truth))
    np.testing.assert_allclose(result.temperatures, truth.numpy(), rtol=0.05)
    assert result.nll_after < result.nll_before
    assert result.num_images == 4000


def test_fit_recovers_a_global_temperature():
    truth = torch.full((3,), 1.7)
    result = fit_temperatures_nll(_sampled(truth, seed=1), per_landmark=False)
    assert np.ptp(result.temperatures) == 0
    assert result.temperatures[0] == pytest.approx(1.7, rel=0.05)


def test_landmark_absent_everywhere_keeps_temperature_one():
    held_out = _sampled(torch.tensor([2.0, 2.0]))
    held_out.target_index[:, 1] = MISSING_INDEX
    result = fit_temperatures_nll(held_out)
    assert result.temperatures[1] == 1.0
    assert result.temperatures[0] == pytest.approx(2.0, rel=0.05)


def test_nll_helpers_match_a_direct_computation():
    held_out = _sampled(torch.tensor([1.3, 0.8]), num_images=5, size=4)
    temperature = torch.tensor([1.3, 0.8])
    log_p = torch.log_softmax((held_out.logits / temperature.view(1, -1, 1, 1)).flatten(2), dim=-1)
    rows = [(n, k) for n in range(5) for k in range(2) if held_out.target_index[n, k] >= 0]
    direct = [-log_p[n, k, held_out.target_index[n, k]].item() for n, k in rows]
    assert pooled_nll(held_out.logits, held_out.target_index, temperature).item() == pytest.approx(np.mean(direct))
    per_k = per_landmark_nll(held_out.logits, held_out.target_index, temperature)
    assert per_k[1].item() == pytest.approx(np.mean([d for (n, k), d in zip(rows, direct) if k == 1]))


def test_temperature_does_not_move_the_argmax():
    logits = torch.randn(3, 5, 9, 7)
    for temperature in (torch.full((5,), 0.3), torch.linspace(0.5, 4.0, 5)):
        assert torch.equal(argmax_2d(scale_logits(logits, temperature)), argmax_2d(logits))
    module = TemperatureScaling(5)
    with torch.no_grad():
        module.log_temperature.copy_(torch.linspace(-1, 1, 5))
    assert torch.equal(argmax_2d(module(logits)), argmax_2d(logits))
    np.testing.assert_allclose(module.temperature.detach().numpy(), np.exp(np.linspace(-1, 1, 5)), rtol=1e-6)


def test_scale_logits_checks_its_input():
    with pytest.raises(ValueError, match="3 temperatures for 2 landmarks"):
        scale_logits(torch.zeros(1, 2, 3, 3), torch.ones(3))
    with pytest.raises(ValueError, match="positive"):
        scale_logits(torch.zeros(1, 2, 3, 3), torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("split", ["test", "test2"])
def test_reported_splits_are_refused(split):
    with pytest.raises(ConfigError, match="may not be fitted"):
        check_calibration_split(split)
    check_calibration_split("calibration")


def test_degenerate_fits_are_clipped_to_the_temperature_range():
    from chh_lib.calibration import TEMPERATURE_RANGE

    logits = torch.zeros(6, 1, 4, 4)
    logits[:, 0, 0, 0] = 50.0  # confidently wrong everywhere: the NLL keeps falling as T grows
    target = torch.full((6, 1), 15)
    result = fit_temperatures_nll(HeldOutLogits(logits, target, np.zeros((6, 1, 2)), np.ones((6, 2))))
    assert result.temperatures[0] == pytest.approx(TEMPERATURE_RANGE[1])


def _paper_fixture(tmp_path):
    from helpers import make_tiny_isbi

    from chh_lib.calibration import collect_logits
    from chh_lib.data.dataset import LandmarkDataset
    from chh_lib.data.formats import read_landmark_data
    from chh_lib.model import build_model

    make_tiny_isbi(tmp_path / "data", images_per_split=3, size=(48, 60))
    data = read_landmark_data(tmp_path / "data")
    torch.manual_seed(0)
    model = build_model("unet_small", 19, width_multiplier=0.5)
    fitting = LandmarkDataset(data.split("test")[:2], (64, 80), tmp_path / "cache")
    selection = collect_logits(model, LandmarkDataset(data.split("test2"), (64, 80), tmp_path / "cache"),
                               torch.device("cpu"))
    return model, fitting, selection


def test_paper_method_steps_the_temperature_itself_and_never_returns_it_untouched(tmp_path):
    from chh_lib.calibration import fit_temperatures_paper

    model, fitting, selection = _paper_fixture(tmp_path)
    one_step = fit_temperatures_paper(model, fitting, selection, torch.device("cpu"), epochs=1)
    # one batch, one Adam step of lr 0.01 on T: every T moves by 0.01 exactly
    # (stepping log T would give exp(+-0.01) - 1 = +0.01005 / -0.00995)
    np.testing.assert_allclose(np.abs(one_step.temperatures - 1.0), 0.01, atol=1e-5)
    assert one_step.details["best_epoch"] == 1
    result = fit_temperatures_paper(model, fitting, selection, torch.device("cpu"), epochs=3)
    assert result.details["best_epoch"] in (1, 2, 3)
    assert not np.allclose(result.temperatures, 1.0)
    assert [row["epoch"] for row in result.details["history"]] == [0, 1, 2, 3]
    best = min(result.details["history"][1:], key=lambda row: row["selection_ece_percent"])
    assert result.details["selection_ece_percent"] == best["selection_ece_percent"]


def test_paper_method_defaults_to_the_authors_15_epochs_and_refuses_zero(tmp_path):
    import inspect

    from chh_lib.calibration import fit_temperatures_paper

    assert inspect.signature(fit_temperatures_paper).parameters["epochs"].default == 15
    model, fitting, selection = _paper_fixture(tmp_path)
    with pytest.raises(ConfigError, match="at least one epoch"):
        fit_temperatures_paper(model, fitting, selection, torch.device("cpu"), epochs=0)


def test_cross_validation_prefers_a_global_temperature_when_all_landmarks_share_one():
    from chh_lib.calibration import cross_validated_nll

    shared = cross_validated_nll(_sampled(torch.full((6,), 1.8), num_images=40, size=8, seed=3), num_folds=4)
    assert shared["global"] < shared["per_landmark"]  # six free parameters over-fit 30 images
    distinct = cross_validated_nll(_sampled(torch.tensor([0.4, 0.6, 1.0, 2.0, 3.0, 5.0]), num_images=40, size=8),
                                   num_folds=4)
    assert distinct["per_landmark"] < distinct["global"]
    with pytest.raises(ConfigError, match="needs at least 5 images"):
        cross_validated_nll(_sampled(torch.ones(2), num_images=3, size=4), num_folds=5)

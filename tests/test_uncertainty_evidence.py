"""Step 11: intervals on the uncertainty numbers, calibration that may keep T = 1, a configurable outlier cut."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import train_smoke_run

from chh_lib.calibration import (
    MIN_CALIBRATION_IMAGES,
    HeldOutLogits,
    choose_scope,
    cross_validated_nll,
    unit_temperatures,
)
from chh_lib.cli import main
from chh_lib.config import EvalConfig
from chh_lib.metrics import bootstrap_ci, correct_within_pixel, reliability_bins, spearman
from chh_lib.uncertainty import MIN_OUTLIERS, suggested_outlier_cut, summarise_uncertainty


def _sampled_held_out(seed: int, true_temperature: float, num_images: int = 20) -> HeldOutLogits:
    """Random logits whose targets are drawn from softmax(logits / true_temperature)."""
    generator = torch.Generator().manual_seed(seed)
    num_landmarks, height, width = 3, 8, 8
    logits = torch.randn(num_images, num_landmarks, height, width, generator=generator) * 2
    probabilities = torch.softmax((logits / true_temperature).flatten(2), dim=-1)
    target = torch.multinomial(probabilities.reshape(num_images * num_landmarks, -1), 1, generator=generator)
    target = target.reshape(num_images, num_landmarks)
    target_px = np.stack([(target % width).numpy(), (target // width).numpy()], axis=-1).astype(np.float64)
    return HeldOutLogits(logits, target, target_px, np.full((num_images, 2), 0.5))


def test_auto_scope_keeps_t_equal_1_when_the_model_is_calibrated():
    # targets drawn from the model's own softmax: any fitted temperature only fits noise
    cross_validation = cross_validated_nll(_sampled_held_out(seed=0, true_temperature=1.0))
    assert set(cross_validation) == {"none", "global", "per_landmark", "num_folds"}
    assert cross_validation["none"] < cross_validation["global"] < cross_validation["per_landmark"]
    assert choose_scope(cross_validation) == "none"


def test_auto_scope_fits_a_temperature_when_the_model_is_overconfident():
    cross_validation = cross_validated_nll(_sampled_held_out(seed=0, true_temperature=3.0))
    assert cross_validation["global"] < cross_validation["none"] - 0.05
    assert choose_scope(cross_validation) in ("global", "per_landmark")


def test_a_tie_goes_to_the_scope_with_fewer_parameters():
    assert choose_scope({"none": 1.0, "global": 1.0, "per_landmark": 1.0}) == "none"
    assert choose_scope({"none": 2.0, "global": 1.0, "per_landmark": 1.0}) == "global"


def test_unit_temperatures_leave_the_nll_unchanged():
    held_out = _sampled_held_out(seed=1, true_temperature=1.0)
    result = unit_temperatures(held_out)
    assert result.scope == "none" and np.array_equal(result.temperatures, np.ones(3))
    assert result.nll_after == result.nll_before > 0


def test_suggested_outlier_cut_gives_enough_outliers():
    errors = np.array([[0.5, 9.0, np.nan], [3.05, 2.0, 1.0], [8.0, 7.0, 6.0], [5.0, 4.0, 3.3], [2.5, 1.5, 3.0]])
    cut = suggested_outlier_cut(errors, num_outliers=10)
    assert cut == pytest.approx(2.4)  # the 10th largest error is exactly 2.5 mm
    assert int((errors > cut).sum()) >= 10
    assert suggested_outlier_cut(errors, num_outliers=5) == pytest.approx(4.9)  # the 5th largest is exactly 5.0
    assert np.isnan(suggested_outlier_cut(np.array([1.0, np.nan]), num_outliers=10))


def test_summary_intervals_are_the_bootstrap_of_the_statistics():
    rng = np.random.default_rng(0)
    num_images, num_landmarks = 40, 4
    errors = rng.gamma(2.0, 0.6, size=(num_images, num_landmarks))
    errors[0, 1] = np.nan
    spacing = np.full((num_images, 2), 0.5)
    before = rng.uniform(0.01, 0.3, size=errors.shape)
    after = before * 0.8
    nll_before = rng.normal(2.0, 0.3, size=errors.shape)
    nll_after = nll_before + rng.normal(0.05, 0.02, size=errors.shape)
    ere = errors * rng.uniform(0.5, 1.5, size=errors.shape)
    settings = EvalConfig(bootstrap_resamples=200)
    metrics = summarise_uncertainty(errors, spacing, before, after, nll_before, nll_after, {"ere": ere},
                                    settings).metrics
    for key in ("ece_percent_before_ci95", "ece_percent_after_ci95", "nll_before_ci95", "nll_after_ci95",
                "spearman_ci95", "ere_error_binned_pearson_ci95", "ece_change_ci95", "nll_change_ci95"):
        low, high = metrics[key]
        assert low <= high, key
    present = ~np.isnan(errors)
    spacing_nk = np.broadcast_to(spacing[:, None, :], errors.shape + (2,))

    def ece_before(indices):
        keep = present[indices]
        correct = correct_within_pixel(errors[indices][keep], spacing_nk[indices][keep])
        return reliability_bins(before[indices][keep], correct).ece_percent

    expected = bootstrap_ci(ece_before, num_images, 200, 0)
    assert metrics["ece_percent_before_ci95"] == pytest.approx(list(expected))
    expected = bootstrap_ci(lambda i: spearman(ere[i][present[i]], errors[i][present[i]]), num_images, 200, 0)
    assert metrics["spearman_ci95"] == pytest.approx(list(expected))
    # every resample raises the NLL by about 0.05 nats: the paired interval of the change sits well above 0
    low, high = metrics["nll_change_ci95"]
    assert 0.04 < low < metrics["nll_after"] - metrics["nll_before"] < high < 0.06
    assert metrics["num_outliers"] == int((errors[present] > 4.0).sum())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Phantom -> train (smoke), once for the module."""
    return train_smoke_run(tmp_path_factory.mktemp("evidence"))


def _copy(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def test_outlier_cut_round_trips_through_calibrate_evaluate_and_predict(smoke_run, tmp_path, capsys, caplog):
    data_dir, run_dir = smoke_run
    run = _copy(run_dir, tmp_path)
    with caplog.at_level(logging.WARNING, logger="chh_lib"):
        assert main(["calibrate", "--run-dir", str(run), "--outlier-mm", "2.5", "--device", "cpu"]) == 0
    calibration = json.loads((run / "calibration.json").read_text())
    assert calibration["num_images"] < MIN_CALIBRATION_IMAGES
    assert f"fewer than the {MIN_CALIBRATION_IMAGES}" in caplog.text
    chosen = calibration["ere_threshold"]
    assert calibration["outlier_threshold_mm"] == chosen["outlier_threshold_mm"] == 2.5
    assert chosen["num_outliers"] >= MIN_OUTLIERS and np.isfinite(chosen["ere_threshold_mm"])
    assert "ERE threshold" in capsys.readouterr().out
    assert main(["evaluate", "--run-dir", str(run), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((run / "eval_test" / "metrics.json").read_text())
    assert metrics["outlier_threshold_mm"] == 2.5
    assert "AUROC of ERE (> 2.5 mm)" in printed and f"over {metrics['num_outliers']} outliers" in printed
    assert "[" in printed.split("ECE before -> after")[1].splitlines()[0]
    evaluated = pd.read_csv(run / "eval_test" / "predictions.csv")
    assert (evaluated["outlier_threshold_mm"] == 2.5).all()
    images = sorted((data_dir / "RawImage" / "Test1Data").glob("*.bmp"))[:2]
    out = tmp_path / "predicted.csv"
    base = ["predict", "--run-dir", str(run), "--images", *map(str, images), "--no-progress", "--device", "cpu"]
    assert main(base + ["--out", str(out), "--outlier-mm", "2.5"]) == 0
    predicted = pd.read_csv(out)
    assert (predicted["outlier_threshold_mm"] == 2.5).all()
    assert np.allclose(predicted["ere_threshold_mm"], chosen["ere_threshold_mm"], rtol=1e-6)
    other = tmp_path / "other.csv"
    assert main(base + ["--out", str(other), "--outlier-mm", "4"]) == 2
    error = capsys.readouterr().err
    assert "chosen at an outlier cut of 2.5 mm, not 4 mm" in error and "--outlier-mm 4" in error
    assert not other.exists()


def test_too_few_outliers_store_no_threshold_and_name_a_cut(smoke_run, tmp_path, capsys, caplog):
    data_dir, run_dir = smoke_run
    run = _copy(run_dir, tmp_path)
    with caplog.at_level(logging.WARNING, logger="chh_lib"):
        assert main(["calibrate", "--run-dir", str(run), "--outlier-mm", "1000", "--device", "cpu"]) == 0
    chosen = json.loads((run / "calibration.json").read_text())["ere_threshold"]
    assert chosen["num_outliers"] == 0 and chosen["ere_threshold_mm"] is None
    suggested = chosen["suggested_outlier_threshold_mm"]
    assert f"a cut of {suggested:g} mm would give {MIN_OUTLIERS}" in chosen["refused"]
    assert chosen["refused"] in caplog.text and "no ERE threshold stored" in capsys.readouterr().out
    assert main(["evaluate", "--run-dir", str(run), "--device", "cpu"]) == 0
    assert "none stored" in capsys.readouterr().out
    metrics = json.loads((run / "eval_test" / "metrics.json").read_text())
    assert metrics["ere_threshold_mm"] is None and metrics["good_set"] is None
    out = tmp_path / "predicted.csv"
    image = sorted((data_dir / "RawImage" / "Test1Data").glob("*.bmp"))[0]
    assert main(["predict", "--run-dir", str(run), "--images", str(image), "--out", str(out), "--no-progress"]) == 0
    assert pd.read_csv(out)["flagged"].isna().all()
    # with the suggested cut the split has enough outliers again
    assert main(["calibrate", "--run-dir", str(run), "--outlier-mm", f"{suggested:g}", "--device", "cpu"]) == 0
    chosen = json.loads((run / "calibration.json").read_text())["ere_threshold"]
    assert chosen["num_outliers"] >= MIN_OUTLIERS and "refused" not in chosen


def test_evaluate_says_when_calibration_raised_the_nll(smoke_run, tmp_path, capsys):
    _, run_dir = smoke_run
    run = _copy(run_dir, tmp_path)
    assert main(["calibrate", "--run-dir", str(run), "--scope", "global", "--device", "cpu"]) == 0
    checkpoint = run / "checkpoints" / "last.pt"
    payload = torch.load(checkpoint, weights_only=True)
    payload["temperatures"] = torch.full((19,), 0.02, dtype=torch.float64)  # far too sharp: the NLL must rise
    torch.save(payload, checkpoint)
    assert main(["evaluate", "--run-dir", str(run), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((run / "eval_test" / "metrics.json").read_text())
    assert metrics["calibration_raised_nll"] is True and metrics["nll_after"] > metrics["nll_before"]
    notice = [line for line in printed.splitlines() if "NOTICE" in line]
    assert len(notice) == 1 and "raised this split's NLL" in notice[0] and "--scope none" in notice[0]
    assert metrics["nll_change_ci95"][0] > 0 and "beyond resampling noise" in notice[0]


def test_calibrate_scope_none(smoke_run, tmp_path, capsys):
    _, run_dir = smoke_run
    run = _copy(run_dir, tmp_path)
    assert main(["calibrate", "--run-dir", str(run), "--scope", "none", "--device", "cpu"]) == 0
    assert "(nll, none)" in capsys.readouterr().out
    calibration = json.loads((run / "calibration.json").read_text())
    assert list(calibration["temperatures"].values()) == [1.0] * 19
    assert calibration["nll_after"] == calibration["nll_before"]
    assert main(["evaluate", "--run-dir", str(run), "--device", "cpu"]) == 0
    metrics = json.loads((run / "eval_test" / "metrics.json").read_text())
    assert metrics["ece_percent_after"] == metrics["ece_percent_before"]
    assert metrics["ece_change_ci95"] == [0.0, 0.0] and metrics["calibration_raised_nll"] is False
    assert main(["calibrate", "--run-dir", str(run), "--scope", "none", "--method", "paper"]) == 2

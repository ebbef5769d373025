"""Training loop, checkpoints, resume and prediction on a tiny data set."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import make_tiny_isbi

from chh_lib.config import load_config, profile_config
from chh_lib.data.dataset import LandmarkDataset
from chh_lib.data.formats import read_landmark_data
from chh_lib.engine import (
    LAST_CHECKPOINT,
    as_distribution,
    batch_loss,
    decode_heatmaps,
    format_epoch,
    held_out_loss,
    learning_rate_factor,
    load_checkpoint,
    model_from_checkpoint,
    per_landmark_loss,
    predict,
    save_checkpoint,
    train,
)
from chh_lib.errors import CheckpointError, ConfigError
from chh_lib.heatmaps import target_flat_index
from chh_lib.metrics import spatial_spread_mm


@pytest.fixture()
def tiny(tmp_path):
    make_tiny_isbi(tmp_path / "data", images_per_split=4, size=(48, 60))
    data = read_landmark_data(tmp_path / "data")
    config = profile_config("smoke")
    config.data.image_size = (32, 40)
    config.model.options = {"width_multiplier": 0.5}
    config.train.epochs = 2
    dataset = LandmarkDataset(data.split("train"), config.data.image_size, tmp_path / "cache")
    return tmp_path, config, dataset


def test_learning_rate_factor_matches_multistep_lr():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[4, 6, 8], gamma=0.1)
    for epoch in range(12):
        assert learning_rate_factor(epoch, [4, 6, 8], 0.1, 0) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert learning_rate_factor(0, [], 0.1, 2) == pytest.approx(0.1)
    assert learning_rate_factor(1, [], 0.1, 2) == pytest.approx(0.55)
    assert learning_rate_factor(2, [], 0.1, 2) == pytest.approx(1.0)


def test_train_writes_run_directory_and_resume_continues(tiny):
    tmp_path, config, dataset = tiny
    run_dir = tmp_path / "run"
    result = train(config, dataset, run_dir, tmp_path / "data", torch.device("cpu"), progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert all(np.isfinite(row["loss"]) for row in result.history)
    assert load_config(run_dir / "config.yaml") == config
    manifest = (run_dir / "manifest.json").read_text()
    assert '"seed": 0' in manifest and '"torch"' in manifest and '"device": "cpu"' in manifest
    assert json.loads(manifest)["encoder_init"] == "scratch"
    assert (run_dir / "train_log.csv").read_text().count("\n") == 3
    payload = load_checkpoint(run_dir / LAST_CHECKPOINT)
    assert payload["epoch"] == 2 and payload["num_landmarks"] == 19

    config.train.epochs = 3
    resumed = train(config, dataset, run_dir, tmp_path / "data", torch.device("cpu"), resume=True, progress=False)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == result.history
    assert load_checkpoint(run_dir / LAST_CHECKPOINT)["epoch"] == 3


def test_training_is_reproducible_with_a_seed(tiny):
    tmp_path, config, dataset = tiny
    config.train.epochs = 1
    first = train(config, dataset, tmp_path / "a", tmp_path / "data", torch.device("cpu"), progress=False)
    second = train(config, dataset, tmp_path / "b", tmp_path / "data", torch.device("cpu"), progress=False)
    assert first.history[0]["loss"] == second.history[0]["loss"]
    state_a = load_checkpoint(first.checkpoint_path)["model_state"]
    state_b = load_checkpoint(second.checkpoint_path)["model_state"]
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_checkpoint_for_another_landmark_count_is_refused(tiny):
    tmp_path, config, dataset = tiny
    config.train.epochs = 1
    result = train(config, dataset, tmp_path / "run", tmp_path / "data", torch.device("cpu"), progress=False)
    payload = load_checkpoint(result.checkpoint_path)
    with pytest.raises(CheckpointError, match="trained for 19 landmarks but the data set has 5"):
        model_from_checkpoint(payload, result.checkpoint_path, num_landmarks=5)


def test_corrupt_checkpoint_is_named(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="last.pt: not a readable checkpoint") as caught:
        load_checkpoint(path)
    assert "weights_only" not in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint({"something": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a chh-kit checkpoint"):
        load_checkpoint(path)


def test_predict_decodes_every_image(tiny):
    tmp_path, config, dataset = tiny
    config.train.epochs = 1
    result = train(config, dataset, tmp_path / "run", tmp_path / "data", torch.device("cpu"), progress=False)
    model = model_from_checkpoint(load_checkpoint(result.checkpoint_path), result.checkpoint_path)
    predictions = predict(model, dataset, torch.device("cpu"), batch_size=3)
    assert predictions.pred_px.shape == (len(dataset), 19, 2) and len(dataset) == 3  # 4 minus 1 for calibration
    assert predictions.mode_prob.shape == (3, 19)
    assert ((predictions.mode_prob > 0) & (predictions.mode_prob <= 1)).all()
    assert (predictions.pred_px[..., 0] < 32).all() and (predictions.pred_px[..., 1] < 40).all()
    assert np.array_equal(predictions.pred_px, np.round(predictions.pred_px))


def test_manifest_says_when_imagenet_weights_were_missing(tiny, monkeypatch):
    """The paper profile asks for ImageNet weights; without torchvision the manifest records a scratch encoder."""
    import chh_lib.engine as engine

    def no_torchvision(model):
        raise ImportError("torchvision is not installed")

    monkeypatch.setattr(engine, "load_torchvision_resnet34_weights", no_torchvision)
    tmp_path, config, dataset = tiny
    config.train.epochs = 1
    config.model.imagenet_encoder = True
    train(config, dataset, tmp_path / "run", tmp_path / "data", torch.device("cpu"), progress=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["encoder_init"] == "scratch"
    assert "torchvision is not installed" in manifest["encoder_init_note"]
    config.train.epochs = 2
    train(config, dataset, tmp_path / "run", tmp_path / "data", torch.device("cpu"), resume=True, progress=False)
    resumed = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert resumed["encoder_init"] == "scratch" and resumed["encoder_init_note"] == manifest["encoder_init_note"]


def test_per_landmark_loss_averages_to_the_batch_loss():
    torch.manual_seed(0)
    outputs = torch.randn(2, 3, 5, 4)
    target_px = torch.tensor([[[1.0, 2.0], [np.nan, np.nan], [3.0, 4.0]], [[0.0, 0.0], [2.4, 1.6], [np.nan, 1.0]]])
    batch = {"target_px": target_px, "target_index": target_flat_index(target_px, 4, 5)}
    for loss in ("one_hot_nll", "gaussian_mse"):
        values = per_landmark_loss(loss, outputs, batch, sigma_px=1.5)  # (N, K)
        assert values.shape == (2, 3)
        assert torch.isnan(values[0, 1]) and torch.isnan(values[1, 2]) and torch.isfinite(values[0, 0])
        present = ~torch.isnan(values)
        assert batch_loss(loss, outputs, batch, 1.5).item() == pytest.approx(values[present].mean().item(), rel=1e-6)
    with pytest.raises(ConfigError, match="unknown training loss 'l1'"):
        batch_loss("l1", outputs, batch)


def test_held_out_loss_is_recorded_and_leaves_training_unchanged(tiny):
    tmp_path, config, dataset = tiny
    data = read_landmark_data(tmp_path / "data")
    held_out = LandmarkDataset(data.split("calibration"), config.data.image_size, tmp_path / "cache")
    seen = []
    plain = train(config, dataset, tmp_path / "plain", tmp_path / "data", torch.device("cpu"), progress=False)
    result = train(config, dataset, tmp_path / "run", tmp_path / "data", torch.device("cpu"), progress=False,
                   held_out=held_out, on_epoch_end=lambda stats, epochs: seen.append((stats["epoch"], epochs)))
    assert seen == [(1, 2), (2, 2)]
    assert [row["loss"] for row in result.history] == [row["loss"] for row in plain.history]
    state, plain_state = (load_checkpoint(r.checkpoint_path)["model_state"] for r in (result, plain))
    assert all(torch.equal(state[k], plain_state[k]) for k in state)
    # the last epoch's held-out loss is the NLL of the final model on the held-out images
    model = model_from_checkpoint(load_checkpoint(result.checkpoint_path), result.checkpoint_path)
    nll = predict(model, held_out, torch.device("cpu")).nll
    assert result.history[-1]["held_out_loss"] == pytest.approx(float(np.nanmean(nll)), rel=1e-5)
    assert held_out_loss(model, held_out, torch.device("cpu")) == pytest.approx(float(np.nanmean(nll)), rel=1e-5)
    header = (tmp_path / "run" / "train_log.csv").read_text().splitlines()[0]
    assert header == "epoch,loss,held_out_loss,lr,images_per_s,seconds,steps"
    assert (tmp_path / "plain" / "train_log.csv").read_text().splitlines()[0] == "epoch,loss,lr,images_per_s,seconds,steps"
    line = format_epoch(result.history[-1], 2)
    assert line.startswith("epoch 2/2: training loss ") and "held-out loss" in line and "images/s" in line


def test_gaussian_mse_training_is_recorded_and_resume_keeps_the_loss(tiny):
    tmp_path, config, dataset = tiny
    config.train.epochs = 1
    run_dir = tmp_path / "mse"
    result = train(config, dataset, run_dir, tmp_path / "data", torch.device("cpu"), progress=False,
                   loss="gaussian_mse", sigma_px=1.5)
    assert np.isfinite(result.history[0]["loss"]) and result.history[0]["loss"] > 0
    objective = {"name": "gaussian_mse", "sigma_px": 1.5}
    assert load_checkpoint(result.checkpoint_path)["loss"] == objective
    assert json.loads((run_dir / "manifest.json").read_text())["loss"] == objective
    config.train.epochs = 2
    with pytest.raises(ConfigError, match="trained with loss .*gaussian_mse.* cannot resume"):
        train(config, dataset, run_dir, tmp_path / "data", torch.device("cpu"), resume=True, progress=False)
    resumed = train(config, dataset, run_dir, tmp_path / "data", torch.device("cpu"), resume=True, progress=False,
                    loss="gaussian_mse", sigma_px=1.5)
    assert [row["epoch"] for row in resumed.history] == [1, 2]
    with pytest.raises(ConfigError, match="unknown training loss"):
        train(config, dataset, tmp_path / "x", tmp_path / "data", torch.device("cpu"), progress=False, loss="mae")


@pytest.mark.parametrize("name, options", [("unet_small", {"width_multiplier": 0.25}),
                                           ("unet_resnet34", {})])
def test_regression_output_starts_near_zero(name, options):
    from chh_lib.engine import REGRESSION_HEAD_INIT_STD, _init_output_near_zero
    from chh_lib.model import build_model

    torch.manual_seed(0)
    model = build_model(name, 19, **options).eval()
    images = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        before = float(model(images).abs().mean())
        _init_output_near_zero(model, 19)
        after = float(model(images).abs().mean())
    layer = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 19][-1]
    assert abs(float(layer.weight.detach().std()) - REGRESSION_HEAD_INIT_STD) < 0.2 * REGRESSION_HEAD_INIT_STD
    assert float(layer.bias.abs().max()) == 0.0
    # the first output of a network regressed onto heatmaps is close to zero (and far smaller than before)
    assert after < 0.05 and after < before / 20
    with pytest.raises(ConfigError, match="no output convolution with 7 channels"):
        _init_output_near_zero(model, 7)


def test_only_the_mse_network_gets_the_near_zero_output(tiny):
    tmp_path, config, dataset = tiny
    config.train.epochs = 1
    config.train.lr = 1e-12  # the weights stay (almost) where they started
    nll = train(config, dataset, tmp_path / "nll", tmp_path / "data", torch.device("cpu"), progress=False)
    mse = train(config, dataset, tmp_path / "mse", tmp_path / "data", torch.device("cpu"), progress=False,
                loss="gaussian_mse")

    def head_std(path):
        state = load_checkpoint(path)["model_state"]
        weights = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 4 and v.shape[0] == 19]
        return float(weights[-1].std())
    assert head_std(mse.checkpoint_path) < 2e-3 < head_std(nll.checkpoint_path)


def test_max_steps_bounds_a_run_and_resume_respects_it(tiny):
    tmp_path, config, dataset = tiny
    config.train.batch_size = 1  # 3 training images: 3 optimiser steps per epoch
    config.train.epochs = 5
    full = train(config, dataset, tmp_path / "full", tmp_path / "data", torch.device("cpu"), progress=False)
    assert [row["steps"] for row in full.history] == [3] * 5
    config.train.max_steps = 4
    bounded = train(config, dataset, tmp_path / "bounded", tmp_path / "data", torch.device("cpu"), progress=False)
    assert [row["steps"] for row in bounded.history] == [3, 1]  # the second epoch is cut short
    assert bounded.history[0]["loss"] == full.history[0]["loss"]  # the bound does not change the trajectory
    payload = load_checkpoint(bounded.checkpoint_path)
    assert payload["epoch"] == 2 and payload["config"]["train"]["max_steps"] == 4
    assert "steps" in (tmp_path / "bounded" / "train_log.csv").read_text().splitlines()[0]
    again = train(config, dataset, tmp_path / "bounded", tmp_path / "data", torch.device("cpu"), resume=True,
                  progress=False)
    assert [row["steps"] for row in again.history] == [3, 1]  # the budget is spent: nothing more is trained
    config.train.max_steps = 7
    more = train(config, dataset, tmp_path / "bounded", tmp_path / "data", torch.device("cpu"), resume=True,
                 progress=False)
    assert [row["steps"] for row in more.history] == [3, 1, 3]
    assert load_checkpoint(more.checkpoint_path)["epoch"] == 3


def test_a_seeded_run_is_bit_identical_with_the_same_threads(tiny):
    """The README's guarantee: same machine, same torch build, same thread count -> the same weights, bit for bit."""
    tmp_path, config, dataset = tiny
    config.data.image_size = (32, 40)
    config.augment.enabled = True
    runs = [train(config, dataset, tmp_path / name, tmp_path / "data", torch.device("cpu"), progress=False)
            for name in ("first", "second")]
    assert [row["loss"] for row in runs[0].history] == [row["loss"] for row in runs[1].history]
    states = [load_checkpoint(run.checkpoint_path)["model_state"] for run in runs]
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])


class _Payload:
    """Stands for code an attacker pickles into a checkpoint; loading it would run ``__reduce__``."""

    def __reduce__(self):
        return (print, ("this code ran",))


def test_a_checkpoint_with_code_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": 1, "model_state": {}, "extra": _Payload()}, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message == f"{path}: contains Python objects other than tensors; refusing to load it (it may run code)"
    assert "weights_only=False" not in message and "\n" not in message
    assert "this code ran" not in capsys.readouterr().out
    from chh_lib.cli import main
    from chh_lib.config import save_config

    run_dir = tmp_path / "run" / "checkpoints"
    run_dir.mkdir(parents=True)
    save_config(profile_config("smoke"), tmp_path / "run" / "config.yaml")
    (run_dir / "last.pt").write_bytes(path.read_bytes())
    make_tiny_isbi(tmp_path / "data", images_per_split=1)
    assert main(["evaluate", "--run-dir", str(tmp_path / "run"), "--data", str(tmp_path / "data")]) == 2
    captured = capsys.readouterr()
    assert "this code ran" not in captured.out
    assert captured.err.strip().splitlines()[-1].endswith("refusing to load it (it may run code)")
    assert "weights_only" not in captured.err


class _FixedOutput(torch.nn.Module):
    """A 'model' that returns the same (K, H, W) maps for every image."""

    def __init__(self, maps: torch.Tensor) -> None:
        super().__init__()
        self.maps = maps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.maps.expand(len(images), *self.maps.shape).clone()


def test_as_distribution_softmax_or_clipped():
    outputs = torch.tensor([[[[-1.0, 1.0], [3.0, 0.0]]]])  # (1, 1, 2, 2)
    assert torch.allclose(as_distribution(outputs, "logits").flatten(), torch.softmax(outputs.flatten(), 0))
    assert torch.allclose(as_distribution(outputs, "heatmap").flatten(), torch.tensor([0.0, 0.25, 0.75, 0.0]))
    assert torch.equal(as_distribution(-torch.ones(1, 1, 2, 2), "heatmap"), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="unknown output kind"):
        as_distribution(outputs, "probabilities")


def test_decode_heatmaps_arg_max_and_significant_spread(tiny):
    _, config, dataset = tiny
    width, height = config.data.image_size
    maps = torch.full((19, height, width), -0.01)  # small negative noise: clipped away for "heatmap"
    maps[:, 10, 4:7] = 1.0  # a horizontal segment of three pixels...
    maps[:, 10, 5] = 2.0  # ...peaked in its middle
    maps[:, 0, 0] = 0.05  # 2.5 % of the peak: outside the significant set at cutoff 0.05
    pred_px, spread_mm = decode_heatmaps(_FixedOutput(maps), dataset, torch.device("cpu"), output="heatmap")
    assert pred_px.shape == (len(dataset), 19, 2) and spread_mm.shape == (len(dataset), 19)
    assert np.array_equal(pred_px[..., 0], np.full((len(dataset), 19), 5.0)) and (pred_px[..., 1] == 10).all()
    # significant part: weights (1, 2, 1)/4 at x = 4, 5, 6: variance 0.5 px^2 along x, none along y
    expected = np.sqrt(0.5) * dataset.pixel_size_mm[:, 0]
    np.testing.assert_allclose(spread_mm, np.repeat(expected[:, None], 19, axis=1), rtol=1e-5)
    # without the cutoff the far pixel counts and the spread grows
    _, all_pixels = decode_heatmaps(_FixedOutput(maps), dataset, torch.device("cpu"), output="heatmap", cutoff=0.0)
    assert (all_pixels > spread_mm).all()
    # logits: the spread of the softmax's significant part, as spatial_spread_mm computes it
    _, soft = decode_heatmaps(_FixedOutput(maps * 5), dataset, torch.device("cpu"), output="logits")
    heatmaps = torch.softmax((maps * 5)[None].flatten(2), dim=-1).reshape(1, 19, height, width)
    peak = heatmaps.amax(dim=(-2, -1), keepdim=True)
    significant = torch.where(heatmaps > 0.05 * peak, heatmaps, torch.zeros_like(heatmaps))
    pixel = torch.as_tensor(dataset.pixel_size_mm[:1]).float()
    np.testing.assert_allclose(soft[0], spatial_spread_mm(significant, pixel)[0].numpy(), rtol=1e-5)

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
    learning_rate_factor,
    load_checkpoint,
    model_from_checkpoint,
    predict,
    save_checkpoint,
    train,
)
from chh_lib.errors import CheckpointError


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
    with pytest.raises(CheckpointError, match="last.pt: not a readable checkpoint"):
        load_checkpoint(path)
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

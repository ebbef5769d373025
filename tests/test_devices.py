"""Device rules: float32 logits whatever autocast says, float64 only on the host, deterministic CUDA flags."""
from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
import torch
from helpers import make_tiny_isbi

from chh_lib.config import profile_config
from chh_lib.data.dataset import LandmarkDataset
from chh_lib.data.formats import read_landmark_data
from chh_lib.devices import (
    CUBLAS_DETERMINISTIC_WORKSPACE,
    choose_device,
    deterministic_cuda,
    float32_logits,
    host_float64,
    training_autocast,
    training_autocast_dtype,
)
from chh_lib.engine import predict
from chh_lib.errors import ConfigError
from chh_lib.heatmaps import argmax_2d, mode_probability
from chh_lib.model import build_model


class _TensorOnDeviceWithoutFloat64(torch.Tensor):
    """CPU data standing for a tensor on a device that has no float64 (Apple's MPS).

    Casting it to float64 raises MPS's error; ``.cpu()`` returns a plain host tensor.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cpu:
            return args[0].as_subclass(torch.Tensor).clone()
        wants_float64 = func is torch.Tensor.double or (
            func is torch.Tensor.to and torch.float64 in (*args[1:], *kwargs.values())
        )
        if wants_float64:
            raise TypeError("Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support float64")
        return super().__torch_function__(func, types, args, kwargs)


def test_host_float64_moves_to_the_cpu_before_casting():
    on_device = torch.tensor([[0.25, 1.5]]).as_subclass(_TensorOnDeviceWithoutFloat64)
    with pytest.raises(TypeError, match="float64"):
        on_device.double().cpu()  # the order that crashed chh evaluate on MPS
    values = host_float64(on_device)
    assert isinstance(values, np.ndarray) and values.dtype == np.float64
    np.testing.assert_array_equal(values, [[0.25, 1.5]])


def _small_model(num_landmarks: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("unet_small", num_landmarks, width_multiplier=0.5).eval()


def test_bf16_forward_moves_argmax_where_the_float32_path_does_not():
    model = _small_model()
    images = torch.rand(4, 1, 80, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(images)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            bf16 = model(images)
            guarded = float32_logits(model, images)
    assert bf16.dtype == torch.bfloat16  # autocast really was active around the call
    assert guarded.dtype == torch.float32
    assert torch.equal(argmax_2d(guarded), argmax_2d(reference))
    torch.testing.assert_close(mode_probability(guarded), mode_probability(reference), rtol=1e-5, atol=1e-7)
    assert not torch.equal(bf16.float(), reference)  # what evaluation used to score on CUDA


def test_predict_ignores_an_enclosing_autocast(tmp_path):
    make_tiny_isbi(tmp_path / "data", images_per_split=3, size=(48, 60))
    data = read_landmark_data(tmp_path / "data")
    dataset = LandmarkDataset(data.split("test"), (64, 80), tmp_path / "cache")
    model = _small_model(19)
    plain = predict(model, dataset, torch.device("cpu"), batch_size=2)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under_autocast = predict(model, dataset, torch.device("cpu"), batch_size=2)
    np.testing.assert_array_equal(plain.pred_px, under_autocast.pred_px)
    np.testing.assert_array_equal(plain.mode_prob, under_autocast.mode_prob)
    np.testing.assert_array_equal(plain.ere_mm, under_autocast.ere_mm)


def test_training_autocast_only_on_cuda_when_enabled():
    assert training_autocast_dtype(torch.device("cpu"), True) is None
    assert training_autocast_dtype(torch.device("mps"), True) is None
    assert training_autocast_dtype(torch.device("cuda"), False) is None
    assert training_autocast_dtype(torch.device("cuda"), True) == torch.bfloat16
    assert isinstance(training_autocast(torch.device("cpu"), True), contextlib.nullcontext)


def test_deterministic_cuda_sets_and_restores_the_flags(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    with deterministic_cuda(torch.device("cpu")):
        assert torch.backends.cudnn.benchmark is True  # nothing to do off CUDA
    with deterministic_cuda(torch.device("cuda"), enabled=False):
        assert torch.backends.cudnn.benchmark is True
    with deterministic_cuda(torch.device("cuda")):
        assert torch.backends.cudnn.deterministic is True and torch.backends.cudnn.benchmark is False
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_DETERMINISTIC_WORKSPACE
    assert torch.backends.cudnn.deterministic is False and torch.backends.cudnn.benchmark is True
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_choose_device():
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        choose_device("tpu")


def test_profiles_are_deterministic_by_default():
    assert all(profile_config(name).train.deterministic for name in ("smoke", "cpu", "paper"))

"""Devices: choosing one, moving results off it, precision and determinism on it.

Three rules that the training, calibration and evaluation loops share:

* **float64 work happens on the CPU.** Apple's MPS backend has no float64, so a
  result is moved to the CPU first and cast there (:func:`host_float64`).
* **Evaluation, calibration and prediction compute logits in float32**
  (:func:`float32_logits`), whatever autocast setting is active around them:
  a bf16 forward moves the arg-max of a few percent of the heatmaps and changes
  the mode probabilities that the temperatures were fitted on. Training may use
  bf16 autocast on CUDA (``train.bf16_on_cuda``); its loss is still computed in
  float32 (:mod:`chh_lib.heatmaps` promotes the logits).
* **A seeded CUDA run is deterministic** where cuDNN and cuBLAS allow it
  (:func:`deterministic_cuda`): ``cudnn.deterministic`` on, ``cudnn.benchmark``
  off and ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, set for the duration of the run and
  restored afterwards. The cost is the speed of cuDNN's autotuned kernels (not
  measured here yet: no GPU was available when this was written).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from chh_lib.errors import ConfigError

#: cuBLAS needs this workspace setting for deterministic matrix products (CUDA >= 10.2).
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def choose_device(name: str = "auto") -> torch.device:
    """Resolve ``auto`` (CUDA, then MPS, then CPU) or check that the named device exists."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available")
    if name == "mps" and not _mps_available():
        raise ConfigError("device 'mps' requested but MPS is not available")
    return torch.device(name)


def host_float64(tensor: torch.Tensor) -> np.ndarray:
    """A tensor from any device as a float64 NumPy array: moved to the CPU first, then cast.

    Casting first (``tensor.double().cpu()``) fails on devices without float64 (MPS).
    """
    return tensor.detach().cpu().to(torch.float64).numpy()


def float32_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model(images)`` in float32 with autocast switched off, whatever the caller enabled.

    Parameters
    ----------
    images : Tensor, shape (N, 1, H, W), on the model's device

    Returns
    -------
    Tensor, shape (N, K, H, W), float32
    """
    with torch.autocast(device_type=images.device.type, enabled=False):
        return model(images.float()).float()


def training_autocast_dtype(device: torch.device, bf16_on_cuda: bool) -> torch.dtype | None:
    """The autocast dtype of a training forward pass: bf16 on CUDA when enabled, else None (float32)."""
    return torch.bfloat16 if device.type == "cuda" and bf16_on_cuda else None


def training_autocast(device: torch.device, bf16_on_cuda: bool) -> contextlib.AbstractContextManager:
    """Autocast for a training forward pass as :func:`training_autocast_dtype` decides (a no-op when None)."""
    dtype = training_autocast_dtype(device, bf16_on_cuda)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def deterministic_cuda(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Within the block, make CUDA kernels deterministic (see the module docstring); restore on exit.

    Does nothing off CUDA or when ``enabled`` is false.
    """
    if device.type != "cuda" or not enabled:
        yield
        return
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC_WORKSPACE
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[0], saved[1]
        if saved[2] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[2]

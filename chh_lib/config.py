"""Run configuration: dataclasses, named profiles and YAML load/save.

This is the only module that reads or writes YAML: run configurations
(``config.yaml`` in a run directory) and data set descriptors (``dataset.yaml``).

Profiles
--------
``smoke``
    seconds on a CPU; for CI and the notebook tests.
``cpu``
    a laptop CPU in about ten minutes; learns the phantom well.
``paper``
    the paper's settings (640 x 800, ResNet-34 U-Net, Adam 1e-3, MultiStepLR at
    epochs 4, 6, 8, 15 epochs, batch 4); meant for a GPU.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chh_lib.errors import ConfigError, DataFormatError
from chh_lib.files import write_text_atomic


@dataclass
class DataConfig:
    """How images are prepared for the network.

    Attributes
    ----------
    image_size : (int, int)
        Network input (width, height) in pixels; images are padded right/bottom
        to this aspect ratio, then resized.
    protocol : str or None
        ISBI 2015 split protocol (``clean`` or ``paper``); None: the data set's default.
    """

    image_size: tuple[int, int] = (160, 200)
    protocol: str | None = None

    def __post_init__(self) -> None:
        self.image_size = tuple(int(v) for v in self.image_size)  # type: ignore[assignment]


@dataclass
class AugmentConfig:
    """The paper's augmentation (``chh_lib.data.augment``); pixel values are at ``reference_width``.

    Attributes
    ----------
    translate_px : float
        Largest shift in x and y (paper: 10 px at 640 px wide).
    scales, rotations_deg : list of float
        One value is chosen from each list (paper: [0.95, 1], [-3, 3]).
    multiply, gamma : (float, float)
        Ranges of the intensity factor and the gamma exponent.
    elastic_alpha : (float, float)
        Range of the elastic strength; ``elastic_sigma`` its smoothness in pixels.
    """

    enabled: bool = False
    reference_width: int = 640
    translate_px: float = 10.0
    scales: list[float] = field(default_factory=lambda: [0.95, 1.0])
    rotations_deg: list[float] = field(default_factory=lambda: [-3.0, 3.0])
    multiply: list[float] = field(default_factory=lambda: [0.5, 1.5])
    gamma: list[float] = field(default_factory=lambda: [0.7, 1.7])
    elastic_alpha: list[float] = field(default_factory=lambda: [0.0, 500.0])
    elastic_sigma: float = 30.0


@dataclass
class ModelConfig:
    """Which network to build (a key of ``chh_lib.model.MODEL_REGISTRY``) and its options."""

    name: str = "unet_small"
    options: dict[str, Any] = field(default_factory=dict)
    imagenet_encoder: bool = False


@dataclass
class TrainConfig:
    """Optimisation settings.

    Attributes
    ----------
    lr_milestones : list of int
        Epochs at which the learning rate is multiplied by ``lr_gamma`` (MultiStepLR).
    warmup_epochs : int
        Epochs of linear learning-rate warm-up from ``lr / 10`` (0: none).
    bf16_on_cuda : bool
        bf16 autocast for the training forward pass on CUDA (the loss stays float32;
        evaluation and calibration always run in float32).
    deterministic : bool
        On CUDA, deterministic cuDNN/cuBLAS kernels for the seed (``chh_lib.devices.deterministic_cuda``).
    max_steps : int or None
        Stop after this many optimiser steps in all (a bounded run of any profile, e.g. to
        check the ``paper`` path on a CPU); the epoch in which the budget runs out is cut
        short, checkpointed and counted as done. None: the whole schedule.
    """

    epochs: int = 40
    batch_size: int = 8
    lr: float = 1e-3
    lr_milestones: list[int] = field(default_factory=lambda: [28, 36])
    lr_gamma: float = 0.1
    warmup_epochs: int = 0
    weight_decay: float = 0.0
    num_workers: int = 0
    seed: int = 0
    bf16_on_cuda: bool = True
    deterministic: bool = True
    max_steps: int | None = None


@dataclass
class EvalConfig:
    """Evaluation settings.

    Attributes
    ----------
    sdr_thresholds_mm : list of float
        SDR thresholds; ``sdr_inclusive`` counts ``error <= t`` (CL-Detection 2023) instead of ``<``.
    outlier_threshold_mm : float
        A prediction with a radial error above this is an outlier for the ROC analysis.
    ere_cutoff : float
        Pixels below this fraction of the mode are left out of the ERE.
    bootstrap_resamples : int
        Resamples of images for the 95 % intervals.
    """

    sdr_thresholds_mm: list[float] = field(default_factory=lambda: [2.0, 2.5, 3.0, 4.0])
    sdr_inclusive: bool = False
    batch_size: int = 8
    outlier_threshold_mm: float = 4.0
    ere_cutoff: float = 0.05
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0


@dataclass
class RunConfig:
    """Everything that defines a run; saved as ``config.yaml`` in the run directory."""

    profile: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _smoke() -> RunConfig:
    return RunConfig(
        profile="smoke",
        data=DataConfig(image_size=(64, 80)),
        model=ModelConfig(name="unet_small", options={"width_multiplier": 0.5}),
        train=TrainConfig(epochs=2, batch_size=4, lr=1e-3, lr_milestones=[]),
        eval=EvalConfig(batch_size=8, bootstrap_resamples=200),
    )


def _cpu() -> RunConfig:
    return RunConfig(
        profile="cpu",
        data=DataConfig(image_size=(160, 200)),
        augment=AugmentConfig(enabled=True),
        model=ModelConfig(name="unet_small", options={}),
        train=TrainConfig(epochs=40, batch_size=8, lr=2e-3, lr_milestones=[28, 36], warmup_epochs=1),
        eval=EvalConfig(batch_size=16),
    )


def _paper() -> RunConfig:
    return RunConfig(
        profile="paper",
        data=DataConfig(image_size=(640, 800)),
        augment=AugmentConfig(enabled=True),
        model=ModelConfig(name="unet_resnet34", imagenet_encoder=True),
        train=TrainConfig(epochs=15, batch_size=4, lr=1e-3, lr_milestones=[4, 6, 8], lr_gamma=0.1),
        eval=EvalConfig(batch_size=4),
    )


PROFILES = {"smoke": _smoke, "cpu": _cpu, "paper": _paper}


def profile_config(name: str) -> RunConfig:
    """A fresh :class:`RunConfig` for the named profile (``smoke``, ``cpu`` or ``paper``)."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]()


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Plain nested dict of a run configuration (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Inverse of :func:`config_to_dict`; unknown keys raise :class:`ConfigError`."""
    sections = {"data": DataConfig, "augment": AugmentConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key == "profile":
            kwargs[key] = str(value)
        elif key in sections:
            kwargs[key] = _build_section(sections[key], value or {}, key)
        else:
            raise ConfigError(f"unknown configuration section {key!r}")
    return RunConfig(**kwargs)


def _build_section(cls: type, values: dict[str, Any], section: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown keys in configuration section {section!r}: {sorted(unknown)}")
    return cls(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_yaml(values: dict[str, Any], path: Path) -> None:
    """Write a plain dict as YAML (keys in insertion order), atomically."""
    write_text_atomic(Path(path), yaml.safe_dump(_plain(values), sort_keys=False))


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or malformed YAML raises :class:`DataFormatError`."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise DataFormatError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(values, dict):
        raise DataFormatError(f"{path}: expected a YAML mapping at the top level")
    return values


def save_config(config: RunConfig, path: Path) -> None:
    """Save a run configuration as YAML."""
    save_yaml(config_to_dict(config), path)


def load_config(path: Path) -> RunConfig:
    """Load a run configuration saved by :func:`save_config`."""
    try:
        return config_from_dict(load_yaml(path))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None

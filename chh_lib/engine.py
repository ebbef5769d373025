"""Training and prediction loops, checkpoints and the run manifest.

A run directory holds::

    config.yaml          the RunConfig used
    manifest.json        package versions, git commit, seed, device, data directory
    checkpoints/last.pt  model, optimiser and scheduler state after the last finished epoch
    train_log.csv        one row per epoch: loss, learning rate, images/s (and the held-out loss
                         when a held-out split is given)

The network is trained by the paper's one-hot NLL (``loss="one_hot_nll"``) or, for
comparison, by the mean squared error against Gaussian target heatmaps
(``loss="gaussian_mse"``).

Checkpoints are written to a temporary file and renamed, so an interrupted run
never leaves a half-written checkpoint, and are read with ``weights_only=True``.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import pickle
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from chh_lib.config import RunConfig, config_to_dict, save_config
from chh_lib.data.augment import LandmarkAugmenter
from chh_lib.data.dataset import LandmarkDataset
from chh_lib.data.formats import ImageRecord
from chh_lib.devices import deterministic_cuda, float32_logits, host_float64, training_autocast
from chh_lib.distributed import SINGLE_PROCESS, DistributedContext, per_process_batch_size, sum_over_processes
from chh_lib.errors import CheckpointError, ConfigError, DataFormatError, NonFiniteError
from chh_lib.files import write_bytes_atomic, write_json_atomic, write_text_atomic
from chh_lib.heatmaps import (
    DEFAULT_SIGMA_PX,
    argmax_2d,
    check_finite,
    gaussian_mse,
    gaussian_mse_per_landmark,
    mode_probability,
    one_hot_nll,
    quadratic_peak_2d,
    scale_logits,
    softmax_2d,
    target_flat_index,
    target_nll,
)
from chh_lib.metrics import spatial_spread_mm, uncertainty_scores
from chh_lib.model import build_model, input_multiple, load_torchvision_resnet34_weights

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"
#: Training losses :func:`train` knows: the paper's one-hot NLL and the Gaussian-target MSE.
TRAINING_LOSSES = ("one_hot_nll", "gaussian_mse")
#: SD of the output convolution's weights when a network is trained by the Gaussian-target MSE.
REGRESSION_HEAD_INIT_STD = 1e-3
#: Called after every epoch with that epoch's row of the history and the number of epochs configured.
EpochCallback = Callable[[dict[str, float], int], None]
#: The line (INFO, ``train.log`` under ``chh train``) naming the first batch a call of :func:`train` trains on
#: and its loss before the optimiser step: a seeded run's first value, which changes only when the weights'
#: initialisation, the data or the order of the random draws does (README, "What the kit guarantees").
FIRST_BATCH_LOG = "first batch: epoch %d, %d images (%s), loss %.6f"


def batch_loss(loss: str, outputs: torch.Tensor, batch: dict[str, Any], sigma_px: float = DEFAULT_SIGMA_PX) -> torch.Tensor:
    """The training loss of one batch, averaged over its present landmarks (scalar, float32).

    Parameters
    ----------
    loss : str
        ``one_hot_nll`` (nats; uses ``batch["target_index"]``) or ``gaussian_mse``
        (uses ``batch["target_px"]`` and ``sigma_px``); see :data:`TRAINING_LOSSES`.
    outputs : Tensor, shape (N, K, H, W)
        The network's output (logits for the NLL, heatmaps for the MSE).
    batch : dict
        Batched :class:`LandmarkDataset` items (at least the key the loss uses), on the outputs' device.
    sigma_px : float
        Width of the Gaussian targets in pixels (``gaussian_mse`` only).
    """
    if loss == "one_hot_nll":
        return one_hot_nll(outputs, batch["target_index"])
    if loss == "gaussian_mse":
        return gaussian_mse(outputs, batch["target_px"], sigma_px)
    raise ConfigError(f"unknown training loss {loss!r}; choose one of {', '.join(TRAINING_LOSSES)}")


def per_landmark_loss(loss: str, outputs: torch.Tensor, batch: dict[str, Any], sigma_px: float = DEFAULT_SIGMA_PX) -> torch.Tensor:
    """The loss of every (image, landmark) pair of a batch: shape (N, K), float32, NaN where missing.

    Its mean over the present pairs is :func:`batch_loss`.
    """
    if loss == "one_hot_nll":
        return target_nll(outputs, batch["target_index"])
    if loss == "gaussian_mse":
        return gaussian_mse_per_landmark(outputs, batch["target_px"], sigma_px)
    raise ConfigError(f"unknown training loss {loss!r}; choose one of {', '.join(TRAINING_LOSSES)}")


def format_epoch(stats: dict[str, float], num_epochs: int) -> str:
    """One line about a finished epoch: its losses, learning rate and speed."""
    line = f"epoch {int(stats['epoch']):>{len(str(num_epochs))}}/{num_epochs}: training loss {stats['loss']:.4f}"
    if "held_out_loss" in stats:
        line += f", held-out loss {stats['held_out_loss']:.4f}"
    return line + f", lr {stats['lr']:.2e}, {stats['images_per_s']:.1f} images/s"


def print_epoch(stats: dict[str, float], num_epochs: int) -> None:
    """An :data:`EpochCallback` that prints :func:`format_epoch` (above a running progress bar)."""
    tqdm.write(format_epoch(stats, num_epochs))


def learning_rate_factor(epoch: int, milestones: list[int], gamma: float, warmup_epochs: int) -> float:
    """Multiplier of the base learning rate in ``epoch`` (0-based).

    MultiStepLR (``gamma`` per milestone passed), times a linear warm-up from 0.1 to 1
    over the first ``warmup_epochs`` epochs.
    """
    factor = gamma ** sum(epoch >= m for m in milestones)
    if warmup_epochs > 0 and epoch < warmup_epochs:
        factor *= 0.1 + 0.9 * epoch / warmup_epochs
    return factor


def make_training_dataset(config: RunConfig, records: list[ImageRecord], cache_dir: Path | None) -> LandmarkDataset:
    """The training split at the configured size, with the paper's augmentation when enabled.

    Images without any landmark inside them (every point missing or outside the image)
    would teach nothing; they are left out with one warning line (``chh data check``
    reports each as a problem).

    Raises
    ------
    DataFormatError
        When no training image has a landmark inside it.
    """
    augmenter = LandmarkAugmenter(config.augment, config.data.image_size) if config.augment.enabled else None
    dataset = LandmarkDataset(records, config.data.image_size, cache_dir, augmenter=augmenter, seed=config.train.seed)
    empty = images_without_landmarks(dataset)
    if not empty.any():
        return dataset
    skipped = [record.image_id for record, is_empty in zip(records, empty) if is_empty]
    kept = [record for record, is_empty in zip(records, empty) if not is_empty]
    if not kept:
        raise DataFormatError(f"none of the {len(records)} training images has a landmark inside the image")
    logger.warning("skipping %d training image(s) with no landmark inside the image: %s%s", len(skipped),
                   ", ".join(skipped[:5]), " ..." if len(skipped) > 5 else "")
    return LandmarkDataset(kept, config.data.image_size, cache_dir, augmenter=augmenter, seed=config.train.seed)


def images_without_landmarks(dataset: LandmarkDataset) -> np.ndarray:
    """Which images of ``dataset`` have no target inside the network's grid: bool array of shape (N,)."""
    width, height = dataset.image_size
    index = target_flat_index(torch.from_numpy(dataset.target_px), width, height)  # (N, K), -1 = missing
    return (index < 0).all(dim=1).numpy()


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` into memory, then write atomically over ``path``."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a missing or corrupt file raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's own text suggests the unsafe weights_only=False; say only what was refused and why
        if "Unsupported global" in str(error):
            raise CheckpointError(f"{path}: contains Python objects other than tensors; refusing to load it "
                                  "(it may run code)") from None
        raise CheckpointError(f"{path}: not a readable checkpoint (UnpicklingError: {_unpickler_reason(error)})") from None
    except Exception as error:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {_first_line(error)})") from None
    required = {"format", "model_name", "model_options", "num_landmarks", "model_state", "epoch"}
    if not isinstance(payload, dict) or not required <= set(payload):
        raise CheckpointError(f"{path}: not a chh-kit checkpoint (missing {sorted(required - set(payload or {}))})")
    return payload


def _unpickler_reason(error: BaseException) -> str:
    """The reason torch's weights-only unpickler gives (e.g. ``Unsupported operand 110``), without its advice."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = text.split(marker, 1)[1].strip().splitlines()
        if reason and reason[0].strip():
            return reason[0].strip()
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message (torch's can run to many lines)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def model_from_checkpoint(payload: dict[str, Any], path: Path, num_landmarks: int | None = None) -> nn.Module:
    """Build the checkpoint's model and load its weights.

    Raises
    ------
    CheckpointError
        When ``num_landmarks`` is given and differs from the checkpoint's, or the weights do not fit.
    """
    if num_landmarks is not None and payload["num_landmarks"] != num_landmarks:
        raise CheckpointError(
            f"{path}: checkpoint was trained for {payload['num_landmarks']} landmarks "
            f"but the data set has {num_landmarks}"
        )
    model = build_model(payload["model_name"], payload["num_landmarks"], **payload["model_options"])
    try:
        model.load_state_dict(payload["model_state"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit model {payload['model_name']!r}: {error}") from None
    return model


def run_manifest(config: RunConfig, device: torch.device, data_dir: Path) -> dict[str, Any]:
    """Versions, commit, seed and device of a run (for ``manifest.json``)."""
    packages = {}
    for name in ("chh-kit", "torch", "numpy", "imgaug", "scikit-learn", "scipy", "pandas", "matplotlib"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "profile": config.profile,
        "seed": config.train.seed,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch_threads": torch.get_num_threads(),
        "data_dir": str(Path(data_dir).resolve()),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
        "git_commit": _git_commit(),
        "command": " ".join(sys.argv),
    }


def _git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


@dataclass
class TrainResult:
    """What :func:`train` returns: the run directory, checkpoint and per-epoch history."""

    run_dir: Path
    checkpoint_path: Path
    history: list[dict[str, float]]
    device: torch.device


def train(
    config: RunConfig,
    dataset: LandmarkDataset,
    run_dir: Path,
    data_dir: Path,
    device: torch.device,
    resume: bool = False,
    progress: bool = True,
    loss: str = "one_hot_nll",
    sigma_px: float = DEFAULT_SIGMA_PX,
    held_out: LandmarkDataset | None = None,
    on_epoch_end: EpochCallback | None = None,
    distributed: DistributedContext = SINGLE_PROCESS,
    data_handling: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a heatmap network and checkpoint it every epoch.

    The first batch it trains on is logged at INFO level as :data:`FIRST_BATCH_LOG`
    (its images and loss), so that a change of a seeded run's start shows in ``train.log``.

    Parameters
    ----------
    config : RunConfig
    dataset : LandmarkDataset
        The training split at ``config.data.image_size``.
    run_dir : Path
        Created if needed; ``config.yaml`` and ``manifest.json`` are written before training.
    data_dir : Path
        Recorded in the manifest so that ``chh evaluate`` finds the data again.
    resume : bool
        Continue from ``run_dir/checkpoints/last.pt`` (model, optimiser, scheduler, epoch, history).
    progress : bool
        One tqdm progress bar over all batches (``tqdm.auto``: a widget in Jupyter, text on a
        terminal, nothing when the output is not a terminal).
    loss : str
        ``one_hot_nll`` (the paper's) or ``gaussian_mse`` (Gaussian targets of width ``sigma_px``
        pixels); recorded in the checkpoint, and a resumed run must use the same.
    sigma_px : float
        Width of the Gaussian targets (``gaussian_mse`` only).
    held_out : LandmarkDataset, optional
        Images not trained on (e.g. the calibration split) whose mean loss per present landmark
        is measured after every epoch (in eval mode, without augmentation) and recorded as
        ``held_out_loss``.
    on_epoch_end : callable, optional
        ``on_epoch_end(stats, num_epochs)`` after each epoch with its history row
        (e.g. :func:`print_epoch`).
    distributed : DistributedContext
        This process's place in a data-parallel run (:mod:`chh_lib.distributed`; the
        process group must be joined): the global batch is split over the processes,
        gradients are averaged, rank 0 alone writes files, computes the held-out loss
        and calls ``on_epoch_end``. The default is an ordinary single-process run.
    data_handling : dict, optional
        The data set's policies and what they did (:meth:`chh_lib.data.formats.LandmarkData.handling`),
        recorded as ``data`` in ``manifest.json``.

    Raises
    ------
    NonFiniteError
        When the loss becomes NaN or infinite; the last good checkpoint is kept.
    ConfigError
        For an unknown ``loss``, or a resumed run trained with another loss.
    """
    if loss not in TRAINING_LOSSES:
        raise ConfigError(f"unknown training loss {loss!r}; choose one of {', '.join(TRAINING_LOSSES)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_input_size(config)
    objective = {"name": loss, "sigma_px": float(sigma_px)} if loss == "gaussian_mse" else {"name": loss}
    with deterministic_cuda(device, config.train.deterministic):
        history = _train_loop(config, dataset, run_dir, data_dir, device, resume, progress, objective, held_out,
                              on_epoch_end, distributed, data_handling)
    return TrainResult(run_dir, run_dir / LAST_CHECKPOINT, history, device)


def _train_loop(
    config: RunConfig,
    dataset: LandmarkDataset,
    run_dir: Path,
    data_dir: Path,
    device: torch.device,
    resume: bool,
    progress: bool,
    objective: dict[str, Any],
    held_out: LandmarkDataset | None,
    on_epoch_end: EpochCallback | None,
    distributed: DistributedContext,
    data_handling: dict[str, Any] | None = None,
) -> list[dict[str, float]]:
    """Build (or resume) the model and optimiser and train the remaining epochs; returns the history."""
    checkpoint_path = run_dir / LAST_CHECKPOINT
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = build_model(config.model.name, dataset.num_landmarks, **config.model.options)
        if objective["name"] == "gaussian_mse":
            _init_output_near_zero(model, dataset.num_landmarks)
    if not config.model.imagenet_encoder:
        encoder_init = {"encoder_init": "scratch", "encoder_init_note": "not requested by the configuration"}
    elif resume:
        encoder_init = _recorded_encoder_init(run_dir)
    else:
        encoder_init = _try_imagenet(model)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda epoch: learning_rate_factor(
            epoch, config.train.lr_milestones, config.train.lr_gamma, config.train.warmup_epochs
        ),
    )
    start_epoch, history = 0, []
    if resume:
        payload = load_checkpoint(checkpoint_path)
        recorded = payload.get("loss", {"name": "one_hot_nll"})
        if recorded != objective:
            raise ConfigError(f"{checkpoint_path}: trained with loss {recorded}, cannot resume with {objective}")
        model.load_state_dict(model_from_checkpoint(payload, checkpoint_path, dataset.num_landmarks).state_dict())
        optimizer.load_state_dict(payload["optimizer_state"])
        scheduler.load_state_dict(payload["scheduler_state"])
        start_epoch, history = int(payload["epoch"]), list(payload.get("history", []))
        logger.info("resuming %s after epoch %d", checkpoint_path, start_epoch)
    elif distributed.is_main:
        save_config(config, run_dir / "config.yaml")
    if distributed.is_main:
        manifest = {**run_manifest(config, device, data_dir), **encoder_init, "loss": objective,
                    "processes": distributed.world_size}
        if data_handling is not None:
            manifest["data"] = data_handling
        write_json_atomic(manifest, run_dir / "manifest.json")
    network: nn.Module = model
    if distributed.enabled:  # after loading: DDP broadcasts rank 0's weights and averages the gradients
        network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    num_epochs = config.train.epochs
    max_steps = config.train.max_steps
    steps_done = sum(int(row.get("steps", 0)) for row in history)  # optimiser steps of the epochs already done
    batch_size = per_process_batch_size(config.train.batch_size, distributed.world_size)
    sampler = None
    if distributed.enabled:
        sampler = DistributedSampler(dataset, num_replicas=distributed.world_size, rank=distributed.rank,
                                     shuffle=True, seed=config.train.seed)
    share = len(sampler) if sampler is not None else len(dataset)  # images per process and epoch
    drop_last = share >= 2 * batch_size
    batches_per_epoch = share // batch_size if drop_last else -(-share // batch_size)
    total_batches = max(num_epochs - start_epoch, 0) * batches_per_epoch
    if max_steps is not None:
        total_batches = min(total_batches, max(max_steps - steps_done, 0))
    bar = tqdm(  # disable=None: a bar on a terminal and in Jupyter, none in a log file
        total=total_batches, initial=0, desc="training", unit="batch",
        disable=None if progress and distributed.is_main else True, mininterval=1.0,
    )
    with bar:
        for epoch in range(start_epoch, num_epochs):
            if max_steps is not None and steps_done >= max_steps:
                logger.info("stopping after %d optimiser steps (max_steps)", steps_done)
                break
            dataset.set_epoch(epoch)
            if sampler is not None:
                sampler.set_epoch(epoch)
                loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                                    num_workers=config.train.num_workers)
            else:
                loader = DataLoader(
                    dataset,
                    batch_size=batch_size,
                    shuffle=True,
                    drop_last=drop_last,
                    num_workers=config.train.num_workers,
                    generator=torch.Generator().manual_seed(config.train.seed * 100_003 + epoch),
                )
            stats = _train_one_epoch(network, loader, optimizer, device, config.train.bf16_on_cuda, epoch, num_epochs,
                                     bar, objective, None if max_steps is None else max_steps - steps_done,
                                     distributed, log_first_batch=epoch == start_epoch)
            steps_done += stats["steps"]
            if held_out is not None and distributed.is_main:
                stats["held_out_loss"] = held_out_loss(model, held_out, device, objective["name"],
                                                       objective.get("sigma_px", DEFAULT_SIGMA_PX), config.eval.batch_size)
            stats["lr"] = optimizer.param_groups[0]["lr"]
            scheduler.step()
            history.append(stats)
            if distributed.is_main:
                save_checkpoint(
                    _checkpoint_payload(model, optimizer, scheduler, config, dataset, epoch + 1, history, objective),
                    checkpoint_path,
                )
                _write_history(history, run_dir / "train_log.csv")
                logger.info(
                    "epoch %d/%d loss %.4f lr %.2e %.1f images/s",
                    epoch + 1, num_epochs, stats["loss"], stats["lr"], stats["images_per_s"],
                )
                if on_epoch_end is not None:
                    on_epoch_end(stats, num_epochs)
            distributed.barrier()  # no process starts the next epoch before rank 0 has saved this one
    return history


def _init_output_near_zero(model: nn.Module, num_landmarks: int) -> None:
    """Initialise the network's output convolution with weights of SD :data:`REGRESSION_HEAD_INIT_STD` and zero bias.

    For a network regressed onto heatmaps (the Gaussian-target MSE) the usual
    initialisation makes its first output a noise map whose squared error
    (thousands, against about ``pi sigma^2`` for an all-zero output) swamps the
    targets, and the whole schedule goes into removing it. Starting near zero, as
    heatmap regressors do (Xiao et al. 2018 use an SD of 0.001), lets it learn the
    peaks from the first epoch. Uses the global random state (the caller seeds it).
    """
    outputs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == num_landmarks]
    if not outputs:
        raise ConfigError(f"found no output convolution with {num_landmarks} channels in {type(model).__name__}")
    nn.init.normal_(outputs[-1].weight, std=REGRESSION_HEAD_INIT_STD)
    if outputs[-1].bias is not None:
        nn.init.zeros_(outputs[-1].bias)


@torch.no_grad()
def held_out_loss(
    model: nn.Module,
    dataset: LandmarkDataset,
    device: torch.device,
    loss: str = "one_hot_nll",
    sigma_px: float = DEFAULT_SIGMA_PX,
    batch_size: int = 8,
) -> float:
    """Mean training loss over the present (image, landmark) pairs of ``dataset``, in eval mode.

    Parameters
    ----------
    model : nn.Module
        Left in eval mode (the training loop switches it back).
    dataset : LandmarkDataset
        Held-out images (no augmentation), in a fixed order.
    loss : str
        See :func:`batch_loss`.

    Returns
    -------
    float
        Nats for ``one_hot_nll``; NaN when no landmark is present. The batches are drawn
        without touching the global random state, so training that follows is unchanged.
    """
    model.eval()
    total, count = 0.0, 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator().manual_seed(0))
    for batch in loader:
        batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
        values = per_landmark_loss(loss, float32_logits(model, batch["image"]), batch, sigma_px)  # (N, K)
        present = ~torch.isnan(values)
        total += float(values[present].sum())
        count += int(present.sum())
    return total / count if count else float("nan")


def _check_input_size(config: RunConfig) -> None:
    multiple = input_multiple(config.model.name)
    width, height = config.data.image_size
    if width % multiple or height % multiple:
        raise ConfigError(
            f"image_size {width}x{height} must be a multiple of {multiple} for model {config.model.name!r}"
        )


def _try_imagenet(model: nn.Module) -> dict[str, str]:
    """Load the ImageNet encoder weights when torchvision has them; say in the manifest which happened."""
    try:
        load_torchvision_resnet34_weights(model)
    except ImportError as error:
        logger.warning("training the encoder from scratch: %s", error)
        return {"encoder_init": "scratch", "encoder_init_note": f"ImageNet weights requested but unavailable: {error}"}
    logger.info("encoder initialised from torchvision's ImageNet ResNet-34 weights")
    return {"encoder_init": "imagenet", "encoder_init_note": "torchvision ResNet-34 ImageNet weights"}


def _recorded_encoder_init(run_dir: Path) -> dict[str, str]:
    """On resume, keep what the first run recorded about the encoder's initialisation."""
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    return {key: manifest.get(key, "unknown (not recorded before resume)")
            for key in ("encoder_init", "encoder_init_note")}


def _train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    bf16_on_cuda: bool,
    epoch: int,
    num_epochs: int,
    bar: Any,
    objective: dict[str, Any],
    step_budget: int | None = None,
    distributed: DistributedContext = SINGLE_PROCESS,
    log_first_batch: bool = False,
) -> dict[str, float]:
    """One pass over ``loader`` (forward, loss, backward, optimiser step per batch), advancing ``bar``.

    Stops early after ``step_budget`` optimiser steps when it is given; ``steps`` in the
    result counts the steps taken. In a data-parallel run the loss is averaged over all
    processes' images, and a batch without any landmark still takes a (zero) step, so
    that every process steps together. With ``log_first_batch`` the first batch trained
    on is logged (:data:`FIRST_BATCH_LOG`): its images and its loss before the step.
    """
    model.train()
    total_loss, total_images, steps, start = 0.0, 0, 0, time.perf_counter()
    for step, batch in enumerate(loader):
        if step_budget is not None and steps >= step_budget:
            break
        bar.update(1)
        images = batch["image"].to(device, non_blocking=True)
        target_index = batch["target_index"].to(device, non_blocking=True)
        present = bool((target_index >= 0).any())
        if not present and not distributed.enabled:
            continue
        targets = {"target_index": target_index, "target_px": batch["target_px"].to(device, non_blocking=True)}
        with training_autocast(device, bf16_on_cuda):
            outputs = model(images)  # (N, K, H, W)
        if present:
            loss = batch_loss(objective["name"], outputs, targets, objective.get("sigma_px", DEFAULT_SIGMA_PX))
        else:
            loss = outputs.float().sum() * 0.0  # moves nothing, but keeps the processes' gradient averaging in step
        if not torch.isfinite(loss):
            raise NonFiniteError(
                f"epoch {epoch + 1}, batch {step + 1}: the loss is {loss.item()}; "
                "the last good checkpoint is kept (try a lower learning rate)"
            )
        if log_first_batch and present and steps == 0:
            ids = [loader.dataset.image_ids[i] for i in batch["index"].tolist()]
            logger.info(FIRST_BATCH_LOG, epoch + 1, len(ids), ", ".join(ids), loss.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        if present:
            total_loss += loss.item() * len(images)
            total_images += len(images)
        elapsed = time.perf_counter() - start
        bar.set_postfix(epoch=f"{epoch + 1}/{num_epochs}", loss=f"{loss.item():.3f}",
                        img_per_s=f"{total_images / max(elapsed, 1e-9):.1f}", refresh=False)
    seconds = time.perf_counter() - start
    total_loss, total_images = sum_over_processes([total_loss, total_images], distributed)
    return {
        "epoch": epoch + 1,
        "loss": total_loss / max(total_images, 1),
        "images_per_s": total_images / max(seconds, 1e-9),
        "seconds": seconds,
        "steps": steps,
    }


def _checkpoint_payload(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: RunConfig,
    dataset: LandmarkDataset,
    epoch: int,
    history: list[dict[str, float]],
    objective: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "model_name": config.model.name,
        "model_options": dict(config.model.options),
        "num_landmarks": dataset.num_landmarks,
        "image_size": list(config.data.image_size),
        "epoch": epoch,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer_state": optimizer.state_dict(),
        "scheduler_state": scheduler.state_dict(),
        "config": config_to_dict(config),
        "history": history,
        "loss": objective,
    }


def _write_history(history: list[dict[str, float]], path: Path) -> None:
    fieldnames = ["epoch", "loss", "lr", "images_per_s", "seconds", "steps"]
    if any("held_out_loss" in row for row in history):
        fieldnames.insert(2, "held_out_loss")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames)
    writer.writeheader()
    for row in history:
        writer.writerow({key: row.get(key, "") for key in writer.fieldnames})
    write_text_atomic(path, buffer.getvalue())


@dataclass
class Predictions:
    """Network outputs decoded for a whole split, all arrays over (image, landmark).

    Attributes
    ----------
    pred_px : ndarray, shape (N, K, 2)
        Arg-max (x, y) in pixels of the network grid (temperature does not move it).
    mode_prob, mode_prob_before : ndarray, shape (N, K)
        Probability of the arg-max pixel with and without the temperatures.
    nll, nll_before : ndarray, shape (N, K)
        One-hot NLL of the target pixel (nats) with and without the temperatures; NaN when missing.
    scores : dict of str to ndarray (N, K)
        Uncertainty scores of the temperature-scaled heatmaps: ``ere`` (mm),
        ``neg_mode_prob``, ``entropy`` (nats), ``spread`` (mm).
    pred_px_subpixel : ndarray, shape (N, K, 2), or None
        The arg-max refined to sub-pixel precision (:func:`chh_lib.heatmaps.quadratic_peak_2d`).
    """

    pred_px: np.ndarray
    mode_prob: np.ndarray
    mode_prob_before: np.ndarray
    nll: np.ndarray
    nll_before: np.ndarray
    scores: dict[str, np.ndarray]
    pred_px_subpixel: np.ndarray | None = None

    @property
    def ere_mm(self) -> np.ndarray:
        """Expected Radial Error (N, K) in mm."""
        return self.scores["ere"]


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: LandmarkDataset,
    device: torch.device,
    batch_size: int = 8,
    temperatures: np.ndarray | None = None,
    ere_cutoff: float = 0.05,
) -> Predictions:
    """Run ``model`` in eval mode over ``dataset`` and decode each heatmap.

    Parameters
    ----------
    temperatures : ndarray, shape (K,), optional
        Per-landmark temperatures dividing the logits (default: all 1).
    ere_cutoff : float
        Fraction of the mode below which pixels are left out of the ERE.

    Raises
    ------
    NonFiniteError
        Naming the images whose logits hold NaN or infinity.
    """
    model.eval().to(device)
    temperature = _temperature_tensor(temperatures, dataset.num_landmarks, device)
    parts: dict[str, list[np.ndarray]] = {}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits = float32_logits(model, batch["image"].to(device))  # (N, K, H, W)
        ids = [dataset.image_ids[i] for i in batch["index"].tolist()]
        check_finite(logits, f"model output for images {', '.join(ids)}")
        _decode_batch(logits, batch["target_index"].to(device), batch["pixel_size_mm"].to(device),
                      temperature, ere_cutoff, parts)
    return _merge_parts(parts)


@torch.no_grad()
def predict_from_logits(
    logits: torch.Tensor,
    target_index: torch.Tensor,
    pixel_size_mm: np.ndarray,
    temperatures: np.ndarray | None = None,
    ere_cutoff: float = 0.05,
    batch_size: int = 8,
) -> Predictions:
    """What :func:`predict` returns, from logits already computed (e.g. :func:`chh_lib.calibration.collect_logits`).

    Parameters
    ----------
    logits : Tensor, shape (N, K, H, W), float32
    target_index : Tensor, shape (N, K), int64 (-1 = missing)
    pixel_size_mm : ndarray, shape (N, 2)
    temperatures : ndarray, shape (K,), optional
    """
    temperature = _temperature_tensor(temperatures, logits.shape[1], logits.device)
    spacing = torch.as_tensor(np.asarray(pixel_size_mm), dtype=torch.float32)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, logits.shape[0], batch_size):
        part = slice(start, start + batch_size)
        _decode_batch(logits[part], target_index[part], spacing[part], temperature, ere_cutoff, parts)
    return _merge_parts(parts)


def _temperature_tensor(temperatures: np.ndarray | None, num_landmarks: int, device: torch.device) -> torch.Tensor:
    temperature = torch.ones(num_landmarks) if temperatures is None else torch.as_tensor(temperatures)
    return temperature.float().to(device)


def _decode_batch(
    logits: torch.Tensor,
    target_index: torch.Tensor,
    pixel_size_mm: torch.Tensor,
    temperature: torch.Tensor,
    ere_cutoff: float,
    parts: dict[str, list[np.ndarray]],
) -> None:
    """Decode one batch of logits (N, K, H, W) and append every output, as float64 on the host, to ``parts``."""
    scaled = scale_logits(logits, temperature)
    heatmaps = softmax_2d(scaled)
    outputs = {
        "pred_px": argmax_2d(logits),
        "pred_px_subpixel": quadratic_peak_2d(logits),
        "mode_prob": mode_probability(scaled),
        "mode_prob_before": mode_probability(logits),
        "nll": target_nll(scaled, target_index),
        "nll_before": target_nll(logits, target_index),
    }
    scores = uncertainty_scores(heatmaps, pixel_size_mm, cutoff=ere_cutoff)
    outputs.update({f"score_{name}": value for name, value in scores.items()})
    for name, value in outputs.items():
        parts.setdefault(name, []).append(host_float64(value))


def _merge_parts(parts: dict[str, list[np.ndarray]]) -> Predictions:
    merged = {name: np.concatenate(values) for name, values in parts.items()}
    scores = {name[len("score_"):]: merged.pop(name) for name in list(merged) if name.startswith("score_")}
    return Predictions(scores=scores, **merged)


#: How :func:`decode_heatmaps` reads a network's output: softmax of logits, or heatmaps clipped at 0.
OUTPUT_KINDS = ("logits", "heatmap")


def as_distribution(outputs: torch.Tensor, output: str = "logits") -> torch.Tensor:
    """Network outputs (N, K, H, W) as non-negative maps that sum to 1, in float32.

    ``logits`` (a one-hot NLL network): the 2D softmax. ``heatmap`` (a Gaussian-target MSE
    network, whose outputs are meant to be read directly): clipped at 0 and divided by
    their sum (a map with no positive value stays 0).
    """
    if output == "logits":
        return softmax_2d(outputs)
    if output == "heatmap":
        clipped = outputs.float().clamp(min=0.0)
        total = clipped.sum(dim=(-2, -1), keepdim=True)
        return torch.where(total > 0, clipped / total.clamp(min=1e-30), clipped)
    raise ValueError(f"unknown output kind {output!r}; choose one of {', '.join(OUTPUT_KINDS)}")


@torch.no_grad()
def decode_heatmaps(
    model: nn.Module,
    dataset: LandmarkDataset,
    device: torch.device,
    output: str = "logits",
    cutoff: float = 0.05,
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Arg-max position and spread of every heatmap of a split, for networks trained by any loss.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode.
    dataset : LandmarkDataset
    output : str
        ``logits`` or ``heatmap`` (see :func:`as_distribution`).
    cutoff : float
        Pixels below ``cutoff`` times the map's maximum are left out of the spread, so that a
        regressed heatmap's small noise far from the peak does not dominate it; 0 keeps all.

    Returns
    -------
    pred_px : ndarray, shape (N, K, 2)
        (x, y) of the first maximum, pixels of the network grid.
    spread_mm : ndarray, shape (N, K)
        :func:`chh_lib.metrics.spatial_spread_mm` of the significant part of each map, in mm
        (the root of the summed variances along x and y).
    """
    model.eval().to(device)
    positions, spreads = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        outputs = float32_logits(model, batch["image"].to(device))  # (N, K, H, W)
        heatmaps = as_distribution(outputs, output)
        peak = heatmaps.amax(dim=(-2, -1), keepdim=True)
        significant = torch.where(heatmaps > cutoff * peak, heatmaps, torch.zeros_like(heatmaps))
        positions.append(host_float64(argmax_2d(outputs)))
        spreads.append(host_float64(spatial_spread_mm(significant, batch["pixel_size_mm"].to(device))))
    return np.concatenate(positions), np.concatenate(spreads)

"""Training and prediction loops, checkpoints and the run manifest.

A run directory holds::

    config.yaml          the RunConfig used
    manifest.json        package versions, git commit, seed, device, data directory
    checkpoints/last.pt  model, optimiser and scheduler state after the last finished epoch
    train_log.csv        one row per epoch: loss, learning rate, images/s

Checkpoints are written to a temporary file and renamed, so an interrupted run
never leaves a half-written checkpoint, and are read with ``weights_only=True``.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from chh_lib.config import RunConfig, config_to_dict, save_config
from chh_lib.data.augment import LandmarkAugmenter
from chh_lib.data.dataset import LandmarkDataset
from chh_lib.data.formats import ImageRecord
from chh_lib.devices import deterministic_cuda, float32_logits, host_float64, training_autocast
from chh_lib.errors import CheckpointError, ConfigError, NonFiniteError
from chh_lib.files import write_bytes_atomic, write_json_atomic, write_text_atomic
from chh_lib.heatmaps import (
    argmax_2d,
    check_finite,
    mode_probability,
    one_hot_nll,
    scale_logits,
    softmax_2d,
    target_nll,
)
from chh_lib.metrics import uncertainty_scores
from chh_lib.model import build_model, input_multiple, load_torchvision_resnet34_weights

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"


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
    """The training split at the configured size, with the paper's augmentation when enabled."""
    augmenter = LandmarkAugmenter(config.augment, config.data.image_size) if config.augment.enabled else None
    return LandmarkDataset(records, config.data.image_size, cache_dir, augmenter=augmenter, seed=config.train.seed)


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
    except Exception as error:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from None
    required = {"format", "model_name", "model_options", "num_landmarks", "model_state", "epoch"}
    if not isinstance(payload, dict) or not required <= set(payload):
        raise CheckpointError(f"{path}: not a chh-kit checkpoint (missing {sorted(required - set(payload or {}))})")
    return payload


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
) -> TrainResult:
    """Train a heatmap network by one-hot NLL and checkpoint it every epoch.

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

    Raises
    ------
    NonFiniteError
        When the loss becomes NaN or infinite; the last good checkpoint is kept.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_input_size(config)
    with deterministic_cuda(device, config.train.deterministic):
        history = _train_loop(config, dataset, run_dir, data_dir, device, resume, progress)
    return TrainResult(run_dir, run_dir / LAST_CHECKPOINT, history, device)


def _train_loop(
    config: RunConfig,
    dataset: LandmarkDataset,
    run_dir: Path,
    data_dir: Path,
    device: torch.device,
    resume: bool,
    progress: bool,
) -> list[dict[str, float]]:
    """Build (or resume) the model and optimiser and train the remaining epochs; returns the history."""
    checkpoint_path = run_dir / LAST_CHECKPOINT
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        model = build_model(config.model.name, dataset.num_landmarks, **config.model.options)
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
        model.load_state_dict(model_from_checkpoint(payload, checkpoint_path, dataset.num_landmarks).state_dict())
        optimizer.load_state_dict(payload["optimizer_state"])
        scheduler.load_state_dict(payload["scheduler_state"])
        start_epoch, history = int(payload["epoch"]), list(payload.get("history", []))
        logger.info("resuming %s after epoch %d", checkpoint_path, start_epoch)
    else:
        save_config(config, run_dir / "config.yaml")
    write_json_atomic({**run_manifest(config, device, data_dir), **encoder_init}, run_dir / "manifest.json")

    for epoch in range(start_epoch, config.train.epochs):
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_size=config.train.batch_size,
            shuffle=True,
            drop_last=len(dataset) >= 2 * config.train.batch_size,
            num_workers=config.train.num_workers,
            generator=torch.Generator().manual_seed(config.train.seed * 100_003 + epoch),
        )
        stats = _train_one_epoch(
            model, loader, optimizer, device, config.train.bf16_on_cuda, epoch, config.train.epochs, progress
        )
        stats["lr"] = optimizer.param_groups[0]["lr"]
        scheduler.step()
        history.append(stats)
        save_checkpoint(
            _checkpoint_payload(model, optimizer, scheduler, config, dataset, epoch + 1, history), checkpoint_path
        )
        _write_history(history, run_dir / "train_log.csv")
        logger.info(
            "epoch %d/%d loss %.4f lr %.2e %.1f images/s",
            epoch + 1, config.train.epochs, stats["loss"], stats["lr"], stats["images_per_s"],
        )
    return history


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
    progress: bool,
) -> dict[str, float]:
    model.train()
    total_loss, total_images, start = 0.0, 0, time.perf_counter()
    bar = tqdm(  # disable=None: a bar on a terminal, none in a log file
        loader, desc=f"epoch {epoch + 1}/{num_epochs}", leave=False, disable=None if progress else True, mininterval=1.0
    )
    for step, batch in enumerate(bar):
        images = batch["image"].to(device, non_blocking=True)
        target_index = batch["target_index"].to(device, non_blocking=True)
        if not bool((target_index >= 0).any()):
            continue
        with training_autocast(device, bf16_on_cuda):
            logits = model(images)  # (N, K, H, W)
        loss = one_hot_nll(logits, target_index)
        if not torch.isfinite(loss):
            raise NonFiniteError(
                f"epoch {epoch + 1}, batch {step + 1}: the loss is {loss.item()}; "
                "the last good checkpoint is kept (try a lower learning rate)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(images)
        total_images += len(images)
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{loss.item():.3f}", img_per_s=f"{total_images / max(elapsed, 1e-9):.1f}")
    seconds = time.perf_counter() - start
    return {
        "epoch": epoch + 1,
        "loss": total_loss / max(total_images, 1),
        "images_per_s": total_images / max(seconds, 1e-9),
        "seconds": seconds,
    }


def _checkpoint_payload(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: RunConfig,
    dataset: LandmarkDataset,
    epoch: int,
    history: list[dict[str, float]],
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
    }


def _write_history(history: list[dict[str, float]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["epoch", "loss", "lr", "images_per_s", "seconds"])
    writer.writeheader()
    for row in history:
        writer.writerow({key: row[key] for key in writer.fieldnames})
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
    """

    pred_px: np.ndarray
    mode_prob: np.ndarray
    mode_prob_before: np.ndarray
    nll: np.ndarray
    nll_before: np.ndarray
    scores: dict[str, np.ndarray]

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
    temperature = torch.ones(dataset.num_landmarks) if temperatures is None else torch.as_tensor(temperatures)
    temperature = temperature.float().to(device)
    parts: dict[str, list[np.ndarray]] = {}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits = float32_logits(model, batch["image"].to(device))  # (N, K, H, W)
        ids = [dataset.image_ids[i] for i in batch["index"].tolist()]
        check_finite(logits, f"model output for images {', '.join(ids)}")
        target_index = batch["target_index"].to(device)
        scaled = scale_logits(logits, temperature)
        heatmaps = softmax_2d(scaled)
        outputs = {
            "pred_px": argmax_2d(logits),
            "mode_prob": mode_probability(scaled),
            "mode_prob_before": mode_probability(logits),
            "nll": target_nll(scaled, target_index),
            "nll_before": target_nll(logits, target_index),
        }
        scores = uncertainty_scores(heatmaps, batch["pixel_size_mm"].to(device), cutoff=ere_cutoff)
        outputs.update({f"score_{name}": value for name, value in scores.items()})
        for name, value in outputs.items():
            parts.setdefault(name, []).append(host_float64(value))
    merged = {name: np.concatenate(values) for name, values in parts.items()}
    scores = {name[len("score_"):]: merged.pop(name) for name in list(merged) if name.startswith("score_")}
    return Predictions(scores=scores, **merged)

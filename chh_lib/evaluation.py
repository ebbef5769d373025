"""Evaluate a trained run on one split and write its tables.

Writes, into ``RUN_DIR/eval_<split>/`` (each file atomically):

``per_image.csv``
    one row per image: its MRE and the radial error of every landmark (mm).
``per_landmark.csv``
    one row per landmark: MRE, SD, SDR per threshold, baseline MRE, annotator distance.
``metrics.json``
    ``mre_mm``, ``mre_sd_mm``, ``sdr_percent`` (threshold in mm -> percent),
    ``sdr_inclusive``, ``num_images``, ``num_landmarks``, ``num_missing``,
    ``baseline_mre_mm`` (every landmark predicted at its mean training position),
    ``mean_annotator_distance_mm``, ``split``, ``epoch``.
"""
from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from chh_lib.config import RunConfig, load_config
from chh_lib.data.dataset import LandmarkDataset
from chh_lib.data.formats import LandmarkData, read_landmark_data
from chh_lib.engine import LAST_CHECKPOINT, load_checkpoint, model_from_checkpoint, predict
from chh_lib.errors import DataFormatError
from chh_lib.files import write_json_atomic, write_text_atomic
from chh_lib.metrics import mean_radial_error, radial_error_mm, success_detection_rate

logger = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """Metrics of one split and the tables behind them."""

    metrics: dict[str, Any]
    per_landmark: pd.DataFrame
    per_image: pd.DataFrame
    output_dir: Path


def default_cache_dir(data_dir: Path, run_dir: Path) -> Path:
    """Where resized images are cached: ``DATA_DIR/.chh_cache`` when writable, else ``RUN_DIR/cache``."""
    candidate = Path(data_dir) / ".chh_cache"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        probe = candidate / ".write_test"
        probe.write_text("ok")
        probe.unlink()
        return candidate
    except OSError:
        return Path(run_dir) / "cache"


def recorded_data_dir(run_dir: Path) -> Path:
    """The data directory a run was trained on, from its ``manifest.json``."""
    manifest_path = Path(run_dir) / "manifest.json"
    if not manifest_path.is_file():
        raise DataFormatError(f"{manifest_path}: not found; pass --data explicitly")
    try:
        data_dir = json.loads(manifest_path.read_text()).get("data_dir")
    except ValueError as error:
        raise DataFormatError(f"{manifest_path}: not valid JSON ({error}); pass --data") from None
    if not data_dir:
        raise DataFormatError(f"{manifest_path}: records no data directory; pass --data")
    return Path(data_dir)


def evaluate_run(
    run_dir: Path,
    split: str = "test",
    data_dir: Path | None = None,
    device: torch.device | None = None,
    sdr_inclusive: bool | None = None,
) -> EvaluationResult:
    """Evaluate ``run_dir``'s last checkpoint on ``split`` and write the tables.

    Parameters
    ----------
    run_dir : Path
        A run directory made by ``chh train`` or ``chh pretrained``.
    split : str
        ``test`` (Test1Data), ``test2`` (Test2Data) or ``train``.
    data_dir : Path, optional
        Defaults to the data directory recorded in the run's manifest.
    sdr_inclusive : bool, optional
        Override the configuration's ``eval.sdr_inclusive``.
    """
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    data_dir = Path(data_dir) if data_dir is not None else recorded_data_dir(run_dir)
    data = read_landmark_data(data_dir, protocol=config.data.protocol)
    checkpoint_path = run_dir / LAST_CHECKPOINT
    payload = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(payload, checkpoint_path, data.landmarks.num_landmarks)
    cache_dir = default_cache_dir(data_dir, run_dir)
    dataset = LandmarkDataset(data.split(split), config.data.image_size, cache_dir)
    predictions = predict(model, dataset, device or torch.device("cpu"), config.eval.batch_size)

    inclusive = config.eval.sdr_inclusive if sdr_inclusive is None else sdr_inclusive
    errors_mm = radial_error_mm(predictions.pred_px, dataset.target_px, dataset.pixel_size_mm)  # (N, K)
    baseline_errors_mm = _baseline_errors_mm(data, config, dataset, cache_dir)
    annotator_mm = _annotator_distance_mm(dataset)
    per_landmark = _per_landmark_table(
        data, errors_mm, baseline_errors_mm, annotator_mm, config.eval.sdr_thresholds_mm, inclusive
    )
    per_image = _per_image_table(data, dataset, errors_mm)
    mre, sd = mean_radial_error(errors_mm)
    metrics = {
        "split": split,
        "epoch": int(payload["epoch"]),
        "mre_mm": mre,
        "mre_sd_mm": sd,
        "sdr_percent": {
            f"{t:g}": v for t, v in success_detection_rate(errors_mm, config.eval.sdr_thresholds_mm, inclusive).items()
        },
        "sdr_inclusive": bool(inclusive),
        "num_images": len(dataset),
        "num_landmarks": data.landmarks.num_landmarks,
        "num_missing": int(np.isnan(errors_mm).sum()),
        "baseline_mre_mm": mean_radial_error(baseline_errors_mm)[0],
        "mean_annotator_distance_mm": float(np.nanmean(annotator_mm)) if annotator_mm.size else float("nan"),
        "image_size": list(config.data.image_size),
        "data_dir": str(data_dir),
    }
    output_dir = run_dir / f"eval_{split}"
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(per_landmark, output_dir / "per_landmark.csv")
    _write_csv(per_image, output_dir / "per_image.csv")
    write_json_atomic(metrics, output_dir / "metrics.json")
    return EvaluationResult(metrics, per_landmark, per_image, output_dir)


def _baseline_errors_mm(
    data: LandmarkData, config: RunConfig, dataset: LandmarkDataset, cache_dir: Path
) -> np.ndarray:
    """Errors of predicting every landmark at its mean training position (network grid), (N, K)."""
    train = LandmarkDataset(data.split("train"), config.data.image_size, cache_dir)
    mean_position_px = np.nanmean(train.target_px, axis=0)  # (K, 2)
    baseline_px = np.broadcast_to(mean_position_px, dataset.target_px.shape)
    return radial_error_mm(baseline_px, dataset.target_px, dataset.pixel_size_mm)


def _annotator_distance_mm(dataset: LandmarkDataset) -> np.ndarray:
    """Distance between the first two annotators in mm, (N, K); empty with one annotator."""
    if dataset.annotations_px.shape[1] < 2:
        return np.empty((0,))
    first, second = dataset.annotations_px[:, 0], dataset.annotations_px[:, 1]
    return radial_error_mm(first, second, dataset.pixel_size_mm)


def _per_landmark_table(
    data: LandmarkData,
    errors_mm: np.ndarray,
    baseline_errors_mm: np.ndarray,
    annotator_mm: np.ndarray,
    thresholds_mm: list[float],
    inclusive: bool,
) -> pd.DataFrame:
    rows = []
    for k, (name, abbreviation) in enumerate(zip(data.landmarks.names, data.landmarks.abbreviations)):
        mre, sd = mean_radial_error(errors_mm[:, k])
        row = {"landmark": name, "abbreviation": abbreviation, "mre_mm": mre, "sd_mm": sd}
        for threshold, rate in success_detection_rate(errors_mm[:, k], thresholds_mm, inclusive).items():
            row[f"sdr_{threshold:g}mm_percent"] = rate
        row["baseline_mre_mm"] = mean_radial_error(baseline_errors_mm[:, k])[0]
        row["annotator_distance_mm"] = float(np.nanmean(annotator_mm[:, k])) if annotator_mm.size else np.nan
        row["num_present"] = int((~np.isnan(errors_mm[:, k])).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def _per_image_table(data: LandmarkData, dataset: LandmarkDataset, errors_mm: np.ndarray) -> pd.DataFrame:
    table = pd.DataFrame(errors_mm, columns=[f"{a}_error_mm" for a in data.landmarks.abbreviations])
    with np.errstate(invalid="ignore"):
        mre_per_image = np.array([mean_radial_error(row)[0] for row in errors_mm])
    table.insert(0, "mre_mm", mre_per_image)
    table.insert(0, "image_id", dataset.image_ids)
    return table


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, float_format="%.4f")
    write_text_atomic(path, buffer.getvalue())


def format_results_table(metrics: dict[str, Any]) -> str:
    """A short plain-text table of MRE, SDR per threshold and the baseline."""
    comparator = "<=" if metrics["sdr_inclusive"] else "<"
    lines = [
        f"split {metrics['split']}: {metrics['num_images']} images, {metrics['num_landmarks']} landmarks, "
        f"{metrics['num_missing']} missing",
        f"  MRE                     {metrics['mre_mm']:6.2f} mm (SD {metrics['mre_sd_mm']:.2f})",
    ]
    for threshold, rate in metrics["sdr_percent"].items():
        lines.append(f"  SDR {comparator} {threshold:>4} mm          {rate:6.1f} %")
    lines.append(f"  baseline MRE (mean pos.) {metrics['baseline_mre_mm']:5.2f} mm")
    lines.append(f"  annotator distance       {metrics['mean_annotator_distance_mm']:5.2f} mm")
    return "\n".join(lines)

"""Evaluate and calibrate a trained run.

``evaluate_run`` writes, into ``RUN_DIR/eval_<split>/`` (each file atomically):

``per_image.csv``
    one row per image: its MRE, then the radial error and the ERE of every landmark (mm).
``predictions.csv``
    one row per (image, landmark): the arg-max position in pixels of the ORIGINAL image
    (and mm), the mode probability, the ERE and whether it exceeds the held-out threshold
    (the table of :func:`chh_lib.prediction.prediction_table`, as ``chh predict`` writes it).
``per_landmark.csv``
    one row per landmark: MRE, SD, SDR per threshold, baseline MRE, annotator
    distance, mean ERE and temperature.
``metrics.json``
    ``mre_mm``, ``mre_sd_mm``, ``sdr_percent`` (threshold in mm -> percent),
    ``sdr_inclusive``, ``num_images``, ``num_landmarks``, ``num_missing``,
    ``baseline_mre_mm`` (every landmark predicted at its mean training position),
    ``mean_annotator_distance_mm``, ``split``, ``epoch``, ``temperatures``, and the
    calibration and uncertainty summary of :mod:`chh_lib.uncertainty` (NLL and ECE
    before/after, ERE-error correlation, AUROC per score with 95 % intervals,
    the ERE threshold chosen at calibration time with the good/erroneous sets it
    defines here, and the oracle threshold this split would pick). NaN is written as null.
``reliability_diagram.png``, ``ere_vs_error.png``, ``roc.png``, ``per_landmark.png``

``calibrate_run`` fits temperatures on a held-out split, chooses the ERE threshold
that flags half of that split's outliers (on the ``selection`` split when there is
one), and stores both with the checkpoint, which ``evaluate_run`` then applies.
"""
from __future__ import annotations

import dataclasses
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from chh_lib import plots
from chh_lib.calibration import (
    MIN_CALIBRATION_IMAGES,
    CalibrationResult,
    HeldOutLogits,
    check_calibration_split,
    choose_scope,
    collect_logits,
    cross_validated_nll,
    fit_temperatures_nll,
    fit_temperatures_paper,
    unit_temperatures,
)
from chh_lib.config import RunConfig, load_config
from chh_lib.data.dataset import LandmarkDataset
from chh_lib.data.formats import LandmarkData, read_landmark_data
from chh_lib.engine import (
    LAST_CHECKPOINT,
    load_checkpoint,
    make_training_dataset,
    model_from_checkpoint,
    predict,
    predict_from_logits,
    save_checkpoint,
)
from chh_lib.errors import ConfigError
from chh_lib.files import write_bytes_atomic, write_json_atomic, write_text_atomic
from chh_lib.metrics import mean_radial_error, radial_error_mm, success_detection_rate
from chh_lib.prediction import (
    prediction_table,
    source_positions_px,
    write_prediction_csv,
)
from chh_lib.run_info import data_description, recorded_data_dir
from chh_lib.uncertainty import MIN_OUTLIERS, choose_ere_threshold, summarise_uncertainty

logger = logging.getLogger(__name__)

#: Below this many outliers on the held-out split (but at least :data:`MIN_OUTLIERS`), the
#: chosen ERE threshold is stored with a warning that it is unstable.
FEW_OUTLIERS = 20
#: Temperature scopes of :func:`calibrate_run`; ``auto`` chooses by cross-validation.
CALIBRATION_SCOPES = ("auto", "none", "global", "per_landmark")


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


@dataclass
class LoadedRun:
    """A run directory's configuration, data set, checkpoint and model."""

    run_dir: Path
    config: RunConfig
    data_dir: Path
    data: LandmarkData
    checkpoint_path: Path
    payload: dict[str, Any]
    model: torch.nn.Module
    cache_dir: Path

    def dataset(self, split: str) -> LandmarkDataset:
        """The named split at the run's input size, without augmentation."""
        return LandmarkDataset(self.data.split(split), self.config.data.image_size, self.cache_dir)

    @property
    def temperatures(self) -> np.ndarray | None:
        """(K,) fitted temperatures stored with the checkpoint, or None before ``chh calibrate``."""
        value = self.payload.get("temperatures")
        return None if value is None else np.asarray(value, dtype=np.float64)

    @property
    def ere_threshold(self) -> dict[str, Any] | None:
        """The ERE threshold chosen by ``chh calibrate`` on held-out data, or None before it."""
        return self.payload.get("ere_threshold")


def load_run(run_dir: Path, data_dir: Path | None = None) -> LoadedRun:
    """Load everything evaluation and calibration need; the checkpoint must fit the data's landmark count."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    data_dir = Path(data_dir) if data_dir is not None else recorded_data_dir(run_dir)
    data = read_landmark_data(data_dir, protocol=config.data.protocol)
    checkpoint_path = run_dir / LAST_CHECKPOINT
    payload = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(payload, checkpoint_path, data.landmarks.num_landmarks)
    return LoadedRun(run_dir, config, data_dir, data, checkpoint_path, payload, model,
                     default_cache_dir(data_dir, run_dir))


def evaluate_run(
    run_dir: Path,
    split: str = "test",
    data_dir: Path | None = None,
    device: torch.device | None = None,
    sdr_inclusive: bool | None = None,
    figures: bool = True,
    outlier_threshold_mm: float | None = None,
) -> EvaluationResult:
    """Evaluate ``run_dir``'s last checkpoint (with its temperatures, if calibrated) on ``split``.

    Parameters
    ----------
    run_dir : Path
        A run directory made by ``chh train`` or ``chh pretrained``.
    split : str
        ``test`` (Test1Data), ``test2`` (Test2Data), ``calibration`` or ``train``.
    data_dir : Path, optional
        Defaults to the data directory recorded in the run's manifest.
    sdr_inclusive : bool, optional
        Override the configuration's ``eval.sdr_inclusive``.
    figures : bool
        Also write the PNG figures (reliability diagrams, ERE vs error, ROC, per-landmark table).
    outlier_threshold_mm : float, optional
        Radial error above which a prediction is an outlier (ROC, AUROC, the threshold's
        TPR/FPR). Default: the cut ``chh calibrate`` chose the ERE threshold at, else the
        configuration's ``eval.outlier_threshold_mm`` (the paper's 4 mm). Another cut than
        the threshold's is allowed, with a warning: the threshold was set for the other one.
    """
    run = load_run(run_dir, data_dir)
    config = run.config
    outlier_mm = resolve_outlier_cut(run, outlier_threshold_mm)
    settings = dataclasses.replace(
        config.eval, sdr_inclusive=config.eval.sdr_inclusive if sdr_inclusive is None else sdr_inclusive,
        outlier_threshold_mm=outlier_mm,
    )
    dataset = run.dataset(split)
    temperatures = run.temperatures
    predictions = predict(run.model, dataset, device or torch.device("cpu"), settings.batch_size,
                          temperatures, settings.ere_cutoff)

    errors_mm = radial_error_mm(predictions.pred_px, dataset.target_px, dataset.pixel_size_mm)  # (N, K)
    baseline_errors_mm = _baseline_errors_mm(run.data, config, dataset, run.cache_dir)
    annotator_mm = _annotator_distance_mm(dataset)
    summary = summarise_uncertainty(
        errors_mm, dataset.pixel_size_mm, predictions.mode_prob_before, predictions.mode_prob,
        predictions.nll_before, predictions.nll, predictions.scores, settings, run.ere_threshold,
    )
    shown_temperatures = temperatures if temperatures is not None else np.ones(dataset.num_landmarks)
    per_landmark = _per_landmark_table(
        run.data, errors_mm, baseline_errors_mm, annotator_mm, settings.sdr_thresholds_mm, settings.sdr_inclusive
    )
    with np.errstate(invalid="ignore"):
        per_landmark["ere_mm"] = [
            float(np.nanmean(np.where(np.isnan(errors_mm[:, k]), np.nan, predictions.ere_mm[:, k])))
            for k in range(dataset.num_landmarks)
        ]
    per_landmark["temperature"] = shown_temperatures
    per_image = _per_image_table(run.data, dataset, errors_mm, predictions.ere_mm)
    mre, sd = mean_radial_error(errors_mm)
    calibration = run.payload.get("calibration", {})
    overlap = sorted(set(calibration.get("image_ids", [])) & set(dataset.image_ids))
    if overlap:
        logger.warning("%d images of split %r were used to fit the temperatures", len(overlap), split)
    metrics = {
        "split": split,
        "epoch": int(run.payload["epoch"]),
        "mre_mm": mre,
        "mre_sd_mm": sd,
        "sdr_percent": {
            f"{t:g}": v
            for t, v in success_detection_rate(errors_mm, settings.sdr_thresholds_mm, settings.sdr_inclusive).items()
        },
        "sdr_inclusive": bool(settings.sdr_inclusive),
        "num_images": len(dataset),
        "num_landmarks": run.data.landmarks.num_landmarks,
        "num_missing": int(np.isnan(errors_mm).sum()),
        "baseline_mre_mm": mean_radial_error(baseline_errors_mm)[0],
        "mean_annotator_distance_mm": float(np.nanmean(annotator_mm)) if annotator_mm.size else float("nan"),
        "calibrated": temperatures is not None,
        "calibration_method": calibration.get("method"),
        "calibration_overlap_images": len(overlap),
        "temperatures": [float(t) for t in shown_temperatures],
        **summary.metrics,
        "calibration_raised_nll": bool(temperatures is not None
                                       and summary.metrics["nll_after"] > summary.metrics["nll_before"]),
        "ere_threshold_refused": (run.ere_threshold or {}).get("refused"),
        "image_size": list(config.data.image_size),
        "data_dir": str(run.data_dir),
    }
    if predictions.pred_px_subpixel is not None:
        metrics["subpixel"] = _subpixel_metrics(predictions.pred_px_subpixel, dataset, settings)
    output_dir = run.run_dir / f"eval_{split}"
    output_dir.mkdir(parents=True, exist_ok=True)
    threshold = metrics.get("ere_threshold_mm")
    write_prediction_csv(prediction_table(
        dataset.image_ids, run.data.landmarks, source_positions_px(predictions.pred_px, dataset.geometries),
        np.array([record.pixel_size_mm for record in dataset.records]), predictions.mode_prob, None,
        predictions.ere_mm, float("nan") if threshold is None else float(threshold),
        float((run.ere_threshold or {}).get("outlier_threshold_mm", float("nan"))),
    ), output_dir / "predictions.csv")
    _write_csv(per_landmark, output_dir / "per_landmark.csv")
    _write_csv(per_image, output_dir / "per_image.csv")
    if figures:
        _write_figures(summary, per_landmark, metrics, output_dir)
    write_json_atomic(metrics, output_dir / "metrics.json")
    return EvaluationResult(metrics, per_landmark, per_image, output_dir)


def resolve_outlier_cut(run: LoadedRun, requested_mm: float | None) -> float:
    """The outlier cut (mm) for evaluating ``run``: the requested one, else the threshold's, else the config's."""
    stored = (run.ere_threshold or {}).get("outlier_threshold_mm")
    if requested_mm is None:
        return float(stored if stored is not None else run.config.eval.outlier_threshold_mm)
    if not (np.isfinite(requested_mm) and requested_mm > 0):
        raise ConfigError(f"the outlier cut must be a positive number of mm, got {requested_mm}")
    if stored is not None and not np.isclose(stored, requested_mm):
        logger.warning("outliers counted above %g mm, but the run's ERE threshold was chosen at %g mm: its TPR "
                       "and FPR here answer another question (chh calibrate --outlier-mm %g chooses one for this "
                       "cut)", requested_mm, stored, requested_mm)
    return float(requested_mm)


def _subpixel_metrics(pred_px: np.ndarray, dataset: LandmarkDataset, settings: Any) -> dict[str, Any]:
    """MRE, SD and SDR of the sub-pixel (quadratic) decoding, beside the paper's arg-max."""
    errors_mm = radial_error_mm(pred_px, dataset.target_px, dataset.pixel_size_mm)
    mre, sd = mean_radial_error(errors_mm)
    rates = success_detection_rate(errors_mm, settings.sdr_thresholds_mm, settings.sdr_inclusive)
    return {"decode": "quadratic", "mre_mm": mre, "mre_sd_mm": sd,
            "sdr_percent": {f"{t:g}": v for t, v in rates.items()}}


def _write_figures(summary: Any, per_landmark: pd.DataFrame, metrics: dict[str, Any], output_dir: Path) -> None:
    tpr50 = summary.roc["ere"]
    operating = None
    threshold = metrics["ere_threshold_mm"]
    if threshold is not None and np.isfinite(threshold):
        index = int(np.argmin(np.abs(tpr50.thresholds - threshold)))
        operating = (float(tpr50.fpr[index]), float(tpr50.tpr[index]))
    figures = {
        "reliability_diagram.png": plots.reliability_diagram(summary.bins_before, summary.bins_after),
        "ere_vs_error.png": plots.ere_vs_error(
            summary.ere_mm, summary.radial_error_mm, binned_r=metrics["ere_error_binned_pearson"],
            spearman_rho=metrics["ere_error_spearman"],
        ),
        "roc.png": plots.roc_curves(
            {name: (curve.fpr, curve.tpr) for name, curve in summary.roc.items()},
            metrics["auroc"], {k: tuple(v) for k, v in metrics["auroc_ci95"].items()}, operating,
        ),
        "per_landmark.png": plots.per_landmark_heatmap(per_landmark.set_index("abbreviation")),
    }
    for name, figure in figures.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        write_bytes_atomic(output_dir / name, buffer.getvalue())


def calibrate_run(
    run_dir: Path,
    split: str = "calibration",
    method: str = "nll",
    scope: str = "auto",
    data_dir: Path | None = None,
    device: torch.device | None = None,
    epochs: int = 15,
    outlier_threshold_mm: float | None = None,
) -> CalibrationResult:
    """Fit temperatures on ``split`` and store them with the run's checkpoint (atomically).

    Also writes ``RUN_DIR/calibration.json``. See :mod:`chh_lib.calibration` for the methods.

    ``scope`` is ``per_landmark`` (one temperature per landmark, the paper's),
    ``global`` (one for all), ``none`` (T = 1: nothing fitted) or ``auto`` (the
    default): with the ``nll`` method, the scope whose temperatures give the lowest
    held-out NLL in a cross-validation over the images of ``split``
    (:func:`chh_lib.calibration.cross_validated_nll`, up to 5 folds; a tie goes to
    the scope with fewer parameters; ``global`` when the split has fewer than 2
    images). The ``paper`` method fits per landmark only, so ``auto`` means
    ``per_landmark`` there. A split of fewer than
    :data:`chh_lib.calibration.MIN_CALIBRATION_IMAGES` images gives a warning.

    The ERE threshold that flags half of the held-out outliers (radial error above
    ``outlier_threshold_mm``, default the configuration's ``eval.outlier_threshold_mm``,
    the paper's 4 mm) is chosen on the same split (``selection`` when the data has
    one) and stored with the cut it was chosen at; with fewer than
    :data:`chh_lib.uncertainty.MIN_OUTLIERS` outliers none is stored (see
    :func:`held_out_ere_threshold`). The network runs once over the held-out split:
    the threshold reuses the logits the temperatures were fitted on.
    """
    check_calibration_split(split)
    if scope not in CALIBRATION_SCOPES:
        raise ConfigError(f"unknown temperature scope {scope!r}; choose one of {', '.join(CALIBRATION_SCOPES)}")
    if method == "paper" and scope in ("global", "none"):
        raise ConfigError(f"the paper method fits one temperature per landmark; use --method nll for scope {scope!r}")
    if outlier_threshold_mm is not None and not (np.isfinite(outlier_threshold_mm) and outlier_threshold_mm > 0):
        raise ConfigError(f"the outlier cut must be a positive number of mm, got {outlier_threshold_mm}")
    run = load_run(run_dir, data_dir)
    if split not in run.data.splits:
        raise ConfigError(
            f"{run.data_dir}: no {split!r} split to fit temperatures on (available: {', '.join(run.data.splits)}); "
            "give dataset.yaml one, e.g. splits: {fractions: {train: 0.7, calibration: 0.1, test: 0.2}}"
        )
    outlier_mm = float(run.config.eval.outlier_threshold_mm if outlier_threshold_mm is None else outlier_threshold_mm)
    device = device or torch.device("cpu")
    dataset = run.dataset(split)
    if len(dataset) < MIN_CALIBRATION_IMAGES:
        logger.warning("split %r has %d images, fewer than the %d below which fitted temperatures and the ERE "
                       "threshold often do not transfer to new images (notebook 03, 'Small calibration sets'): "
                       "check the test NLL that chh evaluate reports before and after, and its interval",
                       split, len(dataset), MIN_CALIBRATION_IMAGES)
    threshold_split = "selection" if "selection" in run.data.splits and split == "calibration" else split
    cross_validation: dict[str, float] | None = None
    if method == "nll":
        held_out = collect_logits(run.model, dataset, device, run.config.eval.batch_size)
        if scope == "auto" and len(dataset) >= 2:
            cross_validation = cross_validated_nll(held_out, num_folds=min(5, len(dataset)), seed=0)
            scope = choose_scope(cross_validation)
        elif scope == "auto":
            scope = "global"
        if scope == "none":
            result = unit_temperatures(held_out)
        else:
            result = fit_temperatures_nll(held_out, per_landmark=scope == "per_landmark")
        image_ids = dataset.image_ids
        threshold_logits = held_out if threshold_split == split else None
    elif method == "paper":
        if threshold_split == "selection":
            fit_records, selection_records = run.data.split(split), run.data.split("selection")
        else:
            records = run.data.split(split)
            if len(records) < 2:
                raise ConfigError(
                    f"the paper method splits {split!r} into fitting and selection halves, "
                    f"but it holds only {len(records)} image(s)"
                )
            fit_records, selection_records = records[: len(records) // 2], records[len(records) // 2:]
        fitting = make_training_dataset(run.config, fit_records, run.cache_dir)
        selection = LandmarkDataset(selection_records, run.config.data.image_size, run.cache_dir)
        held_out = collect_logits(run.model, selection, device, run.config.eval.batch_size)
        result = fit_temperatures_paper(run.model, fitting, held_out, device, epochs=epochs)
        scope = "per_landmark"
        image_ids = [r.image_id for r in fit_records + selection_records]
        threshold_logits = held_out if threshold_split == "selection" else None
    else:
        raise ConfigError(f"unknown calibration method {method!r}; choose nll or paper")
    result.split = split
    result.scope = scope
    if cross_validation is not None:
        result.details["cross_validated_nll"] = cross_validation
    if threshold_logits is None:
        threshold_logits = collect_logits(run.model, run.dataset(threshold_split), device,
                                          run.config.eval.batch_size)
    ere_threshold = held_out_ere_threshold(threshold_logits, result.temperatures, run.config.eval.ere_cutoff,
                                           outlier_mm, threshold_split)
    result.ere_threshold = ere_threshold
    payload = dict(run.payload)
    payload.update(data_description(run.data))
    payload["temperatures"] = torch.as_tensor(result.temperatures, dtype=torch.float64)
    payload["ere_threshold"] = ere_threshold
    payload["calibration"] = {"method": result.method, "split": split, "image_ids": image_ids, "scope": scope,
                              "nll_before": result.nll_before, "nll_after": result.nll_after,
                              "outlier_threshold_mm": outlier_mm}
    save_checkpoint(payload, run.checkpoint_path)
    write_json_atomic({
        "method": result.method,
        "split": split,
        "scope": scope,
        "cross_validated_nll": cross_validation,
        "num_images": result.num_images,
        "min_calibration_images": MIN_CALIBRATION_IMAGES,
        "nll_before": result.nll_before,
        "nll_after": result.nll_after,
        "temperatures": dict(zip(run.data.landmarks.names, result.temperatures.tolist())),
        "outlier_threshold_mm": outlier_mm,
        "ere_threshold": ere_threshold,
        "details": result.details,
    }, run.run_dir / "calibration.json")
    return result


def held_out_ere_threshold(
    held_out: HeldOutLogits,
    temperatures: np.ndarray,
    ere_cutoff: float,
    outlier_threshold_mm: float,
    split: str,
) -> dict[str, Any]:
    """Choose the ERE threshold on held-out logits with the fitted temperatures (see :mod:`chh_lib.uncertainty`).

    Returns what :func:`chh_lib.uncertainty.choose_ere_threshold` returns plus ``split``
    and ``num_images``. With fewer than :data:`MIN_OUTLIERS` outliers at the cut, no
    threshold is stored (``ere_threshold_mm`` NaN) and ``refused`` says why and which
    cut would give enough; with fewer than :data:`FEW_OUTLIERS` a warning is logged.
    """
    predictions = predict_from_logits(held_out.logits, held_out.target_index, held_out.pixel_size_mm,
                                      temperatures, ere_cutoff)
    errors_mm = radial_error_mm(predictions.pred_px, held_out.target_px, held_out.pixel_size_mm)
    chosen = choose_ere_threshold(predictions.ere_mm, errors_mm, outlier_threshold_mm)
    chosen.update(split=split, num_images=int(held_out.logits.shape[0]))
    if chosen["num_outliers"] < MIN_OUTLIERS:
        reason = (f"no ERE threshold stored: split {split!r} has {chosen['num_outliers']} predictions with a radial "
                  f"error above {outlier_threshold_mm:g} mm, fewer than the {MIN_OUTLIERS} a threshold needs; "
                  f"{_cut_advice(chosen['suggested_outlier_threshold_mm'])}; chh predict flags nothing until then")
        logger.warning("%s", reason)
        chosen.update(ere_threshold_mm=float("nan"), refused=reason)
    elif chosen["num_outliers"] < FEW_OUTLIERS:
        logger.warning("the ERE threshold was chosen from only %d outliers of split %r: its rates on new data "
                       "may differ widely", chosen["num_outliers"], split)
    return chosen


def _cut_advice(suggested_mm: float) -> str:
    if not np.isfinite(suggested_mm):
        return "the split has too few predictions for any cut: add images to it"
    return f"a cut of {suggested_mm:g} mm would give {MIN_OUTLIERS} (chh calibrate --outlier-mm {suggested_mm:g})"


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


def _per_image_table(
    data: LandmarkData, dataset: LandmarkDataset, errors_mm: np.ndarray, ere_mm: np.ndarray
) -> pd.DataFrame:
    abbreviations = data.landmarks.abbreviations
    table = pd.concat([
        pd.DataFrame(errors_mm, columns=[f"{a}_error_mm" for a in abbreviations]),
        pd.DataFrame(np.where(np.isnan(errors_mm), np.nan, ere_mm), columns=[f"{a}_ere_mm" for a in abbreviations]),
    ], axis=1)
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
    """A short plain-text table of MRE, SDR per threshold, the baseline and the uncertainty numbers with 95 % intervals."""
    comparator = "<=" if metrics["sdr_inclusive"] else "<"
    lines = [
        f"split {metrics['split']}: {metrics['num_images']} images, {metrics['num_landmarks']} landmarks, "
        f"{metrics['num_missing']} missing",
        f"  MRE                     {metrics['mre_mm']:6.2f} mm (SD {metrics['mre_sd_mm']:.2f})",
    ]
    for threshold, rate in metrics["sdr_percent"].items():
        lines.append(f"  SDR {comparator} {threshold:>4} mm          {rate:6.1f} %")
    if "subpixel" in metrics:
        subpixel = metrics["subpixel"]
        lines.append(f"  MRE, sub-pixel decoding {subpixel['mre_mm']:6.2f} mm (SD {subpixel['mre_sd_mm']:.2f}; "
                     f"SDR < 2 mm {subpixel['sdr_percent'].get('2', float('nan')):.1f} %; the paper: arg-max)")
    lines.append(f"  baseline MRE (mean pos.) {metrics['baseline_mre_mm']:5.2f} mm")
    lines.append(f"  annotator distance       {metrics['mean_annotator_distance_mm']:5.2f} mm")
    if "ece_percent_after" in metrics:
        state = "calibrated" if metrics["calibrated"] else "not calibrated: run chh calibrate"
        if metrics["calibrated"] and all(value == 1.0 for value in metrics["temperatures"]):
            state = "calibrated: T = 1 kept"
        lines.append(f"  ECE before -> after      {_with_interval(metrics, 'ece_percent_before')} -> "
                     f"{_with_interval(metrics, 'ece_percent_after')} % ({state}); change "
                     f"{_signed(metrics['ece_percent_after'] - metrics['ece_percent_before'])} "
                     f"{_interval(metrics.get('ece_change_ci95'), signed=True)}")
        lines.append(f"  NLL before -> after      {_with_interval(metrics, 'nll_before', 3)} -> "
                     f"{_with_interval(metrics, 'nll_after', 3)} nats; change "
                     f"{_signed(metrics['nll_after'] - metrics['nll_before'], 3)} "
                     f"{_interval(metrics.get('nll_change_ci95'), 3, signed=True)}")
        if metrics.get("calibration_raised_nll"):
            lines.append(_raised_nll_notice(metrics))
        lines.append(f"  mean ERE                 {metrics['ere_mean_mm']:5.2f} mm")
        lines.append(f"  ERE-error correlation    {_with_interval(metrics, 'ere_error_binned_pearson')} (binned), "
                     f"{_with_interval(metrics, 'ere_error_spearman', key_ci='spearman_ci95')} (Spearman)")
        low, high = metrics["auroc_ci95"]["ere"]
        lines.append(f"  AUROC of ERE (> {metrics['outlier_threshold_mm']:g} mm)  {_number(metrics['auroc']['ere'])} "
                     f"[{_number(low)}, {_number(high)}] over {metrics['num_outliers']} outliers "
                     f"({100 * metrics['outlier_fraction']:.1f} %)")
        lines.append(_threshold_line(metrics))
    return "\n".join(lines)


def _raised_nll_notice(metrics: dict[str, Any]) -> str:
    """One line saying that the temperatures made this split's NLL worse, and whether beyond noise."""
    low, high = metrics.get("nll_change_ci95") or (float("nan"), float("nan"))
    noise = ("beyond resampling noise" if np.isfinite(low) and low > 0
             else "within resampling noise, but no gain")
    return (f"  NOTICE: calibration raised this split's NLL ({metrics['nll_before']:.3f} -> {metrics['nll_after']:.3f} "
            f"nats, {noise}): the temperatures did not transfer; try chh calibrate --scope none or more "
            f"calibration images")


def _with_interval(metrics: dict[str, Any], key: str, digits: int = 2, key_ci: str | None = None) -> str:
    return f"{_number(metrics[key], digits)} {_interval(metrics.get(key_ci or f'{key}_ci95'), digits)}"


def _interval(bounds: list[float] | None, digits: int = 2, signed: bool = False) -> str:
    if bounds is None:
        return ""
    show = _signed if signed else _number
    return f"[{show(bounds[0], digits)}, {show(bounds[1], digits)}]"


def _signed(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:+.{digits}f}"


def _threshold_line(metrics: dict[str, Any]) -> str:
    """The held-out ERE threshold with its rates on this split, and the oracle beside it."""
    oracle = f"oracle on {metrics['split']}: {_number(metrics['ere_threshold_oracle_mm'])} mm"
    threshold = metrics["ere_threshold_mm"]
    if metrics.get("ere_threshold_refused"):
        return (f"  ERE threshold            none stored: {metrics['ere_threshold_num_outliers']} outliers on "
                f"{metrics['ere_threshold_split']} (see chh calibrate's warning); {oracle}")
    if threshold is None or not np.isfinite(threshold):
        return f"  ERE threshold            none chosen on held-out data (run chh calibrate); {oracle}"
    return (f"  ERE threshold            {threshold:.2f} mm (from {metrics['ere_threshold_split']}, "
            f"{metrics['ere_threshold_num_outliers']} outliers): "
            f"TPR {_number(metrics['ere_threshold_tpr'])}, FPR {_number(metrics['ere_threshold_fpr'])}; {oracle}")


def _number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"

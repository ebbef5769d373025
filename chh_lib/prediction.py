"""Apply a trained run to new images: ``chh predict`` and :func:`predict_images`.

No annotation is needed. Each image is read, padded and resized exactly as
:class:`chh_lib.data.dataset.LandmarkDataset` does for evaluation, run through the
network (with the run's temperatures when it is calibrated), decoded, and mapped
back to the pixel grid of the ORIGINAL image:

    x = (x' + 0.5) / s_x - 0.5,   y = (y' + 0.5) / s_y - 0.5

(:meth:`chh_lib.data.dataset.ResizeGeometry.to_source_px`). The result is a table
with one row per (image, landmark); see :data:`TABLE_COLUMNS`.

An image that cannot be read (or whose network output is not finite) is skipped
with its reason when ``on_bad_image="skip"`` (what ``chh predict`` does, exiting
with status 1 at the end) and raises :class:`~chh_lib.errors.DataFormatError`
otherwise.

An image too small to predict meaningfully is still predicted, with one logged
warning naming the file and its size: one that must be enlarged more than
:data:`MAX_ENLARGEMENT` (2) times to fit the run's input, i.e. narrower than half
the input's width AND lower than half its height (with the ``cpu`` profile's
160 x 200 px input: under 80 px wide and under 100 px high; the paper's 640 x 800:
under 320 x 400). The network then sees interpolated pixels, not details.
"""
from __future__ import annotations

import glob
import io
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from chh_lib.config import RunConfig, load_config
from chh_lib.data.dataset import ResizeGeometry, pad_and_resize, resize_geometry
from chh_lib.data.formats import IMAGE_SUFFIXES, read_image
from chh_lib.devices import float32_logits, host_float64
from chh_lib.engine import LAST_CHECKPOINT, load_checkpoint, model_from_checkpoint
from chh_lib.errors import ChhError, ConfigError, DataFormatError
from chh_lib.files import save_npz_atomic, write_bytes_atomic, write_text_atomic
from chh_lib.heatmaps import (
    argmax_2d,
    mode_probability,
    quadratic_peak_2d,
    scale_logits,
    softmax_2d,
)
from chh_lib.landmarks import LandmarkSet
from chh_lib.metrics import expected_radial_error
from chh_lib.run_info import run_landmarks, run_pixel_size_mm

logger = logging.getLogger(__name__)

#: How a heatmap becomes a position: the paper's arg-max pixel, or the quadratic sub-pixel refinement.
DECODERS = ("argmax", "quadratic")
#: What to do with an image that cannot be read.
BAD_IMAGE_POLICIES = ("error", "skip")
#: Columns of the prediction table, one row per (image, landmark).
TABLE_COLUMNS = (
    "image", "landmark", "abbreviation", "x_px", "y_px", "x_mm", "y_mm",
    "mode_prob", "ere_px", "ere_mm", "ere_threshold_mm", "outlier_threshold_mm", "flagged",
)


@dataclass
class ImagePredictions:
    """What :func:`predict_images` produced.

    Attributes
    ----------
    table : DataFrame
        One row per (image, landmark), columns :data:`TABLE_COLUMNS`: ``image`` (the path
        as given), ``x_px``/``y_px`` in pixels of the original image (pixel centres at
        integer coordinates), ``x_mm``/``y_mm`` the same times the pixel spacing (NaN when
        none is known), ``mode_prob`` the probability of the heatmap's mode, ``ere_px``
        the Expected Radial Error in pixels of the original image and ``ere_mm`` in mm,
        ``ere_threshold_mm`` the run's held-out threshold, ``outlier_threshold_mm`` the
        radial error above which ``chh calibrate`` counted a prediction an outlier when it
        chose that threshold (``--outlier-mm``), and ``flagged`` whether the ERE reaches
        the threshold (missing when either is unknown).
    skipped : dict of str to str
        Image path -> why it was left out.
    seconds : float
        Wall-clock time of the whole call.
    decode : str
    calibrated : bool
        Whether the run's temperatures were applied.
    """

    table: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    decode: str = "argmax"
    calibrated: bool = False

    @property
    def num_images(self) -> int:
        """Images predicted (the skipped ones not counted)."""
        return int(self.table["image"].nunique()) if len(self.table) else 0


@dataclass
class _TrainedRun:
    """The parts of a run that prediction needs: no data set is read."""

    config: RunConfig
    model: torch.nn.Module
    landmarks: LandmarkSet
    temperatures: np.ndarray | None
    ere_threshold_mm: float
    pixel_size_mm: tuple[float, float] | None
    outlier_threshold_mm: float = float("nan")


def image_paths(images: str | Path | Iterable[str | Path]) -> list[Path]:
    """The image files named by a folder, a glob pattern, a file, or a list of any of these.

    Parameters
    ----------
    images : str, Path or iterable of them
        A folder contributes its files with an image suffix (:data:`IMAGE_SUFFIXES`,
        sorted by name, not recursive); a pattern with ``*``, ``?`` or ``[`` its matches
        (sorted); a file itself, whatever its suffix (so that a corrupt file is reported,
        not silently dropped).

    Raises
    ------
    DataFormatError
        When a named path does not exist, or nothing at all is found.
    """
    items = [images] if isinstance(images, (str, Path)) else list(images)
    found: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if any(character in text for character in "*?["):
            found.extend(sorted(Path(match) for match in glob.glob(text) if Path(match).is_file()))
        elif path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.exists():
            found.append(path)
        else:
            raise DataFormatError(f"{path}: no such image, folder or pattern")
    if not found:
        raise DataFormatError(f"no image found in {', '.join(map(str, items))} "
                              f"(suffixes {', '.join(IMAGE_SUFFIXES)})")
    return list(dict.fromkeys(found))


def load_trained_run(run_dir: Path) -> _TrainedRun:
    """The configuration, model, landmark names, temperatures and ERE threshold of ``run_dir``."""
    run_dir = Path(run_dir)
    config = load_config(run_dir / "config.yaml")
    checkpoint_path = run_dir / LAST_CHECKPOINT
    payload = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(payload, checkpoint_path)
    landmarks = run_landmarks(payload, run_dir)
    if landmarks.num_landmarks != payload["num_landmarks"]:
        raise ConfigError(f"{checkpoint_path}: {payload['num_landmarks']} heatmaps but "
                          f"{landmarks.num_landmarks} landmark names")
    temperatures = payload.get("temperatures")
    stored = payload.get("ere_threshold") or {}
    threshold = stored.get("ere_threshold_mm")
    outlier_mm = stored.get("outlier_threshold_mm")
    return _TrainedRun(
        config, model, landmarks,
        None if temperatures is None else np.asarray(temperatures, dtype=np.float64),
        float("nan") if threshold is None else float(threshold),
        run_pixel_size_mm(payload, run_dir),
        float("nan") if outlier_mm is None else float(outlier_mm),
    )


def check_outlier_cut(run_dir: Path, stored_mm: float, requested_mm: float | None) -> None:
    """Refuse an outlier cut other than the one the run's ERE threshold was chosen at.

    A flag means "ERE above the threshold that catches half of the held-out outliers at
    the cut ``stored_mm``"; at another cut it would need another threshold.

    Raises
    ------
    ConfigError
        When ``requested_mm`` is given, the run has a threshold, and the two cuts differ.
    """
    if requested_mm is None or not np.isfinite(stored_mm) or np.isclose(requested_mm, stored_mm):
        return
    raise ConfigError(
        f"{run_dir}: its ERE threshold was chosen at an outlier cut of {stored_mm:g} mm, not {requested_mm:g} mm; "
        f"run chh calibrate --run-dir {run_dir} --outlier-mm {requested_mm:g} first"
    )


def predict_images(
    run_dir: Path,
    images: str | Path | Iterable[str | Path],
    pixel_size_mm: float | Sequence[float] | None = None,
    decode: str = "argmax",
    device: torch.device | None = None,
    batch_size: int | None = None,
    on_bad_image: str = "error",
    heatmaps_dir: Path | None = None,
    overlay_dir: Path | None = None,
    progress: bool = False,
    outlier_threshold_mm: float | None = None,
) -> ImagePredictions:
    """Predict every landmark on each image with the last checkpoint of ``run_dir``.

    Parameters
    ----------
    run_dir : Path
        A run directory of ``chh train`` or ``chh pretrained`` (calibrated or not).
    images : str, Path or iterable
        See :func:`image_paths`.
    pixel_size_mm : float or (float, float), optional
        Spacing of the images in mm per pixel, (x, y). Default: the spacing stored with
        the run (the training images' spacing, when they all share one), else none: the
        mm columns are then NaN and nothing is flagged.
    decode : str
        ``argmax`` (the paper's) or ``quadratic`` (:func:`chh_lib.heatmaps.quadratic_peak_2d`).
    device : torch.device, optional
        Default CPU.
    batch_size : int, optional
        Images per forward pass (default: the run's ``eval.batch_size``).
    on_bad_image : str
        ``error`` (raise on the first unreadable image) or ``skip`` (list it in
        :attr:`ImagePredictions.skipped` and go on).
    heatmaps_dir : Path, optional
        Also write ``<stem>.npz`` per image (:func:`output_stems` when stems repeat): the temperature-scaled heatmaps (K, H, W)
        float16 on the network grid, with ``scale`` (s_x, s_y), ``source_size`` (w, h)
        and the landmark abbreviations.
    overlay_dir : Path, optional
        Also write ``<stem>.png`` per image: the image with each prediction and a circle
        of radius ERE (red when flagged).
    progress : bool
        A tqdm bar over the images.
    outlier_threshold_mm : float, optional
        The outlier cut the flags should mean (``chh predict --outlier-mm``); refused
        when it differs from the cut the run's ERE threshold was chosen at
        (:func:`check_outlier_cut`). Default: the run's.

    Returns
    -------
    ImagePredictions

    Raises
    ------
    DataFormatError
        An unreadable image under ``on_bad_image="error"``, or no image found.
    ConfigError
        An unknown ``decode`` or ``on_bad_image``, or another outlier cut than the run's.
    """
    start = time.perf_counter()
    if decode not in DECODERS:
        raise ConfigError(f"unknown decoding {decode!r}; choose one of {', '.join(DECODERS)}")
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"unknown bad-image policy {on_bad_image!r}; choose one of {', '.join(BAD_IMAGE_POLICIES)}")
    paths = image_paths(images)
    for folder, option in ((heatmaps_dir, "heatmaps"), (overlay_dir, "overlay")):
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise ConfigError(f"{folder}: not a folder (the {option} folder must be a folder or not exist yet)")
    stems = output_stems(paths)
    run = load_trained_run(run_dir)
    check_outlier_cut(run_dir, run.outlier_threshold_mm, outlier_threshold_mm)
    spacing = _spacing(pixel_size_mm) if pixel_size_mm is not None else run.pixel_size_mm
    device = device or torch.device("cpu")
    run.model.eval().to(device)
    chunk = int(batch_size or run.config.eval.batch_size)
    rows: list[pd.DataFrame] = []
    skipped: dict[str, str] = {}
    with tqdm(total=len(paths), unit="image", disable=not progress, desc="predict") as bar:
        for first in range(0, len(paths), chunk):
            batch_paths = paths[first:first + chunk]
            loaded = [_load(path, run.config.data.image_size) for path in batch_paths]
            for path, item in zip(batch_paths, loaded):
                if isinstance(item, str):
                    _refuse_or_skip(path, item, on_bad_image, skipped)
            good = [(path, item) for path, item in zip(batch_paths, loaded) if not isinstance(item, str)]
            if good:
                rows.extend(_predict_batch(run, good, spacing, decode, device, on_bad_image, skipped,
                                           heatmaps_dir, overlay_dir, stems))
            bar.update(len(batch_paths))
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(TABLE_COLUMNS))
    return ImagePredictions(table, skipped, time.perf_counter() - start, decode, run.temperatures is not None)


def predict(run_dir: Path, images: str | Path | Iterable[str | Path], **options: Any) -> pd.DataFrame:
    """The prediction table of :func:`predict_images` (same arguments), as ``chh_lib.predict``.

    Skipped images (``on_bad_image="skip"``) are listed in ``table.attrs["skipped"]``
    (path -> reason) and logged as warnings.
    """
    result = predict_images(run_dir, images, **options)
    for path, reason in result.skipped.items():
        logger.warning("skipped %s: %s", path, reason)
    result.table.attrs["skipped"] = dict(result.skipped)
    return result.table


def source_positions_px(pred_px: np.ndarray, geometries: Sequence[ResizeGeometry]) -> np.ndarray:
    """Map (N, K, 2) positions on the network grid to each original image's pixels."""
    return np.stack([geometry.to_source_px(points) for geometry, points in zip(geometries, pred_px)])


def prediction_table(
    image_names: Sequence[str],
    landmarks: LandmarkSet,
    position_px: np.ndarray,
    pixel_size_mm: np.ndarray | None,
    mode_prob: np.ndarray,
    ere_px: np.ndarray | None,
    ere_mm: np.ndarray,
    ere_threshold_mm: float,
    outlier_threshold_mm: float = float("nan"),
) -> pd.DataFrame:
    """The long table of :data:`TABLE_COLUMNS` from (N, K) arrays (positions (N, K, 2), original pixels).

    ``pixel_size_mm`` is (N, 2) mm per original pixel, or None when unknown. Without
    ``ere_px`` it is ``ere_mm`` over the spacing where x and y spacing agree (NaN elsewhere).
    """
    count, num_landmarks = mode_prob.shape
    spacing = np.full((count, 2), np.nan) if pixel_size_mm is None else np.asarray(pixel_size_mm, dtype=np.float64)
    if ere_px is None:
        isotropic = np.isclose(spacing[:, 0], spacing[:, 1], rtol=1e-9, atol=0.0)
        ere_px = np.where(isotropic[:, None], ere_mm / spacing[:, :1], np.nan)
    position_mm = position_px * spacing[:, None, :]
    flagged = pd.array(np.where(np.isfinite(ere_mm) & np.isfinite(ere_threshold_mm), ere_mm >= ere_threshold_mm,
                                pd.NA).ravel(), dtype="boolean")
    return pd.DataFrame({
        "image": np.repeat(np.asarray(image_names, dtype=object), num_landmarks),
        "landmark": np.tile(np.asarray(landmarks.names, dtype=object), count),
        "abbreviation": np.tile(np.asarray(landmarks.abbreviations, dtype=object), count),
        "x_px": position_px[..., 0].ravel(),
        "y_px": position_px[..., 1].ravel(),
        "x_mm": position_mm[..., 0].ravel(),
        "y_mm": position_mm[..., 1].ravel(),
        "mode_prob": mode_prob.ravel(),
        "ere_px": ere_px.ravel(),
        "ere_mm": ere_mm.ravel(),
        "ere_threshold_mm": np.full(count * num_landmarks, ere_threshold_mm),
        "outlier_threshold_mm": np.full(count * num_landmarks, outlier_threshold_mm),
        "flagged": flagged,
    })


def write_prediction_csv(table: pd.DataFrame, path: Path) -> Path:
    """Write a prediction table atomically (10 significant digits)."""
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, float_format="%.10g")
    write_text_atomic(Path(path), buffer.getvalue())
    return Path(path)


def _spacing(value: float | Sequence[float]) -> tuple[float, float]:
    pair = (float(value), float(value)) if np.isscalar(value) else tuple(float(v) for v in value)  # type: ignore[arg-type]
    if len(pair) != 2 or not all(np.isfinite(v) and v > 0 for v in pair):
        raise ConfigError(f"pixel spacing must be one or two positive numbers (mm per pixel), got {value!r}")
    return pair  # type: ignore[return-value]


#: An image enlarged more than this many times to fit the network's input draws a warning.
MAX_ENLARGEMENT = 2.0


def _load(path: Path, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, ResizeGeometry] | str:
    """(original image, resized image, geometry), or why the image cannot be used.

    Warns (once per image, naming the file and its size) when the image is enlarged
    more than :data:`MAX_ENLARGEMENT` times to fit ``image_size``.
    """
    try:
        image = read_image(path)
    except DataFormatError as error:
        return str(error).removeprefix(f"{path}: ")
    except OSError as error:
        return f"{error.strerror or error}"
    geometry = resize_geometry((image.shape[1], image.shape[0]), image_size)
    enlargement = float(np.max(geometry.scale))
    if enlargement > MAX_ENLARGEMENT:
        logger.warning("%s: %d x %d px is too small to predict meaningfully: it is enlarged %.3g times to the "
                       "network's %d x %d input (more than %g times), so the network sees interpolated pixels",
                       path, image.shape[1], image.shape[0], enlargement, *image_size, MAX_ENLARGEMENT)
    return image, pad_and_resize(image, geometry), geometry


def output_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """File-name stems for each image's overlay and heatmap files, unique within one call.

    An image's own stem when no other image shares it; otherwise its folder's name, its
    stem and its suffix (``a/x.png`` -> ``a_x_png``), numbered if even that repeats.
    """
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for path in paths:
        name = path.stem if counts[path.stem] == 1 else f"{path.parent.name}_{path.stem}_{path.suffix.lstrip('.')}"
        candidate, number = name, 2
        while candidate in taken:
            candidate, number = f"{name}_{number}", number + 1
        taken.add(candidate)
        names[path] = candidate
    return names


def _unit_range(image: np.ndarray) -> np.ndarray:
    """An 8- or 16-bit image as float32 in [0, 1], as :class:`~chh_lib.data.dataset.LandmarkDataset` scales it."""
    return image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 65535.0)


def _refuse_or_skip(path: Path, reason: str, policy: str, skipped: dict[str, str]) -> None:
    if policy == "error":
        raise DataFormatError(f"{path}: {reason}")
    skipped[str(path)] = reason


@torch.no_grad()
def _predict_batch(
    run: _TrainedRun,
    good: list[tuple[Path, tuple[np.ndarray, np.ndarray, ResizeGeometry]]],
    spacing: tuple[float, float] | None,
    decode: str,
    device: torch.device,
    on_bad_image: str,
    skipped: dict[str, str],
    heatmaps_dir: Path | None,
    overlay_dir: Path | None,
    stems: dict[Path, str],
) -> list[pd.DataFrame]:
    """Predict one batch of loaded images; an image with non-finite logits is refused or skipped."""
    images = np.stack([_unit_range(resized) for _, (_, resized, _) in good])  # each by its own bit depth
    tensor = torch.from_numpy(images)[:, None].to(device)
    logits = float32_logits(run.model, tensor)  # (B, K, H, W)
    finite = torch.isfinite(logits).flatten(1).all(dim=1).cpu().numpy()
    for (path, _), ok in zip(good, finite):
        if not ok:
            _refuse_or_skip(path, "the network's output holds NaN or infinity for this image", on_bad_image, skipped)
    keep = np.flatnonzero(finite)
    if keep.size == 0:
        return []
    logits = logits[torch.as_tensor(keep, device=logits.device)]
    good = [good[i] for i in keep]
    geometries = [geometry for _, (_, _, geometry) in good]
    temperature = torch.ones(logits.shape[1]) if run.temperatures is None else torch.as_tensor(run.temperatures)
    scaled = scale_logits(logits, temperature.float().to(device))
    heatmaps = softmax_2d(scaled)
    grid_px = host_float64(argmax_2d(logits) if decode == "argmax" else quadratic_peak_2d(logits))
    source_px_per_grid_px = torch.as_tensor(np.stack([1.0 / g.scale for g in geometries]), dtype=torch.float32)
    ere_px = host_float64(expected_radial_error(heatmaps, source_px_per_grid_px.to(device), run.config.eval.ere_cutoff))
    if spacing is None:
        ere_mm, spacing_rows = np.full_like(ere_px, np.nan), None
    else:
        grid_mm = source_px_per_grid_px * torch.tensor(spacing, dtype=torch.float32)
        ere_mm = host_float64(expected_radial_error(heatmaps, grid_mm.to(device), run.config.eval.ere_cutoff))
        spacing_rows = np.tile(np.asarray(spacing, dtype=np.float64), (len(good), 1))
    table = prediction_table(
        [str(path) for path, _ in good], run.landmarks, source_positions_px(grid_px, geometries), spacing_rows,
        host_float64(mode_probability(scaled)), ere_px, ere_mm, run.ere_threshold_mm, run.outlier_threshold_mm,
    )
    if heatmaps_dir is not None:
        _write_heatmaps(heatmaps_dir, good, host_float64(heatmaps), run.landmarks, stems)
    if overlay_dir is not None:
        _write_overlays(overlay_dir, good, table, len(run.landmarks.names), stems)
    return [table]


def _write_heatmaps(folder: Path, good: list, heatmaps: np.ndarray, landmarks: LandmarkSet,
                    stems: dict[Path, str]) -> None:
    for (path, (_, _, geometry)), maps in zip(good, heatmaps):
        save_npz_atomic(Path(folder) / f"{stems[path]}.npz", heatmaps=maps.astype(np.float16),
                        scale=geometry.scale, source_size=np.asarray(geometry.source_size),
                        abbreviations=np.asarray(landmarks.abbreviations))


#: Longest side of an overlay PNG in pixels (larger images are shrunk to keep files small).
OVERLAY_MAX_SIDE_PX = 1000


def overlay_image(image: np.ndarray, rows: pd.DataFrame) -> np.ndarray:
    """An 8-bit BGR picture of ``image`` with each row's prediction and its ERE circle.

    Parameters
    ----------
    image : ndarray, shape (H, W), uint8 or uint16
    rows : DataFrame
        The image's rows of a prediction table (``x_px``, ``y_px``, ``ere_px``, ``flagged``,
        ``abbreviation``).

    Returns
    -------
    ndarray, shape (h, w, 3), uint8
        Shrunk so that its longer side is at most :data:`OVERLAY_MAX_SIDE_PX`. Green: a
        prediction whose ERE is at most the threshold (or unflagged); red: flagged.
    """
    grey = image if image.dtype == np.uint8 else (image // 257).astype(np.uint8)
    factor = min(1.0, OVERLAY_MAX_SIDE_PX / max(grey.shape))
    if factor < 1.0:
        grey = cv2.resize(grey, (round(grey.shape[1] * factor), round(grey.shape[0] * factor)),
                          interpolation=cv2.INTER_AREA)
    picture = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    for row in rows.itertuples():
        centre = ((row.x_px + 0.5) * factor - 0.5, (row.y_px + 0.5) * factor - 0.5)
        flagged = not pd.isna(row.flagged) and bool(row.flagged)
        colour = (0, 0, 255) if flagged else (0, 200, 0)
        point = (round(centre[0]), round(centre[1]))
        cv2.drawMarker(picture, point, colour, cv2.MARKER_CROSS, 9, 1)
        if np.isfinite(row.ere_px):
            cv2.circle(picture, point, max(1, round(row.ere_px * factor)), colour, 1, cv2.LINE_AA)
        cv2.putText(picture, str(row.abbreviation), (point[0] + 5, point[1] - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    colour, 1, cv2.LINE_AA)
    return picture


def _write_overlays(folder: Path, good: list, table: pd.DataFrame, num_landmarks: int,
                    stems: dict[Path, str]) -> None:
    for number, (path, (image, _, _)) in enumerate(good):
        rows = table.iloc[number * num_landmarks:(number + 1) * num_landmarks]
        ok, encoded = cv2.imencode(".png", overlay_image(image, rows))
        if not ok:
            raise ChhError(f"{path}: could not encode its overlay as PNG")
        write_bytes_atomic(Path(folder) / f"{stems[path]}.png", encoded.tobytes(), durable=False)

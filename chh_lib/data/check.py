"""`chh data check`: validate a data set without training.

Reads the data set with a collecting :class:`~chh_lib.data.formats.ProblemLog`,
decodes every image, and reports:

* problems that would make training wrong (exit status 1): missing or
  unreadable files, malformed annotations (wrong landmark count, non-numeric
  or non-finite values, duplicated or unknown labels), annotators disagreeing
  on the image list, an empty training split;
* what the descriptor's policies decided (listed, exit status 0): images left
  out under ``on_bad_image: skip`` and labels repaired under ``on_duplicate_label``;
* warnings that do not (listed, exit status 0): landmarks outside their image
  (they are treated as missing), annotation files without an image, missing
  landmarks, inconsistent or anisotropic pixel spacing;
* counts per split and the per-landmark annotator disagreement: the mean
  distance in mm and the along/across ratio
  (:func:`chh_lib.data.disagreement.along_across_sd`), along the generator's
  contour tangents for a phantom, along the principal axis of the differences
  otherwise (real data carries no contours).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chh_lib.data.disagreement import along_across_sd, annotator_differences_mm
from chh_lib.data.formats import (
    ImageRecord,
    LandmarkData,
    ProblemLog,
    read_image,
    read_landmark_data,
)
from chh_lib.data.phantom_dataset import phantom_tangents_mm
from chh_lib.errors import DataFormatError

#: Relative spread of pixel spacing across images above which a warning is given.
SPACING_SPREAD_WARNING = 0.10
#: Relative difference between x and y spacing above which a warning is given.
ANISOTROPY_WARNING = 0.01


@dataclass
class CheckReport:
    """What :func:`check_data` found.

    Attributes
    ----------
    split_counts : dict
        Split name -> number of readable, annotated images.
    annotator_distance_mm : ndarray, shape (K,) or None
        Mean distance between the first two annotators per landmark (None with one annotator).
    along_across_ratio : ndarray, shape (K,) or None
        SD of their difference along the contour tangent over the SD across it (None with one annotator).
    tangent_source : str or None
        ``'phantom generator'`` or ``'principal axis'``: where the tangent of the ratio came from.
    """

    root: Path
    format: str | None = None
    protocol: str | None = None
    landmark_names: tuple[str, ...] = ()
    annotators: tuple[str, ...] = ()
    split_counts: dict[str, int] = field(default_factory=dict)
    missing_landmarks: int = 0
    annotator_distance_mm: np.ndarray | None = None
    along_across_ratio: np.ndarray | None = None
    tangent_source: str | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    policies: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing would make training wrong."""
        return not self.problems


def check_data(root: Path, protocol: str | None = None) -> CheckReport:
    """Validate the data set at ``root``; never raises for problems in the data, only reports them."""
    report = CheckReport(Path(root))
    log = ProblemLog(collect=True)
    try:
        data = read_landmark_data(root, protocol=protocol, log=log)
    except DataFormatError as error:
        report.problems.append(str(error))
        return report
    report.problems.extend(log.problems)
    report.warnings.extend(log.warnings)
    report.policies, report.skipped, report.repairs = dict(data.policies), list(data.skipped), list(data.repairs)
    report.format, report.protocol = data.format, data.protocol
    report.landmark_names, report.annotators = data.landmarks.names, data.annotators
    records = _unique_records(data)
    sizes = {r.image_id: _check_image(r, data, report) for r in records}
    readable = {image_id for image_id, size in sizes.items() if size is not None}
    report.split_counts = {
        name: sum(r.image_id in readable for r in split) for name, split in data.splits.items()
    }
    if report.split_counts.get("train", 0) == 0:
        report.problems.append(f"{data.root}: the 'train' split has no usable image")
    _check_spacing(records, report)
    kept = [_outside_as_missing(r, sizes[r.image_id]) for r in records if r.image_id in readable]
    report.missing_landmarks = int(sum(np.isnan(r.annotations_px).any(axis=(0, 2)).sum() for r in kept))
    if report.missing_landmarks:
        report.warnings.append(f"{report.missing_landmarks} landmarks are missing in at least one annotation")
    report.annotator_distance_mm = _annotator_distance_mm(kept, data.landmarks.num_landmarks)
    if report.annotator_distance_mm is not None:
        tangents = phantom_tangents_mm(data, kept)
        report.along_across_ratio = along_across_sd(annotator_differences_mm(kept), tangents).ratio
        report.tangent_source = "principal axis" if tangents is None else "phantom generator"
    return report


def _unique_records(data: LandmarkData) -> list[ImageRecord]:
    seen: dict[str, ImageRecord] = {}
    for split in data.splits.values():
        for record in split:
            seen.setdefault(record.image_id, record)
    return list(seen.values())


def _outside(points_px: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Which (..., 2) points lie outside an image of ``size`` (w, h) pixels: bool array of shape (...)."""
    width, height = size
    return (points_px[..., 0] < -0.5) | (points_px[..., 0] > width - 0.5) | (points_px[..., 1] < -0.5) | (
        points_px[..., 1] > height - 0.5
    )


def _outside_as_missing(record: ImageRecord, size: tuple[int, int]) -> ImageRecord:
    """The record with its points outside the image set to NaN, as training treats them."""
    points = record.annotations_px.copy()
    points[_outside(points, size)] = np.nan
    return dataclasses.replace(record, annotations_px=points)


def _check_image(record: ImageRecord, data: LandmarkData, report: CheckReport) -> tuple[int, int] | None:
    """Decode the image and report its landmark problems; its (width, height), or None when unreadable."""
    try:
        image = read_image(record.image_path)
    except DataFormatError as error:
        report.problems.append(str(error))
        return None
    height, width = image.shape
    points = record.annotations_px  # (A, K, 2)
    outside = _outside(points, (width, height))
    if (outside | np.isnan(points).any(axis=-1)).all():
        report.problems.append(
            f"{record.image_path}: no landmark lies inside the {width}x{height} image (all "
            f"{points.shape[1]} are missing or outside it); training leaves the image out"
        )
        return width, height
    for annotator, landmark in zip(*np.nonzero(outside)):
        x, y = points[annotator, landmark]
        report.warnings.append(
            f"{record.image_path}: landmark {data.landmarks.names[landmark]!r} of annotator "
            f"{data.annotators[annotator]!r} at ({x:.1f}, {y:.1f}) lies outside the {width}x{height} image "
            "(treated as missing)"
        )
    return width, height


def _check_spacing(records: list[ImageRecord], report: CheckReport) -> None:
    if not records:
        return
    spacing = np.array([r.pixel_size_mm for r in records])  # (N, 2)
    spread = (spacing.max(axis=0) - spacing.min(axis=0)) / spacing.min(axis=0)
    if (spread > SPACING_SPREAD_WARNING).any():
        report.warnings.append(
            f"pixel spacing varies across images: x {spacing[:, 0].min():.4g}-{spacing[:, 0].max():.4g} mm, "
            f"y {spacing[:, 1].min():.4g}-{spacing[:, 1].max():.4g} mm"
        )
    anisotropic = np.abs(spacing[:, 0] - spacing[:, 1]) / spacing.min(axis=1) > ANISOTROPY_WARNING
    if anisotropic.any():
        report.warnings.append(f"{int(anisotropic.sum())} images have different x and y pixel spacing")


def _annotator_distance_mm(records: list[ImageRecord], num_landmarks: int) -> np.ndarray | None:
    if not records or records[0].annotations_px.shape[0] < 2:
        return None
    distances = np.array([
        np.hypot(*((r.annotations_px[0] - r.annotations_px[1]) * np.asarray(r.pixel_size_mm)).T)
        for r in records
    ])  # (N, K)
    with np.errstate(invalid="ignore"):
        return np.array([np.nanmean(distances[:, k]) if np.isfinite(distances[:, k]).any() else np.nan
                         for k in range(num_landmarks)])


def format_report(report: CheckReport, max_lines: int = 30) -> str:
    """Plain-text report for the terminal."""
    if report.format is None:
        lines = [f"data set {report.root}: could not be read"]
    else:
        lines = [f"data set {report.root}: format {report.format}"
                 + (f", protocol {report.protocol}" if report.protocol else "")]
    if report.split_counts:
        lines.append("images per split: " + ", ".join(f"{k} {v}" for k, v in report.split_counts.items()))
    if report.landmark_names:
        lines.append(f"{len(report.landmark_names)} landmarks, annotators: {', '.join(report.annotators)}")
    if report.policies:
        lines.append("policies: " + ", ".join(f"{key} {value}" for key, value in report.policies.items()))
    if report.annotator_distance_mm is not None:
        ratios = report.along_across_ratio if report.along_across_ratio is not None else np.full(
            len(report.landmark_names), np.nan)
        lines.append(f"{'landmark':<28} {'annotator distance (mm)':>24} {'SD along/across':>16}")
        for name, distance, ratio in zip(report.landmark_names, report.annotator_distance_mm, ratios):
            lines.append(f"{name:<28} {distance:>24.2f} {'-' if np.isnan(ratio) else f'{ratio:.1f}':>16}")
        if report.tangent_source:
            lines.append(f"(along = the {report.tangent_source}'s direction at each landmark)")
    sections = (
        ("problems", report.problems),
        ("images skipped (on_bad_image: skip)", report.skipped),
        (f"labels repaired (on_duplicate_label: {report.policies.get('on_duplicate_label')})", report.repairs),
        ("warnings", report.warnings),
    )
    for title, items in sections:
        if items:
            lines.append(f"{len(items)} {title}:")
            lines.extend(f"  - {item}" for item in items[:max_lines])
            if len(items) > max_lines:
                lines.append(f"  ... and {len(items) - max_lines} more")
    lines.append("OK: no problem that would make training wrong" if report.ok else "NOT OK: fix the problems above")
    return "\n".join(lines)

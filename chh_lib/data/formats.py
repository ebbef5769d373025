"""Readers and writers for landmark data sets on disk.

Three formats, chosen by the ``format`` key of ``ROOT/dataset.yaml`` (a data set
without a descriptor is read as ISBI 2015 with its built-in defaults):

``isbi2015`` (Wang et al. 2016)::

    ROOT/RawImage/{TrainingData,Test1Data,Test2Data}/NNN.bmp
    ROOT/AnnotationsByMD/{400_senior,400_junior}/NNN.txt    # K lines "x,y", then extra lines

``labelme``: a folder of images and, per annotator, a folder of labelme JSON files
(``<image stem>.json``, possibly the image folder itself) whose ``point`` shapes
carry the landmark labels. A file is paired with its image by file stem; its
``imagePath`` is only a hint (``image_path: by_name``, the default: a different
name there is one summary warning per data set) unless ``image_path: strict``
makes it a problem. ``imageWidth``/``imageHeight`` must match the image;
``imageData`` is never decoded.

``csv``: a folder of images and one CSV file with a row per image (and annotator):
``image``, optional ``annotator``, then ``<label>_x``, ``<label>_y`` per landmark.

Descriptor keys (all optional for ISBI 2015)::

    format: isbi2015 | labelme | csv
    landmarks: [name, ...]            # channel order; default: the 19 ISBI landmarks
    abbreviations: [abbr, ...]
    labels: {label in files: landmark name}   # default: names and abbreviations
    pixel_size_mm: 0.1 | [x, y] | {default: [x, y], per_image: {image name: [x, y]}}
    images: images                    # labelme, csv: the image folder
    annotators: {senior: labelme/senior, junior: labelme/junior}   # labelme: folders
    image_path: by_name | strict      # labelme: how 'imagePath' is checked (default by_name)
    on_duplicate_label: error | first | mean | missing
                                      # labelme: a label placed twice in one file (default error)
    on_bad_image: error | skip        # an image that cannot be used (default error)
    annotations: annotations.csv      # csv: the file
    splits: {train: [a.png, ...], test: [...]}          # explicit lists, or
    splits: {fractions: {train: 0.7, calibration: 0.15, test: 0.15}, seed: 0}
                                      # default for labelme and csv: 0.7 / 0.1 / 0.2, seed 0
    protocol: clean | paper           # isbi2015 only
    calibration_fraction: 0.2         # isbi2015 clean protocol

ISBI protocols: ``clean`` (default) holds out a seeded ``calibration_fraction`` of
TrainingData as ``calibration`` and trains on the rest, leaving ``test``
(Test1Data) and ``test2`` (Test2Data) untouched; ``paper`` reproduces the
authors' use: ``train`` = TrainingData, ``calibration`` = first half of
Test1Data, ``selection`` = its second half, ``test`` = Test1Data (which then
overlaps calibration, as in the authors' code), ``test2`` = Test2Data.

Ground truth is the mean of the annotators; every annotator is kept. A landmark
an annotator did not mark is NaN. Problems are raised as :class:`DataFormatError`
naming the file; with a collecting :class:`ProblemLog`, per-image problems are
recorded and the image is skipped instead (the data checker uses this).

Two descriptor policies turn problems into listed decisions. ``on_duplicate_label``
repairs a labelme file that places one label more than once: ``first`` keeps the
first point, ``mean`` their mean, ``missing`` makes that landmark missing (each
repair is one line of :attr:`LandmarkData.repairs`). ``on_bad_image: skip`` leaves
out every image with a per-image problem (a missing or malformed annotation, an
image that does not decode: each image of a split is decoded once to find out) and
lists it in :attr:`LandmarkData.skipped`. ``error``, the default of both, stops at
the first such problem. With explicit split lists, an image named in no split is
never read (neither it nor its annotations).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from chh_lib.config import load_yaml, save_yaml
from chh_lib.errors import DataFormatError
from chh_lib.files import write_bytes_atomic, write_text_atomic
from chh_lib.landmarks import ISBI_2015, ISBI_2015_PIXEL_SIZE_MM, LandmarkSet

ISBI_FOLDERS = ("TrainingData", "Test1Data", "Test2Data")
ISBI_ANNOTATORS = ("400_senior", "400_junior")
ISBI_PROTOCOLS = ("clean", "paper")
IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
DESCRIPTOR_NAME = "dataset.yaml"
FORMATS = ("isbi2015", "labelme", "csv")
#: Values of the descriptor's ``image_path``: pair labelme files by name, or insist on ``imagePath``.
IMAGE_PATH_RULES = ("by_name", "strict")
#: Values of the descriptor's ``on_duplicate_label``: what to do with a label placed twice in one labelme file.
DUPLICATE_LABEL_POLICIES = ("error", "first", "mean", "missing")
#: Values of the descriptor's ``on_bad_image``: stop at an image that cannot be used, or leave it out.
BAD_IMAGE_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class ImageRecord:
    """One annotated image as found on disk.

    Attributes
    ----------
    image_id : str
        Unique within the data set: ``<folder>/<stem>`` for ISBI, the image file name otherwise.
    image_path : Path
    annotations_px : ndarray, shape (A, K, 2)
        (x, y) in pixels of the original image, one block per annotator; NaN = missing.
    pixel_size_mm : (float, float)
        (x, y) spacing of the original image in mm.
    """

    image_id: str
    image_path: Path
    annotations_px: np.ndarray
    pixel_size_mm: tuple[float, float]


@dataclass(frozen=True)
class LandmarkData:
    """A whole data set: landmark names, annotators and the records of each split."""

    root: Path
    landmarks: LandmarkSet
    annotators: tuple[str, ...]
    splits: dict[str, list[ImageRecord]]
    descriptor: dict[str, Any]
    format: str = "isbi2015"
    protocol: str | None = None
    policies: dict[str, str] = field(default_factory=lambda: {"on_duplicate_label": "error", "on_bad_image": "error"})
    repairs: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    unlisted: tuple[str, ...] = ()

    def handling(self) -> dict[str, Any]:
        """The policies and what they did, for a run's manifest and log.

        Returns
        -------
        dict
            ``policies``; ``repaired`` and ``skipped`` (one message per item); ``not_in_any_split``
            (how many images explicit split lists leave out, never read).
        """
        return {"policies": dict(self.policies), "repaired": list(self.repairs), "skipped": list(self.skipped),
                "not_in_any_split": len(self.unlisted)}

    def split(self, name: str) -> list[ImageRecord]:
        """Records of the split ``name``; an unknown or empty split raises :class:`DataFormatError`."""
        if name not in self.splits:
            raise DataFormatError(
                f"{self.root}: no split named {name!r}; available: {', '.join(self.splits)}"
            )
        if not self.splits[name]:
            raise DataFormatError(f"{self.root}: split {name!r} is empty")
        return self.splits[name]


@dataclass
class ProblemLog:
    """Where readers send what they find wrong.

    ``report`` is for per-image problems that would make training wrong: under the
    ``on_bad_image: skip`` policy (``skip_bad_images``) recorded in ``skipped`` while
    the reader leaves the image out; otherwise raised at once as
    :class:`DataFormatError`, or, when ``collect`` is set, recorded in ``problems``
    while the reader skips the image. ``repair`` records a change made under the
    ``on_duplicate_label`` policy. ``warn`` is for harmless oddities (an annotation
    file without an image): always recorded in ``warnings``, never raised.
    """

    collect: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skip_bad_images: bool = False
    skipped: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    reported_names: set[str] = field(default_factory=set)

    def report(self, message: str, image_name: str | None = None) -> None:
        if image_name is not None:
            self.reported_names.add(image_name)
        if self.skip_bad_images:
            if image_name is not None and image_name not in message:
                message = f"{image_name} left out: {message}"
            self.skipped.append(message)
            return
        if not self.collect:
            raise DataFormatError(message)
        self.problems.append(message)

    def repair(self, message: str) -> None:
        self.repairs.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


# ----------------------------------------------------------------------------- images


def read_image(path: Path) -> np.ndarray:
    """Read an image file as a grey-scale array.

    Parameters
    ----------
    path : Path
        A .bmp, .png, .jpg or .tif file, 8- or 16-bit; RGB is converted to grey.

    Returns
    -------
    ndarray, shape (H, W)
        uint8 for 8-bit images, uint16 for 16-bit ones.

    Raises
    ------
    DataFormatError
        When the file is missing, empty, truncated or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: image file not found")
    data = path.read_bytes()
    if not data:
        raise DataFormatError(f"{path}: image file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode == "F":
                raise DataFormatError(f"{path}: a floating-point image (mode F) is not supported, since its "
                                      "intensity range is unknown; save it as 8- or 16-bit")
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.clip(np.asarray(image, dtype=np.int64), 0, 65535).astype(np.uint16)
            else:
                array = np.asarray(image.convert("L"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise DataFormatError(f"{path}: not a readable image (unknown or corrupt image format)") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise DataFormatError(f"{path}: not a readable image ({error})") from None
    if array.ndim != 2 or array.size == 0:
        raise DataFormatError(f"{path}: expected a 2D grey-scale image, got shape {array.shape}")
    return array


def image_size_of(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header, without decoding pixels."""
    try:
        with Image.open(path) as image:
            return image.size
    except (FileNotFoundError, UnidentifiedImageError, OSError) as error:
        raise DataFormatError(f"{path}: not a readable image ({error})") from None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# ----------------------------------------------------------------------------- ISBI 2015


def parse_isbi_annotation(text: str, num_landmarks: int, source: str) -> np.ndarray:
    """Parse the text of an ISBI annotation file.

    Parameters
    ----------
    text : str
        File content: ``num_landmarks`` lines ``x,y`` then any extra lines.
    num_landmarks : int
    source : str
        Name of the file, used in error messages.

    Returns
    -------
    ndarray, shape (K, 2), float64
        (x, y) in pixels.

    Raises
    ------
    DataFormatError
        Fewer than ``num_landmarks`` lines, a line that is not two numbers, or a
        non-finite value.
    """
    lines = text.splitlines()
    if len(lines) < num_landmarks:
        raise DataFormatError(
            f"{source}: expected at least {num_landmarks} 'x,y' lines, found {len(lines)}"
        )
    points = np.empty((num_landmarks, 2), dtype=np.float64)
    for row, line in enumerate(lines[:num_landmarks]):
        fields = line.replace(" ", "").replace("\t", "").split(",")
        if len(fields) != 2:
            raise DataFormatError(f"{source}: line {row + 1} is not 'x,y': {line[:60]!r}")
        try:
            x, y = float(fields[0]), float(fields[1])
        except ValueError:
            raise DataFormatError(f"{source}: line {row + 1} is not numeric: {line[:60]!r}") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise DataFormatError(f"{source}: line {row + 1} holds a non-finite value: {line[:60]!r}")
        points[row] = (x, y)
    return points


def read_isbi_annotation(path: Path, num_landmarks: int = 19) -> np.ndarray:
    """Read one ISBI annotation file; see :func:`parse_isbi_annotation`."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: annotation file not found")
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise DataFormatError(f"{path}: annotation file is not text") from None
    return parse_isbi_annotation(text, num_landmarks, str(path))


def format_isbi_annotation(points_px: np.ndarray, extra_lines: tuple[str, ...] = ()) -> str:
    """Text of an ISBI annotation file: ``x,y`` per landmark (2 decimals), then ``extra_lines``."""
    points_px = np.asarray(points_px, dtype=np.float64)
    if not np.all(np.isfinite(points_px)):
        raise DataFormatError("cannot write a non-finite landmark position to an ISBI annotation")
    lines = [f"{x:.2f},{y:.2f}" for x, y in points_px]
    return "\n".join([*lines, *extra_lines]) + "\n"


def write_isbi_case(
    root: Path,
    split_folder: str,
    stem: str,
    image: np.ndarray,
    annotations_px: np.ndarray,
    extra_lines: tuple[str, ...] = (),
    annotators: tuple[str, ...] = ISBI_ANNOTATORS,
) -> None:
    """Write one image (as .bmp) and its annotation files in the ISBI layout.

    Parameters
    ----------
    image : ndarray, shape (H, W), uint8
    annotations_px : ndarray, shape (A, K, 2)
        One (K, 2) block per annotator, written to ``AnnotationsByMD/<annotator>/<stem>.txt``.
    """
    root = Path(root)
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"expected a (H, W) uint8 image, got {image.dtype} {image.shape}")
    if len(annotations_px) != len(annotators):
        raise ValueError(f"{len(annotations_px)} annotation sets for {len(annotators)} annotators")
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="BMP")
    write_bytes_atomic(root / "RawImage" / split_folder / f"{stem}.bmp", buffer.getvalue())
    for annotator, points in zip(annotators, annotations_px):
        text = format_isbi_annotation(points, extra_lines)
        write_text_atomic(root / "AnnotationsByMD" / annotator / f"{stem}.txt", text)


def _read_isbi(root: Path, spec: _Spec, log: ProblemLog) -> dict[str, list[ImageRecord]]:
    """Records per ISBI folder (TrainingData, Test1Data, Test2Data)."""
    raw_dir = root / "RawImage"
    if not raw_dir.is_dir():
        raise DataFormatError(f"{raw_dir}: folder not found (expected the ISBI 2015 layout)")
    annotation_dirs = {a: root / "AnnotationsByMD" / a for a in spec.annotators}
    for folder in annotation_dirs.values():
        if not folder.is_dir():
            raise DataFormatError(f"{folder}: annotator folder not found")
    stems_by_annotator = {a: {p.stem for p in d.glob("*.txt")} for a, d in annotation_dirs.items()}
    by_folder: dict[str, list[ImageRecord]] = {}
    all_stems: set[str] = set()
    for folder in ISBI_FOLDERS:
        folder_path = raw_dir / folder
        if not folder_path.is_dir():
            raise DataFormatError(f"{folder_path}: split folder not found")
        records = []
        for image_path in _images_in(folder_path):
            all_stems.add(image_path.stem)
            missing = [str(annotation_dirs[a] / f"{image_path.stem}.txt") for a in spec.annotators
                       if image_path.stem not in stems_by_annotator[a]]
            if missing:
                log.report(f"{image_path}: no annotation by every annotator (missing {', '.join(missing)})")
                continue
            try:
                annotations = np.stack([
                    read_isbi_annotation(annotation_dirs[a] / f"{image_path.stem}.txt", spec.landmarks.num_landmarks)
                    for a in spec.annotators
                ])
                pixel_size_mm = spec.pixel_size_for(image_path.name)
            except DataFormatError as error:
                log.report(str(error))
                continue
            records.append(ImageRecord(f"{folder}/{image_path.stem}", image_path, annotations, pixel_size_mm))
        by_folder[folder] = records
    for annotator, stems in stems_by_annotator.items():
        for stem in sorted(stems - all_stems):
            log.warn(f"{annotation_dirs[annotator] / (stem + '.txt')}: annotation without an image")
    return by_folder


def _isbi_splits(by_folder: dict[str, list[ImageRecord]], protocol: str, spec: _Spec) -> dict[str, list[ImageRecord]]:
    training, test1, test2 = (by_folder[f] for f in ISBI_FOLDERS)
    if protocol == "paper":
        half = len(test1) // 2
        return {"train": training, "calibration": test1[:half], "selection": test1[half:],
                "test": test1, "test2": test2}
    order = np.random.default_rng(spec.seed).permutation(len(training))
    num_calibration = int(round(spec.calibration_fraction * len(training)))
    held_out = set(order[:num_calibration].tolist())
    return {
        "train": [r for i, r in enumerate(training) if i not in held_out],
        "calibration": [r for i, r in enumerate(training) if i in held_out],
        "test": test1,
        "test2": test2,
    }


# ----------------------------------------------------------------------------- labelme


def parse_labelme(
    text: str, label_to_index: dict[str, int], num_landmarks: int, source: str,
    image_name: str | None = None, image_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Parse one labelme JSON document into landmark positions, checking ``imagePath`` strictly.

    Parameters
    ----------
    text : str
        The JSON text. ``imageData`` (the embedded image) is never decoded.
    label_to_index : dict
        Label in the file -> landmark channel.
    num_landmarks : int
    source : str
        Name of the file, used in error messages.
    image_name, image_size : optional
        When given, ``imagePath`` (its file name, see :func:`labelme_image_name`)
        and ``imageWidth``/``imageHeight`` must agree with them. The data set
        reader checks ``imagePath`` by the descriptor's ``image_path`` rule instead.

    Returns
    -------
    ndarray, shape (K, 2)
        (x, y) in pixels; NaN for a landmark without a point.

    Raises
    ------
    DataFormatError
        Invalid JSON, a non-point shape, an unknown or duplicated label, a point
        that is not two finite numbers, or an image name or size that disagrees.
    """
    document = load_labelme_document(text, source)
    if image_name is not None:
        _check_labelme_image_name(document, image_name, source)
    if image_size is not None:
        _check_labelme_image_size(document, image_size, source)
    return labelme_points(document, label_to_index, num_landmarks, source)


def load_labelme_document(text: str, source: str) -> dict[str, Any]:
    """The JSON object of a labelme file, with a ``shapes`` list; ``imageData`` stays an undecoded string.

    Raises
    ------
    DataFormatError
        Invalid JSON, or no ``shapes`` list.
    """
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise DataFormatError(f"{source}: not valid JSON ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("shapes"), list):
        raise DataFormatError(f"{source}: not a labelme file (no 'shapes' list)")
    return document


def labelme_image_name(document: dict[str, Any]) -> str | None:
    """The file name that ``imagePath`` names, without its directory part.

    Windows and POSIX paths, relative or absolute, are handled alike:
    ``C:\\data\\img\\001.png``, ``../images/001.png`` and ``/data/001.png``
    all give ``001.png``.

    Returns
    -------
    str or None
        None when ``imagePath`` is absent, empty or not a string.
    """
    value = document.get("imagePath")
    if not isinstance(value, str) or not value.strip():
        return None
    return PureWindowsPath(value.strip()).name or None


def _check_labelme_image_name(document: dict[str, Any], image_name: str, source: str) -> None:
    named = labelme_image_name(document)
    if named is not None and named != image_name:
        raise DataFormatError(f"{source}: imagePath {named!r} does not match the image {image_name!r}")


def _check_labelme_image_size(document: dict[str, Any], image_size: tuple[int, int], source: str) -> None:
    declared = (document.get("imageWidth"), document.get("imageHeight"))
    if (declared[0] is None) != (declared[1] is None):
        raise DataFormatError(f"{source}: stores only one of imageWidth and imageHeight ({declared[0]}, "
                              f"{declared[1]}); give both or neither")
    if declared != (None, None) and tuple(declared) != tuple(image_size):
        raise DataFormatError(
            f"{source}: image size {declared[0]}x{declared[1]} in the file, "
            f"but the image is {image_size[0]}x{image_size[1]}"
        )


def labelme_points(
    document: dict[str, Any], label_to_index: dict[str, int], num_landmarks: int, source: str,
    on_duplicate: str = "error", repairs: list[str] | None = None,
) -> np.ndarray:
    """Landmark positions of the ``point`` shapes of a labelme document.

    Parameters
    ----------
    on_duplicate : str
        A label placed more than once: ``error`` (raise), ``first`` (keep its first
        point), ``mean`` (the mean of its points) or ``missing`` (NaN).
    repairs : list of str, optional
        Receives one message per repaired label (naming ``source``).

    Returns
    -------
    ndarray, shape (K, 2)
        (x, y) in pixels; NaN for a landmark without a point.

    Raises
    ------
    DataFormatError
        A non-point shape, an unknown label, a duplicated one under ``error``, or a
        point that is not two finite numbers.
    """
    if on_duplicate not in DUPLICATE_LABEL_POLICIES:
        raise ValueError(f"unknown duplicate-label policy {on_duplicate!r}")
    placed: dict[str, list[tuple[float, float]]] = {}
    for number, shape in enumerate(document["shapes"]):
        if not isinstance(shape, dict):
            raise DataFormatError(f"{source}: shape {number + 1} is not an object")
        label = str(shape.get("label"))
        if shape.get("shape_type", "point") != "point":
            raise DataFormatError(f"{source}: shape {label!r} is a {shape.get('shape_type')!r}, not a point")
        if label not in label_to_index:
            raise DataFormatError(f"{source}: label {label!r} is not a landmark of the descriptor")
        if label in placed and on_duplicate == "error":
            raise DataFormatError(f"{source}: label {label!r} appears more than once "
                                  "(set on_duplicate_label in dataset.yaml to first, mean or missing to repair it)")
        xy = _point_from(shape.get("points"))
        if xy is None:
            raise DataFormatError(f"{source}: point {label!r} is not one pair of finite numbers")
        placed.setdefault(label, []).append(xy)
    points = np.full((num_landmarks, 2), np.nan)
    for label, positions in placed.items():
        if len(positions) > 1:
            kept = {"first": "kept the first point", "mean": "used the mean of its points",
                    "missing": "treated the landmark as missing"}[on_duplicate]
            if repairs is not None:
                repairs.append(f"{source}: label {label!r} appears {len(positions)} times; {kept} "
                               f"(on_duplicate_label: {on_duplicate})")
            if on_duplicate == "missing":
                continue
        points[label_to_index[label]] = positions[0] if on_duplicate == "first" else np.mean(positions, axis=0)
    return points


def _point_from(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    try:
        x, y = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None


@dataclass(frozen=True)
class _OtherImagePath:
    """A labelme file whose ``imagePath`` names another file than the image it is paired with."""

    source: Path
    named: str
    image_name: str
    size_checked: bool


def _read_labelme_file(
    path: Path, image_path: Path, image_size: tuple[int, int], spec: _Spec, repairs: list[str],
) -> tuple[np.ndarray, _OtherImagePath | None]:
    """Points of one labelme file paired (by stem) with ``image_path``.

    Returns
    -------
    points : ndarray, shape (K, 2)
    other : _OtherImagePath or None
        Set when ``imagePath`` names another file and the rule is ``by_name``.

    Repairs made under the descriptor's ``on_duplicate_label`` are appended to ``repairs``.

    Raises
    ------
    DataFormatError
        A malformed file, a size that disagrees with the image, or (rule ``strict``)
        an ``imagePath`` that names another file.
    """
    source = str(path)
    document = load_labelme_document(_read_text(path), source)
    if spec.image_path == "strict":
        _check_labelme_image_name(document, image_path.name, source)
    named = labelme_image_name(document)
    other = None
    if named is not None and named != image_path.name:
        size_checked = document.get("imageWidth") is not None or document.get("imageHeight") is not None
        other = _OtherImagePath(path, named, image_path.name, size_checked)
    try:
        _check_labelme_image_size(document, image_size, source)
    except DataFormatError as error:
        hint = f"; its imagePath names {other.named!r}, not {other.image_name!r}" if other else ""
        raise DataFormatError(f"{error}{hint}") from None
    points = labelme_points(document, spec.label_to_index, spec.landmarks.num_landmarks, source,
                            spec.on_duplicate_label, repairs)
    return points, other


def _other_image_path_warning(others: list[_OtherImagePath]) -> str:
    """The one summary line for every labelme file paired by name despite its ``imagePath``."""
    count = len(others)
    first = others[0]
    noun = "file names" if count == 1 else "files name"
    unsized = sum(not other.size_checked for other in others)
    sizes = "image sizes agree" if not unsized else f"{unsized} of them store no image size to confirm it"
    return (
        f"{count} labelme {noun} another imagePath; paired by file name "
        f"(e.g. {first.source}: imagePath {first.named!r}, image {first.image_name!r}; {sizes})"
    )


def _read_labelme(root: Path, spec: _Spec, log: ProblemLog) -> dict[str, ImageRecord]:
    image_dir = spec.folder(root, "images", "images")
    folders = spec.annotator_folders(root)
    records: dict[str, ImageRecord] = {}
    images = _images_in(image_dir)
    stems = {p.stem for p in images}
    for annotator, folder in folders.items():
        for stray in sorted(p for p in folder.glob("*.json") if p.stem not in stems):
            log.warn(f"{stray}: annotation without an image in {image_dir}")
    others: list[_OtherImagePath] = []
    if spec.listed_images is not None:
        images = [p for p in images if p.name in spec.listed_images]  # the rest is never read
    for image_path in images:
        paths = {a: folders[a] / f"{image_path.stem}.json" for a in spec.annotators}
        missing = [f"{a} ({p})" for a, p in paths.items() if not p.is_file()]
        if missing:
            log.report(f"{image_path}: not annotated by every annotator; missing {', '.join(missing)}", image_path.name)
            continue
        try:
            size = image_size_of(image_path)
            repairs: list[str] = []
            read = [_read_labelme_file(p, image_path, size, spec, repairs) for p in paths.values()]
            pixel_size_mm = spec.pixel_size_for(image_path.name)
        except DataFormatError as error:
            log.report(str(error), image_path.name)
            continue
        for message in repairs:
            log.repair(message)
        others.extend(other for _, other in read if other is not None)
        annotations = np.stack([points for points, _ in read])
        records[image_path.name] = ImageRecord(image_path.name, image_path, annotations, pixel_size_mm)
    if others:
        log.warn(_other_image_path_warning(others))
    return records


# ----------------------------------------------------------------------------- CSV


def parse_landmark_csv(
    text: str, label_to_index: dict[str, int], num_landmarks: int, source: str
) -> dict[tuple[str, str], np.ndarray]:
    """Parse a landmark CSV: ``image``, optional ``annotator``, then ``<label>_x``, ``<label>_y``.

    Returns
    -------
    dict
        (image name, annotator) -> (K, 2) positions in pixels; an empty cell is NaN.
        Without an ``annotator`` column the annotator is ``"default"``.

    Raises
    ------
    DataFormatError
        A missing ``image`` column, a column that names no landmark, a landmark
        with only one of its columns, a non-numeric or non-finite value, a row
        of the wrong length, or a repeated (image, annotator) pair.
    """
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise DataFormatError(f"{source}: not a readable CSV file ({error})") from None
    if not rows:
        raise DataFormatError(f"{source}: empty CSV file")
    header = [h.strip() for h in rows[0]]
    if "image" not in header:
        raise DataFormatError(f"{source}: no 'image' column in the header")
    columns: dict[int, tuple[int, int]] = {}
    label_of: dict[int, str] = {}
    for column, name in enumerate(header):
        if name in ("image", "annotator"):
            continue
        label, _, axis = name.rpartition("_")
        if axis not in ("x", "y") or label not in label_to_index:
            raise DataFormatError(f"{source}: column {name!r} is not '<landmark label>_x' or '_y'")
        columns[column] = (label_to_index[label], 0 if axis == "x" else 1)
        label_of[label_to_index[label]] = label
    covered = {}
    for landmark, axis in columns.values():
        covered.setdefault(landmark, set()).add(axis)
    for landmark, axes in covered.items():
        if axes != {0, 1}:
            raise DataFormatError(f"{source}: landmark {label_of[landmark]!r} has an _x or _y column but not both")
    image_column = header.index("image")
    annotator_column = header.index("annotator") if "annotator" in header else None
    result: dict[tuple[str, str], np.ndarray] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataFormatError(f"{source}: line {line} has {len(row)} fields, the header {len(header)}")
        image = row[image_column].strip()
        annotator = row[annotator_column].strip() if annotator_column is not None else "default"
        if not image:
            raise DataFormatError(f"{source}: line {line} has no image name")
        if (image, annotator) in result:
            raise DataFormatError(f"{source}: line {line} repeats image {image!r} for annotator {annotator!r}")
        points = np.full((num_landmarks, 2), np.nan)
        for column, (landmark, axis) in columns.items():
            cell = row[column].strip()
            if not cell:
                continue
            try:
                value = float(cell)
            except ValueError:
                raise DataFormatError(f"{source}: line {line}, column {header[column]!r} is not numeric: {cell[:40]!r}") from None
            if not math.isfinite(value):
                raise DataFormatError(f"{source}: line {line}, column {header[column]!r} is not finite: {cell!r}")
            points[landmark, axis] = value
        half = np.isnan(points).any(axis=1) & ~np.isnan(points).all(axis=1)
        if half.any():
            label = label_of[int(np.argmax(half))]
            raise DataFormatError(f"{source}: line {line} gives only x or only y for landmark {label!r}")
        result[(image, annotator)] = points
    return result


def _read_csv(root: Path, spec: _Spec, log: ProblemLog) -> dict[str, ImageRecord]:
    image_dir = spec.folder(root, "images", "images")
    csv_path = root / str(spec.descriptor.get("annotations", "annotations.csv"))
    if not csv_path.is_file():
        raise DataFormatError(f"{csv_path}: annotation CSV not found")
    table = parse_landmark_csv(_read_text(csv_path), spec.label_to_index, spec.landmarks.num_landmarks,
                               str(csv_path))
    annotators = tuple(sorted({a for _, a in table}, key=lambda a: (a != "senior", a)))
    if "annotators" in spec.descriptor:
        annotators = spec.annotators
    spec.annotators = annotators
    names = sorted({image for image, _ in table})
    if spec.listed_images is not None:
        names = [name for name in names if name in spec.listed_images]  # the rest is never read
    records: dict[str, ImageRecord] = {}
    for name in names:
        image_path = image_dir / name
        missing = [a for a in annotators if (name, a) not in table]
        if missing:
            log.report(f"{csv_path}: image {name!r} has no row for annotator(s) {', '.join(missing)}", name)
            continue
        if not image_path.is_file():
            log.report(f"{image_path}: image named in {csv_path.name} not found", name)
            continue
        try:
            pixel_size_mm = spec.pixel_size_for(name)
        except DataFormatError as error:
            log.report(str(error), name)
            continue
        annotations = np.stack([table[(name, a)] for a in annotators])
        records[name] = ImageRecord(name, image_path, annotations, pixel_size_mm)
    for image_path in _images_in(image_dir):
        if image_path.name not in records and all((image_path.name, a) not in table for a in annotators):
            log.warn(f"{image_path}: image without a row in {csv_path.name}")
    return records


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise DataFormatError(f"{path}: not UTF-8 text") from None


# ----------------------------------------------------------------------------- descriptor


@dataclass
class _Spec:
    """The parsed descriptor."""

    descriptor: dict[str, Any]
    path: Path
    landmarks: LandmarkSet
    label_to_index: dict[str, int]
    annotators: tuple[str, ...]
    default_pixel_size_mm: tuple[float, float] | None
    per_image_pixel_size_mm: dict[str, tuple[float, float]]
    seed: int
    calibration_fraction: float
    image_path: str = "by_name"
    on_duplicate_label: str = "error"
    on_bad_image: str = "error"
    listed_images: set[str] | None = None

    def pixel_size_for(self, image_name: str) -> tuple[float, float]:
        if image_name in self.per_image_pixel_size_mm:
            return self.per_image_pixel_size_mm[image_name]
        if self.default_pixel_size_mm is None:
            raise DataFormatError(f"{self.path}: no pixel spacing for image {image_name!r} and no default")
        return self.default_pixel_size_mm

    def folder(self, root: Path, key: str, default: str) -> Path:
        folder = root / str(self.descriptor.get(key, default))
        if not folder.is_dir():
            raise DataFormatError(f"{folder}: folder named by {self.path.name} ('{key}') not found")
        return folder

    def annotator_folders(self, root: Path) -> dict[str, Path]:
        value = self.descriptor.get("annotators")
        if not isinstance(value, dict) or not value:
            raise DataFormatError(f"{self.path}: 'annotators' must map annotator names to folders")
        folders = {str(name): root / str(folder) for name, folder in value.items()}
        for name, folder in folders.items():
            if not folder.is_dir():
                raise DataFormatError(f"{folder}: folder of annotator {name!r} not found")
        return folders


def _parse_descriptor(descriptor: dict[str, Any], path: Path, fmt: str) -> _Spec:
    landmarks = _landmarks_from_descriptor(descriptor, path)
    label_to_index = {name: k for k, name in enumerate(landmarks.names)}
    label_to_index.update({abbr: k for k, abbr in enumerate(landmarks.abbreviations)})
    labels = descriptor.get("labels") or {}
    if not isinstance(labels, dict):
        raise DataFormatError(f"{path}: 'labels' must map labels in the files to landmark names")
    for label, name in labels.items():
        if name not in landmarks.names:
            raise DataFormatError(f"{path}: label {label!r} maps to {name!r}, which is not a landmark")
        label_to_index[str(label)] = landmarks.names.index(name)
    annotators: tuple[str, ...] = ISBI_ANNOTATORS
    value = descriptor.get("annotators")
    if isinstance(value, dict):
        annotators = tuple(str(a) for a in value)
    elif isinstance(value, list):
        annotators = tuple(str(a) for a in value)
    elif value is not None:
        raise DataFormatError(f"{path}: 'annotators' must be a list or a mapping")
    default_size, per_image = _pixel_sizes_from_descriptor(descriptor, path, fmt)
    fraction = descriptor.get("calibration_fraction", 0.2)
    if not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise DataFormatError(f"{path}: 'calibration_fraction' must lie in [0, 1), got {fraction!r}")
    return _Spec(descriptor, path, landmarks, label_to_index, annotators, default_size, per_image,
                 int(descriptor.get("seed", 0)), float(fraction), _image_path_rule(descriptor, path),
                 _policy(descriptor, path, "on_duplicate_label", DUPLICATE_LABEL_POLICIES),
                 _policy(descriptor, path, "on_bad_image", BAD_IMAGE_POLICIES), _listed_images(descriptor))


def _policy(descriptor: dict[str, Any], path: Path, key: str, choices: tuple[str, ...]) -> str:
    """The descriptor's value of a policy ``key`` (default ``error``), checked against ``choices``."""
    value = descriptor.get(key, "error")
    if not isinstance(value, str) or value not in choices:
        raise DataFormatError(f"{path}: '{key}' must be one of {', '.join(choices)}, got {value!r}")
    return value


def _listed_images(descriptor: dict[str, Any]) -> set[str] | None:
    """The image names of explicit split lists, or None when the splits are fractions (every image used)."""
    splits = descriptor.get("splits")
    if not isinstance(splits, dict) or "fractions" in splits:
        return None
    return {str(name) for listed in splits.values() if isinstance(listed, list) for name in listed}


def _image_path_rule(descriptor: dict[str, Any], path: Path) -> str:
    """The descriptor's ``image_path`` rule for labelme files: ``by_name`` (default) or ``strict``.

    Raises
    ------
    DataFormatError
        Any other value, naming the descriptor file.
    """
    value = descriptor.get("image_path", "by_name")
    if not isinstance(value, str) or value not in IMAGE_PATH_RULES:
        raise DataFormatError(
            f"{path}: 'image_path' must be one of {', '.join(IMAGE_PATH_RULES)}, got {value!r}"
        )
    return value


def _landmarks_from_descriptor(descriptor: dict[str, Any], path: Path) -> LandmarkSet:
    names = descriptor.get("landmarks")
    if names is None:
        return ISBI_2015
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise DataFormatError(f"{path}: 'landmarks' must be a non-empty list of names")
    abbreviations = descriptor.get("abbreviations") or [n[:4] for n in names]
    try:
        return LandmarkSet(tuple(names), tuple(str(a) for a in abbreviations))
    except ValueError as error:
        raise DataFormatError(f"{path}: {error}") from None


def _spacing(value: Any, path: Path, where: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        value = [value, value]
    try:
        size = (float(value[0]), float(value[1]))
        if len(value) != 2:
            raise ValueError
    except (TypeError, ValueError, IndexError, KeyError):
        raise DataFormatError(f"{path}: {where} must be a number or [x, y], got {value!r}") from None
    if not all(math.isfinite(v) and v > 0 for v in size):
        raise DataFormatError(f"{path}: {where} must be positive and finite, got {value!r}")
    return size


def _pixel_sizes_from_descriptor(
    descriptor: dict[str, Any], path: Path, fmt: str
) -> tuple[tuple[float, float] | None, dict[str, tuple[float, float]]]:
    value = descriptor.get("pixel_size_mm")
    if value is None:
        if fmt == "isbi2015":
            return ISBI_2015_PIXEL_SIZE_MM, {}
        raise DataFormatError(f"{path}: 'pixel_size_mm' is required for the {fmt} format")
    if not isinstance(value, dict):
        return _spacing(value, path, "'pixel_size_mm'"), {}
    default = _spacing(value["default"], path, "'pixel_size_mm.default'") if "default" in value else None
    per_image = value.get("per_image", {})
    if not isinstance(per_image, dict):
        raise DataFormatError(f"{path}: 'pixel_size_mm.per_image' must map image names to spacings")
    return default, {str(k): _spacing(v, path, f"pixel size of {k!r}") for k, v in per_image.items()}


def _resolve_splits(records: dict[str, ImageRecord], spec: _Spec, log: ProblemLog) -> dict[str, list[ImageRecord]]:
    value = spec.descriptor.get("splits")
    names = sorted(records)
    if value is None:
        value = {"fractions": {"train": 0.7, "calibration": 0.1, "test": 0.2}, "seed": spec.seed}
    if not isinstance(value, dict):
        raise DataFormatError(f"{spec.path}: 'splits' must be a mapping")
    if "fractions" in value:
        fractions = value["fractions"]
        if not isinstance(fractions, dict) or not fractions:
            raise DataFormatError(f"{spec.path}: 'splits.fractions' must map split names to fractions")
        try:
            shares = np.array([float(f) for f in fractions.values()])
        except (TypeError, ValueError):
            raise DataFormatError(f"{spec.path}: 'splits.fractions' must be numbers") from None
        if (shares < 0).any() or abs(shares.sum() - 1.0) > 1e-6:
            raise DataFormatError(f"{spec.path}: split fractions must be >= 0 and sum to 1, got {shares.tolist()}")
        order = np.random.default_rng(int(value.get("seed", spec.seed))).permutation(len(names))
        bounds = np.round(np.cumsum(shares) * len(names)).astype(int)
        starts = np.concatenate([[0], bounds[:-1]])
        return {
            str(split): [records[names[i]] for i in sorted(order[a:b])]
            for split, a, b in zip(fractions, starts, bounds)
        }
    splits: dict[str, list[ImageRecord]] = {}
    assigned: dict[str, str] = {}
    for split, listed in value.items():
        if not isinstance(listed, list):
            raise DataFormatError(f"{spec.path}: split {split!r} must list image file names")
        splits[str(split)] = []
        for name in map(str, listed):
            if name in assigned:
                raise DataFormatError(f"{spec.path}: image {name!r} is in splits {assigned[name]!r} and {split!r}")
            assigned[name] = str(split)
            if name not in records:
                if name not in log.reported_names:  # an image reported already is listed once, with its reason
                    log.report(f"{spec.path}: split {split!r} names {name!r}, which is missing or was skipped", name)
                continue
            splits[str(split)].append(records[name])
    return splits


# ----------------------------------------------------------------------------- entry point


def write_descriptor(root: Path, descriptor: dict[str, Any]) -> Path:
    """Write ``ROOT/dataset.yaml``."""
    path = Path(root) / DESCRIPTOR_NAME
    save_yaml(descriptor, path)
    return path


def read_landmark_data(root: Path, protocol: str | None = None, log: ProblemLog | None = None) -> LandmarkData:
    """Read a data set in any supported format through its descriptor.

    Parameters
    ----------
    root : Path
        The data set folder (holding ``dataset.yaml``, or the ISBI 2015 layout).
    protocol : {'clean', 'paper'}, optional
        ISBI 2015 only; overrides the descriptor's ``protocol`` (default ``clean``).
    log : ProblemLog, optional
        Receives warnings, and problems too when its ``collect`` is set (those
        images are then skipped); by default the first problem raises.

    Raises
    ------
    DataFormatError
        Naming the file or folder and the problem.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: data directory not found")
    descriptor_path = root / DESCRIPTOR_NAME
    descriptor = load_yaml(descriptor_path) if descriptor_path.exists() else {}
    fmt = descriptor.get("format", "isbi2015")
    if fmt not in FORMATS:
        raise DataFormatError(f"{descriptor_path}: unsupported format {fmt!r} (supported: {', '.join(FORMATS)})")
    spec = _parse_descriptor(descriptor, descriptor_path, fmt)
    log = log if log is not None else ProblemLog()
    log.skip_bad_images = spec.on_bad_image == "skip"
    if fmt == "isbi2015":
        if "splits" in descriptor:
            raise DataFormatError(f"{descriptor_path}: ISBI 2015 splits come from 'protocol' (clean or paper), not 'splits'")
        chosen = protocol or str(descriptor.get("protocol", "clean"))
        if chosen not in ISBI_PROTOCOLS:
            raise DataFormatError(f"unknown protocol {chosen!r}; choose one of {', '.join(ISBI_PROTOCOLS)}")
        splits = _isbi_splits(_read_isbi(root, spec, log), chosen, spec)
        return _finish(LandmarkData(root, spec.landmarks, spec.annotators, splits, descriptor, fmt, chosen), spec, log)
    if protocol is not None:
        raise DataFormatError(f"{descriptor_path}: protocols apply to ISBI 2015 data only, not {fmt}")
    reader: Callable[[Path, _Spec, ProblemLog], dict[str, ImageRecord]] = (
        _read_labelme if fmt == "labelme" else _read_csv
    )
    records = reader(root, spec, log)
    splits = _resolve_splits(records, spec, log)
    data = LandmarkData(root, spec.landmarks, spec.annotators, splits, descriptor, fmt, None,
                        unlisted=_unlisted_images(root, spec))
    if data.unlisted:
        log.warn(f"{len(data.unlisted)} images are in no split of {descriptor_path.name} and were not read "
                 f"(e.g. {data.unlisted[0]})")
    return _finish(data, spec, log)


def _unlisted_images(root: Path, spec: _Spec) -> tuple[str, ...]:
    """Names of the images in the image folder that explicit split lists leave out."""
    if spec.listed_images is None:
        return ()
    folder = root / str(spec.descriptor.get("images", "images"))
    if not folder.is_dir():
        return ()
    return tuple(p.name for p in _images_in(folder) if p.name not in spec.listed_images)


def _finish(data: LandmarkData, spec: _Spec, log: ProblemLog) -> LandmarkData:
    """Apply ``on_bad_image: skip`` to images that do not decode, and record the policies and what they did."""
    splits = data.splits
    if spec.on_bad_image == "skip":
        unusable: set[str] = set()
        unique = {record.image_id: record for split in splits.values() for record in split}
        for image_id, record in unique.items():
            try:
                read_image(record.image_path)
            except DataFormatError as error:
                log.report(str(error))
                unusable.add(image_id)
        splits = {name: [r for r in split if r.image_id not in unusable] for name, split in splits.items()}
    return dataclasses.replace(
        data, splits=splits,
        policies={"on_duplicate_label": spec.on_duplicate_label, "on_bad_image": spec.on_bad_image},
        repairs=tuple(log.repairs), skipped=tuple(log.skipped),
    )


def log_data_handling(data: LandmarkData, log: logging.Logger | None = None) -> None:
    """One warning line per image skipped or label repaired under the descriptor's policies."""
    log = log or logging.getLogger(__name__)
    for message in data.skipped:
        log.warning("skipped (on_bad_image: skip): %s", message)
    for message in data.repairs:
        log.warning("repaired: %s", message)
    if data.unlisted:
        log.info("%d images are in no split and were not read", len(data.unlisted))

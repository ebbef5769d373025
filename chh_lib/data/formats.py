"""Readers and writers for landmark data sets on disk.

The ISBI 2015 cephalometric layout (Wang et al. 2016) is::

    ROOT/RawImage/{TrainingData,Test1Data,Test2Data}/NNN.bmp
    ROOT/AnnotationsByMD/{400_senior,400_junior}/NNN.txt

where each annotation file holds one ``x,y`` line per landmark (pixels, 19 for
ISBI) followed by extra lines that readers ignore. An optional ``ROOT/dataset.yaml``
descriptor (written by ``chh phantom``) names the landmarks, the pixel spacing
and the generator; without it the ISBI 2015 defaults apply.

Split names: ``train`` (TrainingData), ``test`` (Test1Data), ``test2`` (Test2Data).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from chh_lib.config import load_yaml, save_yaml
from chh_lib.errors import DataFormatError
from chh_lib.files import write_bytes_atomic, write_text_atomic
from chh_lib.landmarks import ISBI_2015, ISBI_2015_PIXEL_SIZE_MM, LandmarkSet

ISBI_SPLIT_FOLDERS = {"train": "TrainingData", "test": "Test1Data", "test2": "Test2Data"}
ISBI_ANNOTATORS = ("400_senior", "400_junior")
IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
DESCRIPTOR_NAME = "dataset.yaml"


@dataclass(frozen=True)
class ImageRecord:
    """One annotated image as found on disk.

    Attributes
    ----------
    image_id : str
        ``<split folder>/<file stem>``, unique within the data set.
    image_path : Path
    annotations_px : ndarray, shape (A, K, 2)
        (x, y) in pixels of the original image, one row per annotator; NaN = missing.
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

    def split(self, name: str) -> list[ImageRecord]:
        """Records of the split ``name``; an unknown or empty split raises :class:`DataFormatError`."""
        if name not in self.splits:
            raise DataFormatError(
                f"{self.root}: no split named {name!r}; available: {', '.join(self.splits)}"
            )
        if not self.splits[name]:
            raise DataFormatError(f"{self.root}: split {name!r} is empty")
        return self.splits[name]


def read_image(path: Path) -> np.ndarray:
    """Read an image file as a grey-scale array.

    Parameters
    ----------
    path : Path
        A .bmp, .png, .jpg or .tif file; RGB is converted to grey.

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
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.uint16 if image.mode != "I" else np.int32)
                array = np.clip(array, 0, 65535).astype(np.uint16)
            else:
                array = np.asarray(image.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
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
            raise DataFormatError(
                f"{source}: line {row + 1} is not numeric: {line[:60]!r}"
            ) from None
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
    image_path = root / "RawImage" / split_folder / f"{stem}.bmp"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="BMP")
    write_bytes_atomic(image_path, buffer.getvalue())
    for annotator, points in zip(annotators, annotations_px):
        text = format_isbi_annotation(points, extra_lines)
        write_text_atomic(root / "AnnotationsByMD" / annotator / f"{stem}.txt", text)


def write_descriptor(root: Path, descriptor: dict[str, Any]) -> Path:
    """Write ``ROOT/dataset.yaml``."""
    path = Path(root) / DESCRIPTOR_NAME
    save_yaml(descriptor, path)
    return path


def read_landmark_data(root: Path) -> LandmarkData:
    """Read a data set in the ISBI 2015 layout, with or without a ``dataset.yaml`` descriptor.

    Raises
    ------
    DataFormatError
        Missing folders, an image without annotations (or the reverse), two
        annotators disagreeing on the image list, or a malformed annotation file;
        every message names the file or folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: data directory not found")
    descriptor_path = root / DESCRIPTOR_NAME
    descriptor = load_yaml(descriptor_path) if descriptor_path.exists() else {}
    fmt = descriptor.get("format", "isbi2015")
    if fmt != "isbi2015":
        raise DataFormatError(f"{descriptor_path}: unsupported format {fmt!r} (supported: isbi2015)")
    landmarks = _landmarks_from_descriptor(descriptor, descriptor_path)
    pixel_size_mm = _pixel_size_from_descriptor(descriptor, descriptor_path)
    annotators = tuple(descriptor.get("annotators", ISBI_ANNOTATORS))
    split_folders = dict(descriptor.get("splits", ISBI_SPLIT_FOLDERS))

    raw_dir = root / "RawImage"
    if not raw_dir.is_dir():
        raise DataFormatError(f"{raw_dir}: folder not found (expected the ISBI 2015 layout)")
    for annotator in annotators:
        if not (root / "AnnotationsByMD" / annotator).is_dir():
            raise DataFormatError(f"{root / 'AnnotationsByMD' / annotator}: annotator folder not found")

    splits: dict[str, list[ImageRecord]] = {}
    for split, folder in split_folders.items():
        folder_path = raw_dir / folder
        if not folder_path.is_dir():
            raise DataFormatError(f"{folder_path}: split folder for {split!r} not found")
        images = sorted(p for p in folder_path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        splits[split] = [
            ImageRecord(
                image_id=f"{folder}/{image_path.stem}",
                image_path=image_path,
                annotations_px=_read_annotators(root, annotators, image_path.stem, landmarks.num_landmarks),
                pixel_size_mm=pixel_size_mm,
            )
            for image_path in images
        ]
    return LandmarkData(root, landmarks, annotators, splits, descriptor)


def _read_annotators(root: Path, annotators: tuple[str, ...], stem: str, num_landmarks: int) -> np.ndarray:
    paths = [root / "AnnotationsByMD" / annotator / f"{stem}.txt" for annotator in annotators]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataFormatError(
            f"image {stem}: annotation missing for some annotators: {', '.join(missing)}"
        )
    return np.stack([read_isbi_annotation(p, num_landmarks) for p in paths])


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


def _pixel_size_from_descriptor(descriptor: dict[str, Any], path: Path) -> tuple[float, float]:
    value = descriptor.get("pixel_size_mm", list(ISBI_2015_PIXEL_SIZE_MM))
    if isinstance(value, (int, float)):
        value = [value, value]
    try:
        size = (float(value[0]), float(value[1]))
    except (TypeError, ValueError, IndexError):
        raise DataFormatError(f"{path}: 'pixel_size_mm' must be a number or [x, y]") from None
    if not all(math.isfinite(v) and v > 0 for v in size):
        raise DataFormatError(f"{path}: 'pixel_size_mm' must be positive and finite, got {value}")
    return size

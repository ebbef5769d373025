"""Write a phantom data set to disk in the ISBI 2015 layout, with its ``dataset.yaml``.

Images are numbered ``001``, ``002``, ... and split in the ISBI proportions
150 : 150 : 100 into ``TrainingData``, ``Test1Data`` and ``Test2Data``. Each
annotation file holds the 19 ``x,y`` lines followed by two extra lines (as ISBI
files carry extra lines): ``1`` or ``0`` for a hard case, then a bit mask of its
hard kinds (1 low contrast, 2 occluder, 4 cropped).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chh_lib.config import load_yaml
from chh_lib.data.disagreement import along_across_sd, annotator_differences_mm
from chh_lib.data.formats import (
    DESCRIPTOR_NAME,
    ISBI_ANNOTATORS,
    ISBI_FOLDERS,
    ImageRecord,
    LandmarkData,
    read_landmark_data,
    write_descriptor,
    write_isbi_case,
)
from chh_lib.data.phantom import (
    CONTOUR_LANDMARKS,
    PHANTOM_VERSION,
    contour_tangents_mm,
    generate_phantom,
    hard_case_mask,
    phantom_pixel_size_mm,
)
from chh_lib.errors import ConfigError, DataFormatError
from chh_lib.landmarks import ISBI_2015

HARD_KIND_BITS = {"low_contrast": 1, "occluder": 2, "cropped": 4}
ISBI_SPLIT_PROPORTIONS = (150, 150, 100)


@dataclass
class PhantomSummary:
    """What :func:`write_phantom_dataset` made.

    Attributes
    ----------
    split_counts : dict
        ISBI folder -> number of images.
    mean_distance_mm, along_across_ratio : ndarray, shape (K,)
        Annotator disagreement per landmark: mean distance in mm, and the SD of the
        difference along the contour tangent over the SD across it
        (:func:`chh_lib.data.disagreement.along_across_sd`; NaN for non-contour landmarks).
    written : bool
        False when an identical phantom was already there and nothing was written.
    """

    root: Path
    split_counts: dict[str, int]
    num_hard: int
    mean_distance_mm: np.ndarray
    along_across_ratio: np.ndarray
    written: bool


def split_sizes(num_images: int) -> tuple[int, int, int]:
    """Numbers of train, test and test2 images in the ISBI proportions (each >= 1 when possible)."""
    total = sum(ISBI_SPLIT_PROPORTIONS)
    train = round(num_images * ISBI_SPLIT_PROPORTIONS[0] / total)
    test = round(num_images * ISBI_SPLIT_PROPORTIONS[1] / total)
    if num_images >= 3:
        train, test = max(train, 1), max(test, 1)
    test2 = num_images - train - test
    if num_images >= 3 and test2 < 1:
        train -= 1
        test2 += 1
    return train, test, test2


def phantom_descriptor(
    num_images: int, seed: int, image_size: tuple[int, int], hard_fraction: float, hard_ids: list[str]
) -> dict[str, Any]:
    """The ``dataset.yaml`` content of a phantom made with these arguments."""
    return {
        "format": "isbi2015",
        "landmarks": list(ISBI_2015.names),
        "abbreviations": list(ISBI_2015.abbreviations),
        "pixel_size_mm": [round(v, 10) for v in phantom_pixel_size_mm(image_size)],
        "annotators": list(ISBI_ANNOTATORS),
        "protocol": "clean",
        "contour_landmarks": [bool(v) for v in CONTOUR_LANDMARKS],
        "generator": {
            "name": "chh phantom",
            "version": str(PHANTOM_VERSION),
            "seed": int(seed),
            "num_images": int(num_images),
            "image_size": [int(image_size[0]), int(image_size[1])],
            "hard_fraction": float(hard_fraction),
        },
        "hard_cases": hard_ids,
    }


def write_phantom_dataset(
    root: Path,
    num_images: int = 400,
    seed: int = 0,
    image_size: tuple[int, int] = (640, 800),
    hard_fraction: float = 0.1,
    overwrite: bool = False,
) -> PhantomSummary:
    """Generate ``num_images`` phantom cephalograms and write them under ``root``.

    Raises
    ------
    DataFormatError
        When ``root`` already holds something else (a different phantom or other
        files) and ``overwrite`` is False: nothing there is touched.
    """
    root = Path(root)
    if num_images < 3:
        raise ConfigError(f"num_images must be at least 3 (one per split), got {num_images}")
    if not 0.0 <= hard_fraction <= 1.0:
        raise ConfigError(f"hard_fraction must lie in [0, 1], got {hard_fraction}")
    image_size = (int(image_size[0]), int(image_size[1]))
    sizes = split_sizes(num_images)
    folders = [folder for folder, size in zip(ISBI_FOLDERS, sizes) for _ in range(size)]
    width = max(3, len(str(num_images)))
    image_ids = [f"{folder}/{index + 1:0{width}d}" for index, folder in enumerate(folders)]
    hard_ids = [i for i, hard in zip(image_ids, hard_case_mask(num_images, seed, hard_fraction)) if hard]
    descriptor = phantom_descriptor(num_images, seed, image_size, hard_fraction, hard_ids)

    existing = _existing_descriptor(root)
    if existing is not None and existing.get("generator") == descriptor["generator"] and not overwrite:
        if existing != descriptor:  # same images, descriptor from an older kit: bring it up to date
            write_descriptor(root, descriptor)
        return _summary_from_disk(root)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise DataFormatError(
            f"{root}: folder is not empty and holds no phantom made with these arguments; "
            "choose another folder or pass --overwrite"
        )

    for image_id, case in zip(image_ids, generate_phantom(num_images, seed, image_size, hard_fraction)):
        folder, stem = image_id.split("/")
        kinds = sum(HARD_KIND_BITS[kind] for kind in case.hard_kinds)
        write_isbi_case(
            root, folder, stem, case.image, case.annotations_px, extra_lines=(str(int(case.is_hard)), str(kinds))
        )
    write_descriptor(root, descriptor)
    # The statistics come from the files just written, exactly as for a phantom already on disk
    # (and as notebook 01 computes them).
    return dataclasses.replace(_summary_from_disk(root), written=True)


def phantom_tangents_mm(data: LandmarkData, records: Sequence[ImageRecord]) -> np.ndarray | None:
    """The generator's contour tangent at every landmark of ``records``, when ``data`` is a phantom.

    The tangents are recomputed from the seed in ``dataset.yaml`` (no image is
    rendered): image ``FOLDER/NNN`` is case ``NNN - 1`` of the generator.

    Parameters
    ----------
    data : LandmarkData
        The data set the records belong to.
    records : sequence of ImageRecord
        ``N`` of its images.

    Returns
    -------
    ndarray, shape (N, 19, 2), or None
        Unit (x, y) tangents in mm space (zero for sella); None when ``data`` was
        not written by this version of ``chh phantom`` (real data carries no contours).
    """
    generator = data.descriptor.get("generator") or {}
    if generator.get("name") != "chh phantom" or str(generator.get("version")) != PHANTOM_VERSION:
        return None
    seed = int(generator["seed"])
    return np.stack([contour_tangents_mm(seed, int(r.image_id.split("/")[-1]) - 1) for r in records])


def _existing_descriptor(root: Path) -> dict[str, Any] | None:
    path = root / DESCRIPTOR_NAME
    return load_yaml(path) if path.is_file() else None


def _summary_from_disk(root: Path) -> PhantomSummary:
    """Summary of a phantom already on disk, recomputing the annotator statistics from its files."""
    data = read_landmark_data(root)
    records = [r for name in ("train", "calibration", "test", "test2") for r in data.splits[name]]
    difference_mm = annotator_differences_mm(records)  # (N, K, 2)
    mean_distance_mm = np.hypot(difference_mm[..., 0], difference_mm[..., 1]).mean(axis=0)
    tangents = phantom_tangents_mm(data, records)
    ratio = along_across_sd(difference_mm, tangents).ratio if tangents is not None else np.full(
        len(mean_distance_mm), np.nan)
    return PhantomSummary(
        root=root,
        split_counts={f: sum(r.image_id.startswith(f"{f}/") for r in records) for f in ISBI_FOLDERS},
        num_hard=len(data.descriptor.get("hard_cases", [])),
        mean_distance_mm=mean_distance_mm,
        along_across_ratio=ratio,
        written=False,
    )

"""What a trained run knows about its data: landmark names and pixel spacing.

``chh calibrate`` and ``chh export`` store both in the checkpoint (keys ``landmarks``
and ``pixel_size_mm``), so that a shared checkpoint carries them and ``chh predict``
needs no data set. For an older checkpoint without them they are read from the data
set recorded in the run's manifest, when it is still there.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from chh_lib.config import load_config
from chh_lib.data.formats import LandmarkData, read_landmark_data
from chh_lib.errors import ChhError, DataFormatError
from chh_lib.landmarks import ISBI_2015, LandmarkSet

logger = logging.getLogger(__name__)

#: Relative spread of the training images' spacing up to which they count as one spacing.
SAME_SPACING_TOLERANCE = 1e-6


def data_description(data: LandmarkData) -> dict[str, Any]:
    """The checkpoint entries ``landmarks`` and ``pixel_size_mm`` of a data set.

    Returns
    -------
    dict
        ``landmarks``: ``{"names": [...], "abbreviations": [...]}``; ``pixel_size_mm``:
        ``[x, y]`` in mm per pixel when every training image has that spacing, else None
        (a user of the run must then give the spacing of new images).
    """
    spacing = np.array([record.pixel_size_mm for record in data.splits.get("train", [])], dtype=np.float64)
    common = None
    if spacing.size and np.all(np.abs(spacing - spacing[0]) <= SAME_SPACING_TOLERANCE * spacing[0]):
        common = [float(spacing[0, 0]), float(spacing[0, 1])]
    return {
        "landmarks": {"names": list(data.landmarks.names), "abbreviations": list(data.landmarks.abbreviations)},
        "pixel_size_mm": common,
    }


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


def _recorded_data(run_dir: Path | None) -> LandmarkData | None:
    """The data set named in ``run_dir``'s manifest, or None when it cannot be read."""
    if run_dir is None:
        return None
    try:
        data_dir = recorded_data_dir(run_dir)
        if not data_dir.is_dir():
            return None
        return read_landmark_data(data_dir, protocol=load_config(Path(run_dir) / "config.yaml").data.protocol)
    except (ChhError, OSError):
        return None


def run_landmarks(payload: dict[str, Any], run_dir: Path | None = None) -> LandmarkSet:
    """The landmark set of a checkpoint: stored, else from the recorded data set, else a default.

    The default is the ISBI 2015 set for 19 heatmaps and ``L1`` ... ``LK`` otherwise (with a warning).
    """
    stored = payload.get("landmarks")
    if isinstance(stored, dict) and stored.get("names"):
        return LandmarkSet(tuple(stored["names"]), tuple(stored.get("abbreviations") or stored["names"]))
    data = _recorded_data(run_dir)
    if data is not None:
        return data.landmarks
    count = int(payload["num_landmarks"])
    if count == ISBI_2015.num_landmarks:
        logger.warning("the checkpoint stores no landmark names; assuming the ISBI 2015 landmarks")
        return ISBI_2015
    logger.warning("the checkpoint stores no landmark names; calling them L1 ... L%d", count)
    names = tuple(f"L{k + 1}" for k in range(count))
    return LandmarkSet(names, names)


def run_pixel_size_mm(payload: dict[str, Any], run_dir: Path | None = None) -> tuple[float, float] | None:
    """(x, y) spacing in mm per pixel of the images a checkpoint was trained on, or None when unknown or varied."""
    if "pixel_size_mm" in payload:
        stored = payload["pixel_size_mm"]
        return None if stored is None else (float(stored[0]), float(stored[1]))
    data = _recorded_data(run_dir)
    if data is None:
        return None
    spacing = data_description(data)["pixel_size_mm"]
    return None if spacing is None else (spacing[0], spacing[1])

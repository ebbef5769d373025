"""Builders of tiny data sets on disk, shared by the tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from chh_lib.data.formats import ISBI_FOLDERS, write_descriptor, write_isbi_case


def make_tiny_isbi(
    root: Path,
    images_per_split: int = 2,
    size: tuple[int, int] = (40, 50),
    num_landmarks: int = 19,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write a small data set in the ISBI layout with random points; returns annotations per image id."""
    rng = np.random.default_rng(seed)
    width, height = size
    annotations = {}
    number = 1
    for folder in ISBI_FOLDERS:
        for _ in range(images_per_split):
            stem = f"{number:03d}"
            image = rng.integers(0, 255, size=(height, width), dtype=np.uint8)
            points = np.stack(
                [rng.uniform(1, width - 2, num_landmarks), rng.uniform(1, height - 2, num_landmarks)], axis=-1
            )
            both = np.stack([points, points + rng.normal(0, 0.5, points.shape)])
            both = np.round(both, 2)
            write_isbi_case(root, folder, stem, image, both, extra_lines=("1", "2"))
            annotations[f"{folder}/{stem}"] = both
            number += 1
    return annotations


def make_tiny_descriptor(root: Path, num_landmarks: int, pixel_size_mm: float = 0.5) -> None:
    """Add a dataset.yaml naming ``num_landmarks`` landmarks L0, L1, ..."""
    write_descriptor(
        root,
        {
            "format": "isbi2015",
            "landmarks": [f"L{k}" for k in range(num_landmarks)],
            "pixel_size_mm": pixel_size_mm,
        },
    )

"""Landmark sets and per-image pixel spacing.

A landmark set is an ordered tuple of names (the order is the channel order of
every heatmap tensor) with short abbreviations for tables and plots.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LandmarkSet:
    """An ordered set of named landmarks.

    Parameters
    ----------
    names : tuple of str
        Full names, in channel order.
    abbreviations : tuple of str
        Short labels, same order and length as ``names``.
    """

    names: tuple[str, ...]
    abbreviations: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.abbreviations):
            raise ValueError(
                f"{len(self.names)} landmark names but {len(self.abbreviations)} abbreviations"
            )
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicated landmark names in {self.names}")

    @property
    def num_landmarks(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Channel index of the landmark called ``name`` (full name or abbreviation)."""
        if name in self.names:
            return self.names.index(name)
        if name in self.abbreviations:
            return self.abbreviations.index(name)
        raise KeyError(f"unknown landmark {name!r}; known: {', '.join(self.names)}")


#: The 19 landmarks of the ISBI 2015 cephalometric challenge (Wang et al. 2016), in file order.
ISBI_2015 = LandmarkSet(
    names=(
        "sella",
        "nasion",
        "orbitale",
        "porion",
        "subspinale",
        "supramentale",
        "pogonion",
        "menton",
        "gnathion",
        "gonion",
        "lower incisal incision",
        "upper incisal incision",
        "upper lip",
        "lower lip",
        "subnasale",
        "soft-tissue pogonion",
        "posterior nasal spine",
        "anterior nasal spine",
        "articulare",
    ),
    abbreviations=(
        "S", "N", "Or", "Po", "A", "B", "Pog", "Me", "Gn", "Go",
        "LIT", "UIT", "UL", "LL", "Sn", "PogS", "PNS", "ANS", "Ar",
    ),
)

#: Pixel spacing of the ISBI 2015 images as distributed, in mm (x, y).
ISBI_2015_PIXEL_SIZE_MM = (0.1, 0.1)


def mean_of_annotators(points_px: np.ndarray) -> np.ndarray:
    """Ground truth as the mean of the annotators' positions.

    Parameters
    ----------
    points_px : ndarray, shape (A, K, 2)
        Positions (x, y) in pixels from A annotators; NaN marks a missing point.

    Returns
    -------
    ndarray, shape (K, 2)
        Mean position; NaN where any annotator misses the landmark.
    """
    points_px = np.asarray(points_px, dtype=np.float64)
    if points_px.ndim != 3 or points_px.shape[-1] != 2:
        raise ValueError(f"expected (annotators, landmarks, 2) points, got shape {points_px.shape}")
    return points_px.mean(axis=0)

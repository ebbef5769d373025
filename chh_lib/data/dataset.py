"""`LandmarkDataset`: images padded and resized for the network, with targets in its pixel grid.

Geometry: an image of size (w, h) is padded with zeros on the right or at the
bottom to the aspect ratio W / H of the network input, then resized to (W, H).
With the scale factors ``s = (W / w_padded, H / h_padded)``, a point moves as

    x' = (x + 0.5) * s_x - 0.5,   y' = (y + 0.5) * s_y - 0.5

(pixel centres at integer coordinates) and the pixel size becomes ``pixel_size / s``.
A landmark that falls outside the original image, or outside the resized grid,
is missing (NaN): never clipped or wrapped.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from chh_lib.data.formats import ImageRecord, image_size_of, read_image
from chh_lib.errors import DataFormatError
from chh_lib.files import save_npy_atomic
from chh_lib.heatmaps import target_flat_index

CACHE_VERSION = "1"


@dataclass(frozen=True)
class ResizeGeometry:
    """How one image maps onto the network grid.

    Attributes
    ----------
    source_size : (int, int)
        Original (width, height) in pixels.
    padded_size : (int, int)
        (width, height) after padding right/bottom to the target aspect.
    target_size : (int, int)
        Network input (width, height).
    """

    source_size: tuple[int, int]
    padded_size: tuple[int, int]
    target_size: tuple[int, int]

    @property
    def scale(self) -> np.ndarray:
        """(s_x, s_y): target pixels per source pixel."""
        return np.array(self.target_size, dtype=np.float64) / np.array(self.padded_size, dtype=np.float64)

    def to_target_px(self, points_px: np.ndarray) -> np.ndarray:
        """Map (..., 2) source points to the target grid; points outside either image become NaN."""
        points_px = np.asarray(points_px, dtype=np.float64)
        width, height = self.source_size
        outside = (
            (points_px[..., 0] < -0.5) | (points_px[..., 0] > width - 0.5)
            | (points_px[..., 1] < -0.5) | (points_px[..., 1] > height - 0.5)
        )
        moved = (points_px + 0.5) * self.scale - 0.5
        target_w, target_h = self.target_size
        outside |= (
            (moved[..., 0] < -0.5) | (moved[..., 0] > target_w - 0.5)
            | (moved[..., 1] < -0.5) | (moved[..., 1] > target_h - 0.5)
        )
        moved[outside] = np.nan
        return moved

    def to_source_px(self, points_px: np.ndarray) -> np.ndarray:
        """Map (..., 2) points of the target grid back to source pixels."""
        return (np.asarray(points_px, dtype=np.float64) + 0.5) / self.scale - 0.5


def resize_geometry(source_size: tuple[int, int], target_size: tuple[int, int]) -> ResizeGeometry:
    """Padding and scale that fit ``source_size`` (w, h) into ``target_size`` (W, H)."""
    width, height = source_size
    target_w, target_h = target_size
    aspect = target_w / target_h
    if width / height >= aspect:
        padded = (width, max(height, math.ceil(width / aspect - 1e-9)))
    else:
        padded = (max(width, math.ceil(height * aspect - 1e-9)), height)
    return ResizeGeometry((width, height), padded, (target_w, target_h))


def pad_and_resize(image: np.ndarray, geometry: ResizeGeometry) -> np.ndarray:
    """Pad an (h, w) image with zeros right/bottom and resize it to the target (H, W), same dtype."""
    padded_w, padded_h = geometry.padded_size
    padded = np.zeros((padded_h, padded_w), dtype=image.dtype)
    padded[: image.shape[0], : image.shape[1]] = image
    interpolation = cv2.INTER_AREA if padded_w >= geometry.target_size[0] else cv2.INTER_LINEAR
    return cv2.resize(padded, geometry.target_size, interpolation=interpolation)


class LandmarkDataset(Dataset):
    """Images of one split, resized for the network, with their landmark targets.

    Parameters
    ----------
    records : list of ImageRecord
    image_size : (int, int)
        Network input (width, height).
    cache_dir : Path or None
        Folder for resized images (``.npy``, written atomically); None keeps nothing on disk.
    augmenter : callable, optional
        ``augmenter(image, annotations_px, seed) -> (image, annotations_px)`` applied to
        each sample (e.g. :class:`chh_lib.data.augment.LandmarkAugmenter`); the seed is
        derived from (``seed``, epoch, index), so a sample's augmentation does not depend on
        which DataLoader worker loads it. Call :meth:`set_epoch` before each epoch.
    seed : int

    Each item is a dict:

    ``image``: Tensor (1, H, W) float32 in [0, 1];
    ``target_px``: Tensor (K, 2) float32, mean of the annotators in the network grid, NaN = missing;
    ``target_index``: Tensor (K,) int64, flat index of the rounded target, -1 = missing;
    ``annotations_px``: Tensor (A, K, 2) float32, each annotator in the network grid;
    ``pixel_size_mm``: Tensor (2,) float32, (x, y) after resizing;
    ``index``: int.
    """

    def __init__(
        self,
        records: list[ImageRecord],
        image_size: tuple[int, int],
        cache_dir: Path | None = None,
        augmenter: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]] | None = None,
        seed: int = 0,
    ) -> None:
        if not records:
            raise DataFormatError("cannot build a data set from an empty list of images")
        self.records = list(records)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.augmenter = augmenter
        self.seed = int(seed)
        self.epoch = 0
        self.geometries = [self._geometry(record) for record in self.records]
        self.annotations_px = np.stack(
            [g.to_target_px(r.annotations_px) for g, r in zip(self.geometries, self.records)]
        )  # (N, A, K, 2)
        self.target_px = self.annotations_px.mean(axis=1)  # (N, K, 2); NaN if any annotator misses
        self.pixel_size_mm = np.array(
            [np.asarray(r.pixel_size_mm) / g.scale for r, g in zip(self.records, self.geometries)]
        )  # (N, 2)

    @property
    def num_landmarks(self) -> int:
        return self.target_px.shape[1]

    @property
    def image_ids(self) -> list[str]:
        return [record.image_id for record in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (no effect without an augmenter)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        image = self.load_resized(index)
        annotations_px = self.annotations_px[index]  # (A, K, 2)
        if self.augmenter is not None:
            if image.dtype != np.uint8:
                image = (image // 257).astype(np.uint8)
            item_seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
            image, annotations_px = self.augmenter(image, annotations_px, item_seed)
        scale = 255.0 if image.dtype == np.uint8 else 65535.0
        target_px = torch.from_numpy(annotations_px.mean(axis=0)).float()
        width, height = self.image_size
        return {
            "image": torch.from_numpy(image.astype(np.float32) / scale)[None],
            "target_px": target_px,
            "target_index": target_flat_index(target_px, width, height),
            "annotations_px": torch.from_numpy(annotations_px).float(),
            "pixel_size_mm": torch.from_numpy(self.pixel_size_mm[index]).float(),
            "index": index,
        }

    def load_resized(self, index: int) -> np.ndarray:
        """The padded and resized image ``index``, (H, W) uint8 or uint16, from the cache when present."""
        record = self.records[index]
        cache_path = self._cache_path(record)
        if cache_path is not None and cache_path.is_file():
            try:
                return np.load(cache_path, allow_pickle=False)
            except (OSError, ValueError):
                cache_path.unlink(missing_ok=True)
        resized = pad_and_resize(read_image(record.image_path), self.geometries[index])
        if cache_path is not None:
            save_npy_atomic(cache_path, resized, durable=False)  # a cache can be rebuilt
        return resized

    def _geometry(self, record: ImageRecord) -> ResizeGeometry:
        return resize_geometry(image_size_of(record.image_path), self.image_size)

    def _cache_path(self, record: ImageRecord) -> Path | None:
        if self.cache_dir is None:
            return None
        try:
            stat = record.image_path.stat()
        except FileNotFoundError:
            raise DataFormatError(f"{record.image_path}: image file not found") from None
        key = f"{CACHE_VERSION}|{record.image_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.image_size}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:20]
        width, height = self.image_size
        return self.cache_dir / f"{width}x{height}" / f"{digest}.npy"

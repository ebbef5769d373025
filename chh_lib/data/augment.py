"""The paper's augmentation, applied to an image and its landmarks together.

McCouat & Voiculescu train with this imgaug pipeline (at 640 x 800 pixels)::

    Affine(translate_px x, y in (-10, 10), scale one of [0.95, 1], rotate one of [-3, 3])
    Multiply((0.5, 1.5))
    GammaContrast()                      # gamma in (0.7, 1.7)
    ElasticTransformation(alpha=(0, 500), sigma=30, order=3)

Pixel-valued settings are given at ``reference_width`` (640) and scaled to the
network input: translations and ``sigma`` by ``s = width / reference_width``,
``alpha`` by ``s**2`` (the displacement of imgaug's elastic field is
proportional to ``alpha / sigma``, so this keeps it the same in mm).

The affine, multiply and gamma steps are imgaug's. The elastic step is written
here with imgaug's definition (displacement = ``alpha`` x a uniform(-1, 1) field
smoothed by imgaug's truncated Gaussian kernel of ``sigma`` pixels, bicubic
resampling, zeros outside; the field's statistics match imgaug's, a test checks
it) because imgaug's own keypoint handling for it costs about 47 ms per image for
38 points at 160 x 200; here each keypoint is moved exactly by inverting the
displacement field, in well under a millisecond.

Every random choice is drawn from the ``seed`` passed with each call, so a
sample's augmentation depends only on (run seed, epoch, index) and not on
which DataLoader worker draws it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import imgaug.augmenters as iaa
import numpy as np
from imgaug.augmentables.kps import Keypoint, KeypointsOnImage

from chh_lib.config import AugmentConfig


@dataclass(frozen=True)
class ElasticField:
    """A displacement field: output pixel (x, y) samples the input at (x + dx, y + dy).

    Attributes
    ----------
    dx_px, dy_px : ndarray, shape (H, W), float32
    """

    dx_px: np.ndarray
    dy_px: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, shape: tuple[int, int], alpha: float, sigma: float) -> ElasticField:
        """imgaug's elastic field for x and y: ``alpha * blur(uniform(-1, 1), sigma)``.

        As in imgaug 0.4.0, the noise is drawn on the image padded by the kernel size on
        every side and blurred with a kernel truncated to :func:`gaussian_kernel_size`
        pixels (about 2.6 sigma wide for sigma >= 5, so the kernel's tails are cut),
        then cropped. The truncated kernel smooths less than a full Gaussian, so the
        displacements are about 1.45 times larger than with an untruncated blur.
        """
        height, width = shape
        ksize = gaussian_kernel_size(sigma)
        pad = ksize
        fields = []
        for _ in range(2):
            noise = rng.uniform(-1.0, 1.0, size=(height + 2 * pad, width + 2 * pad))
            smooth = cv2.GaussianBlur(noise, (ksize, ksize), sigmaX=sigma, sigmaY=sigma,
                                      borderType=cv2.BORDER_REFLECT_101)
            fields.append((smooth[pad:pad + height, pad:pad + width] * alpha).astype(np.float32))
        return cls(fields[0], fields[1])

    def warp_image(self, image: np.ndarray) -> np.ndarray:
        """Resample ``image`` (H, W) through the field, bicubic, zeros outside, same dtype."""
        height, width = image.shape
        grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
        warped = cv2.remap(
            image, grid_x + self.dx_px, grid_y + self.dy_px, interpolation=cv2.INTER_CUBIC,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
        return warped

    def move_points(self, points_px: np.ndarray, iterations: int = 20) -> np.ndarray:
        """Where input points land in the warped image: solve ``q + d(q) = p`` by fixed-point iteration.

        Parameters
        ----------
        points_px : ndarray, shape (M, 2)
            Finite (x, y) positions in the input image.
        """
        points_px = np.asarray(points_px, dtype=np.float64)
        moved = points_px.copy()
        for _ in range(iterations):
            displacement = np.stack([_bilinear(self.dx_px, moved), _bilinear(self.dy_px, moved)], axis=-1)
            moved = points_px - displacement
        return moved


def gaussian_kernel_size(sigma: float) -> int:
    """imgaug 0.4.0's Gaussian kernel size (odd, at least 5) for a blur of ``sigma`` pixels.

    The kernel spans 3.3 sigma below sigma 3 (99 % of the weight), 2.9 sigma below 5
    (97 %), else 2.6 sigma (95 %).
    """
    factor = 3.3 if sigma < 3.0 else 2.9 if sigma < 5.0 else 2.6
    ksize = int(max(factor * sigma, 5))
    return ksize + 1 if ksize % 2 == 0 else ksize


def _bilinear(field: np.ndarray, points_px: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of an (H, W) field at (M, 2) points, clamped at the border."""
    height, width = field.shape
    x = np.clip(points_px[:, 0], 0, width - 1)
    y = np.clip(points_px[:, 1], 0, height - 1)
    x0 = np.minimum(np.floor(x).astype(int), width - 2) if width > 1 else np.zeros_like(x, dtype=int)
    y0 = np.minimum(np.floor(y).astype(int), height - 2) if height > 1 else np.zeros_like(y, dtype=int)
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
    top = field[y0, x0] * (1 - fx) + field[y0, x1] * fx
    bottom = field[y1, x0] * (1 - fx) + field[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


class LandmarkAugmenter:
    """The paper's augmentation for images of a given network size.

    Parameters
    ----------
    config : AugmentConfig
        Settings at ``config.reference_width`` pixels.
    image_size : (int, int)
        Network input (width, height) the images arrive at.
    """

    def __init__(self, config: AugmentConfig, image_size: tuple[int, int]) -> None:
        self.config = config
        self.image_size = (int(image_size[0]), int(image_size[1]))
        scale = self.image_size[0] / config.reference_width
        self.translate_px = config.translate_px * scale
        self.elastic_alpha = (config.elastic_alpha[0] * scale**2, config.elastic_alpha[1] * scale**2)
        self.elastic_sigma = config.elastic_sigma * scale
        self._pipeline = iaa.Sequential(
            [
                iaa.Affine(
                    translate_px={
                        "x": (-int(round(self.translate_px)), int(round(self.translate_px))),
                        "y": (-int(round(self.translate_px)), int(round(self.translate_px))),
                    },
                    scale=list(config.scales),
                    rotate=list(config.rotations_deg),
                    order=1,
                ),
                iaa.Multiply(mul=tuple(config.multiply)),
                iaa.GammaContrast(gamma=tuple(config.gamma)),
            ]
        )

    def __call__(self, image: np.ndarray, points_px: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Augment one image and its points with the random choices drawn from ``seed``.

        Parameters
        ----------
        image : ndarray, shape (H, W), uint8
        points_px : ndarray, shape (..., 2)
            (x, y) in pixels; NaN marks a missing point.
        seed : int

        Returns
        -------
        image : ndarray, shape (H, W), uint8
        points_px : ndarray, shape (..., 2)
            Moved with the image, sub-pixel; NaN where missing or pushed outside the image.
        """
        if image.dtype != np.uint8 or image.ndim != 2:
            raise ValueError(f"augmentation expects a (H, W) uint8 image, got {image.dtype} {image.shape}")
        rng = np.random.default_rng(seed)
        shape = points_px.shape
        flat = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
        present = np.isfinite(flat).all(axis=1)
        keypoints = KeypointsOnImage(
            [Keypoint(x=float(x), y=float(y)) for x, y in flat[present]], shape=image.shape
        )
        self._pipeline.seed_(int(rng.integers(0, 2**31 - 1)))
        image, keypoints = self._pipeline(image=image, keypoints=keypoints)
        moved = flat.copy()
        moved[present] = keypoints.to_xy_array() if present.any() else moved[present]

        alpha = rng.uniform(*self.elastic_alpha)
        if alpha > 0:
            field = ElasticField.random(rng, image.shape, alpha, self.elastic_sigma)
            image = field.warp_image(image)
            if present.any():
                moved[present] = field.move_points(moved[present])

        height, width = image.shape
        outside = (
            (moved[:, 0] < -0.5) | (moved[:, 0] > width - 0.5) | (moved[:, 1] < -0.5) | (moved[:, 1] > height - 0.5)
        )
        moved[outside | ~present] = np.nan
        return image, moved.reshape(shape)

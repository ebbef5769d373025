"""Synthetic lateral cephalograms ("the phantom") annotated with the ISBI 2015 landmarks.

The ISBI 2015 cephalometric data set may not be redistributed, so this module
renders a simple geometric stand-in: a lateral skull radiograph, face to the
right, with skull vault, cranial base, sella turcica, orbit, ear-rod ring,
maxilla, incisors and molars, mandible, cervical vertebrae, airway and the
soft-tissue profile. Every structure is a closed polygon in millimetres (most
are centripetal Catmull-Rom splines through jittered control points) with an
X-ray density; densities add up, as attenuation does, so overlapping
structures stay visible through each other.

Each of the 19 landmarks is computed from the rendered geometry by its
anatomical definition (deepest point of a concavity, most anterior or lowest
point of a contour, tip of a spine or tooth, centre of the sella, crossing of
two borders), so it lies on a visible edge or corner. Two simulated annotators
("senior" and "junior") mark each landmark with errors that are larger along
the local contour tangent than across it, which is the ambiguity that
contour-hugging heatmaps model.

Conventions: points are ``(x, y)`` = (column, row); the centre of pixel
``(0, 0)`` is at ``(0.0, 0.0)``; the field of view is
:data:`FIELD_OF_VIEW_MM` for every image size, so the anatomy is the same at
any resolution. All randomness comes from ``np.random.default_rng`` generators
seeded with ``(seed, index)``; no global random state is used.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from chh_lib.data.disagreement import along_across_sd
from chh_lib.landmarks import ISBI_2015

__all__ = [
    "CONTOUR_LANDMARKS",
    "FIELD_OF_VIEW_MM",
    "HARD_KINDS",
    "PHANTOM_VERSION",
    "PhantomCase",
    "annotator_disagreement",
    "annotator_model_sd_mm",
    "contour_tangents_mm",
    "generate_phantom",
    "hard_case_mask",
    "phantom_pixel_size_mm",
    "render_case",
]

#: Version of the rendering; bumped whenever the output for given arguments changes.
PHANTOM_VERSION = "1"

#: Physical (width, height) of every phantom image in mm.
FIELD_OF_VIEW_MM = (192.0, 240.0)

#: True for landmarks defined on a contour (all but sella, the centre of the fossa).
CONTOUR_LANDMARKS: tuple[bool, ...] = tuple(name != "sella" for name in ISBI_2015.names)

#: The kinds of degradation a hard case can have.
HARD_KINDS = ("low_contrast", "occluder", "cropped")

# Annotator model, in mm, in ISBI 2015 landmark order.
_SIGMA_ALONG_MM = (
    0.7, 1.2, 1.5, 1.4, 1.5, 1.5, 1.3, 1.2, 1.2, 1.6,
    1.1, 1.1, 1.2, 1.2, 1.1, 1.5, 1.4, 1.4, 1.3,
)
_SIGMA_ACROSS_MM = 0.28
_SIGMA_POINT_MM = 0.7  # isotropic, for non-contour landmarks
_ANNOTATOR_NOISE_SCALE = (1.0, 1.25)  # senior, junior
_JUNIOR_BIAS_ALONG_MM = (
    0.0, 0.3, -0.2, 0.25, -0.3, 0.3, -0.2, 0.15, -0.15, 0.35,
    0.1, -0.1, 0.2, -0.2, 0.15, -0.25, 0.3, -0.3, 0.2,
)
_TRUNCATE_SIGMAS = 3.0

# X-ray densities (arbitrary units, roughly the brightness added on top of air).
_D_SOFT = 0.25
_D_AIRWAY = -0.11
_D_VAULT = 0.42
_D_BASE = 0.30
_D_SPHENOID = 0.30
_D_ORBIT_RIM = 0.20
_D_EAR_ROD = 0.65
_D_MAXILLA = 0.26
_D_MANDIBLE = 0.32
_D_CORTEX = 0.12
_D_TOOTH = 0.38
_D_MOLAR = 0.22
_D_VERTEBRA = 0.26

_SAMPLES_PER_SEGMENT = 10
_SUBROWS = 2  # vertical supersampling of the rasteriser
_LANDMARK_MARGIN_MM = 12.0
_POSE_CENTRE_MM = (100.0, 150.0)


@dataclass(frozen=True)
class PhantomCase:
    """One rendered phantom cephalogram with its landmarks.

    Attributes
    ----------
    image : ndarray, shape (H, W), uint8
        Grey-scale radiograph, bone bright, air dark, face to the right.
    annotations_px : ndarray, shape (2, 19, 2), float64
        Landmark positions (x, y) in pixels marked by annotator 0 ("senior")
        and annotator 1 ("junior"), in ISBI 2015 order.
    true_px : ndarray, shape (19, 2), float64
        Noise-free landmark positions (x, y) in pixels on the rendered anatomy.
        In cropped hard cases some may lie in the blanked region.
    tangent : ndarray, shape (19, 2), float64
        Unit local contour tangent (x, y) at each landmark, in pixel space;
        ``(0, 0)`` for landmarks that are not on a contour.
    is_hard : bool
        Whether the case was rendered with degradations.
    hard_kinds : tuple of str
        The degradations applied, a subset of :data:`HARD_KINDS`.
    """

    image: np.ndarray
    annotations_px: np.ndarray
    true_px: np.ndarray
    tangent: np.ndarray
    is_hard: bool
    hard_kinds: tuple[str, ...]


@dataclass(frozen=True)
class _Landmark:
    """A landmark in canonical mm with its unit tangent ((0, 0) if none)."""

    point_mm: np.ndarray
    tangent: np.ndarray


@dataclass(frozen=True)
class _Structure:
    """A closed polygon (N, 2) in mm with the density it adds inside."""

    polygon_mm: np.ndarray
    density: float


def phantom_pixel_size_mm(image_size: tuple[int, int]) -> tuple[float, float]:
    """Pixel size of a phantom image.

    Parameters
    ----------
    image_size : tuple of int
        ``(width, height)`` in pixels.

    Returns
    -------
    tuple of float
        ``(x, y)`` pixel size in mm, :data:`FIELD_OF_VIEW_MM` divided by the size.
    """
    width_px, height_px = image_size
    if width_px <= 0 or height_px <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return (FIELD_OF_VIEW_MM[0] / width_px, FIELD_OF_VIEW_MM[1] / height_px)


# ----------------------------------------------------------------------------
# Geometry helpers (canonical frame: mm, x anterior, y down)
# ----------------------------------------------------------------------------


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Normalise vectors along the last axis (zero vectors stay zero)."""
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norm > 0, norm, 1.0)


def _rotation(angle_rad: float) -> np.ndarray:
    """2x2 rotation matrix acting on column vectors (x, y)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return np.array([[c, -s], [s, c]])


def _rotate_about(points_mm: np.ndarray, centre_mm: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotate points (..., 2) about ``centre_mm`` by ``angle_rad`` (clockwise on screen)."""
    return (points_mm - centre_mm) @ _rotation(angle_rad).T + centre_mm


def _catmull_rom(control_mm: np.ndarray, closed: bool) -> np.ndarray:
    """Sample a centripetal Catmull-Rom spline through control points.

    Parameters
    ----------
    control_mm : ndarray, shape (N, 2)
        Control points; the curve passes through each of them.
    closed : bool
        Whether the curve is closed.

    Returns
    -------
    ndarray, shape (M, 2)
        Samples; control point ``j`` is sample ``j * _SAMPLES_PER_SEGMENT``.
        ``M = N * S`` for closed curves and ``(N - 1) * S + 1`` for open ones.
    """
    p = np.asarray(control_mm, dtype=np.float64)
    if closed:
        padded = np.concatenate([p[-1:], p, p[:2]])
    else:
        padded = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    num_segments = len(padded) - 3
    p0, p1, p2, p3 = (padded[k : k + num_segments, None, :] for k in range(4))
    eps = 1e-6
    t1 = np.linalg.norm(p1 - p0, axis=-1, keepdims=True) ** 0.5 + eps
    t2 = t1 + np.linalg.norm(p2 - p1, axis=-1, keepdims=True) ** 0.5 + eps
    t3 = t2 + np.linalg.norm(p3 - p2, axis=-1, keepdims=True) ** 0.5 + eps
    u = np.arange(_SAMPLES_PER_SEGMENT)[None, :, None] / _SAMPLES_PER_SEGMENT
    t = t1 + (t2 - t1) * u
    a1 = ((t1 - t) * p0 + t * p1) / t1
    a2 = ((t2 - t) * p1 + (t - t1) * p2) / (t2 - t1)
    a3 = ((t3 - t) * p2 + (t - t2) * p3) / (t3 - t2)
    b1 = ((t2 - t) * a1 + t * a2) / t2
    b2 = ((t3 - t) * a2 + (t - t1) * a3) / (t3 - t1)
    curve = ((t2 - t) * b1 + (t - t1) * b2) / (t2 - t1)
    curve = curve.reshape(-1, 2)
    if not closed:
        curve = np.concatenate([curve, p[-1:]])
    return curve


def _polyline_tangents(curve_mm: np.ndarray, closed: bool) -> np.ndarray:
    """Unit tangents (M, 2) of a sampled curve by central differences."""
    if closed:
        diff = np.roll(curve_mm, -1, axis=0) - np.roll(curve_mm, 1, axis=0)
    else:
        diff = np.gradient(curve_mm, axis=0)
    return _unit(diff)


def _landmark_at(curve_mm: np.ndarray, index: int, closed: bool = True) -> _Landmark:
    """The curve sample ``index`` as a landmark with its local tangent."""
    tangents = _polyline_tangents(curve_mm, closed)
    return _Landmark(curve_mm[index].copy(), tangents[index].copy())


def _extreme_index(curve_mm: np.ndarray, start: int, stop: int, direction: tuple[float, float]) -> int:
    """Index in ``[start, stop]`` of the sample furthest along ``direction``."""
    span = curve_mm[start : stop + 1]
    return start + int(np.argmax(span @ np.asarray(direction, dtype=np.float64)))


def _deepest_index(curve_mm: np.ndarray, start: int, stop: int, inward: tuple[float, float]) -> int:
    """Deepest point of a concavity between samples ``start`` and ``stop``.

    The depth is the distance from the chord ``curve[start] -> curve[stop]``
    towards the side given by the rough direction ``inward``.
    """
    chord = _unit(curve_mm[stop] - curve_mm[start])
    normal = np.array([-chord[1], chord[0]])
    if normal @ np.asarray(inward) < 0:
        normal = -normal
    depth = (curve_mm[start : stop + 1] - curve_mm[start]) @ normal
    return start + int(np.argmax(depth))


def _arc_midpoint_index(curve_mm: np.ndarray, start: int, stop: int) -> int:
    """Sample in ``[start, stop]`` closest to the arc-length midpoint."""
    segment_mm = np.linalg.norm(np.diff(curve_mm[start : stop + 1], axis=0), axis=1)
    arc_mm = np.concatenate([[0.0], np.cumsum(segment_mm)])
    return start + int(np.argmin(np.abs(arc_mm - arc_mm[-1] / 2)))


def _thick_curve(outer_mm: np.ndarray, thickness_mm: np.ndarray) -> np.ndarray:
    """Closed polygon of a band of given thickness on the right of a curve.

    Parameters
    ----------
    outer_mm : ndarray, shape (M, 2)
        The outer surface, traversed so that the band lies on its right-hand
        side on screen (y down).
    thickness_mm : ndarray, shape (M,)
        Band thickness at each sample.

    Returns
    -------
    ndarray, shape (2M, 2)
        The outer curve followed by the inner curve reversed.
    """
    tangents = _polyline_tangents(outer_mm, closed=False)
    normals = np.stack([-tangents[:, 1], tangents[:, 0]], axis=1)
    inner = outer_mm + normals * thickness_mm[:, None]
    return np.concatenate([outer_mm, inner[::-1]])


def _resample_thickness(thickness_mm: Sequence[float]) -> np.ndarray:
    """Thickness at control points -> thickness at the samples of an open spline."""
    values = np.asarray(thickness_mm, dtype=np.float64)
    samples = np.arange((len(values) - 1) * _SAMPLES_PER_SEGMENT + 1) / _SAMPLES_PER_SEGMENT
    return np.interp(samples, np.arange(len(values)), values)


def _ellipse(centre_mm: np.ndarray, semi_axes_mm: tuple[float, float], angle_rad: float, num: int = 72) -> np.ndarray:
    """Closed polygon (num, 2) of a rotated ellipse, clockwise on screen."""
    phi = np.linspace(0.0, 2 * np.pi, num, endpoint=False)
    local = np.stack([semi_axes_mm[0] * np.cos(phi), semi_axes_mm[1] * np.sin(phi)], axis=1)
    return local @ _rotation(angle_rad).T + centre_mm


def _polygon_centroid(polygon_mm: np.ndarray) -> np.ndarray:
    """Area centroid (2,) of a simple closed polygon (N, 2)."""
    x, y = polygon_mm[:, 0], polygon_mm[:, 1]
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    area = cross.sum() / 2
    return np.array([((x + x1) * cross).sum(), ((y + y1) * cross).sum()]) / (6 * area)


def _polyline_intersection(a_mm: np.ndarray, b_mm: np.ndarray) -> tuple[np.ndarray, int]:
    """First crossing of polyline ``a`` with polyline ``b``.

    Returns
    -------
    point : ndarray, shape (2,)
        The crossing point (if the polylines do not cross, the point of ``a``
        closest to ``b``).
    index : int
        Index of the segment (or sample) of ``a`` where it happens.
    """
    p, r = a_mm[:-1, None, :], (a_mm[1:] - a_mm[:-1])[:, None, :]
    q, s = b_mm[None, :-1, :], (b_mm[1:] - b_mm[:-1])[None, :, :]
    denominator = r[..., 0] * s[..., 1] - r[..., 1] * s[..., 0]
    safe = np.where(np.abs(denominator) > 1e-12, denominator, np.nan)
    qp = q - p
    t = (qp[..., 0] * s[..., 1] - qp[..., 1] * s[..., 0]) / safe
    u = (qp[..., 0] * r[..., 1] - qp[..., 1] * r[..., 0]) / safe
    hits = np.argwhere((t >= 0) & (t <= 1) & (u >= 0) & (u <= 1))
    if len(hits):
        i, j = hits[0]
        return a_mm[i] + t[i, j] * (a_mm[i + 1] - a_mm[i]), int(i)
    distances = np.linalg.norm(a_mm[:, None, :] - b_mm[None, :, :], axis=-1)
    i = int(np.argmin(distances.min(axis=1)))
    return a_mm[i].copy(), i


def _jitter(rng: np.random.Generator, points_mm: Sequence[Sequence[float]], sd_mm: float) -> np.ndarray:
    """Control points (N, 2) plus independent Gaussian jitter."""
    points = np.asarray(points_mm, dtype=np.float64)
    return points + rng.normal(0.0, sd_mm, points.shape)


# ----------------------------------------------------------------------------
# Anatomy (canonical frame)
# ----------------------------------------------------------------------------


def _skull(rng: np.random.Generator) -> tuple[list[_Structure], dict[str, _Landmark], dict[str, np.ndarray]]:
    """Vault with frontal and nasal bones, anterior cranial base; nasion."""
    vault = _jitter(rng, [
        (22, 160), (7, 125), (6, 90), (20, 50), (50, 20), (98, 11), (131, 24),
        (146, 50), (149, 75), (141, 95), (145, 106), (151, 118),
    ], 0.6)
    vault[:7] = (vault[:7] - (95.0, 95.0)) * rng.uniform(0.95, 1.04) + (95.0, 95.0)
    vault[8, 0] += rng.uniform(-2.0, 2.0)  # glabella prominence
    vault[9] += (rng.uniform(-1.5, 1.5), rng.uniform(-2.0, 2.0))  # nasion
    vault[10:] += (rng.uniform(-1.5, 2.0), rng.uniform(-1.5, 2.5))  # nasal bones
    outer = _catmull_rom(vault, closed=False)
    thickness = _resample_thickness([6, 7, 7, 7, 7, 7, 7, 8, 9, 6, 3, 2.2]) * rng.uniform(0.9, 1.1)
    s = _SAMPLES_PER_SEGMENT
    nasion = _deepest_index(outer, 8 * s, 11 * s, inward=(-1.0, 0.0))
    tangents = _polyline_tangents(outer, closed=False)
    landmarks = {"N": _Landmark(outer[nasion].copy(), tangents[nasion].copy())}
    base = _catmull_rom(_jitter(rng, [(134, 88), (115, 93), (96, 97)], 0.5), closed=False)
    structures = [
        _Structure(_thick_curve(outer, thickness), _D_VAULT),
        _Structure(_thick_curve(base, np.full(len(base), 3.5)), _D_BASE),
    ]
    refs = {"glabella": vault[8], "nasion": vault[9], "nasal_tip": vault[11], "vault": vault}
    return structures, landmarks, refs


def _sella_and_cranial_base(rng: np.random.Generator) -> tuple[list[_Structure], dict[str, _Landmark], np.ndarray]:
    """Sphenoid body with the sella turcica, clivus; sella and the base's lower border."""
    centre = np.array([80.0, 100.0]) + rng.normal(0.0, 1.5, 2)
    radius_mm = rng.uniform(4.5, 6.5)
    phi = np.deg2rad(np.linspace(-40.0, 220.0, 40))
    fossa = centre + radius_mm * np.stack([np.cos(phi), np.sin(phi)], axis=1)
    cx, cy, r = centre[0], centre[1], radius_mm
    posterior = _jitter(rng, [
        (cx - 0.8 * r, cy - 1.35 * r), (cx - 0.8 * r - 2.8, cy - 1.3 * r),
        (cx - r - 3.5, cy + 1), (cx - r - 4, cy + r + 6), (cx + 4, cy + r + 9),
        (cx + r + 10, cy + r + 4), (cx + r + 12, cy - 0.4 * r),
        (cx + r + 4, cy - 0.9 * r), (cx + 0.95 * r + 1, cy - 0.8 * r),
    ], 0.3)
    sphenoid = np.concatenate([fossa, posterior])
    sella = _Landmark(_polygon_centroid(fossa), np.zeros(2))
    clivus_control = _jitter(rng, [
        (cx - r - 3.5, cy + 2), (62, 112), (44, 127), (28, 137),
        (26, 147), (46, 143), (64, 137.5), (78, 126), (cx - r - 4, cy + r + 5),
    ], 0.6)
    clivus = _catmull_rom(clivus_control, closed=True)
    s = _SAMPLES_PER_SEGMENT
    lower_border = clivus[4 * s : 8 * s + 1]
    structures = [_Structure(sphenoid, _D_SPHENOID), _Structure(clivus, _D_BASE)]
    return structures, {"S": sella}, lower_border


def _orbit_and_ear_rod(rng: np.random.Generator) -> tuple[list[_Structure], dict[str, _Landmark]]:
    """Orbital rim (orbitale) and the ear-rod ring (porion)."""
    centre = np.array([126.0, 108.0]) + rng.normal(0.0, 1.5, 2)
    inner_axes = (rng.uniform(11.0, 13.0), rng.uniform(10.0, 12.0))
    angle = np.deg2rad(rng.uniform(-10.0, 10.0))
    rim_mm = rng.uniform(1.8, 2.6)
    inner = _ellipse(centre, inner_axes, angle, num=120)
    outer = _ellipse(centre, (inner_axes[0] + rim_mm, inner_axes[1] + rim_mm), angle)
    lowest = _extreme_index(inner, 0, len(inner) - 1, (0.0, 1.0))
    ear = np.array([55.0, 123.0]) + rng.normal(0.0, 1.5, 2)
    ring_outer_mm = rng.uniform(5.0, 6.0)
    structures = [
        _Structure(outer, _D_ORBIT_RIM),
        _Structure(inner, -_D_ORBIT_RIM),
        _Structure(_ellipse(ear, (ring_outer_mm, ring_outer_mm), 0.0), _D_EAR_ROD),
        _Structure(_ellipse(ear, (ring_outer_mm - 1.7, ring_outer_mm - 1.7), 0.0), -_D_EAR_ROD),
    ]
    landmarks = {
        "Or": _landmark_at(inner, lowest),
        "Po": _Landmark(ear - (0.0, ring_outer_mm), np.array([1.0, 0.0])),
    }
    return structures, landmarks


def _tooth(apex_mm: np.ndarray, tip_mm: np.ndarray, labial: np.ndarray, width_mm: float) -> tuple[np.ndarray, _Landmark]:
    """Tapered incisor outline from root apex to incisal tip; the tip landmark.

    ``labial`` is a rough direction of the labial (front) side.
    """
    axis = tip_mm - apex_mm
    across = _unit(np.array([-axis[1], axis[0]]))
    if across @ labial < 0:
        across = -across
    profile = np.array([
        (0.0, 0.0), (0.15, 0.23), (0.4, 0.41), (0.62, 0.5), (0.8, 0.43), (0.93, 0.23), (1.0, 0.05),
        (0.99, -0.07), (0.9, -0.21), (0.75, -0.37), (0.6, -0.48), (0.4, -0.41), (0.15, -0.23),
    ])
    control = apex_mm + profile[:, :1] * axis + profile[:, 1:] * width_mm * across
    outline = _catmull_rom(control, closed=True)
    tip = _extreme_index(outline, 0, len(outline) - 1, tuple(_unit(axis)))
    return outline, _landmark_at(outline, tip)


def _box(rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Rounded box outline (molar crown) with jittered corners."""
    return _catmull_rom(_jitter(rng, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], 0.4), closed=True)


def _maxilla(rng: np.random.Generator) -> tuple[list[_Structure], dict[str, _Landmark], dict[str, np.ndarray]]:
    """Maxilla with palate, upper incisor and molars; ANS, PNS, A point, upper incisal tip."""
    control = _jitter(rng, [
        (106, 163), (96, 153), (91, 146), (98, 143.2), (118, 142.5), (136, 142),
        (146, 141.5), (141, 144.5), (137.5, 151), (138.5, 156), (141, 160),
        (137, 163.5), (124, 165),
    ], 0.4)
    control[2, 0] += rng.uniform(-3.0, 3.0)  # PNS
    control[6, 0] += rng.uniform(-2.0, 2.0)  # ANS
    control[8, 0] += rng.uniform(-1.2, 1.2)  # A point depth
    control += (rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0))
    outline = _catmull_rom(control, closed=True)
    s = _SAMPLES_PER_SEGMENT
    pns = _extreme_index(outline, 1 * s, 3 * s, (-1.0, 0.0))
    ans = _extreme_index(outline, 5 * s, 7 * s, (1.0, 0.0))
    a_point = _deepest_index(outline, ans, 10 * s, inward=(-1.0, 0.0))
    prosthion = control[10]
    proclination = np.deg2rad(rng.uniform(16.0, 28.0))
    tip = prosthion + (0.5 + rng.uniform(-1.0, 1.0), 10.5 + rng.uniform(-1.0, 1.0))
    apex = tip - rng.uniform(21.5, 24.5) * np.array([np.sin(proclination), np.cos(proclination)])
    incisor, upper_tip = _tooth(apex, tip, np.array([1.0, 0.0]), rng.uniform(6.5, 7.5))
    molar_y = tip[1] - 4.0
    structures = [
        _Structure(outline, _D_MAXILLA),
        _Structure(incisor, _D_TOOTH),
        _Structure(_box(rng, 108, molar_y - 13, 118, molar_y), _D_MOLAR),
        _Structure(_box(rng, 119, molar_y - 12, 128, molar_y + 0.5), _D_MOLAR),
    ]
    landmarks = {
        "PNS": _landmark_at(outline, pns),
        "ANS": _landmark_at(outline, ans),
        "A": _landmark_at(outline, a_point),
        "UIT": upper_tip,
    }
    refs = {"ans": control[6], "upper_tip": tip}
    return structures, landmarks, refs


def _mandible(
    rng: np.random.Generator, upper_tip_mm: np.ndarray, base_lower_border_mm: np.ndarray
) -> tuple[list[_Structure], dict[str, _Landmark], dict[str, np.ndarray]]:
    """Mandible with lower incisor and molars; B, Pog, Me, Gn, Go, Ar, lower incisal tip."""
    control = _jitter(rng, [
        (66, 123.5), (72, 127), (73.5, 134), (83, 143), (96, 132), (100, 139),
        (99, 156), (104, 166), (118, 168), (130, 169), (135.5, 172), (134.5, 180),
        (132.5, 188), (134.5, 196), (136.5, 202), (134, 208.5), (127.5, 212),
        (118, 209), (96, 196), (80, 186), (72, 180), (68.5, 170), (66.5, 152), (60.5, 129),
    ], 0.4)
    body_scale = rng.uniform(0.95, 1.05)
    control[7:19, 0] = 72.0 + (control[7:19, 0] - 72.0) * body_scale
    control[13:16, 0] += rng.uniform(-1.5, 2.0)  # chin prominence
    control[12, 0] += rng.uniform(-1.2, 1.2)  # B point depth
    control[19:22] += rng.uniform(-3.0, 3.0, 2)  # gonial angle
    lower_tip = upper_tip_mm + (-2.5 + rng.uniform(-1.0, 1.0), -2.5 + rng.uniform(-1.0, 1.0))
    proclination = np.deg2rad(rng.uniform(18.0, 32.0))
    apex = lower_tip - rng.uniform(20.0, 23.0) * np.array([np.sin(proclination), -np.cos(proclination)])
    # Move the whole mandible a little about the condyle (and the lower incisor with it).
    condyle = control[0] + (0.0, 3.0)
    opening = np.deg2rad(rng.uniform(-1.5, 1.5))
    control = _rotate_about(control, condyle, opening)
    lower_tip, apex = _rotate_about(np.stack([lower_tip, apex]), condyle, opening)

    outline = _catmull_rom(control, closed=True)
    s = _SAMPLES_PER_SEGMENT
    pog = _extreme_index(outline, 12 * s, 16 * s, (1.0, 0.0))
    menton = _extreme_index(outline, 14 * s, 18 * s, (0.0, 1.0))
    gnathion = _arc_midpoint_index(outline, pog, menton)
    b_point = _deepest_index(outline, 10 * s, pog, inward=(-1.0, 0.0))
    bisector = _unit(_unit(control[19] - control[17]) + _unit(control[21] - control[23]))
    gonion = _extreme_index(outline, 18 * s, 22 * s, tuple(bisector))
    posterior_border = outline[21 * s : 23 * s + 1]
    articulare_mm, segment = _polyline_intersection(posterior_border, base_lower_border_mm)
    border_tangent = _unit(posterior_border[segment + 1] - posterior_border[segment])

    incisor, lower_tip_landmark = _tooth(apex, lower_tip, np.array([1.0, 0.0]), rng.uniform(5.5, 6.5))
    cortex = _thick_curve(outline[14 * s : 20 * s + 1], np.full(6 * s + 1, 2.2))
    molar_y = control[8, 1] - 1.5
    molars = [_box(rng, 106, molar_y, 117, molar_y + 12), _box(rng, 118, molar_y + 0.5, 128, molar_y + 13)]
    structures = [
        _Structure(outline, _D_MANDIBLE),
        _Structure(cortex, _D_CORTEX),
        _Structure(incisor, _D_TOOTH),
        *(_Structure(molar, _D_MOLAR) for molar in molars),
    ]
    landmarks = {
        "B": _landmark_at(outline, b_point),
        "Pog": _landmark_at(outline, pog),
        "Me": _landmark_at(outline, menton),
        "Gn": _landmark_at(outline, gnathion),
        "Go": _landmark_at(outline, gonion),
        "Ar": _Landmark(articulare_mm, border_tangent),
        "LIT": lower_tip_landmark,
    }
    refs = {"lower_tip": lower_tip, "b_point": control[12], "pog": control[14], "menton": control[16]}
    return structures, landmarks, refs


def _soft_tissue(
    rng: np.random.Generator, skull: dict[str, np.ndarray], maxilla: dict[str, np.ndarray], mandible: dict[str, np.ndarray]
) -> tuple[list[_Structure], dict[str, _Landmark]]:
    """Head and neck outline with the facial profile; Sn, UL, LL, soft-tissue pogonion."""
    vault = skull["vault"]
    upper_tip, lower_tip = maxilla["upper_tip"], mandible["lower_tip"]
    nose = rng.uniform(-3.0, 3.0, 2)
    lips = rng.uniform(-2.0, 2.0, 2)
    control = np.array([
        (-15, 60), vault[3] + (-6, -3), vault[4] + (-4, -6), vault[5] + (0, -6), vault[6] + (5, -5),
        vault[7] + (6, -2), skull["glabella"] + (6.5, 0), skull["nasion"] + (7 + rng.uniform(-1, 1), 1),
        skull["nasal_tip"] + (8, 5), maxilla["ans"] + (26, -6) + nose,  # 9 pronasale
        maxilla["ans"] + (16, 5) + 0.5 * nose, maxilla["ans"] + (8.5 + rng.uniform(-1, 1), 8),  # 11 subnasale
        upper_tip + (16.5 + lips[0], -13),  # 12 philtrum
        upper_tip + (18.5 + lips[0], -7), (upper_tip + lower_tip) / 2 + (11.5, 0.5),  # 13 UL, 14 stomion
        lower_tip + (17.5 + lips[1], 10), mandible["b_point"] + (11.5 + rng.uniform(-1, 1), 3),  # 15 LL, 16 fold
        mandible["pog"] + (12 + rng.uniform(-2, 2), 3), mandible["menton"] + (5, 9),  # 17 soft Pog, 18
        (115, 224), (103, 232), (100, 262), (10, 262), (-12, 200),
    ], dtype=np.float64)
    # Keep the labiomental fold a concavity between the lower lip and the soft chin.
    control[16, 0] = min(control[16, 0], control[15, 0] - 2.5, control[17, 0] - 2.5)
    control = control + rng.normal(0.0, 0.4, control.shape)
    outline = _catmull_rom(control, closed=True)
    s = _SAMPLES_PER_SEGMENT
    subnasale = _deepest_index(outline, 9 * s, 13 * s, inward=(-1.0, -0.6))
    upper_lip = _extreme_index(outline, 12 * s, 14 * s, (1.0, 0.0))
    lower_lip = _extreme_index(outline, 14 * s, 16 * s, (1.0, 0.0))
    soft_pog = _extreme_index(outline, 16 * s, 18 * s, (1.0, 0.0))
    airway = _catmull_rom(_jitter(rng, [
        (68, 134), (76, 140), (70, 150), (62, 165), (61, 190), (62, 250),
        (55, 250), (54, 190), (55, 160), (58, 142),
    ], 0.5), closed=True)
    landmarks = {
        "Sn": _landmark_at(outline, subnasale),
        "UL": _landmark_at(outline, upper_lip),
        "LL": _landmark_at(outline, lower_lip),
        "PogS": _landmark_at(outline, soft_pog),
    }
    return [_Structure(outline, _D_SOFT), _Structure(airway, _D_AIRWAY)], landmarks


def _vertebrae(rng: np.random.Generator) -> list[_Structure]:
    """C2 (with the dens) to C5 vertebral bodies."""
    c2 = _jitter(rng, [(42, 140), (46, 131), (51, 139), (55, 150), (54, 172), (41, 174), (38, 158)], 0.5)
    bodies = [_Structure(_catmull_rom(c2, closed=True), _D_VERTEBRA)]
    for top in (178.0, 198.0, 218.0):
        x0 = 38.0 - (top - 178.0) * 0.06
        bodies.append(_Structure(_box(rng, x0, top, x0 + 16.5, top + 15.0), _D_VERTEBRA))
    return bodies


def _anatomy(rng: np.random.Generator) -> tuple[list[_Structure], np.ndarray, np.ndarray]:
    """Random anatomy in the canonical frame.

    Returns
    -------
    structures : list of _Structure
    landmarks_mm : ndarray, shape (19, 2)
    tangents : ndarray, shape (19, 2)
        Unit tangents, zero for non-contour landmarks.
    """
    skull_structures, landmarks, skull_refs = _skull(rng)
    base_structures, sella, base_lower_border = _sella_and_cranial_base(rng)
    face_structures, face = _orbit_and_ear_rod(rng)
    maxilla_structures, maxilla, maxilla_refs = _maxilla(rng)
    mandible_structures, mandible, mandible_refs = _mandible(rng, maxilla_refs["upper_tip"], base_lower_border)
    soft_structures, soft = _soft_tissue(rng, skull_refs, maxilla_refs, mandible_refs)
    for part in (sella, face, maxilla, mandible, soft):
        landmarks.update(part)
    structures = [
        *soft_structures, *skull_structures, *base_structures, *face_structures,
        *maxilla_structures, *mandible_structures, *_vertebrae(rng),
    ]
    points = np.stack([landmarks[name].point_mm for name in ISBI_2015.abbreviations])
    tangents = np.stack([landmarks[name].tangent for name in ISBI_2015.abbreviations])
    tangents[~np.asarray(CONTOUR_LANDMARKS)] = 0.0
    return structures, points, _unit(tangents)


# ----------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------


def _rasterise(polygons_px: Sequence[np.ndarray], values: Sequence[float], shape: tuple[int, int]) -> np.ndarray:
    """Sum of filled polygons with exact horizontal and supersampled vertical coverage.

    Each polygon is filled with the even-odd rule; its value times the pixel
    coverage is added. Pixel ``(i, j)`` covers ``[j - 0.5, j + 0.5] x
    [i - 0.5, i + 0.5]``.

    Parameters
    ----------
    polygons_px : sequence of ndarray, each (N, 2)
        Closed polygons, (x, y) in pixels.
    values : sequence of float
        Value added inside each polygon.
    shape : tuple of int
        ``(H, W)`` of the output.

    Returns
    -------
    ndarray, shape (H, W), float32
    """
    height, width = shape
    start = np.concatenate(polygons_px)
    end = np.concatenate([np.roll(p, -1, axis=0) for p in polygons_px])
    weight = np.repeat(np.asarray(values, dtype=np.float64), [len(p) for p in polygons_px])
    polygon_id = np.repeat(np.arange(len(polygons_px)), [len(p) for p in polygons_px])
    # Sub-row k of the image samples y = (k + 0.5) / _SUBROWS - 0.5; an edge covers
    # the sub-rows with low <= y < high.
    y_low = np.minimum(start[:, 1], end[:, 1])
    y_high = np.maximum(start[:, 1], end[:, 1])
    num_subrows = height * _SUBROWS
    first = np.clip(np.ceil(_SUBROWS * (y_low + 0.5) - 0.5), 0, num_subrows).astype(np.int64)
    stop = np.clip(np.ceil(_SUBROWS * (y_high + 0.5) - 0.5), 0, num_subrows).astype(np.int64)
    counts = stop - first
    edge = np.repeat(np.arange(len(start)), counts)
    subrow = first[edge] + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    y = (subrow + 0.5) / _SUBROWS - 0.5
    x0, y0, x1, y1 = start[edge, 0], start[edge, 1], end[edge, 0], end[edge, 1]
    x = np.clip(x0 + (y - y0) * (x1 - x0) / (y1 - y0), -0.5, width - 0.5)
    # Pair crossings left to right within each (polygon, sub-row): even-odd rule.
    group = polygon_id[edge] * num_subrows + subrow
    order = np.argsort(group * (width + 1.0) + (x + 0.5))
    x, subrow, w = x[order], subrow[order], weight[edge][order] / _SUBROWS
    span_start, span_stop = x[0::2], x[1::2]
    span_row, span_weight = subrow[0::2] // _SUBROWS, w[0::2]
    # Coverage of pixel j by [a, b] is sum over kinks p (a: +, b: -) of clip(j + 1 - (p + 0.5), 0, 1):
    # a first-difference entry (1 - frac) at floor(p + 0.5) and frac at the next pixel.
    kink = np.concatenate([span_start, span_stop]) + 0.5
    sign = np.concatenate([span_weight, -span_weight])
    row = np.concatenate([span_row, span_row])
    column = np.floor(kink).astype(np.int64)
    fraction = kink - column
    stride = width + 2
    index = np.concatenate([row * stride + column, row * stride + column + 1])
    amount = np.concatenate([sign * (1.0 - fraction), sign * fraction])
    difference = np.bincount(index, amount, minlength=height * stride).reshape(height, stride)
    return np.cumsum(difference, axis=1)[:, :width].astype(np.float32)


def _pose(rng: np.random.Generator, landmarks_mm: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Random similarity transform keeping the landmarks inside the field of view.

    Returns
    -------
    scale : float
    rotation : ndarray, shape (2, 2)
    translation_mm : ndarray, shape (2,)
        ``p' = scale * rotation @ (p - centre) + centre + translation``.
    """
    scale = rng.uniform(0.92, 1.08)
    rotation = _rotation(np.deg2rad(rng.uniform(-4.0, 4.0)))
    translation = rng.uniform(-8.0, 8.0, 2)
    centre = np.asarray(_POSE_CENTRE_MM)
    moved = scale * (landmarks_mm - centre) @ rotation.T + centre + translation
    fov = np.asarray(FIELD_OF_VIEW_MM)
    low = _LANDMARK_MARGIN_MM - moved.min(axis=0)
    high = fov - _LANDMARK_MARGIN_MM - moved.max(axis=0)
    translation = translation + np.clip(0.0, low, high)
    return scale, rotation, translation


def _annotations_mm(
    rng: np.random.Generator, landmarks_mm: np.ndarray, tangents: np.ndarray
) -> np.ndarray:
    """Two annotators' marks (2, 19, 2) in mm: anisotropic along contours."""
    is_contour = np.asarray(CONTOUR_LANDMARKS)
    normals = np.stack([-tangents[:, 1], tangents[:, 0]], axis=1)
    sigma_along = np.asarray(_SIGMA_ALONG_MM)
    marks = []
    for annotator, noise_scale in enumerate(_ANNOTATOR_NOISE_SCALE):
        draws = np.clip(rng.standard_normal((3, len(landmarks_mm))), -_TRUNCATE_SIGMAS, _TRUNCATE_SIGMAS)
        bias = np.asarray(_JUNIOR_BIAS_ALONG_MM) if annotator == 1 else np.zeros(len(landmarks_mm))
        along = (sigma_along * draws[0] + bias) * noise_scale
        across = _SIGMA_ACROSS_MM * draws[1] * noise_scale
        contour_offset = along[:, None] * tangents + across[:, None] * normals
        point_offset = _SIGMA_POINT_MM * noise_scale * draws[1:].T
        marks.append(landmarks_mm + np.where(is_contour[:, None], contour_offset, point_offset))
    return np.stack(marks)


def _shape_outline(rng: np.random.Generator, centre_mm: np.ndarray) -> np.ndarray:
    """Occluder outline (N, 2) in mm: an ellipse or a rotated rectangle."""
    size_mm = rng.uniform(12.0, 35.0, 2)
    angle = rng.uniform(0.0, np.pi)
    if rng.random() < 0.5:
        return _ellipse(centre_mm, (size_mm[0] / 2, size_mm[1] / 2), angle, num=48)
    half = size_mm / 2
    corners = np.array([(-half[0], -half[1]), (half[0], -half[1]), (half[0], half[1]), (-half[0], half[1])])
    return corners @ _rotation(angle).T + centre_mm


def _choose_hard_kinds(rng: np.random.Generator) -> tuple[str, ...]:
    """A non-empty random subset of :data:`HARD_KINDS`."""
    chosen = rng.random(len(HARD_KINDS)) < 0.5
    if not chosen.any():
        chosen[rng.integers(len(HARD_KINDS))] = True
    return tuple(kind for kind, keep in zip(HARD_KINDS, chosen) if keep)


def _apply_occluders(
    rng: np.random.Generator, image: np.ndarray, landmarks_mm: np.ndarray, pixel_mm: np.ndarray
) -> None:
    """Blend 1-3 bright or dark blobs/rectangles over random landmarks (in place)."""
    for _ in range(rng.integers(1, 4)):
        centre = landmarks_mm[rng.integers(len(landmarks_mm))] + rng.normal(0.0, 4.0, 2)
        outline_px = _shape_outline(rng, centre) / pixel_mm - 0.5
        coverage = np.clip(_rasterise([outline_px], [1.0], image.shape), 0.0, 1.0)
        value = rng.uniform(0.85, 1.0) if rng.random() < 0.5 else rng.uniform(0.0, 0.1)
        alpha = rng.uniform(0.75, 1.0) * coverage
        image *= 1.0 - alpha
        image += alpha * value


def _apply_crop(
    rng: np.random.Generator, image: np.ndarray, landmarks_mm: np.ndarray, pixel_mm: np.ndarray
) -> None:
    """Blank a half-plane (collimator) hiding 2-5 landmarks (in place)."""
    direction = _unit(rng.normal(size=2))
    projection = np.sort(landmarks_mm @ direction)[::-1]
    hidden = rng.integers(2, 6)
    cut_mm = (projection[hidden - 1] + projection[hidden]) / 2
    height, width = image.shape
    x_mm = (np.arange(width, dtype=np.float32) + 0.5) * pixel_mm[0]
    y_mm = (np.arange(height, dtype=np.float32) + 0.5) * pixel_mm[1]
    blanked = (x_mm[None, :] * direction[0] + y_mm[:, None] * direction[1]) > cut_mm
    image[blanked] = rng.uniform(0.8, 0.95) if rng.random() < 0.5 else rng.uniform(0.0, 0.06)


def _gamma_table(gamma: float) -> np.ndarray:
    """uint8 lookup table (256,) applying ``v ** gamma`` on [0, 1]."""
    return np.round(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)


def _placed_anatomy(
    rng: np.random.Generator,
) -> tuple[list[_Structure], np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Random anatomy moved to a random pose (the first draws of every case).

    Returns
    -------
    structures : list of _Structure
        In the canonical frame; ``place`` moves their polygons.
    landmarks_mm : ndarray, shape (19, 2)
        Placed landmarks in mm.
    tangents : ndarray, shape (19, 2)
        Placed unit contour tangents in mm space, zero for non-contour landmarks.
    place : callable
        The pose, mapping (..., 2) canonical mm to placed mm.
    """
    structures, landmarks_mm, tangents = _anatomy(rng)
    scale, rotation, translation = _pose(rng, landmarks_mm)
    centre = np.asarray(_POSE_CENTRE_MM)

    def place(points_mm: np.ndarray) -> np.ndarray:
        return scale * (points_mm - centre) @ rotation.T + centre + translation

    return structures, place(landmarks_mm), tangents @ rotation.T, place


def annotator_model_sd_mm() -> tuple[np.ndarray, np.ndarray]:
    """SD of the difference between the two simulated annotators that the generator's parameters imply.

    Each annotator's offset along the tangent is ``_SIGMA_ALONG_MM[k]`` times a
    standard normal draw clipped to ``[-_TRUNCATE_SIGMAS, _TRUNCATE_SIGMAS]``, scaled by the
    annotator's ``_ANNOTATOR_NOISE_SCALE``; across it the same with
    ``_SIGMA_ACROSS_MM``. The junior's constant bias along the contour does not
    change an SD.

    Returns
    -------
    sd_along_mm, sd_across_mm : ndarray, shape (19,)
        Expected SD (mm) of the inter-annotator difference along and across the
        contour; for sella (no contour) both are the isotropic SD of one axis.
    """
    c = _TRUNCATE_SIGMAS
    density = math.exp(-c * c / 2) / math.sqrt(2 * math.pi)
    inside = math.erf(c / math.sqrt(2))  # P(|z| < c)
    clipped_variance = inside - 2 * c * density + c * c * (1.0 - inside)  # E[clip(z, -c, c)^2]
    scale = np.sqrt(clipped_variance * np.sum(np.square(_ANNOTATOR_NOISE_SCALE)))
    is_contour = np.asarray(CONTOUR_LANDMARKS)
    along = np.where(is_contour, np.asarray(_SIGMA_ALONG_MM), _SIGMA_POINT_MM) * scale
    across = np.where(is_contour, _SIGMA_ACROSS_MM, _SIGMA_POINT_MM) * scale
    return along, across


def contour_tangents_mm(seed: int, index: int) -> np.ndarray:
    """The contour tangent at each landmark of phantom case ``index``, without rendering it.

    The same tangents as ``render_case(seed, index, size).tangent`` but in mm
    space (a physical direction, the same at every image size); along them the
    simulated annotators' errors have the SDs ``_SIGMA_ALONG_MM``, across them
    ``_SIGMA_ACROSS_MM``.

    Parameters
    ----------
    seed, index : int
        As for :func:`render_case`.

    Returns
    -------
    ndarray, shape (19, 2), float64
        Unit (x, y) tangents; zero for the non-contour landmark (sella).
    """
    return _placed_anatomy(np.random.default_rng([seed, index]))[2]


def render_case(seed: int, index: int, image_size: tuple[int, int] = (640, 800), hard: bool = False) -> PhantomCase:
    """Render one phantom cephalogram.

    Deterministic in its arguments: all randomness comes from
    ``np.random.default_rng([seed, index])`` (anatomy, pose, appearance,
    annotators) and, for hard cases, ``np.random.default_rng([seed, index, 1])``
    (degradations), so a hard case shows the same anatomy and annotations as
    the normal case with the same ``seed`` and ``index``.

    Parameters
    ----------
    seed : int
        Data set seed (non-negative).
    index : int
        Image index within the data set (non-negative).
    image_size : tuple of int
        ``(width, height)`` in pixels; the field of view is always
        :data:`FIELD_OF_VIEW_MM`.
    hard : bool
        Apply one or more of the :data:`HARD_KINDS` degradations.

    Returns
    -------
    PhantomCase
    """
    width_px, height_px = image_size
    pixel_mm = np.asarray(phantom_pixel_size_mm(image_size))
    rng = np.random.default_rng([seed, index])
    structures, landmarks_mm, tangents, place = _placed_anatomy(rng)
    annotations_mm = _annotations_mm(rng, landmarks_mm, tangents)

    brightness = rng.uniform(0.03, 0.12)
    contrast = rng.uniform(0.85, 1.15)
    gamma = rng.uniform(0.8, 1.25)
    blur_mm = rng.uniform(0.2, 0.5)
    noise_sd = rng.uniform(0.01, 0.03)
    shading = rng.normal(0.0, 0.03, (4, 5)).astype(np.float32)

    hard_rng = np.random.default_rng([seed, index, 1])
    kinds = _choose_hard_kinds(hard_rng) if hard else ()
    if "low_contrast" in kinds:
        contrast *= hard_rng.uniform(0.15, 0.3)
        noise_sd *= 1.5

    polygons_px = [place(s.polygon_mm) / pixel_mm - 0.5 for s in structures]
    density = _rasterise(polygons_px, [s.density for s in structures], (height_px, width_px))
    image = density * np.float32(contrast) + np.float32(brightness)
    image += cv2.resize(shading, (width_px, height_px), interpolation=cv2.INTER_LINEAR)
    if "occluder" in kinds:
        _apply_occluders(hard_rng, image, landmarks_mm, pixel_mm)
    if "cropped" in kinds:
        _apply_crop(hard_rng, image, landmarks_mm, pixel_mm)
    blur_px = blur_mm / float(pixel_mm.mean())
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=blur_px, sigmaY=blur_px)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sd)
    image *= 255.0
    image += 0.5
    pixels = np.clip(image, 0.0, 255.0).astype(np.uint8)
    pixels = cv2.LUT(pixels, _gamma_table(gamma))

    tangent_px = _unit(tangents / pixel_mm)
    return PhantomCase(
        image=pixels,
        annotations_px=annotations_mm / pixel_mm - 0.5,
        true_px=landmarks_mm / pixel_mm - 0.5,
        tangent=tangent_px,
        is_hard=bool(hard),
        hard_kinds=kinds,
    )


def hard_case_mask(num_images: int, seed: int, hard_fraction: float) -> np.ndarray:
    """Which images of a data set are hard cases.

    Exactly ``round(hard_fraction * num_images)`` images are hard, spread evenly
    over the index range with a seed-dependent phase, so that any contiguous
    split of the data set gets its share.

    Parameters
    ----------
    num_images : int
    seed : int
    hard_fraction : float
        In [0, 1].

    Returns
    -------
    ndarray, shape (num_images,), bool
    """
    if not 0.0 <= hard_fraction <= 1.0:
        raise ValueError(f"hard_fraction must be in [0, 1], got {hard_fraction}")
    num_hard = round(hard_fraction * num_images)
    mask = np.zeros(num_images, dtype=bool)
    if num_hard:
        phase = np.random.default_rng([seed, 0x4A7D]).random()
        mask[np.floor((np.arange(num_hard) + phase) * num_images / num_hard).astype(np.int64)] = True
    return mask


def generate_phantom(
    num_images: int, seed: int, image_size: tuple[int, int] = (640, 800), hard_fraction: float = 0.1
) -> Iterator[PhantomCase]:
    """Render a phantom data set lazily.

    Parameters
    ----------
    num_images : int
    seed : int
    image_size : tuple of int
        ``(width, height)`` in pixels.
    hard_fraction : float
        Fraction of hard cases, see :func:`hard_case_mask`.

    Yields
    ------
    PhantomCase
        ``render_case(seed, i, image_size, hard=mask[i])`` for ``i`` in order.
    """
    mask = hard_case_mask(num_images, seed, hard_fraction)
    for index in range(num_images):
        yield render_case(seed, index, image_size, hard=bool(mask[index]))


def annotator_disagreement(cases: Sequence[PhantomCase], pixel_size_mm: tuple[float, float]) -> dict[str, np.ndarray]:
    """Inter-annotator disagreement per landmark.

    Parameters
    ----------
    cases : sequence of PhantomCase
        Cases rendered at the same image size.
    pixel_size_mm : tuple of float
        ``(x, y)`` pixel size in mm of those cases.

    Returns
    -------
    dict
        ``'mean_distance_mm'`` : ndarray (19,), mean Euclidean distance in mm
        between annotator 0 and annotator 1.
        ``'along_across_ratio'`` : ndarray (19,), SD of their difference
        projected on each case's contour tangent over the SD projected on the
        normal (:func:`chh_lib.data.disagreement.along_across_sd`; NaN for
        non-contour landmarks).
    """
    if len(cases) == 0:
        raise ValueError("need at least one case")
    pixel_mm = np.asarray(pixel_size_mm, dtype=np.float64)
    difference_mm = np.stack([c.annotations_px[0] - c.annotations_px[1] for c in cases]) * pixel_mm
    tangent_mm = np.stack([c.tangent for c in cases]) * pixel_mm  # a pixel-space direction in mm space
    return {
        "mean_distance_mm": np.linalg.norm(difference_mm, axis=-1).mean(axis=0),
        "along_across_ratio": along_across_sd(difference_mm, tangent_mm).ratio,
    }

r"""Landmark detection metrics in millimetres.

Radial error of landmark :math:`k` in image :math:`n`:

.. math:: e_{n,k} = \sqrt{((\hat x - x) s_x)^2 + ((\hat y - y) s_y)^2}

with :math:`(s_x, s_y)` the image's pixel size in mm. Missing landmarks (NaN
targets) give NaN errors and are left out of every summary.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as _stats
from sklearn import metrics as _skm
from sklearn.exceptions import UndefinedMetricWarning


def radial_error_mm(pred_px: np.ndarray, target_px: np.ndarray, pixel_size_mm: np.ndarray) -> np.ndarray:
    """Euclidean distance between prediction and target in mm.

    Parameters
    ----------
    pred_px, target_px : ndarray, shape (N, K, 2)
        (x, y) in pixels; NaN marks a missing landmark.
    pixel_size_mm : ndarray, shape (N, 2)
        (x, y) pixel size of each image in mm.

    Returns
    -------
    ndarray, shape (N, K), float64
        NaN where either point is missing.
    """
    pred_px = np.asarray(pred_px, dtype=np.float64)
    target_px = np.asarray(target_px, dtype=np.float64)
    pixel_size_mm = np.asarray(pixel_size_mm, dtype=np.float64)
    if pred_px.shape != target_px.shape or pred_px.shape[-1] != 2:
        raise ValueError(f"prediction {pred_px.shape} and target {target_px.shape} must both be (N, K, 2)")
    if pixel_size_mm.shape != (pred_px.shape[0], 2):
        raise ValueError(f"pixel_size_mm must be ({pred_px.shape[0]}, 2), got {pixel_size_mm.shape}")
    delta_mm = (pred_px - target_px) * pixel_size_mm[:, None, :]
    return np.hypot(delta_mm[..., 0], delta_mm[..., 1])


def mean_radial_error(radial_error_mm: np.ndarray) -> tuple[float, float]:
    """Mean radial error (MRE) and its standard deviation over present landmarks, in mm.

    Parameters
    ----------
    radial_error_mm : ndarray, any shape
        NaN entries (missing landmarks) are ignored.

    Returns
    -------
    (float, float)
        MRE and the population standard deviation; NaN if nothing is present.
    """
    present = _present(radial_error_mm)
    if present.size == 0:
        return float("nan"), float("nan")
    return float(present.mean()), float(present.std())


def success_detection_rate(
    radial_error_mm: np.ndarray,
    thresholds_mm: Sequence[float] = (2.0, 2.5, 3.0, 4.0),
    inclusive: bool = False,
) -> dict[float, float]:
    r"""Successful detection rate (SDR) in percent for each threshold.

    .. math:: \mathrm{SDR}(t) = 100 \cdot \frac{|\{e < t\}|}{|\{e\}|}

    Parameters
    ----------
    radial_error_mm : ndarray, any shape
        NaN entries are ignored.
    thresholds_mm : sequence of float
    inclusive : bool
        Count ``e <= t`` as a success (CL-Detection 2023) instead of the authors' strict ``e < t``.

    Returns
    -------
    dict
        Threshold in mm -> percent of present landmarks within it (NaN if none present).
    """
    present = _present(radial_error_mm)
    rates: dict[float, float] = {}
    for threshold in thresholds_mm:
        if present.size == 0:
            rates[float(threshold)] = float("nan")
            continue
        hits = present <= threshold if inclusive else present < threshold
        rates[float(threshold)] = float(100.0 * hits.mean())
    return rates


def _present(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[~np.isnan(values)]


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram and the calibration errors they give.

    Attributes
    ----------
    edges : ndarray, shape (B + 1,)
        Bin edges of the confidence; bins are ``[a, b)``, the last closed (``numpy.histogram``).
    count : ndarray, shape (B,), int
        Predictions per bin.
    mean_confidence, accuracy : ndarray, shape (B,)
        Mean confidence and fraction correct per bin; NaN for an empty bin.
    ece_percent : float
        :math:`100 \\sum_b (n_b / N) |acc_b - conf_b|` over non-empty bins.
    mce_percent : float
        :math:`100 \\max_b |acc_b - conf_b|` over non-empty bins.
    """

    edges: np.ndarray
    count: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray
    ece_percent: float
    mce_percent: float


# ---------------------------------------------------------------------------
# Uncertainty: expected radial error (ERE) and other heatmap-based scores
# ---------------------------------------------------------------------------

#: Preferred numbers of whole rows per band in the first pass of
#: :func:`expected_radial_error` (the first that divides H is used, else 1). Bands of
#: whole rows keep row-major order and make the pass one long contiguous reduction.
_ERE_BAND_ROWS = (4, 5, 3, 6, 2, 8)


def _check_heatmaps_and_pixel_size(heatmaps: torch.Tensor, pixel_size_mm: torch.Tensor) -> None:
    if heatmaps.ndim != 4:
        raise ValueError(f"expected (N, K, H, W) heatmaps, got shape {tuple(heatmaps.shape)}")
    if not heatmaps.is_floating_point():
        raise TypeError(f"heatmaps must be floating point, got {heatmaps.dtype}")
    if tuple(pixel_size_mm.shape) != (heatmaps.shape[0], 2):
        raise ValueError(f"pixel_size_mm must be ({heatmaps.shape[0]}, 2), got {tuple(pixel_size_mm.shape)}")


def is_significant(normalised: torch.Tensor, cutoff: float) -> torch.Tensor:
    r"""The ERE's rule for a significant pixel: :math:`\tilde p_i = p_i / \max p > c`, strictly.

    Parameters
    ----------
    normalised : Tensor, any shape
        Heatmap values divided by their map's maximum (NaN where the maximum is 0 or NaN).
    cutoff : float
        The fraction :math:`c` of the maximum a pixel must exceed.

    Returns
    -------
    Tensor, the same shape, bool
        False for NaN.
    """
    return normalised > cutoff


def significant_mask(heatmaps: torch.Tensor, cutoff: float = 0.05) -> torch.Tensor:
    r"""The significant set :math:`S = \{i : p_i / \max p > c\}` of each map, as the ERE selects it.

    Parameters
    ----------
    heatmaps : Tensor, shape (..., H, W), floating point
        Non-negative probabilities (only ratios matter).
    cutoff : float
        See :func:`is_significant`.

    Returns
    -------
    Tensor, shape (..., H, W), bool
        Empty for a map whose maximum is 0 or NaN.
    """
    return is_significant(heatmaps / heatmaps.amax((-2, -1), keepdim=True), cutoff)


def expected_radial_error(
    heatmaps: torch.Tensor, pixel_size_mm: torch.Tensor, cutoff: float = 0.05
) -> torch.Tensor:
    r"""Expected radial error (ERE) of each heatmap around its own mode, in mm.

    With :math:`p` one landmark's heatmap, :math:`\tilde p = p / \max p`, the
    significant pixels :math:`S = \{i : \tilde p_i > c\}` (strictly greater than the
    cutoff :math:`c`: :func:`is_significant`, :func:`significant_mask`) and
    :math:`q_i = \tilde p_i / \sum_{j \in S} \tilde p_j`,

    .. math::

        \mathrm{ERE} = \sum_{i \in S} q_i
            \sqrt{((x_i - \hat x) s_x)^2 + ((y_i - \hat y) s_y)^2}

    where :math:`(\hat x, \hat y)` is the first maximum in row-major order
    (:math:`x` = column, :math:`y` = row) and :math:`(s_x, s_y)` the image's pixel size.

    The result is exact (the same pixels, weights and arg-max as the per-pixel
    definition) but only one pass reads the whole tensor: it takes the maximum of
    every band of a few whole rows (4 when H allows, see :data:`_ERE_BAND_ROWS`).
    The map's maximum is the largest band maximum, and only bands whose maximum
    divided by the map's maximum exceeds the cutoff can hold significant pixels
    (division by a positive number is monotonic); only those bands are gathered.
    The arg-max is the smallest row-major index among significant pixels equal to
    the maximum, so ties anywhere in the map resolve as ``argmax`` of the flattened
    map does. Everything is vectorised over images, landmarks and pixels and runs on
    the input's device (on CUDA, ``nonzero`` synchronises). A non-contiguous input
    is copied once.

    Parameters
    ----------
    heatmaps : Tensor, shape (N, K, H, W), float32 or float64
        Non-negative probabilities (a map need not sum to 1: only ratios matter).
    pixel_size_mm : Tensor, shape (N, 2)
        (x, y) pixel size of each image in mm; any device, cast to the heatmaps'.
    cutoff : float
        Fraction of the maximum a pixel must exceed to count (0.05 in the paper).

    Returns
    -------
    Tensor, shape (N, K), the heatmaps' dtype and device
        ERE in mm. NaN for a map whose maximum is 0 or NaN (the definition divides
        by the maximum) and when ``cutoff >= 1`` (no pixel is significant).
        Infinite values are not supported.
    """
    _check_heatmaps_and_pixel_size(heatmaps, pixel_size_mm)
    n, k, height, width = heatmaps.shape
    device, dtype = heatmaps.device, heatmaps.dtype
    nk = n * k
    band = next((rows for rows in _ERE_BAND_ROWS if height % rows == 0), 1)
    num_bands = height // band
    bands = heatmaps.reshape(nk * num_bands, band * width)  # a view for contiguous input

    # Pass 1 (the only one over the whole tensor): maximum of each band of whole rows.
    band_max = bands.amax(-1).view(nk, num_bands)
    peak = band_max.amax(-1)  # (NK,) maximum of each map

    # Candidate bands: only these can hold a pixel with p / max > cutoff (division by a
    # positive maximum is monotonic). NaN or zero maxima give no candidates -> NaN ERE.
    cand_map, cand_band = torch.nonzero(is_significant(band_max / peak[:, None], cutoff), as_tuple=True)  # (C,)
    values = bands.index_select(0, cand_map * num_bands + cand_band)  # (C, band * W)

    # Pre-filter with a threshold slightly below cutoff * max (a superset of the
    # significant pixels whatever the rounding), then apply the exact test below on
    # the few survivors only.
    limit = cutoff * peak
    slack = 8.0 * torch.finfo(dtype).eps * limit.abs()
    normal = limit.abs() > torch.finfo(dtype).tiny * 1e3
    loose = torch.where(normal, limit - slack, torch.full_like(limit, -torch.inf))
    # (1-D index_select throughout: multi-dimensional advanced indexing is much slower on CPU.)
    per_band = band * width
    hit = torch.nonzero((values > loose.index_select(0, cand_map)[:, None]).view(-1)).squeeze(1)  # (P,)
    cand = torch.div(hit, per_band, rounding_mode="floor")
    offset = hit - cand * per_band
    value = values.view(-1).index_select(0, hit)
    owner = cand_map.index_select(0, cand)  # (P,) map index n * K + k
    owner_peak = peak.index_select(0, owner)
    norm = value / owner_peak
    # The definition: normalise, then compare. Pixels that only passed the loose
    # pre-filter get weight 0 (masking them out would cost more than carrying them).
    weight = torch.where(is_significant(norm, cutoff), norm, torch.zeros_like(norm))
    row = cand_band.index_select(0, cand) * band + torch.div(offset, width, rounding_mode="floor")
    col = offset % width

    # Arg-max: every pixel equal to the maximum passed the filter (cutoff < 1; for
    # cutoff >= 1 every weight is 0 and the ERE NaN anyway); keep the smallest
    # row-major flat index per map.
    flat = row * width + col
    no_index = height * width
    ties = torch.where(value == owner_peak, flat, torch.full_like(flat, no_index))
    argmax_flat = torch.full((nk,), no_index, dtype=torch.long, device=device)
    argmax_flat.scatter_reduce_(0, owner, ties, reduce="amin")
    mode = argmax_flat.index_select(0, owner)

    image = torch.div(owner, k, rounding_mode="floor")
    pixel = pixel_size_mm.to(device=device, dtype=dtype)
    dx = (col - mode % width).to(dtype) * pixel[:, 0].index_select(0, image)
    dy = (row - torch.div(mode, width, rounding_mode="floor")).to(dtype) * pixel[:, 1].index_select(0, image)
    distance = torch.hypot(dx, dy)
    total = torch.zeros(nk, dtype=dtype, device=device).index_add_(0, owner, weight)
    moment = torch.zeros(nk, dtype=dtype, device=device).index_add_(0, owner, weight * distance)
    return (moment / total).reshape(n, k)


def heatmap_entropy(heatmaps: torch.Tensor) -> torch.Tensor:
    r"""Shannon entropy of each heatmap, in nats.

    .. math:: H(p) = -\sum_i p_i \log p_i, \qquad 0 \log 0 = 0

    Parameters
    ----------
    heatmaps : Tensor, shape (N, K, H, W)
        Probabilities; each map is used as given (not renormalised).

    Returns
    -------
    Tensor, shape (N, K), the heatmaps' dtype and device
        0 for a one-hot map, :math:`\log(HW)` for a uniform one.
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"expected (N, K, H, W) heatmaps, got shape {tuple(heatmaps.shape)}")
    return -torch.special.xlogy(heatmaps, heatmaps).sum((-2, -1))


def spatial_spread_mm(heatmaps: torch.Tensor, pixel_size_mm: torch.Tensor) -> torch.Tensor:
    r"""Spatial spread of each heatmap in mm: root of the trace of its position covariance.

    With :math:`P = \sum_i p_i`, the marginal moments
    :math:`\mu_x = \sum_i p_i x_i / P`, :math:`\mathrm{Var}_x = \sum_i p_i x_i^2 / P - \mu_x^2`
    (and the same for :math:`y`; :math:`x` = column, :math:`y` = row, in pixels),

    .. math:: \sigma = \sqrt{\mathrm{Var}_x s_x^2 + \mathrm{Var}_y s_y^2}

    Parameters
    ----------
    heatmaps : Tensor, shape (N, K, H, W)
        Non-negative weights; normalised by each map's sum.
    pixel_size_mm : Tensor, shape (N, 2)
        (x, y) pixel size of each image in mm.

    Returns
    -------
    Tensor, shape (N, K), the heatmaps' dtype and device
        Spread in mm; NaN for a map summing to 0.
    """
    _check_heatmaps_and_pixel_size(heatmaps, pixel_size_mm)
    height, width = heatmaps.shape[-2:]
    dtype, device = heatmaps.dtype, heatmaps.device
    col_mass = heatmaps.sum(-2)  # (N, K, W) marginal over x
    row_mass = heatmaps.sum(-1)  # (N, K, H) marginal over y
    total = col_mass.sum(-1)
    xs = torch.arange(width, dtype=dtype, device=device)
    ys = torch.arange(height, dtype=dtype, device=device)

    def variance(mass: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        mean = (mass * coords).sum(-1) / total
        # centred second moment: no cancellation from E[x^2] - E[x]^2
        return (mass * (coords - mean[..., None]) ** 2).sum(-1) / total

    pixel = pixel_size_mm.to(device=device, dtype=dtype)
    var_mm2 = variance(col_mass, xs) * pixel[:, None, 0] ** 2 + variance(row_mass, ys) * pixel[:, None, 1] ** 2
    return torch.sqrt(var_mm2)


def uncertainty_scores(
    heatmaps: torch.Tensor, pixel_size_mm: torch.Tensor, cutoff: float = 0.05
) -> dict[str, torch.Tensor]:
    """All heatmap uncertainty scores; higher means less certain for each of them.

    Parameters
    ----------
    heatmaps : Tensor, shape (N, K, H, W)
    pixel_size_mm : Tensor, shape (N, 2)
    cutoff : float
        ERE cutoff (see :func:`expected_radial_error`).

    Returns
    -------
    dict of str -> Tensor, each shape (N, K)
        ``"ere"`` (mm), ``"neg_mode_prob"`` (minus the heatmap maximum),
        ``"entropy"`` (nats) and ``"spread"`` (mm).
    """
    return {
        "ere": expected_radial_error(heatmaps, pixel_size_mm, cutoff),
        "neg_mode_prob": -heatmaps.amax((-2, -1)),
        "entropy": heatmap_entropy(heatmaps),
        "spread": spatial_spread_mm(heatmaps, pixel_size_mm),
    }


# ---------------------------------------------------------------------------
# Calibration of the mode probability (reliability diagrams, ECE)
# ---------------------------------------------------------------------------


def correct_within_pixel(radial_error_mm: np.ndarray, pixel_size_mm: np.ndarray) -> np.ndarray:
    r"""Whether each prediction is "correct": within the radius of a disc of one pixel's area.

    .. math:: e < \sqrt{s_x s_y / \pi}

    (The authors hard-code 0.30234 mm; here each image's own pixel size is used.)

    Parameters
    ----------
    radial_error_mm : ndarray, shape (M,)
    pixel_size_mm : ndarray, shape (M, 2)
        (x, y) pixel size of each prediction's image in mm.

    Returns
    -------
    ndarray, shape (M,), bool
        A NaN error gives False; callers should drop missing landmarks first
        rather than count them as wrong.
    """
    error = np.asarray(radial_error_mm, dtype=np.float64)
    pixel = np.asarray(pixel_size_mm, dtype=np.float64)
    if error.ndim != 1 or pixel.shape != (error.shape[0], 2):
        raise ValueError(f"expected errors (M,) and pixel sizes (M, 2), got {error.shape} and {pixel.shape}")
    radius = np.sqrt(pixel[:, 0] * pixel[:, 1] / np.pi)
    with np.errstate(invalid="ignore"):
        return error < radius


def chh_bin_edges(num_bins: int = 10, upper: float = 0.15) -> np.ndarray:
    """The authors' confidence bin edges: ``linspace(0, upper, num_bins + 1)``, last edge 1.1.

    Equal bins over [0, ``upper``] except that the last one stretches to cover every
    confidence up to 1 (sharp heatmaps rarely put more than 15 % on one pixel).

    Returns
    -------
    ndarray, shape (num_bins + 1,), float64
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    edges = np.linspace(0.0, upper, num_bins + 1)
    edges[-1] = 1.1
    return edges


def _confidence_and_correct(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    hit = np.asarray(correct, dtype=bool).ravel()
    if conf.shape != hit.shape:
        raise ValueError(f"confidence {conf.shape} and correct {hit.shape} must have the same size")
    return conf, hit


def _bins_from_index(
    conf: np.ndarray, hit: np.ndarray, index: np.ndarray, edges: np.ndarray
) -> ReliabilityBins:
    """Per-bin statistics given each prediction's bin index (-1 = outside every bin)."""
    num_bins = len(edges) - 1
    inside = index >= 0
    count = np.bincount(index[inside], minlength=num_bins)
    conf_sum = np.bincount(index[inside], weights=conf[inside], minlength=num_bins)
    hit_sum = np.bincount(index[inside], weights=hit[inside].astype(np.float64), minlength=num_bins)
    filled = count > 0
    mean_conf = np.full(num_bins, np.nan)
    accuracy = np.full(num_bins, np.nan)
    mean_conf[filled] = conf_sum[filled] / count[filled]
    accuracy[filled] = hit_sum[filled] / count[filled]
    gap = np.abs(accuracy[filled] - mean_conf[filled])
    total = count.sum()
    ece = float(100.0 * np.sum(count[filled] / total * gap)) if total else 0.0
    mce = float(100.0 * gap.max()) if gap.size else 0.0
    return ReliabilityBins(
        edges=edges, count=count, mean_confidence=mean_conf, accuracy=accuracy, ece_percent=ece, mce_percent=mce
    )


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, edges: np.ndarray | None = None
) -> ReliabilityBins:
    r"""Reliability diagram of fixed confidence bins and its expected/maximum calibration error.

    .. math::

        \mathrm{ECE} = 100 \sum_{b : n_b > 0} \frac{n_b}{N} \left|\mathrm{acc}_b - \mathrm{conf}_b\right|,
        \qquad \mathrm{MCE} = 100 \max_{b : n_b > 0} \left|\mathrm{acc}_b - \mathrm{conf}_b\right|

    Bins follow ``numpy.histogram``: ``[a, b)``, the last one closed. Confidences
    outside ``[edges[0], edges[-1]]`` (and NaN ones) fall in no bin and are left out,
    :math:`N` included. Empty bins are skipped, so ECE and MCE are never NaN (0 when
    no prediction falls in any bin); their mean confidence and accuracy are NaN.

    Parameters
    ----------
    confidence : ndarray, shape (M,)
        Mode probability of each prediction.
    correct : ndarray, shape (M,), bool
        See :func:`correct_within_pixel`.
    edges : ndarray, shape (B + 1,), optional
        Increasing bin edges; default :func:`chh_bin_edges`.

    Returns
    -------
    ReliabilityBins
    """
    conf, hit = _confidence_and_correct(confidence, correct)
    edges = chh_bin_edges() if edges is None else np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("edges must be a strictly increasing 1-D array of at least 2 values")
    index = np.searchsorted(edges, conf, side="right") - 1
    index[conf == edges[-1]] = len(edges) - 2  # the last bin is closed
    index[(index < 0) | (index >= len(edges) - 1) | np.isnan(conf)] = -1
    return _bins_from_index(conf, hit, index, edges)


def adaptive_reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, num_bins: int = 10
) -> ReliabilityBins:
    r"""Equal-mass reliability bins; their ECE is the *adaptive ECE*.

    Predictions are sorted by confidence (stable sort, so ties keep their input
    order) and cut into ``num_bins`` consecutive groups whose sizes differ by at most
    one (``numpy.array_split`` of the ranks). Every prediction lands in exactly one
    bin; equal confidences may be split between two neighbouring bins so that the
    counts stay equal. ``edges`` holds, for the record, the smallest confidence of
    each bin and the largest confidence overall (bins may share an edge value when
    confidences tie). NaN confidences are dropped first.

    Parameters
    ----------
    confidence : ndarray, shape (M,)
    correct : ndarray, shape (M,), bool
    num_bins : int

    Returns
    -------
    ReliabilityBins
        Counts ``M // num_bins`` or one more (only ``M`` bins of one prediction when
        ``M < num_bins``); ECE and MCE as in :func:`reliability_bins`.
    """
    conf, hit = _confidence_and_correct(confidence, correct)
    present = ~np.isnan(conf)
    conf, hit = conf[present], hit[present]
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    order = np.argsort(conf, kind="stable")
    index = np.empty(conf.size, dtype=np.int64)
    groups = np.array_split(order, min(num_bins, max(conf.size, 1)))  # never an empty bin
    for b, members in enumerate(groups):
        index[members] = b
    if conf.size:
        starts = [conf[g[0]] if g.size else np.nan for g in groups]
        edges = np.array(starts + [conf[order[-1]]], dtype=np.float64)
    else:
        edges = np.full(len(groups) + 1, np.nan)
    return _bins_from_index(conf, hit, index, edges)


def calibration_summary(confidence: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """ECE and MCE over the CHH bins and the adaptive ECE (10 equal-mass bins), in percent.

    Returns
    -------
    dict
        ``ece_percent``, ``mce_percent`` (:func:`reliability_bins` with
        :func:`chh_bin_edges`) and ``adaptive_ece_percent`` (:func:`adaptive_reliability_bins`).
    """
    fixed = reliability_bins(confidence, correct)
    adaptive = adaptive_reliability_bins(confidence, correct)
    return {
        "ece_percent": fixed.ece_percent,
        "mce_percent": fixed.mce_percent,
        "adaptive_ece_percent": adaptive.ece_percent,
    }


# ---------------------------------------------------------------------------
# ERE as a predictor of the error
# ---------------------------------------------------------------------------


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired arrays must have the same size, got {a.shape} and {b.shape}")
    present = ~(np.isnan(a) | np.isnan(b))
    return a[present], b[present]


BIN_REMAINDERS = ("drop", "top")


def binned_means(ere_mm: np.ndarray, radial_error_mm: np.ndarray, bin_size: int = 36,
                 remainder: str = "drop") -> tuple[np.ndarray, np.ndarray]:
    """Mean ERE and mean radial error of consecutive bins of pairs sorted by ERE (the paper's Fig. 5 bins).

    Pairs with a NaN are dropped; the rest are sorted by ERE (stable sort) and cut
    into consecutive bins of ``bin_size``. The remainder (fewer than ``bin_size``
    pairs, those with the largest ERE) is dropped, as in the paper, or with
    ``remainder="top"`` joins the top bin.

    Parameters
    ----------
    ere_mm, radial_error_mm : ndarray, shape (M,)
    bin_size : int
    remainder : str
        ``drop`` (the paper's definition) or ``top``.

    Returns
    -------
    ere_means_mm, error_means_mm : ndarray, shape (B,)
        ``B = M_valid // bin_size`` bins, in increasing ERE.
    """
    if remainder not in BIN_REMAINDERS:
        raise ValueError(f"remainder must be one of {BIN_REMAINDERS}, got {remainder!r}")
    ere, error = _paired(ere_mm, radial_error_mm)
    num_bins = ere.size // bin_size
    order = np.argsort(ere, kind="stable")
    if remainder == "drop" or num_bins == 0:
        order = order[: num_bins * bin_size]
        return ere[order].reshape(num_bins, bin_size).mean(1), error[order].reshape(num_bins, bin_size).mean(1)
    bin_of_pair = np.minimum(np.arange(ere.size) // bin_size, num_bins - 1)  # (M_valid,) in sorted order
    pairs_per_bin = np.bincount(bin_of_pair)
    return (np.bincount(bin_of_pair, ere[order]) / pairs_per_bin,
            np.bincount(bin_of_pair, error[order]) / pairs_per_bin)


def binned_pearson(ere_mm: np.ndarray, radial_error_mm: np.ndarray, bin_size: int = 36,
                   drop_top_bins: int = 0, remainder: str = "drop") -> float:
    r"""Pearson correlation of binned ERE and binned radial error (the paper's Fig. 5 measure).

    The bins are those of :func:`binned_means`, and

    .. math:: r = \mathrm{corr}\left(\bar{e}^{\mathrm{ERE}}_b, \bar{e}^{\mathrm{rad}}_b\right)

    over the bins' means. Because the bins are sorted, their means average the
    noise of single pairs away and spread along one line; a few extreme bins
    (the failures, at the top) can then carry almost all of ``r``:
    ``drop_top_bins`` leaves out that many bins of largest ERE to show how much.

    Parameters
    ----------
    ere_mm, radial_error_mm : ndarray, shape (M,)
    bin_size : int
    drop_top_bins : int
        Bins of largest ERE left out before the correlation (0: the paper's measure).
    remainder : str
        ``drop`` (the paper's) or ``top``: what :func:`binned_means` does with the
        left-over pairs of largest ERE.

    Returns
    -------
    float
        NaN with fewer than 2 bins left or a constant series of bin means.
    """
    if drop_top_bins < 0:
        raise ValueError(f"drop_top_bins must be >= 0, got {drop_top_bins}")
    ere_means, error_means = binned_means(ere_mm, radial_error_mm, bin_size, remainder)
    ere_means, error_means = ere_means[: ere_means.size - drop_top_bins], error_means[: error_means.size - drop_top_bins]
    if ere_means.size < 2 or np.ptp(ere_means) == 0 or np.ptp(error_means) == 0:
        return float("nan")
    return float(np.corrcoef(ere_means, error_means)[0, 1])


def spearman(ere_mm: np.ndarray, radial_error_mm: np.ndarray) -> float:
    """Spearman rank correlation of ERE and radial error over the raw pairs (NaN pairs dropped).

    Returns
    -------
    float
        ``scipy.stats.spearmanr``'s statistic; NaN with fewer than 2 pairs or a constant input.
    """
    ere, error = _paired(ere_mm, radial_error_mm)
    if ere.size < 2 or np.ptp(ere) == 0 or np.ptp(error) == 0:
        return float("nan")
    return float(_stats.spearmanr(ere, error).statistic)


# ---------------------------------------------------------------------------
# Outlier detection from an uncertainty score
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RocCurve:
    """ROC curve of an outlier score (higher = more likely an outlier).

    Attributes
    ----------
    fpr, tpr : ndarray, shape (T,)
        False and true positive rates at each threshold.
    thresholds : ndarray, shape (T,)
        Decreasing score thresholds; a prediction is flagged when ``score >= threshold``.
    auroc : float
        Area under the curve; NaN when only one class is present.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auroc: float


def outliers(radial_error_mm: np.ndarray, threshold_mm: float = 4.0) -> np.ndarray:
    """Which predictions are outliers: ``radial_error_mm > threshold_mm`` (NaN -> False).

    Returns
    -------
    ndarray, same shape, bool
    """
    error = np.asarray(radial_error_mm, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return error > threshold_mm


def _scores_and_labels(scores: np.ndarray, is_outlier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    score = np.asarray(scores, dtype=np.float64).ravel()
    label = np.asarray(is_outlier, dtype=bool).ravel()
    if score.shape != label.shape:
        raise ValueError(f"scores {score.shape} and labels {label.shape} must have the same size")
    if np.isnan(score).any():
        raise ValueError("scores contain NaN: drop missing landmarks first")
    return score, label


def roc_curve_for(scores: np.ndarray, is_outlier: np.ndarray) -> RocCurve:
    """ROC curve and AUROC of ``scores`` for detecting ``is_outlier`` (sklearn.metrics).

    Parameters
    ----------
    scores : ndarray, shape (M,)
        Higher = more likely an outlier (use e.g. ERE or minus the mode probability).
    is_outlier : ndarray, shape (M,), bool
        See :func:`outliers`.

    Returns
    -------
    RocCurve
        With only one class present, the rates that are undefined are NaN and
        ``auroc`` is NaN (no exception, no warning).
    """
    score, label = _scores_and_labels(scores, is_outlier)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, thresholds = _skm.roc_curve(label, score, drop_intermediate=False)
    if label.all() or not label.any():
        return RocCurve(fpr=fpr, tpr=tpr, thresholds=thresholds, auroc=float("nan"))
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=thresholds, auroc=float(_skm.roc_auc_score(label, score)))


def score_threshold_at_tpr(scores: np.ndarray, is_outlier: np.ndarray, target_tpr: float = 0.5) -> float:
    """Largest score threshold whose true positive rate reaches ``target_tpr``.

    Flagging ``score >= threshold`` as an outlier, this is the operating point with the
    lowest false positive rate among those with ``TPR >= target_tpr``.

    Returns
    -------
    float
        NaN when no outlier is present.
    """
    score, label = _scores_and_labels(scores, is_outlier)
    if not label.any():
        return float("nan")
    candidates = np.unique(score)[::-1]  # decreasing: TPR is non-decreasing along it
    positives = np.sort(score[label])
    # TPR at threshold t = fraction of outlier scores >= t
    tpr = (positives.size - np.searchsorted(positives, candidates, side="left")) / positives.size
    reached = np.nonzero(tpr >= target_tpr - 1e-12)[0]
    return float(candidates[reached[0]]) if reached.size else float("nan")


def split_by_score(
    scores: np.ndarray,
    radial_error_mm: np.ndarray,
    threshold: float,
    sdr_thresholds_mm: Sequence[float] = (2.0, 2.5, 3.0, 4.0),
    inclusive: bool = False,
) -> dict[str, dict]:
    """MRE and SDR of the predictions the score keeps and of those it flags.

    The split uses the SCORE only (``score >= threshold`` -> ``erroneous_set``,
    otherwise ``good_set``), as a deployed system would; the true error is used only
    to measure each set. (The authors' code split by the true error instead.)

    Parameters
    ----------
    scores, radial_error_mm : ndarray, shape (M,)
        NaN errors (missing landmarks) are dropped with their scores.
    threshold : float
        E.g. from :func:`score_threshold_at_tpr`.
    sdr_thresholds_mm : sequence of float
    inclusive : bool
        See :func:`success_detection_rate`.

    Returns
    -------
    dict
        ``{"good_set": s, "erroneous_set": s}`` with each ``s`` =
        ``{"count": int, "mre_mm": float, "sdr_percent": {f"{t:g}": percent}}``
        (MRE and SDR NaN for an empty set).
    """
    score = np.asarray(scores, dtype=np.float64).ravel()
    error = np.asarray(radial_error_mm, dtype=np.float64).ravel()
    if score.shape != error.shape:
        raise ValueError(f"scores {score.shape} and errors {error.shape} must have the same size")
    present = ~np.isnan(error)
    score, error = score[present], error[present]
    flagged = score >= threshold
    result: dict[str, dict] = {}
    for name, members in (("good_set", ~flagged), ("erroneous_set", flagged)):
        subset = error[members]
        rates = success_detection_rate(subset, sdr_thresholds_mm, inclusive=inclusive)
        result[name] = {
            "count": int(subset.size),
            "mre_mm": mean_radial_error(subset)[0],
            "sdr_percent": {f"{t:g}": rate for t, rate in rates.items()},
        }
    return result


# ---------------------------------------------------------------------------
# Bootstrap confidence intervals over images
# ---------------------------------------------------------------------------


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    num_images: int,
    num_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    r"""Percentile bootstrap interval of a statistic, resampling whole images.

    Each resample draws ``num_images`` image indices with replacement
    (``numpy.random.default_rng(seed)``) and evaluates ``statistic(indices)``; the
    interval is the :math:`(1-\alpha)/2` and :math:`(1+\alpha)/2` percentiles
    (:math:`\alpha` = ``level``) of those values. Resamples whose statistic is NaN
    (e.g. no outlier drawn for an AUROC) are ignored (``numpy.nanpercentile``).

    Parameters
    ----------
    statistic : callable
        Takes an int64 index array of shape (num_images,) (image indices, repeats
        allowed) and returns a float.
    num_images : int
    num_resamples : int
    seed : int
    level : float
        Coverage in (0, 1).

    Returns
    -------
    (float, float)
        Lower and upper bound; NaN if every resample gave NaN.
    """
    if num_images < 1 or num_resamples < 1:
        raise ValueError("num_images and num_resamples must be >= 1")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    values = np.array(
        [float(statistic(rng.integers(0, num_images, size=num_images))) for _ in range(num_resamples)]
    )
    if np.isnan(values).all():
        return float("nan"), float("nan")
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.nanpercentile(values, [tail, 100.0 - tail])
    return float(low), float(high)

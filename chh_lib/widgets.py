r"""Interactive heatmap inspector for notebooks: landmark x image x temperature x ERE cutoff.

Three layers, so that the logic runs (and is tested) without a browser:

* :class:`LogitsCache` -- a bounded least-recently-used store of the network's
  logits, so that browsing a large split keeps at most ``max_images`` images of
  (K, H, W) logits in memory.
* :class:`HeatmapReader` -- pure state and arithmetic. For one image, landmark,
  temperature and ERE cutoff it returns a :class:`HeatmapReading`: the heatmap
  :math:`p = \mathrm{softmax}(z / T)`, its arg-max, the ground truth, both
  annotators, the ERE, the significant set :math:`S = \{i : p(i) / \max p > c\}`
  (size in pixels and mm\ :sup:`2`), the radial error, the mode probability and
  whether the ERE reaches the run's stored ERE threshold. :meth:`HeatmapReader.split_scores`
  holds the ERE and the radial error of every (image, landmark) pair of the split
  (a :class:`SplitScores`), which orders the images and finds outliers and false alarms.
* :class:`HeatmapInspector` -- the ipywidgets view: a landmark dropdown, a sort
  order (by ERE or by radial error) with a rank slider and previous/next buttons
  instead of a long list of images, "next outlier" and "next false alarm" buttons,
  sliders for the temperature (reset to the landmark's fitted one), the ERE cutoff
  and the crop, a log/linear toggle, a flag line, an HTML table of the numbers and
  an ``Output`` widget with the figure (a PNG). Changing a control redraws.

Example (in a notebook)::

    inspector = HeatmapInspector(run_dir, split="test")
    display(inspector.widget)
"""
from __future__ import annotations

import base64
import io
import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.figure import Figure

from chh_lib.engine import predict
from chh_lib.evaluation import LoadedRun, load_run
from chh_lib.heatmaps import argmax_2d, scale_logits, softmax_2d
from chh_lib.metrics import expected_radial_error, outliers, radial_error_mm, significant_mask
from chh_lib.plots import heatmap_overlay

if TYPE_CHECKING:
    import ipywidgets

#: Range of the temperature slider, as powers of ten (widened to hold every fitted temperature).
TEMPERATURE_RANGE_LOG10 = (-1.0, 1.5)
#: Range of the ERE cutoff slider, as powers of ten (0.001 to 0.5).
CUTOFF_RANGE_LOG10 = (-3.0, math.log10(0.5))
#: Images whose logits the reader keeps by default.
DEFAULT_CACHE_IMAGES = 8
#: Sort orders of the inspector's images: value -> label.
ORDERS = {"ere": "ERE", "error": "radial error"}


class LogitsCache:
    """A bounded least-recently-used cache: image index -> (logits (1, K, H, W), image (H, W)).

    Parameters
    ----------
    max_images : int
        Images kept at most (at least 1); storing one more evicts the least recently used.

    Attributes
    ----------
    evictions : int
        Entries evicted so far.
    """

    def __init__(self, max_images: int = DEFAULT_CACHE_IMAGES) -> None:
        if int(max_images) < 1:
            raise ValueError(f"the logits cache must hold at least one image, got max_images={max_images}")
        self.max_images = int(max_images)
        self.evictions = 0
        self._entries: OrderedDict[int, tuple[torch.Tensor, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, image_index: object) -> bool:
        return image_index in self._entries

    @property
    def keys(self) -> list[int]:
        """Cached image indices, least recently used first."""
        return list(self._entries)

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached logits and images."""
        return sum(logits.element_size() * logits.nelement() + image.nbytes
                   for logits, image in self._entries.values())

    def get(self, image_index: int) -> tuple[torch.Tensor, np.ndarray] | None:
        """The entry of ``image_index`` (marked as most recently used), or None when absent."""
        entry = self._entries.get(image_index)
        if entry is not None:
            self._entries.move_to_end(image_index)
        return entry

    def put(self, image_index: int, logits: torch.Tensor, image: np.ndarray) -> list[int]:
        """Store an entry as the most recently used one; returns the evicted image indices."""
        self._entries[image_index] = (logits, image)
        self._entries.move_to_end(image_index)
        evicted = []
        while len(self._entries) > self.max_images:
            evicted.append(self._entries.popitem(last=False)[0])
        self.evictions += len(evicted)
        return evicted


@dataclass(frozen=True)
class HeatmapReading:
    r"""Everything the inspector shows for one (image, landmark, temperature, cutoff).

    Attributes
    ----------
    image_index, landmark_index : int
    image_id, landmark : str
        Image identifier and landmark name.
    temperature : float
        Temperature :math:`T` dividing the logits.
    ere_cutoff : float
        Cutoff :math:`c` of the significant set.
    heatmap : ndarray, shape (H, W)
        :math:`\mathrm{softmax}(z / T)` over the network grid (sums to 1), float64.
    pixel_size_mm : ndarray, shape (2,)
        (x, y) size of a grid pixel in mm.
    prediction_px, target_px : ndarray, shape (2,)
        Arg-max and ground truth (mean of the annotators), (x, y) in grid pixels.
    annotators_px : ndarray, shape (A, 2)
    ere_mm, radial_error_mm : float
        Expected radial error of the heatmap at cutoff ``ere_cutoff`` and true error of the
        prediction (NaN when the landmark is not annotated).
    mode_prob : float
        Probability of the arg-max pixel.
    significant_pixels : int
        :math:`|S|`, the pixels with :math:`p(i) / \max p > c`.
    significant_area_mm2 : float
        :math:`|S| \, s_x s_y` in mm\ :sup:`2`.
    ere_threshold_mm : float or None
        The run's stored ERE threshold (None when it has none).
    flagged : bool or None
        ``ere_mm >= ere_threshold_mm``; None without a threshold.
    """

    image_index: int
    landmark_index: int
    image_id: str
    landmark: str
    temperature: float
    ere_cutoff: float
    heatmap: np.ndarray
    pixel_size_mm: np.ndarray
    prediction_px: np.ndarray
    target_px: np.ndarray
    annotators_px: np.ndarray
    ere_mm: float
    radial_error_mm: float
    mode_prob: float
    significant_pixels: int
    significant_area_mm2: float
    ere_threshold_mm: float | None
    flagged: bool | None


def significant_set(heatmap: np.ndarray, cutoff: float) -> np.ndarray:
    r"""The significant set :math:`S = \{i : p(i) / \max_j p(j) > c\}` of one heatmap.

    The ERE's own rule (:func:`chh_lib.metrics.significant_mask`), in float64.

    Parameters
    ----------
    heatmap : ndarray, shape (H, W)
        Non-negative probabilities (only ratios matter).
    cutoff : float
        The fraction :math:`c` of the maximum a pixel must exceed (strictly).

    Returns
    -------
    ndarray, shape (H, W), bool
        Empty when the maximum is 0.
    """
    return significant_mask(torch.tensor(np.asarray(heatmap, dtype=np.float64)), cutoff).numpy()


def descending_order(values: np.ndarray) -> np.ndarray:
    """Indices that sort ``values`` (shape (M,)) from largest to smallest; NaN last, ties in index order."""
    values = np.asarray(values, dtype=np.float64)
    key = np.where(np.isnan(values), -np.inf, values)
    return np.argsort(-key, kind="stable")


@dataclass(frozen=True)
class SplitScores:
    """ERE and radial error of every (image, landmark) pair of a split, for navigation.

    Attributes
    ----------
    ere_mm, radial_error_mm : ndarray, shape (N, K)
        At the fitted temperatures and the run's ERE cutoff; NaN errors mark missing landmarks.
    ere_threshold_mm : float or None
        The run's stored ERE threshold (None when it has none).
    outlier_threshold_mm : float
        A prediction with a radial error above this is an outlier.
    """

    ere_mm: np.ndarray
    radial_error_mm: np.ndarray
    ere_threshold_mm: float | None
    outlier_threshold_mm: float

    def order(self, landmark_index: int, key: str = "ere") -> np.ndarray:
        """Image indices (N,) of one landmark, by ``key`` ("ere" or "error") from largest to smallest."""
        if key not in ORDERS:
            raise ValueError(f"unknown sort order {key!r}; choose one of {list(ORDERS)}")
        values = self.ere_mm if key == "ere" else self.radial_error_mm
        return descending_order(values[:, landmark_index])

    def outlier_pairs(self) -> np.ndarray:
        """(image, landmark) pairs (M, 2) with a radial error above the outlier threshold, largest error first."""
        return self._pairs(outliers(self.radial_error_mm, self.outlier_threshold_mm), self.radial_error_mm)

    def false_alarm_pairs(self) -> np.ndarray:
        """Pairs (M, 2) flagged by the ERE threshold (ERE >= t) that are not outliers, largest ERE first.

        Empty without a threshold. Missing landmarks (NaN error) are neither outliers nor false alarms.
        """
        if self.ere_threshold_mm is None:
            return np.zeros((0, 2), dtype=np.int64)
        present = ~np.isnan(self.radial_error_mm)
        with np.errstate(invalid="ignore"):
            alarm = present & (self.ere_mm >= self.ere_threshold_mm)
        alarm &= ~outliers(self.radial_error_mm, self.outlier_threshold_mm)
        return self._pairs(alarm, self.ere_mm)

    @staticmethod
    def _pairs(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
        images, landmarks = np.nonzero(mask)
        order = descending_order(values[images, landmarks])
        return np.stack([images[order], landmarks[order]], axis=1).astype(np.int64)


def threshold_description(stored: dict[str, Any] | None) -> str:
    """One line saying which ERE threshold a run stores (``LoadedRun.ere_threshold``), or that it has none."""
    if stored is None:
        return "no ERE threshold is stored in this run (chh calibrate chooses one on held-out data)"
    value = stored.get("ere_threshold_mm")
    split = stored.get("split", "the held-out split")
    outlier_mm = stored.get("outlier_threshold_mm", float("nan"))
    if value is None or not np.isfinite(value):
        return (f"the stored ERE threshold is undefined: split {split!r} had no prediction with an error "
                f"above {outlier_mm:g} mm")
    return (f"ERE threshold {value:.2f} mm, chosen on split {split!r} to flag {stored.get('target_tpr', 0.5):g} "
            f"of its {stored.get('num_outliers', '?')} outliers (radial error > {outlier_mm:g} mm)")


class HeatmapReader:
    """Heatmaps and their numbers for the images of one split of a trained run.

    Parameters
    ----------
    run : LoadedRun or path
        A loaded run, or a run directory (loaded with ``data_dir``).
    split : str
        Split whose images are inspected.
    device : str or torch.device
        Where the network runs (once per image while its logits stay cached).
    data_dir : path, optional
        Data set of a run given as a directory (default: the one it recorded).
    cache_images : int
        Images whose logits are kept (least recently used evicted first).
    """

    def __init__(self, run: LoadedRun | str | Path, split: str = "test", device: str | torch.device = "cpu",
                 data_dir: str | Path | None = None, cache_images: int = DEFAULT_CACHE_IMAGES) -> None:
        self.run = run if isinstance(run, LoadedRun) else load_run(Path(run), data_dir)
        self.split = split
        self.dataset = self.run.dataset(split)
        if len(self.dataset) == 0:
            raise ValueError(f"split {split!r} holds no images")
        self.device = torch.device(device)
        self.model = self.run.model.eval().to(self.device)
        self.landmarks = self.run.data.landmarks
        fitted = self.run.temperatures
        self.fitted_temperatures = (np.ones(self.landmarks.num_landmarks) if fitted is None
                                    else np.asarray(fitted, dtype=np.float64))
        self.ere_cutoff = float(self.run.config.eval.ere_cutoff)
        self.outlier_threshold_mm = float(self.run.config.eval.outlier_threshold_mm)
        self.cache = LogitsCache(cache_images)
        self.forward_passes = 0
        self._scores: SplitScores | None = None

    @property
    def num_images(self) -> int:
        """Images in the split."""
        return len(self.dataset)

    @property
    def image_ids(self) -> list[str]:
        """Identifiers of the split's images, in order."""
        return list(self.dataset.image_ids)

    @property
    def hard_cases(self) -> set[str]:
        """Image identifiers the data set marks as hard cases (the phantom's; empty for other data)."""
        return set(self.run.data.descriptor.get("hard_cases", []))

    @property
    def ere_threshold_mm(self) -> float | None:
        """The ERE threshold (mm) stored in the run by calibration; None when missing or undefined."""
        stored = self.run.ere_threshold
        value = None if stored is None else stored.get("ere_threshold_mm")
        return float(value) if value is not None and np.isfinite(value) else None

    @property
    def threshold_note(self) -> str:
        """One line describing the stored ERE threshold (see :func:`threshold_description`)."""
        return threshold_description(self.run.ere_threshold)

    def _entry(self, image_index: int) -> tuple[torch.Tensor, np.ndarray]:
        if not 0 <= image_index < self.num_images:
            raise IndexError(f"image {image_index} of {self.num_images}")
        entry = self.cache.get(image_index)
        if entry is None:
            item = self.dataset[image_index]
            with torch.no_grad():
                logits = self.model(item["image"][None].to(self.device)).float().cpu()  # (1, K, H, W)
            self.forward_passes += 1
            entry = (logits, item["image"][0].numpy())
            self.cache.put(image_index, *entry)
        return entry

    def logits(self, image_index: int) -> torch.Tensor:
        """Logits (1, K, H, W) of one image, computed when not cached."""
        return self._entry(image_index)[0]

    def image(self, image_index: int) -> np.ndarray:
        """The network's input image (H, W) of one image."""
        return self._entry(image_index)[1]

    def heatmaps(self, image_index: int, temperatures: np.ndarray | float | None = None) -> np.ndarray:
        """All K heatmaps (K, H, W) of one image at ``temperatures`` (default: the fitted ones)."""
        temperature = self.fitted_temperatures if temperatures is None else temperatures
        return softmax_2d(scale_logits(self.logits(image_index), torch.as_tensor(temperature)))[0].numpy()

    def split_scores(self) -> SplitScores:
        """ERE and radial error (N, K) of the whole split at the fitted temperatures (computed once).

        The network runs over the split in batches (:func:`chh_lib.engine.predict`); only the
        (N, K) numbers are kept, not the logits.
        """
        if self._scores is None:
            predictions = predict(self.model, self.dataset, self.device, self.run.config.eval.batch_size,
                                  self.fitted_temperatures, self.ere_cutoff)
            errors = radial_error_mm(predictions.pred_px, self.dataset.target_px, self.dataset.pixel_size_mm)
            self._scores = SplitScores(np.asarray(predictions.ere_mm, dtype=np.float64), errors,
                                       self.ere_threshold_mm, self.outlier_threshold_mm)
        return self._scores

    def read(self, image_index: int, landmark_index: int, temperature: float | None = None,
             cutoff: float | None = None) -> HeatmapReading:
        """Heatmap and numbers of one landmark of one image.

        Parameters
        ----------
        image_index, landmark_index : int
        temperature : float, optional
            Default: the run's fitted temperature of the landmark (1 before calibration).
        cutoff : float, optional
            ERE cutoff :math:`c` in (0, 1); default: the run's (0.05 in the paper).
        """
        if not 0 <= landmark_index < self.landmarks.num_landmarks:
            raise IndexError(f"landmark {landmark_index} of {self.landmarks.num_landmarks}")
        temperature = float(self.fitted_temperatures[landmark_index] if temperature is None else temperature)
        cutoff = self.ere_cutoff if cutoff is None else float(cutoff)
        if not 0 < cutoff < 1:
            raise ValueError(f"the ERE cutoff must lie in (0, 1), got {cutoff}")
        logits = self.logits(image_index)[:, landmark_index:landmark_index + 1]
        heatmap = softmax_2d(scale_logits(logits, temperature)).double()  # (1, 1, H, W)
        pixel_size = self.dataset.pixel_size_mm[image_index].astype(np.float64)  # (2,)
        prediction = argmax_2d(logits)[0, 0].double().numpy()
        target = self.dataset.target_px[image_index, landmark_index].astype(np.float64)
        error = radial_error_mm(prediction[None, None], target[None, None], pixel_size[None])[0, 0]
        ere = float(expected_radial_error(heatmap, torch.from_numpy(pixel_size[None]), cutoff)[0, 0])
        significant = int(significant_set(heatmap[0, 0].numpy(), cutoff).sum())
        threshold = self.ere_threshold_mm
        return HeatmapReading(
            image_index=int(image_index),
            landmark_index=int(landmark_index),
            image_id=self.dataset.image_ids[image_index],
            landmark=self.landmarks.names[landmark_index],
            temperature=temperature,
            ere_cutoff=cutoff,
            heatmap=heatmap[0, 0].numpy(),
            pixel_size_mm=pixel_size,
            prediction_px=prediction,
            target_px=target,
            annotators_px=self.dataset.annotations_px[image_index, :, landmark_index].astype(np.float64),
            ere_mm=ere,
            radial_error_mm=float(error),
            mode_prob=float(heatmap.max()),
            significant_pixels=significant,
            significant_area_mm2=float(significant * pixel_size[0] * pixel_size[1]),
            ere_threshold_mm=threshold,
            flagged=None if threshold is None else bool(ere >= threshold),
        )


def reading_text(reading: HeatmapReading, abbreviation: str = "") -> str:
    """One line of plain text with the numbers of a reading."""
    name = f"{reading.landmark} ({abbreviation})" if abbreviation else reading.landmark
    return (f"{reading.image_id} · {name} · T = {reading.temperature:.3g}, c = {reading.ere_cutoff:.3g}: "
            f"ERE {reading.ere_mm:.2f} mm, radial error {reading.radial_error_mm:.2f} mm, mode probability "
            f"{reading.mode_prob:.3g}, |S| = {reading.significant_pixels} px "
            f"({reading.significant_area_mm2:.1f} mm²)")


def flag_text(reading: HeatmapReading, fitted_temperature: float | None = None,
              threshold_cutoff: float | None = None, note: str = "") -> str:
    """Plain-text flag line: whether the reading's ERE reaches the run's stored ERE threshold.

    Parameters
    ----------
    reading : HeatmapReading
    fitted_temperature, threshold_cutoff : float, optional
        Temperature and cutoff at which the threshold was chosen; when the reading's differ,
        the line says that the comparison is only indicative.
    note : str
        What to say when the run has no threshold (e.g. :func:`threshold_description`).
    """
    threshold = reading.ere_threshold_mm
    if threshold is None:
        return f"no flag: {note or 'no ERE threshold is stored in this run'}"
    if reading.flagged:
        text = f"FLAGGED: ERE {reading.ere_mm:.2f} mm ≥ threshold {threshold:.2f} mm (a likely error)"
    else:
        text = f"not flagged: ERE {reading.ere_mm:.2f} mm < threshold {threshold:.2f} mm"
    other_temperature = fitted_temperature is not None and not math.isclose(
        reading.temperature, fitted_temperature, rel_tol=1e-6)
    other_cutoff = threshold_cutoff is not None and not math.isclose(reading.ere_cutoff, threshold_cutoff, rel_tol=1e-6)
    if other_temperature or other_cutoff:
        at = "the fitted T" + ("" if threshold_cutoff is None else f" and c = {threshold_cutoff:.3g}")
        text += f"; the threshold was chosen at {at}, so with other settings the comparison is only indicative"
    return text


def draw_reading(reading: HeatmapReading, image: np.ndarray, figure: Figure, log_scale: bool = True,
                 crop_half_size_px: int | None = None, outline: bool = True) -> Figure:
    """Draw a reading into ``figure`` (cleared first): the whole image and a crop around the prediction.

    Parameters
    ----------
    reading : HeatmapReading
    image : ndarray, shape (H, W)
    figure : Figure
    log_scale : bool
        Log10 or linear colour scale.
    crop_half_size_px : int, optional
        Half size of the crop in grid pixels (default: an eighth of the image width, at least 8 px).
    outline : bool
        Outline the significant set :math:`S` (at the reading's cutoff) on the crop.
    """
    figure.clear()
    crop = crop_half_size_px or default_crop(image.shape)
    context, detail = figure.subplots(1, 2, width_ratios=(1, 1.25))
    heatmap_overlay(image, reading.heatmap, prediction_px=reading.prediction_px, target_px=reading.target_px,
                    log_scale=log_scale, ax=context, colorbar=False, title=f"{reading.image_id}: whole image")
    context.get_legend().remove()
    context.add_patch(_square(reading.prediction_px, crop))
    flag = "" if reading.flagged is None else (" · FLAGGED" if reading.flagged else " · not flagged")
    heatmap_overlay(image, reading.heatmap, prediction_px=reading.prediction_px, target_px=reading.target_px,
                    annotators_px=reading.annotators_px, crop_half_size_px=crop, log_scale=log_scale,
                    ax=detail, colorbar=True, significant_cutoff=reading.ere_cutoff if outline else None,
                    title=f"{reading.landmark}, T = {reading.temperature:.3g}, c = {reading.ere_cutoff:.3g}{flag}\n"
                          f"ERE {reading.ere_mm:.2f} mm, error {reading.radial_error_mm:.2f} mm, "
                          f"|S| = {reading.significant_pixels} px")
    return figure


def default_crop(shape: tuple[int, ...]) -> int:
    """Default half size (px) of the crop of an (H, W) image: an eighth of its width, at least 8 px."""
    return max(8, int(shape[1]) // 8)


def _square(centre: np.ndarray, half: float):
    from matplotlib.patches import Rectangle

    return Rectangle((centre[0] - half, centre[1] - half), 2 * half, 2 * half, fill=False, edgecolor="white",
                     linewidth=1.0, linestyle="--")


def small_multiples(reader: HeatmapReader, image_index: int, temperatures: np.ndarray | None = None,
                    log_scale: bool = True, columns: int = 5, crop_half_size_px: int | None = None) -> Figure:
    """All K heatmaps of one image as a grid of crops (one axes per landmark, no colour bars).

    Each title gives the landmark's abbreviation, ERE and true radial error in mm.

    Parameters
    ----------
    reader : HeatmapReader
    image_index : int
    temperatures : ndarray, shape (K,), optional
        Default: the fitted temperatures.
    log_scale : bool
    columns : int
    crop_half_size_px : int, optional
        Default: an eighth of the image width, at least 8 px.
    """
    k_total = reader.landmarks.num_landmarks
    temperatures = reader.fitted_temperatures if temperatures is None else np.asarray(temperatures, float)
    image = reader.image(image_index)
    crop = crop_half_size_px or default_crop(image.shape)
    rows = math.ceil(k_total / columns)
    figure = Figure(figsize=(2.4 * columns, 2.5 * rows), layout="constrained")
    for k in range(k_total):
        reading = reader.read(image_index, k, float(temperatures[k]))
        axes = figure.add_subplot(rows, columns, k + 1)
        heatmap_overlay(image, reading.heatmap, prediction_px=reading.prediction_px, target_px=reading.target_px,
                        annotators_px=reading.annotators_px, crop_half_size_px=crop, log_scale=log_scale, ax=axes,
                        colorbar=False)
        axes.get_legend().remove()
        axes.set_title(f"{reader.landmarks.abbreviations[k]}: ERE {reading.ere_mm:.1f}, err "
                       f"{reading.radial_error_mm:.1f} mm", fontsize=8)
        axes.tick_params(labelsize=6)
        axes.set_xlabel("x (px)", fontsize=7)
        axes.set_ylabel("y (px)", fontsize=7)
    figure.suptitle(f"{reader.image_ids[image_index]}: all {k_total} heatmaps ({'log' if log_scale else 'linear'} "
                    "scale); red x prediction, green o ground truth", fontsize=10)
    return figure


def figure_png(figure: Figure, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def show_figure(output: ipywidgets.Output, figure: Figure, text: str, dpi: int = 80) -> None:
    """Put ``figure`` (as a PNG, with ``text`` as its plain-text form) into an ``Output`` widget.

    Setting the widget's outputs directly, rather than capturing ``display`` inside
    ``with output:``, keeps headless execution (papermill, nbval) free of the
    output-capture messages that can leave the executing client waiting forever.
    """
    png = base64.b64encode(figure_png(figure, dpi)).decode("ascii")
    output.outputs = ({"output_type": "display_data", "metadata": {}, "data": {"image/png": png, "text/plain": text}},)


class HeatmapInspector:
    """ipywidgets view of a :class:`HeatmapReader`: pick a landmark, walk its images in a sort order.

    The images of the selected landmark are ordered by ERE or by radial error (largest
    first, at the fitted temperatures and the run's cutoff, from
    :meth:`HeatmapReader.split_scores`); the rank slider and the previous/next buttons
    walk that order. "next outlier" jumps, across all landmarks, to the predictions with
    a radial error above the outlier threshold, the largest error on the first click and
    one further down the list on each click after it (wrapping round); "next false alarm"
    likewise walks the predictions whose ERE reaches the run's stored ERE threshold
    although their error is not above the outlier threshold, largest ERE first.

    Parameters
    ----------
    run : LoadedRun, path or HeatmapReader
    split : str
    device : str or torch.device
    data_dir : path, optional
        See :class:`HeatmapReader`.
    image_index, landmark_index : int
        Initial selection.
    log_scale : bool
        Initial colour scale.
    order : {"ere", "error"}
        Initial sort order of the images.
    cutoff : float, optional
        Initial ERE cutoff (default: the run's).
    crop_half_size_px : int, optional
        Initial half size of the crop (default: an eighth of the image width, at least 8 px).
    dpi : int
        Resolution of the figure shown in the ``Output`` widget.

    Attributes
    ----------
    landmark : ipywidgets.Dropdown
    order : ipywidgets.ToggleButtons
        ``ere`` or ``error``: how the images of the landmark are sorted.
    rank : ipywidgets.IntSlider
        Position (1 = largest) of the shown image in that order.
    previous, next : ipywidgets.Button
        One rank up or down (wrapping round).
    next_outlier, next_false_alarm : ipywidgets.Button
        Jump to the next outlier / false alarm (the latter disabled without a stored threshold).
    temperature : ipywidgets.FloatLogSlider
        Absolute temperature; reset to the fitted one whenever the landmark changes.
    reset : ipywidgets.Button
        Back to the fitted temperature.
    scale : ipywidgets.ToggleButtons
        ``log`` or ``linear``.
    cutoff : ipywidgets.FloatLogSlider
        ERE cutoff :math:`c`; the outline on the crop is the significant set at :math:`c`.
    crop : ipywidgets.IntSlider
        Half size of the crop in grid pixels.
    flag : ipywidgets.HTML
        Whether the ERE reaches the stored threshold (or that there is none).
    status : ipywidgets.HTML
        Where the selection is in the sort order, or what the last jump found.
    status_line : str
        The same as plain text.
    numbers : ipywidgets.HTML
        Table of the current numbers.
    output : ipywidgets.Output
        The current figure, as a PNG.
    figure : matplotlib.figure.Figure
        The figure last drawn (redrawn in place).
    image_index : int
        The image shown.
    reading : HeatmapReading
        The numbers last shown.
    widget : ipywidgets.VBox
        The whole inspector, to ``display``.
    """

    def __init__(self, run: LoadedRun | str | Path | HeatmapReader, split: str = "test",
                 device: str | torch.device = "cpu", data_dir: str | Path | None = None, image_index: int = 0,
                 landmark_index: int = 0, log_scale: bool = True, order: str = "ere", cutoff: float | None = None,
                 crop_half_size_px: int | None = None, dpi: int = 80) -> None:
        import ipywidgets as widgets

        self.reader = run if isinstance(run, HeatmapReader) else HeatmapReader(run, split, device, data_dir)
        reader = self.reader
        if not 0 <= image_index < reader.num_images:
            raise IndexError(f"image {image_index} of {reader.num_images}")
        self.dpi = dpi
        self.scores = reader.split_scores()
        self.image_index = int(image_index)
        self.landmark = widgets.Dropdown(
            options=[(f"{abbreviation} · {name}", k)
                     for k, (abbreviation, name) in enumerate(zip(reader.landmarks.abbreviations,
                                                                  reader.landmarks.names))],
            value=landmark_index, description="landmark")
        self.order = widgets.ToggleButtons(options=[(f"by {label}", key) for key, label in ORDERS.items()],
                                           value=order, description="sort")
        self.rank = widgets.IntSlider(value=1, min=1, max=reader.num_images, description="rank",
                                      continuous_update=False)
        self.previous = widgets.Button(description="◀ previous", tooltip="the image one rank up")
        self.next = widgets.Button(description="next ▶", tooltip="the image one rank down")
        self.next_outlier = widgets.Button(
            description="next outlier", tooltip=f"radial error > {reader.outlier_threshold_mm:g} mm, largest first")
        self.next_false_alarm = widgets.Button(
            description="next false alarm", disabled=self.scores.ere_threshold_mm is None,
            tooltip="ERE at or above the stored threshold, error at most the outlier threshold; largest ERE first")
        fitted_log10 = np.log10(reader.fitted_temperatures)
        low = min(TEMPERATURE_RANGE_LOG10[0], math.floor(float(fitted_log10.min())))
        high = max(TEMPERATURE_RANGE_LOG10[1], math.ceil(float(fitted_log10.max())))
        self.temperature = widgets.FloatLogSlider(
            value=float(reader.fitted_temperatures[landmark_index]), base=10, min=low, max=high, step=0.05,
            description="T", readout_format=".3g", continuous_update=False)
        self.reset = widgets.Button(description="fitted T", tooltip="the run's fitted temperature of this landmark")
        self.scale = widgets.ToggleButtons(options=["log", "linear"], value="log" if log_scale else "linear",
                                           description="scale")
        self.cutoff = widgets.FloatLogSlider(
            value=reader.ere_cutoff if cutoff is None else float(cutoff), base=10, min=CUTOFF_RANGE_LOG10[0],
            max=CUTOFF_RANGE_LOG10[1], step=0.05, description="ERE c", readout_format=".3g",
            continuous_update=False)
        height, width = reader.image(self.image_index).shape
        self.crop = widgets.IntSlider(
            value=crop_half_size_px or default_crop((height, width)), min=4, max=max(height, width) // 2,
            description="crop ± px", continuous_update=False)
        self.flag = widgets.HTML()
        self.status = widgets.HTML()
        self.numbers = widgets.HTML()
        self.output = widgets.Output()
        self.figure = Figure(figsize=(10, 4.4), layout="constrained")
        self.widget = widgets.VBox([
            widgets.HBox([self.landmark, self.order]),
            widgets.HBox([self.rank, self.previous, self.next]),
            widgets.HBox([self.next_outlier, self.next_false_alarm, self.status]),
            widgets.HBox([self.temperature, self.reset, self.scale]),
            widgets.HBox([self.cutoff, self.crop]),
            self.flag,
            self.numbers,
            self.output,
        ])
        self._updating = False
        self._cursors: dict[str, int] = {}  # jump button -> position of the pair it showed last
        self.rank.value = self._rank_of(self.image_index)
        for control in (self.temperature, self.scale, self.cutoff, self.crop):
            control.observe(self._on_change, names="value")
        self.rank.observe(self._on_rank, names="value")
        self.order.observe(self._on_reorder, names="value")
        self.landmark.observe(self._on_landmark, names="value")
        self.reset.on_click(self._on_reset)
        self.previous.on_click(lambda _button: self.step(-1))
        self.next.on_click(lambda _button: self.step(+1))
        self.next_outlier.on_click(lambda _button: self.go_to_next_outlier())
        self.next_false_alarm.on_click(lambda _button: self.go_to_next_false_alarm())
        self.update()

    @property
    def controls(self) -> list:
        """The interactive controls, in display order."""
        return [self.landmark, self.order, self.rank, self.previous, self.next, self.next_outlier,
                self.next_false_alarm, self.temperature, self.reset, self.scale, self.cutoff, self.crop]

    @property
    def fitted_temperature(self) -> float:
        """The run's fitted temperature of the selected landmark."""
        return float(self.reader.fitted_temperatures[self.landmark.value])

    @property
    def image_order(self) -> np.ndarray:
        """Image indices (N,) of the selected landmark in the selected sort order."""
        return self.scores.order(self.landmark.value, self.order.value)

    def _rank_of(self, image_index: int) -> int:
        return int(np.flatnonzero(self.image_order == image_index)[0]) + 1

    @contextmanager
    def _quiet(self) -> Iterator[None]:
        """Set several controls with one redraw (by the caller) instead of one per control."""
        self._updating = True
        try:
            yield
        finally:
            self._updating = False

    def _on_change(self, _change: dict) -> None:
        if not self._updating:
            self.update()

    def _on_rank(self, change: dict) -> None:
        if not self._updating:
            self.image_index = int(self.image_order[change["new"] - 1])
            self.update()

    def _on_reorder(self, _change: dict) -> None:
        if not self._updating:
            with self._quiet():
                self.rank.value = self._rank_of(self.image_index)
            self.update()

    def _on_landmark(self, _change: dict) -> None:
        if not self._updating:
            with self._quiet():
                self.temperature.value = self.fitted_temperature
                self.rank.value = self._rank_of(self.image_index)
            self.update()

    def _on_reset(self, _button: object) -> None:
        with self._quiet():
            self.temperature.value = self.fitted_temperature
        self.update()

    def select(self, image_index: int, landmark_index: int | None = None, message: str | None = None
               ) -> HeatmapReading:
        """Show one image (and landmark, at its fitted temperature when it changes); one redraw."""
        if not 0 <= image_index < self.reader.num_images:
            raise IndexError(f"image {image_index} of {self.reader.num_images}")
        with self._quiet():
            if landmark_index is not None and landmark_index != self.landmark.value:
                self.landmark.value = int(landmark_index)
                self.temperature.value = self.fitted_temperature
            self.image_index = int(image_index)
            self.rank.value = self._rank_of(self.image_index)
        return self.update(message)

    def step(self, offset: int) -> HeatmapReading:
        """Move ``offset`` ranks down the sort order (negative: up), wrapping round."""
        rank = (self.rank.value - 1 + offset) % self.reader.num_images + 1
        return self.select(int(self.image_order[rank - 1]))

    def go_to_next_outlier(self) -> HeatmapReading:
        """Show the next outlier (radial error above the outlier threshold): the largest first, then down."""
        pairs = self.scores.outlier_pairs()
        if len(pairs) == 0:
            return self.update(f"no outlier (radial error > {self.scores.outlier_threshold_mm:g} mm) in this split")
        n, k, position = self._advance("outlier", pairs)
        return self.select(n, k, f"outlier {position + 1} of {len(pairs)} (radial error > "
                                 f"{self.scores.outlier_threshold_mm:g} mm, largest first): "
                                 f"{self.scores.radial_error_mm[n, k]:.2f} mm")

    def go_to_next_false_alarm(self) -> HeatmapReading:
        """Show the next false alarm (ERE >= the stored threshold, error not above the outlier threshold)."""
        threshold = self.scores.ere_threshold_mm
        if threshold is None:
            return self.update(f"no false alarms to show: {self.reader.threshold_note}")
        pairs = self.scores.false_alarm_pairs()
        if len(pairs) == 0:
            return self.update(f"no false alarm in this split (no ERE ≥ {threshold:.2f} mm "
                               f"with an error ≤ {self.scores.outlier_threshold_mm:g} mm)")
        n, k, position = self._advance("false alarm", pairs)
        return self.select(n, k, f"false alarm {position + 1} of {len(pairs)} (ERE ≥ "
                                 f"{threshold:.2f} mm, error ≤ "
                                 f"{self.scores.outlier_threshold_mm:g} mm, largest ERE first): "
                                 f"ERE {self.scores.ere_mm[n, k]:.2f} mm")

    def _advance(self, kind: str, pairs: np.ndarray) -> tuple[int, int, int]:
        """The (image, landmark, position) after this button's last one in ``pairs`` (M, 2), wrapping round."""
        position = (self._cursors.get(kind, -1) + 1) % len(pairs)
        self._cursors[kind] = position
        return int(pairs[position, 0]), int(pairs[position, 1]), position

    def update(self, message: str | None = None) -> HeatmapReading:
        """Recompute the reading for the controls' values and redraw the numbers and the figure.

        Parameters
        ----------
        message : str, optional
            Shown in ``status``; default: the selection's place in the sort order.
        """
        reader = self.reader
        self.reading = reader.read(self.image_index, self.landmark.value, float(self.temperature.value),
                                   float(self.cutoff.value))
        draw_reading(self.reading, reader.image(self.image_index), self.figure, self.scale.value == "log",
                     int(self.crop.value))
        self.status_line = message or self._position_text()
        self.status.value = escape(self.status_line)
        self.flag.value = self._flag_html()
        self.numbers.value = self._numbers_html()
        show_figure(self.output, self.figure, self.text, self.dpi)
        return self.reading

    def _position_text(self) -> str:
        hard = " (a hard case)" if self.reading.image_id in self.reader.hard_cases else ""
        return (f"rank {self.rank.value} of {self.reader.num_images} by {ORDERS[self.order.value]} for "
                f"{self.reading.landmark}: {self.reading.image_id}{hard}")

    @property
    def flag_line(self) -> str:
        """The flag as plain text (see :func:`flag_text`)."""
        return flag_text(self.reading, self.fitted_temperature, self.reader.ere_cutoff, self.reader.threshold_note)

    @property
    def text(self) -> str:
        """The current numbers and the flag as plain text."""
        return (f"{reading_text(self.reading, self.reader.landmarks.abbreviations[self.reading.landmark_index])}"
                f"\n{self.flag_line}")

    def _flag_html(self) -> str:
        colour = {True: "#b00020", False: "#1b5e20", None: "#555555"}[self.reading.flagged]
        return f'<span style="color:{colour}"><b>{escape(self.flag_line)}</b></span>'

    def _numbers_html(self) -> str:
        r = self.reading
        rows = [("temperature T", f"{r.temperature:.3g} (fitted {self.fitted_temperature:.3g})"),
                ("ERE cutoff c", f"{r.ere_cutoff:.3g} (run's {self.reader.ere_cutoff:.3g})"),
                ("significant set |S|", f"{r.significant_pixels} px = {r.significant_area_mm2:.1f} mm²"),
                ("mode probability", f"{r.mode_prob:.3g}"),
                ("ERE", f"{r.ere_mm:.2f} mm"),
                ("radial error", f"{r.radial_error_mm:.2f} mm"),
                ("prediction (x, y)", f"({r.prediction_px[0]:.0f}, {r.prediction_px[1]:.0f}) px"),
                ("ground truth (x, y)", f"({r.target_px[0]:.1f}, {r.target_px[1]:.1f}) px")]
        body = "".join(f"<tr><td>{name}</td><td><b>{value}</b></td></tr>" for name, value in rows)
        return f"<b>{escape(r.image_id)} · {escape(r.landmark)}</b><table>{body}</table>"

    def small_multiples(self, log_scale: bool | None = None) -> Figure:
        """All K heatmaps of the selected image at their fitted temperatures (see :func:`small_multiples`)."""
        log = self.scale.value == "log" if log_scale is None else log_scale
        return small_multiples(self.reader, self.image_index, log_scale=log, crop_half_size_px=int(self.crop.value))

    def show_small_multiples(self) -> None:
        """Replace the figure in the ``Output`` widget by the small multiples of the selected image."""
        show_figure(self.output, self.small_multiples(), "small multiples", self.dpi)

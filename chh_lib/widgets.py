r"""Interactive heatmap inspector for notebooks: image x landmark x temperature.

Two layers, so that the logic runs (and is tested) without a browser:

* :class:`HeatmapReader` -- pure state and arithmetic. For one image, landmark and
  temperature it returns a :class:`HeatmapReading`: the heatmap
  :math:`p = \mathrm{softmax}(z / T)`, its arg-max, the ground truth, both annotators,
  the ERE, the radial error and the mode probability. The network runs once per
  image (eval mode, no gradients); its logits are cached.
* :class:`HeatmapInspector` -- the ipywidgets view: dropdowns for image and landmark,
  a log slider for the temperature (reset to the run's fitted temperature of each
  landmark), log/linear buttons, an HTML table of the numbers and an ``Output``
  widget showing a matplotlib figure (as PNG). Changing a control redraws both.

Example (in a notebook)::

    inspector = HeatmapInspector(run_dir, split="test")
    display(inspector.widget)
"""
from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from chh_lib.evaluation import LoadedRun, load_run
from chh_lib.heatmaps import argmax_2d, scale_logits, softmax_2d
from chh_lib.metrics import expected_radial_error, radial_error_mm
from chh_lib.plots import heatmap_overlay

#: Range of the temperature slider, as powers of ten (widened to hold every fitted temperature).
TEMPERATURE_RANGE_LOG10 = (-1.0, 1.5)


@dataclass(frozen=True)
class HeatmapReading:
    r"""Everything the inspector shows for one (image, landmark, temperature).

    Attributes
    ----------
    image_index, landmark_index : int
    image_id, landmark : str
        Image identifier and landmark name.
    temperature : float
        Temperature :math:`T` dividing the logits.
    heatmap : ndarray, shape (H, W)
        :math:`\mathrm{softmax}(z / T)` over the network grid (sums to 1).
    prediction_px, target_px : ndarray, shape (2,)
        Arg-max and ground truth (mean of the annotators), (x, y) in grid pixels.
    annotators_px : ndarray, shape (A, 2)
    ere_mm, radial_error_mm : float
        Expected radial error of the heatmap and true error of the prediction (NaN when
        the landmark is not annotated).
    mode_prob : float
        Probability of the arg-max pixel.
    """

    image_index: int
    landmark_index: int
    image_id: str
    landmark: str
    temperature: float
    heatmap: np.ndarray
    prediction_px: np.ndarray
    target_px: np.ndarray
    annotators_px: np.ndarray
    ere_mm: float
    radial_error_mm: float
    mode_prob: float


class HeatmapReader:
    """Heatmaps and their numbers for the images of one split of a trained run.

    Parameters
    ----------
    run : LoadedRun or path
        A loaded run, or a run directory (loaded with ``data_dir``).
    split : str
        Split whose images are inspected.
    device : str or torch.device
        Where the network runs (once per image).
    data_dir : path, optional
        Data set of a run given as a directory (default: the one it recorded).
    """

    def __init__(self, run: LoadedRun | str | Path, split: str = "test", device: str | torch.device = "cpu",
                 data_dir: str | Path | None = None) -> None:
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
        self._logits: dict[int, torch.Tensor] = {}
        self._images: dict[int, np.ndarray] = {}

    @property
    def num_images(self) -> int:
        """Images in the split."""
        return len(self.dataset)

    @property
    def image_ids(self) -> list[str]:
        """Identifiers of the split's images, in order."""
        return list(self.dataset.image_ids)

    def _forward(self, image_index: int) -> None:
        item = self.dataset[image_index]
        with torch.no_grad():
            logits = self.model(item["image"][None].to(self.device)).float().cpu()
        self._logits[image_index] = logits  # (1, K, H, W)
        self._images[image_index] = item["image"][0].numpy()

    def logits(self, image_index: int) -> torch.Tensor:
        """Logits (1, K, H, W) of one image, computed on first use and cached."""
        if image_index not in self._logits:
            self._forward(image_index)
        return self._logits[image_index]

    def image(self, image_index: int) -> np.ndarray:
        """The network's input image (H, W) of one image."""
        if image_index not in self._images:
            self._forward(image_index)
        return self._images[image_index]

    def heatmaps(self, image_index: int, temperatures: np.ndarray | float | None = None) -> np.ndarray:
        """All K heatmaps (K, H, W) of one image at ``temperatures`` (default: the fitted ones)."""
        temperature = self.fitted_temperatures if temperatures is None else temperatures
        return softmax_2d(scale_logits(self.logits(image_index), torch.as_tensor(temperature)))[0].numpy()

    def read(self, image_index: int, landmark_index: int, temperature: float | None = None) -> HeatmapReading:
        """Heatmap and numbers of one landmark of one image.

        Parameters
        ----------
        image_index, landmark_index : int
        temperature : float, optional
            Default: the run's fitted temperature of the landmark (1 before calibration).
        """
        if not 0 <= landmark_index < self.landmarks.num_landmarks:
            raise IndexError(f"landmark {landmark_index} of {self.landmarks.num_landmarks}")
        if temperature is None:
            temperature = float(self.fitted_temperatures[landmark_index])
        logits = self.logits(image_index)[:, landmark_index:landmark_index + 1]
        heatmap = softmax_2d(scale_logits(logits, float(temperature))).double()  # (1, 1, H, W)
        pixel_size = torch.as_tensor(self.dataset.pixel_size_mm[image_index:image_index + 1], dtype=torch.float64)
        prediction = argmax_2d(logits)[0, 0].double().numpy()
        target = self.dataset.target_px[image_index, landmark_index].astype(np.float64)
        error = radial_error_mm(prediction[None, None], target[None, None], pixel_size.numpy())[0, 0]
        return HeatmapReading(
            image_index=int(image_index),
            landmark_index=int(landmark_index),
            image_id=self.dataset.image_ids[image_index],
            landmark=self.landmarks.names[landmark_index],
            temperature=float(temperature),
            heatmap=heatmap[0, 0].numpy(),
            prediction_px=prediction,
            target_px=target,
            annotators_px=self.dataset.annotations_px[image_index, :, landmark_index].astype(np.float64),
            ere_mm=float(expected_radial_error(heatmap, pixel_size, self.ere_cutoff)[0, 0]),
            radial_error_mm=float(error),
            mode_prob=float(heatmap.max()),
        )


def reading_text(reading: HeatmapReading, abbreviation: str = "") -> str:
    """One line of plain text with the numbers of a reading."""
    name = f"{reading.landmark} ({abbreviation})" if abbreviation else reading.landmark
    return (f"{reading.image_id} · {name} · T = {reading.temperature:.3g}: ERE {reading.ere_mm:.2f} mm, "
            f"radial error {reading.radial_error_mm:.2f} mm, mode probability {reading.mode_prob:.4f}")


def draw_reading(reading: HeatmapReading, image: np.ndarray, figure: Figure, log_scale: bool = True,
                 crop_half_size_px: int | None = None) -> Figure:
    """Draw a reading into ``figure`` (cleared first): the whole image and a crop around the prediction.

    Parameters
    ----------
    reading : HeatmapReading
    image : ndarray, shape (H, W)
    figure : Figure
    log_scale : bool
        Log10 or linear colour scale.
    crop_half_size_px : int, optional
        Half size of the crop (default: an eighth of the image width, at least 8 px).
    """
    figure.clear()
    crop = crop_half_size_px or max(8, image.shape[1] // 8)
    context, detail = figure.subplots(1, 2, width_ratios=(1, 1.25))
    heatmap_overlay(image, reading.heatmap, prediction_px=reading.prediction_px, target_px=reading.target_px,
                    log_scale=log_scale, ax=context, colorbar=False, title=f"{reading.image_id}: whole image")
    context.get_legend().remove()
    context.add_patch(_square(reading.prediction_px, crop))
    heatmap_overlay(image, reading.heatmap, prediction_px=reading.prediction_px, target_px=reading.target_px,
                    annotators_px=reading.annotators_px, crop_half_size_px=crop, log_scale=log_scale,
                    ax=detail, colorbar=True,
                    title=f"{reading.landmark}, T = {reading.temperature:.3g}\n"
                          f"ERE {reading.ere_mm:.2f} mm, error {reading.radial_error_mm:.2f} mm")
    return figure


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
    crop = crop_half_size_px or max(8, image.shape[1] // 8)
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


def show_figure(output: widgets.Output, figure: Figure, text: str, dpi: int = 80) -> None:
    """Put ``figure`` (as a PNG, with ``text`` as its plain-text form) into an ``Output`` widget.

    Setting the widget's outputs directly, rather than capturing ``display`` inside
    ``with output:``, keeps headless execution (papermill, nbval) free of the
    output-capture messages that can leave the executing client waiting forever.
    """
    png = base64.b64encode(figure_png(figure, dpi)).decode("ascii")
    output.outputs = ({"output_type": "display_data", "metadata": {}, "data": {"image/png": png, "text/plain": text}},)


class HeatmapInspector:
    """ipywidgets view of a :class:`HeatmapReader`: pick an image, a landmark and a temperature.

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
    dpi : int
        Resolution of the figure shown in the ``Output`` widget.

    Attributes
    ----------
    image, landmark : ipywidgets.Dropdown
    temperature : ipywidgets.FloatLogSlider
        Absolute temperature; reset to the fitted one whenever the landmark changes.
    scale : ipywidgets.ToggleButtons
        ``log`` or ``linear``.
    reset : ipywidgets.Button
        Back to the fitted temperature.
    numbers : ipywidgets.HTML
        Table of the current numbers.
    output : ipywidgets.Output
        The current figure, as a PNG.
    figure : matplotlib.figure.Figure
        The figure last drawn (redrawn in place).
    reading : HeatmapReading
        The numbers last shown.
    widget : ipywidgets.VBox
        The whole inspector, to ``display``.
    """

    def __init__(self, run: LoadedRun | str | Path | HeatmapReader, split: str = "test",
                 device: str | torch.device = "cpu", data_dir: str | Path | None = None, image_index: int = 0,
                 landmark_index: int = 0, log_scale: bool = True, dpi: int = 80) -> None:
        import ipywidgets as widgets

        self.reader = run if isinstance(run, HeatmapReader) else HeatmapReader(run, split, device, data_dir)
        self.dpi = dpi
        reader = self.reader
        hard = set(reader.run.data.descriptor.get("hard_cases", []))
        self.image = widgets.Dropdown(
            options=[(f"{i}: {image_id}" + (" (hard case)" if image_id in hard else ""), i)
                     for i, image_id in enumerate(reader.image_ids)],
            value=image_index, description="image")
        self.landmark = widgets.Dropdown(
            options=[(f"{abbreviation} · {name}", k)
                     for k, (abbreviation, name) in enumerate(zip(reader.landmarks.abbreviations,
                                                                  reader.landmarks.names))],
            value=landmark_index, description="landmark")
        fitted_log10 = np.log10(reader.fitted_temperatures)
        low = min(TEMPERATURE_RANGE_LOG10[0], math.floor(float(fitted_log10.min())))
        high = max(TEMPERATURE_RANGE_LOG10[1], math.ceil(float(fitted_log10.max())))
        self.temperature = widgets.FloatLogSlider(
            value=float(reader.fitted_temperatures[landmark_index]), base=10, min=low, max=high, step=0.05,
            description="T", readout_format=".3g", continuous_update=False)
        self.scale = widgets.ToggleButtons(options=["log", "linear"], value="log" if log_scale else "linear",
                                           description="scale")
        self.reset = widgets.Button(description="fitted T", tooltip="the run's fitted temperature of this landmark")
        self.numbers = widgets.HTML()
        self.output = widgets.Output()
        self.figure = Figure(figsize=(10, 4.4), layout="constrained")
        self.widget = widgets.VBox([
            widgets.HBox([self.image, self.landmark]),
            widgets.HBox([self.temperature, self.reset, self.scale]),
            self.numbers,
            self.output,
        ])
        self._updating = False
        self.image.observe(self._on_change, names="value")
        self.temperature.observe(self._on_change, names="value")
        self.scale.observe(self._on_change, names="value")
        self.landmark.observe(self._on_landmark, names="value")
        self.reset.on_click(self._on_reset)
        self.update()

    @property
    def controls(self) -> list:
        """The interactive controls, in display order."""
        return [self.image, self.landmark, self.temperature, self.reset, self.scale]

    @property
    def fitted_temperature(self) -> float:
        """The run's fitted temperature of the selected landmark."""
        return float(self.reader.fitted_temperatures[self.landmark.value])

    def _on_change(self, _change: dict) -> None:
        if not self._updating:
            self.update()

    def _on_landmark(self, _change: dict) -> None:
        self._set_temperature(self.fitted_temperature)

    def _on_reset(self, _button: object) -> None:
        self._set_temperature(self.fitted_temperature)

    def _set_temperature(self, value: float) -> None:
        self._updating = True  # one redraw, not two
        try:
            self.temperature.value = value
        finally:
            self._updating = False
        self.update()

    def update(self) -> HeatmapReading:
        """Recompute the reading for the controls' values and redraw the numbers and the figure."""
        reader = self.reader
        self.reading = reader.read(self.image.value, self.landmark.value, float(self.temperature.value))
        draw_reading(self.reading, reader.image(self.image.value), self.figure, self.scale.value == "log")
        self.numbers.value = self._numbers_html()
        show_figure(self.output, self.figure, self.text, self.dpi)
        return self.reading

    @property
    def text(self) -> str:
        """The current numbers as one line of plain text."""
        return reading_text(self.reading, self.reader.landmarks.abbreviations[self.reading.landmark_index])

    def _numbers_html(self) -> str:
        r = self.reading
        rows = [("temperature T", f"{r.temperature:.3g} (fitted {self.fitted_temperature:.3g})"),
                ("mode probability", f"{r.mode_prob:.4f}"),
                ("ERE", f"{r.ere_mm:.2f} mm"),
                ("radial error", f"{r.radial_error_mm:.2f} mm"),
                ("prediction (x, y)", f"({r.prediction_px[0]:.0f}, {r.prediction_px[1]:.0f}) px"),
                ("ground truth (x, y)", f"({r.target_px[0]:.1f}, {r.target_px[1]:.1f}) px")]
        body = "".join(f"<tr><td>{name}</td><td><b>{value}</b></td></tr>" for name, value in rows)
        return f"<b>{r.image_id} · {r.landmark}</b><table>{body}</table>"

    def small_multiples(self, log_scale: bool | None = None) -> Figure:
        """All K heatmaps of the selected image at their fitted temperatures (see :func:`small_multiples`)."""
        log = self.scale.value == "log" if log_scale is None else log_scale
        return small_multiples(self.reader, self.image.value, log_scale=log)

    def show_small_multiples(self) -> None:
        """Replace the figure in the ``Output`` widget by the small multiples of the selected image."""
        show_figure(self.output, self.small_multiples(), "small multiples", self.dpi)

"""Source of notebooks/06_heatmap_inspector.ipynb (build with: python notebooks/build.py 06)."""

# %% [markdown]
# # 06 · The heatmap inspector: image × landmark × temperature
#
# The sixth notebook of the *chh-kit* series on **Contour-Hugging Heatmaps for Landmark Detection**
# (McCouat & Voiculescu, CVPR 2022). Numbers such as the MRE or an AUROC summarise thousands of
# heatmaps; here we look at single ones, interactively.
#
# **Learning goals**
#
# 1. Use an interactive inspector (`chh_lib.widgets.HeatmapInspector`) to pick any test image, any of
#    the 19 landmarks and a temperature, and read the heatmap with its prediction, ground truth,
#    annotators, **expected radial error (ERE)**, true radial error and mode probability.
# 2. Compare a landmark on a contour with the point-like **sella**: the first heatmap stretches along
#    its edge, the second is round.
# 3. See a failure: a wrong prediction whose heatmap is spread out, so that its ERE is large too.
# 4. See what the **temperature** does: it flattens or sharpens the heatmap (and changes the ERE and
#    the mode probability) but never moves the arg-max.
#
# The inspector needs a running kernel for its controls; every view it offers is also drawn below as a
# static figure, so the notebook reads the same without one.

# %% [markdown]
# ## Imports

# %%
import numpy as np
from IPython.display import display
from matplotlib.figure import Figure

from chh_lib.devices import choose_device
from chh_lib.engine import predict
from chh_lib.metrics import radial_error_mm
from chh_lib.plots import heatmap_overlay
from chh_lib.widgets import HeatmapInspector, HeatmapReader
from chh_lib.workflow import (
    ensure_calibrated,
    ensure_phantom,
    ensure_trained_run,
    notebook_paths,
    notebook_profile,
    save_figure,
    write_notebook_metrics,
)

# %% [markdown]
# ## Parameters
#
# `profile` is `smoke` (tiny phantom and a two-epoch model, for tests), `cpu` (the default: the
# shipped pretrained phantom model when `RUN_DIR/model` holds none) or `paper`; it is read from
# `CHH_PROFILE` when set. Relative paths are resolved against the repository root. `landmark` is the
# contour landmark the tour starts with (an abbreviation).

# %% tags=["parameters"]
profile = notebook_profile()  # CHH_PROFILE, else "cpu"
data_dir = None  # None: the profile's phantom
run_dir = None  # None: runs/notebooks/<profile>
seed = 0
device = "auto"
landmark = "Go"  # gonion: a contour landmark on the angle of the mandible

# %% [markdown]
# ## Set-up
#
# The phantom is written when missing, a trained model is made as cheaply as the profile allows
# (reused from notebook 02 when it exists) and its per-landmark temperatures $T_k$ are fitted on the
# calibration split when the checkpoint has none.

# %%
paths = notebook_paths("06_heatmap_inspector", profile, data_dir, run_dir)
ensure_phantom(paths.data_dir, profile)
ensure_trained_run(paths.model_dir, paths.data_dir, profile, device, seed)
temperatures = ensure_calibrated(paths.model_dir, paths.data_dir, device)
torch_device = choose_device(device)
reader = HeatmapReader(paths.model_dir, "test", torch_device, data_dir=paths.data_dir)
landmarks = reader.landmarks
K = landmarks.num_landmarks
hard = set(reader.run.data.descriptor.get("hard_cases", []))
print(f"profile {profile}: model {paths.show(paths.model_dir)} ({reader.run.config.model.name}, "
      f"{reader.run.config.data.image_size[0]} x {reader.run.config.data.image_size[1]} px), "
      f"{reader.num_images} test images, {K} landmarks; fitted temperatures "
      f"{temperatures.min():.3g} to {temperatures.max():.3g}")

# %% [markdown]
# ## What the inspector computes
#
# For image $n$ and landmark $k$ the network outputs logits $z_{nk}$ (computed once per image, in eval
# mode, and cached). At temperature $T$ the heatmap is
#
# $$p_{nk}(i) = \frac{\exp\left(z_{nk}(i) / T\right)}{\sum_j \exp\left(z_{nk}(j) / T\right)} ,$$
#
# the prediction is its arg-max $\hat{\mathbf{x}}_{nk}$ (independent of $T$), the **mode probability**
# is $\max_i p_{nk}(i)$, the true **radial error** is $e_{nk} = \lVert \hat{\mathbf{x}}_{nk} -
# \mathbf{t}_{nk} \rVert$ in mm, and the **expected radial error** is the heatmap's mean distance from
# its own mode over the pixels above 5 % of the maximum ($S$), weighted by $q_i = p_i / \sum_{j \in S}
# p_j$:
#
# $$\text{ERE}_{nk} = \sum_{i \in S} q_i \, \lVert \mathbf{x}_i - \hat{\mathbf{x}}_{nk} \rVert \quad
# \text{(mm)} .$$
#
# The ERE needs no ground truth: it is the error the heatmap itself expects.
#
# ## The interactive inspector
#
# Pick an image (hard cases of the phantom are marked), a landmark and a temperature $T$ (the slider
# starts at the landmark's fitted $T_k$; *fitted T* goes back to it), and a log or linear colour scale.
# The left panel shows the whole image (the dashed square is the crop on the right); the right panel
# shows the crop around the prediction (red x) with the ground truth (green circle) and the two
# annotators (triangles). The inspector starts on the first test image that is not a hard case.

# %%
start_image = next((i for i, image_id in enumerate(reader.image_ids) if image_id not in hard), 0)
start_landmark = landmarks.index(landmark) if landmark in landmarks.abbreviations else 0
inspector = HeatmapInspector(reader, image_index=start_image, landmark_index=start_landmark)
display(inspector.widget)

# %% [markdown]
# Without a kernel the controls do nothing, so here is the same view for the starting selection as a
# static figure, with its numbers:

# %%
default_reading = inspector.reading
print(inspector.text)
_ = save_figure(inspector.figure, paths.output_dir / "inspector_default.png")

# %% [markdown]
# ## A contour landmark versus sella
#
# The same image, two landmarks at their fitted temperatures, on a log scale. Look at the *shape* of
# the tails: the contour landmark's heatmap stretches **along** its edge, where annotators disagree;
# sella, the centre of the pituitary fossa, is a point and its heatmap is round. The ERE measures the
# *size* of the spread, not its shape, so the two EREs printed below need not differ much.

# %%
sella = landmarks.index("S") if "S" in landmarks.abbreviations else 0
pair = [reader.read(start_image, start_landmark), reader.read(start_image, sella)]
image = reader.image(start_image)
crop = max(8, image.shape[1] // 8)
figure = Figure(figsize=(10, 4.4), layout="constrained")
for panel, reading in enumerate(pair):
    heatmap_overlay(image, reading.heatmap, reading.prediction_px, reading.target_px, reading.annotators_px,
                    crop_half_size_px=crop, ax=figure.add_subplot(1, 2, panel + 1),
                    title=f"{reading.landmark}: ERE {reading.ere_mm:.2f} mm, error {reading.radial_error_mm:.2f} mm")
save_figure(figure, paths.output_dir / "contour_vs_sella.png")
for reading in pair:
    print(f"{reading.landmark:>8}: ERE {reading.ere_mm:.2f} mm, radial error {reading.radial_error_mm:.2f} mm, "
          f"mode probability {reading.mode_prob:.4f}")

# %% [markdown]
# ## A failure: wrong prediction, large ERE
#
# `chh_lib.engine.predict` decodes every test heatmap at the fitted temperatures; we take the landmark
# with the largest true radial error in the whole test split and show it in the inspector. A useful
# uncertainty measure should flag it: its ERE is compared with the median ERE of the split.

# %%
predictions = predict(reader.model, reader.dataset, torch_device, temperatures=temperatures,
                      ere_cutoff=reader.ere_cutoff)
errors = radial_error_mm(predictions.pred_px, reader.dataset.target_px, reader.dataset.pixel_size_mm)
worst_image, worst_landmark = np.unravel_index(np.nanargmax(errors), errors.shape)
inspector.image.value = int(worst_image)
inspector.landmark.value = int(worst_landmark)
worst = inspector.reading
median_ere = float(np.nanmedian(predictions.ere_mm))
ere_rank = int((predictions.ere_mm >= worst.ere_mm).sum())  # 1 = the largest ERE
print(inspector.text)
print(f"hard case of the phantom: {worst.image_id in hard}; its ERE ranks {ere_rank} of the split's "
      f"{predictions.ere_mm.size} EREs (1 = largest; median ERE {median_ere:.2f} mm)")
_ = save_figure(inspector.figure, paths.output_dir / "worst_case.png")

# %% [markdown]
# ## Temperature
#
# Dividing the logits by $T > 1$ flattens the heatmap, $T < 1$ sharpens it; the arg-max, and therefore
# the prediction and its radial error, stay where they are. Below, the contour landmark of the first
# image at a quarter of, at, and at four times its fitted temperature (log colour scale: the region
# within six decades of the peak grows with $T$).

# %%
fitted = float(temperatures[start_landmark])
factors = (0.25, 1.0, 4.0)
figure = Figure(figsize=(13, 4.2), layout="constrained")
sweep_readings = []
for panel, factor in enumerate(factors):
    reading = reader.read(start_image, start_landmark, fitted * factor)
    sweep_readings.append(reading)
    axes = figure.add_subplot(1, 3, panel + 1)
    heatmap_overlay(image, reading.heatmap, reading.prediction_px, reading.target_px, reading.annotators_px,
                    crop_half_size_px=crop, ax=axes,
                    title=f"T = {factor:g} × {fitted:.3g}\nmode probability {reading.mode_prob:.3f}, "
                          f"ERE {reading.ere_mm:.2f} mm")
    if panel:
        axes.get_legend().remove()
_ = save_figure(figure, paths.output_dir / "temperature_effect.png")

# %% [markdown]
# The same as curves over a range of temperatures: the mode probability falls and the ERE grows with
# $T$, while the prediction does not move (the number of distinct predictions along the sweep is printed).

# %%
sweep = np.geomspace(fitted / 10, fitted * 10, 25)
curve = [reader.read(start_image, start_landmark, float(t)) for t in sweep]
figure = Figure(figsize=(9, 3.6), layout="constrained")
axes = figure.add_subplot(1, 2, 1)
axes.plot(sweep, [r.mode_prob for r in curve], marker="o", markersize=3)
axes.set_ylabel("mode probability")
ere_axes = figure.add_subplot(1, 2, 2)
ere_axes.plot(sweep, [r.ere_mm for r in curve], marker="o", markersize=3, color="tab:orange")
ere_axes.set_ylabel("ERE (mm, log scale above 0.1 mm)")
ere_axes.set_yscale("symlog", linthresh=0.1)
for ax in (axes, ere_axes):
    ax.set_xscale("log")
    ax.set_xlabel("temperature T")
    ax.axvline(fitted, color="grey", linestyle="--", linewidth=1, label=f"fitted T = {fitted:.3g}")
    ax.legend(fontsize=8)
figure.suptitle(f"{landmarks.names[start_landmark]} in {reader.image_ids[start_image]}", fontsize=10)
save_figure(figure, paths.output_dir / "temperature_sweep.png")
distinct_predictions = len({tuple(r.prediction_px) for r in curve})
print(f"{distinct_predictions} distinct prediction(s) over {len(sweep)} temperatures; mode probability "
      f"{curve[0].mode_prob:.3f} -> {curve[-1].mode_prob:.3f}, ERE {curve[0].ere_mm:.2f} -> {curve[-1].ere_mm:.2f} mm")

# %% [markdown]
# ## All 19 heatmaps of one image
#
# `inspector.small_multiples()` draws every landmark of the selected image at its fitted temperature
# (log scale); the titles give the ERE and the true error in mm. We go back to the first image.

# %%
inspector.image.value = start_image
_ = save_figure(inspector.small_multiples(), paths.output_dir / "all_heatmaps.png")

# %% [markdown]
# ## Summary
#
# The key numbers go to `RUN_DIR/06_heatmap_inspector/metrics.json` (with the figures above).

# %%
summary = {
    "profile": profile,
    "device": torch_device.type,
    "widgets_built": inspector.widget is not None and len(inspector.controls) > 0,
    "num_controls": len(inspector.controls),
    "num_test_images": reader.num_images,
    "default_selection": {
        "image_id": default_reading.image_id,
        "landmark": default_reading.landmark,
        "temperature": default_reading.temperature,
        "ere_mm": default_reading.ere_mm,
        "radial_error_mm": default_reading.radial_error_mm,
        "mode_prob": default_reading.mode_prob,
    },
    "sella": {"ere_mm": pair[1].ere_mm, "radial_error_mm": pair[1].radial_error_mm},
    "worst": {"image_id": worst.image_id, "landmark": worst.landmark, "radial_error_mm": worst.radial_error_mm,
              "ere_mm": worst.ere_mm, "ere_rank": ere_rank, "hard_case": worst.image_id in hard},
    "median_ere_mm": median_ere,
    "temperature_sweep": {"temperatures": sweep.tolist(), "mode_prob": [r.mode_prob for r in curve],
                          "ere_mm": [r.ere_mm for r in curve]},
    "distinct_predictions_over_sweep": distinct_predictions,
}
written = write_notebook_metrics(paths.output_dir, summary)
print(f"wrote {paths.show(written)}: {summary['num_controls']} controls; default selection ERE "
      f"{default_reading.ere_mm:.2f} mm, radial error {default_reading.radial_error_mm:.2f} mm")

"""Source of notebooks/06_heatmap_inspector.ipynb (build with: python notebooks/build.py 06)."""

# %% [markdown]
# # 06 · The heatmap inspector: landmark × image × temperature × ERE cutoff
#
# The sixth notebook of the *chh-kit* series on **Contour-Hugging Heatmaps for Landmark Detection**
# (McCouat & Voiculescu, CVPR 2022). Numbers such as the MRE or an AUROC summarise thousands of
# heatmaps; here we look at single ones, interactively.
#
# **Learning goals**
#
# 1. Use an interactive inspector (`chh_lib.widgets.HeatmapInspector`) to walk the test images of any
#    landmark in order of their **expected radial error (ERE)** or of their true radial error, and read
#    each heatmap with its prediction, ground truth, annotators, ERE, radial error and mode probability.
# 2. See the **significant set** $S$ behind the ERE as an outline, and what the cutoff $c$ does to it.
# 3. Jump to the **outliers** (the largest true errors) and to the **false alarms** (an ERE above the
#    threshold chosen in notebook 05, but a small error), and read the flag the threshold raises.
# 4. See what the **temperature** does: it flattens or sharpens the heatmap (and changes the ERE and
#    the mode probability) but never moves the arg-max.
#
# The inspector needs a running kernel for its controls; every view it offers is also drawn below as a
# static figure, so the notebook reads the same without one. The notebook ends with a recap, three
# exercises with checked answers, and references.
#
# **How long** (measured on 2 CPU cores; a laptop should be as fast or faster): 12 s under `smoke` in
# the smoke series (`chh notebooks --profile smoke`, 64 s for the six; more when it must first train the
# two-epoch model), and under `cpu` 19 s in the publishing run recorded in `benchmarks/README.md`, once
# the phantom exists and the shipped model has been calibrated by notebooks 01 to 03.

# %% [markdown]
# ## Imports

# %%
import numpy as np
from IPython.display import display
from matplotlib.figure import Figure

from chh_lib import exercises as check
from chh_lib.devices import choose_device
from chh_lib.plots import heatmap_overlay
from chh_lib.summaries import write_summary
from chh_lib.widgets import HeatmapInspector, HeatmapReader, small_multiples
from chh_lib.workflow import (
    ensure_calibrated,
    ensure_phantom,
    ensure_trained_run,
    notebook_paths,
    notebook_profile,
    save_figure,
)

# %% [markdown]
# ## Parameters
#
# `profile` is `smoke` (tiny phantom and a two-epoch model, for tests), `cpu` (the default: the
# shipped pretrained phantom model when `RUN_DIR/model` holds none) or `paper`; it is read from
# `CHH_PROFILE` when set. Relative paths are resolved against the repository root. `landmark` is the
# contour landmark the tour starts with (an abbreviation). `solutions = True` runs the hidden solutions
# of the exercises at the end (the test suite does; a student leaves it `False`).

# %% tags=["parameters"]
profile = notebook_profile()  # CHH_PROFILE, else "cpu"
data_dir = None  # None: the profile's phantom
run_dir = None  # None: runs/notebooks/<profile>
seed = 0
device = "auto"
landmark = "Go"  # gonion: a contour landmark on the angle of the mandible
solutions = False  # True: run the exercises' hidden solutions

# %% [markdown]
# ## Set-up
#
# The phantom is written when missing, a trained model is made as cheaply as the profile allows
# (reused from notebook 02 when it exists) and its temperatures are chosen on the calibration split
# (none, i.e. T = 1, one for all, or one per landmark, as `chh calibrate --scope auto` decides; printed
# below) when the checkpoint has none. Calibrating, even when it keeps T = 1, also chooses the **ERE
# threshold** of notebook 05 on held-out data and stores it in the run; the inspector reads it from there.
# `reader.split_scores()` runs the network once over the test split and keeps the ERE and the radial
# error of every (image, landmark) pair: they order the images and find the outliers and false alarms.
# The reader keeps the logits of at most `reader.cache.max_images` images (least recently used ones are
# dropped), so browsing a large split does not fill the memory.

# %%
paths = notebook_paths("06_heatmap_inspector", profile, data_dir, run_dir)
ensure_phantom(paths.data_dir, profile)
ensure_trained_run(paths.model_dir, paths.data_dir, profile, device, seed)
temperatures = ensure_calibrated(paths.model_dir, paths.data_dir, device)
torch_device = choose_device(device)
reader = HeatmapReader(paths.model_dir, "test", torch_device, data_dir=paths.data_dir)
scores = reader.split_scores()
landmarks = reader.landmarks
K = landmarks.num_landmarks
hard = reader.hard_cases
print(f"profile {profile}: model {paths.show(paths.model_dir)} ({reader.run.config.model.name}, "
      f"{reader.run.config.data.image_size[0]} x {reader.run.config.data.image_size[1]} px), "
      f"{reader.num_images} test images, {K} landmarks; the run's temperatures "
      f"{temperatures.min():.3g} to {temperatures.max():.3g}; logits cache of {reader.cache.max_images} images")
print(reader.threshold_note)

# %% [markdown]
# ## What the inspector computes
#
# For image $n$ and landmark $k$ the network outputs logits $z_{nk}$ (computed once per image, in eval
# mode, and cached). At temperature $T$ the heatmap is
#
# $$p_{nk}(i) = \frac{\exp\left(z_{nk}(i) / T\right)}{\sum_j \exp\left(z_{nk}(j) / T\right)} ,$$
#
# the prediction is its arg-max $\hat{\mathbf{x}}_{nk}$ (independent of $T$), the **mode probability**
# is $\max_i p_{nk}(i)$ and the true **radial error** is $e_{nk} = \lVert \hat{\mathbf{x}}_{nk} -
# \mathbf{t}_{nk} \rVert$ in mm. The **expected radial error** is the heatmap's mean distance from its
# own mode over the **significant set**
#
# $$S_c = \left\{ i : \frac{p_{nk}(i)}{\max_j p_{nk}(j)} > c \right\}, \qquad
# \text{ERE}_{nk} = \sum_{i \in S_c} q_i \, \lVert \mathbf{x}_i - \hat{\mathbf{x}}_{nk} \rVert \quad
# \text{(mm)}, \qquad q_i = \frac{p_{nk}(i)}{\sum_{j \in S_c} p_{nk}(j)} ,$$
#
# with the cutoff $c = 0.05$ in the paper. The inspector outlines $S_c$ on the heatmap and gives its size
# $|S_c|$ in pixels and in mm² ($|S_c| \, s_x s_y$ for pixels of $s_x \times s_y$ mm). The ERE needs no
# ground truth: it is the error the heatmap itself expects. A prediction is **flagged** when
# $\text{ERE}_{nk} \ge t^\ast$, the threshold chosen on the calibration split (notebook 05); it was chosen
# at the run's temperatures and cutoff, so with other settings the flag is only indicative.
#
# ## The interactive inspector
#
# The controls, from the top:
#
# - **landmark**, and **sort**: the test images of that landmark ordered by ERE or by radial error,
#   largest first (at the run's temperature and cutoff); **rank** and **◀ previous** /
#   **next ▶** walk that order (1 = the largest).
# - **next outlier**: across all landmarks, the predictions with a radial error above the outlier
#   threshold (the run's outlier cut, 4 mm by default), the largest error first, one further down the
#   list per click; **next false alarm**: the flagged predictions whose error is *not* above it, the
#   largest ERE first.
# - **T** (starts at the run's $T_k$ for the landmark, 1 when the run kept none; *fitted T* goes back
#   to it) and a log or linear colour scale; **ERE c**, the cutoff of $S_c$; **crop ± px**, the half size of the crop.
# - The flag line, a table of the numbers, and the figure: the whole image on the left (the dashed square
#   is the crop), the crop around the prediction (red x) on the right with the ground truth (green circle),
#   the two annotators (triangles) and the outline of $S_c$ (white).
#
# This first inspector starts on the first test image that is not a hard case; in a live kernel its
# controls change it, and the numbers printed below are those of its starting state.

# %%
start_image = next((i for i, image_id in enumerate(reader.image_ids) if image_id not in hard), 0)
start_landmark = landmarks.index(landmark) if landmark in landmarks.abbreviations else 0
inspector = HeatmapInspector(reader, image_index=start_image, landmark_index=start_landmark)
display(inspector.widget)

# %% [markdown]
# The controls, by their labels (the same for every profile):

# %%
# NBVAL_CHECK_OUTPUT
print(" | ".join(control.description for control in inspector.controls))

# %% [markdown]
# Without a kernel the controls do nothing, so here is the same view for the starting selection as a
# static figure, with its numbers, its flag and its place in the sort order:

# %%
default_reading = inspector.reading
print(inspector.text)
print(inspector.status_line)
_ = save_figure(inspector.figure, paths.output_dir / "inspector_default.png")

# %% [markdown]
# ## The cutoff and the significant set
#
# The ERE averages over $S_c$ only. Lowering $c$ can only add pixels to $S_c$ (every pixel above $0.2$ of
# the maximum is also above $0.05$ of it), and the pixels it adds lie in the tail, usually farther from
# the mode, so the ERE usually grows. The three panels below do what the *ERE c* slider does, at
# $c = 0.01$, $0.05$ and $0.2$, for the same landmark on the test image where its ERE is the largest
# (rank 1 of the inspector's ERE order): a spread-out heatmap, where $S_c$ has room to change. The printed
# sizes and EREs show what happens for this heatmap.

# %%
cutoff_values = (0.01, 0.05, 0.2)
spread_image = int(scores.order(start_landmark, "ere")[0])
cutoff_readings = [reader.read(spread_image, start_landmark, cutoff=c) for c in cutoff_values]
crop = int(inspector.crop.value)
figure = Figure(figsize=(13, 4.2), layout="constrained")
for panel, reading in enumerate(cutoff_readings):
    axes = figure.add_subplot(1, 3, panel + 1)
    heatmap_overlay(reader.image(spread_image), reading.heatmap, reading.prediction_px, reading.target_px,
                    reading.annotators_px, crop_half_size_px=crop, ax=axes, colorbar=panel == 2,
                    significant_cutoff=reading.ere_cutoff,
                    title=f"c = {reading.ere_cutoff:g}: |S| = {reading.significant_pixels} px, "
                          f"ERE {reading.ere_mm:.2f} mm")
    if panel:
        axes.get_legend().remove()
figure.suptitle(f"{landmarks.names[start_landmark]} in {reader.image_ids[spread_image]} (its largest ERE)",
                fontsize=10)
_ = save_figure(figure, paths.output_dir / "cutoff_outline.png")
for reading in cutoff_readings:
    print(f"c = {reading.ere_cutoff:<5g} |S| = {reading.significant_pixels:5d} px = "
          f"{reading.significant_area_mm2:8.1f} mm², ERE {reading.ere_mm:6.2f} mm")

# %% [markdown]
# ## A contour landmark versus sella
#
# Back to the first inspector's image: two landmarks at the run's temperatures, on a log scale. Look
# at the *shape* of the tails and of the outline of $S$: the contour landmark's heatmap stretches **along**
# its edge, where annotators disagree; sella, the centre of the pituitary fossa, is a point and its
# heatmap is round. The ERE measures the *size* of the spread, not its shape, so the two EREs printed
# below need not differ much.

# %%
sella = landmarks.index("S") if "S" in landmarks.abbreviations else 0
image = reader.image(start_image)
pair = [reader.read(start_image, start_landmark), reader.read(start_image, sella)]
figure = Figure(figsize=(10, 4.4), layout="constrained")
for panel, reading in enumerate(pair):
    heatmap_overlay(image, reading.heatmap, reading.prediction_px, reading.target_px, reading.annotators_px,
                    crop_half_size_px=crop, ax=figure.add_subplot(1, 2, panel + 1),
                    significant_cutoff=reading.ere_cutoff,
                    title=f"{reading.landmark}: ERE {reading.ere_mm:.2f} mm, error {reading.radial_error_mm:.2f} mm")
save_figure(figure, paths.output_dir / "contour_vs_sella.png")
for reading in pair:
    print(f"{reading.landmark:>8}: ERE {reading.ere_mm:.2f} mm, radial error {reading.radial_error_mm:.2f} mm, "
          f"mode probability {reading.mode_prob:.3g}, |S| = {reading.significant_pixels} px")

# %% [markdown]
# ## The worst outlier: wrong prediction, large ERE?
#
# A second inspector, so that the first keeps its starting state: one click on **next outlier** (the
# method `go_to_next_outlier` is what the button calls) shows the prediction with the largest radial error
# in the whole test split. A useful uncertainty measure should flag it; below, its ERE is ranked among all
# the split's EREs, and the flag line says whether the threshold $t^\ast$ catches it.

# %%
outlier_view = HeatmapInspector(reader, image_index=start_image, landmark_index=start_landmark)
outlier_view.go_to_next_outlier()
display(outlier_view.widget)

# %% [markdown]
# Its numbers, and the same view as a static figure:

# %%
worst = outlier_view.reading
num_outliers = len(scores.outlier_pairs())
median_ere = float(np.nanmedian(scores.ere_mm))
ere_rank = int((scores.ere_mm >= scores.ere_mm[worst.image_index, worst.landmark_index]).sum())  # 1 = largest
print(outlier_view.status_line)
print(outlier_view.text)
print(f"hard case of the phantom: {worst.image_id in hard}; its ERE ranks {ere_rank} of the split's "
      f"{scores.ere_mm.size} EREs (1 = largest; median ERE {median_ere:.2f} mm); "
      f"{num_outliers} of {scores.ere_mm.size} predictions are outliers")
_ = save_figure(outlier_view.figure, paths.output_dir / "worst_case.png")

# %% [markdown]
# ## False alarms: large ERE, small error
#
# The other way round: predictions that the threshold flags although they are right (error at most
# the outlier cut printed in the set-up). They cost a clinician a needless check. A heatmap that puts
# part of its mass far from its mode (on a second, similar-looking structure, or far along an edge) has
# a large ERE even when the mode is right. A third inspector, one click on **next false alarm**: it shows the false alarm with the largest
# ERE, or says that there is none (a weak model whose flagged predictions are all wrong has none; so has
# a run with no stored threshold).

# %%
alarm_view = HeatmapInspector(reader, image_index=start_image, landmark_index=start_landmark)
alarm_view.go_to_next_false_alarm()
display(alarm_view.widget)

# %% [markdown]
# How many predictions the threshold flags, how many of those are false alarms, and the one shown:

# %%
false_alarm_pairs = scores.false_alarm_pairs()
if reader.ere_threshold_mm is None:
    num_flagged = 0
    print(f"no flags: {reader.threshold_note}")
else:
    num_flagged = int((scores.ere_mm >= reader.ere_threshold_mm).sum())
    print(f"{num_flagged} of {scores.ere_mm.size} predictions have ERE ≥ {reader.ere_threshold_mm:.2f} mm; "
          f"{len(false_alarm_pairs)} of them are false alarms (error ≤ {reader.outlier_threshold_mm:g} mm)")
print(alarm_view.status_line)
first_false_alarm = None
if len(false_alarm_pairs):
    first_false_alarm = alarm_view.reading
    print(alarm_view.text)
    _ = save_figure(alarm_view.figure, paths.output_dir / "false_alarm.png")

# %% [markdown]
# ## Temperature
#
# Dividing the logits by $T > 1$ flattens the heatmap, $T < 1$ sharpens it; the arg-max, and therefore
# the prediction and its radial error, stay where they are. Below, the contour landmark of the first
# image at a quarter of, at, and at four times the run's temperature (log colour scale: the region
# within six decades of the peak grows with $T$, and so does the outline of $S$).

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
                    crop_half_size_px=crop, ax=axes, significant_cutoff=reading.ere_cutoff,
                    title=f"T = {factor:g} × {fitted:.3g}\nmode probability {reading.mode_prob:.3g}, "
                          f"ERE {reading.ere_mm:.2f} mm")
    if panel:
        axes.get_legend().remove()
_ = save_figure(figure, paths.output_dir / "temperature_effect.png")

# %% [markdown]
# The same as curves over a range of temperatures: the mode probability falls with $T$, while the
# prediction does not move (the number of distinct predictions along the sweep is printed); the ERE
# curve shows how the expected error follows the flattening.

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
    ax.axvline(fitted, color="grey", linestyle="--", linewidth=1, label=f"run's T = {fitted:.3g}")
    ax.legend(fontsize=8)
figure.suptitle(f"{landmarks.names[start_landmark]} in {reader.image_ids[start_image]}", fontsize=10)
save_figure(figure, paths.output_dir / "temperature_sweep.png")
distinct_predictions = len({tuple(r.prediction_px) for r in curve})
print(f"{distinct_predictions} distinct prediction(s) over {len(sweep)} temperatures; mode probability "
      f"{curve[0].mode_prob:.3g} -> {curve[-1].mode_prob:.3g}, ERE {curve[0].ere_mm:.2f} -> {curve[-1].ere_mm:.2f} mm")

# %% [markdown]
# ## All 19 heatmaps of one image
#
# `small_multiples(reader, n)` (and `inspector.small_multiples()` for the image an inspector shows) draws
# every landmark of one image at the run's temperature (log scale); the titles give the ERE and the true
# error in mm. Here the first image again.

# %%
_ = save_figure(small_multiples(reader, start_image), paths.output_dir / "all_heatmaps.png")

# %% [markdown]
# > **Common pitfalls**
# >
# > - *Judging a heatmap on a linear colour scale.* The tails that make the ERE are invisible there; use
# >   the log scale and the outline of the significant set $S$.
# > - *Reading a large ERE as a wrong prediction.* A false alarm is a spread heatmap whose mode is right;
# >   the ERE is a risk, not an error.
# > - *Tuning the flag threshold by clicking through the test split.* The threshold comes from held-out
# >   data (notebook 05); the inspector only shows what it does.
# > - *Printing small probabilities with fixed decimals.* Flattened by a large $T$, a mode probability of a
# >   few ten-thousandths (the temperature sweep above prints one) shows as 0.000 with `.3f`; this
# >   notebook prints three significant digits (`.3g`).

# %% [markdown]
# ## Recap
#
# - A heatmap $p = \mathrm{softmax}(z / T)$ is a distribution over positions; its arg-max is the
#   prediction, and the temperature $T$ flattens or sharpens it without moving that arg-max.
# - The ERE is the heatmap's expected distance from its own mode over the significant set
#   $S_c = \{i : p(i)/\max p > c\}$; a lower cutoff can only enlarge $S_c$, and the outline shows it.
# - Sorting the images of a landmark by ERE, or by radial error, and walking that order is a faster way
#   to find interesting heatmaps than a list of image names.
# - *Next outlier* shows the largest true errors first; the flag compares the ERE with the threshold that
#   calibration chose on held-out data and stored in the run (notebook 05), never one tuned on the test split.
# - *Next false alarm* shows the flagged predictions that were right: the price of the threshold.
# - Contour landmarks spread **along** their edge, point landmarks such as sella are round; the ERE
#   measures the size of the spread, not its shape.
# - The reader caches the logits of a bounded number of images (least recently used dropped first), so the
#   inspector's memory stays bounded on a split of any size.

# %% [markdown]
# ## Exercises
#
# Each exercise has three cells: **yours** (replace the `...`), a **hidden solution** (it runs only when
# the parameter `solutions` is `True`, so "Run All" never overwrites your answer), and a **check** that
# prints "not attempted yet", confirms a right answer, or raises an `ExerciseError` with a hint. The
# checks compute their own expected values from this notebook's data. `exercise_results` collects them.

# %%
exercise_results = {}  # exercise -> passed

# %% [markdown]
# ### Exercise 06.1 · The size of the significant set at two cutoffs
#
# `inspector.reading.heatmap` (shape (H, W)) is the heatmap the first inspector shows, and
# `inspector.reading.pixel_size_mm` its pixel size $(s_x, s_y)$ in mm. With NumPy, count the pixels of
# $S_c = \{i : p(i)/\max_j p(j) > c\}$ at $c = 0.05$ and at $c = 0.2$, and give each area in mm²
# ($|S_c| \, s_x s_y$). The inspector's table shows $|S_c|$ at its cutoff: use it to check your first
# number. Answer with `answer_06_1 = {"pixels": (n_005, n_02), "area_mm2": (a_005, a_02)}`.

# %% tags=["exercise"]
answer_06_1 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    p = inspector.reading.heatmap.astype(np.float64)
    s_x, s_y = inspector.reading.pixel_size_mm
    counts = [int((p / p.max() > c).sum()) for c in (0.05, 0.2)]
    answer_06_1 = {"pixels": tuple(counts), "area_mm2": tuple(n * s_x * s_y for n in counts)}

# %% [markdown]
# Check your answer:

# %%
exercise_results["06_1"] = check.exercise_06_1(answer_06_1, inspector.reading.heatmap,
                                               inspector.reading.pixel_size_mm, (0.05, 0.2))

# %% [markdown]
# ### Exercise 06.2 · The false alarm with the largest ERE
#
# `scores.ere_mm` and `scores.radial_error_mm` (shape (N, K), mm; NaN marks a missing landmark) hold
# every test prediction, `reader.ere_threshold_mm` the stored threshold $t^\ast$ (None when the run has
# none) and `reader.outlier_threshold_mm` the outlier threshold. A **false alarm** has
# $\text{ERE} \ge t^\ast$ and a (present) radial error of at most the outlier threshold. Without the
# inspector's buttons, find the false alarm with the largest ERE. Answer with
# `answer_06_2 = {"image_index": n, "landmark_index": k, "ere_mm": ...}`, or `answer_06_2 = None` when
# there is no false alarm. (The third inspector above shows the same one, when there is one.)

# %% tags=["exercise"]
answer_06_2 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    answer_06_2 = None
    if reader.ere_threshold_mm is not None:
        is_false_alarm = ((scores.ere_mm >= reader.ere_threshold_mm)
                          & (scores.radial_error_mm <= reader.outlier_threshold_mm))  # NaN compares False
        if is_false_alarm.any():
            n, k = np.unravel_index(np.argmax(np.where(is_false_alarm, scores.ere_mm, -np.inf)), scores.ere_mm.shape)
            answer_06_2 = {"image_index": int(n), "landmark_index": int(k), "ere_mm": float(scores.ere_mm[n, k])}

# %% [markdown]
# Check your answer:

# %%
exercise_results["06_2"] = check.exercise_06_2(answer_06_2, scores.ere_mm, scores.radial_error_mm,
                                               reader.ere_threshold_mm, reader.outlier_threshold_mm)

# %% [markdown]
# ### Exercise 06.3 · Predict, then check: does doubling the temperature increase the ERE?
#
# **First predict**, without computing (hint for the argument: what happens to the ratio
# $p(i)/\max_j p(j)$ of each pixel?): doubling $T$
#
# - **(a)** makes the ERE of every heatmap larger;
# - **(b)** makes the ERE of every heatmap smaller;
# - **(c)** makes the ERE of most heatmaps larger, but it can make it smaller.
#
# Then compute:
#
# `reader.logits(start_image)[0, start_landmark].numpy()` (shape (H, W)) are the logits $z$ of the first
# inspector's landmark, `temperatures[start_landmark]` the run's temperature $T$ for it,
# `reader.dataset.pixel_size_mm[start_image]` the pixel size and `reader.ere_cutoff` the cutoff $c$. With
# NumPy only (a 2D softmax with the maximum subtracted before `exp`, then the ERE formula at the top),
# compute the ERE at $T$ and at $2T$ and say whether it is larger at $2T$ (one heatmap cannot prove
# "every heatmap": answer the letter you predicted). `reader.read(start_image, start_landmark,
# 2 * T).ere_mm` lets you check yourself. Answer with
# `answer_06_3 = {"verdict": ..., "ere_at_T_mm": ..., "ere_at_2T_mm": ..., "larger_at_2T": ...}`; the check
# tests the letter first and explains the answer.

# %% tags=["exercise"]
answer_06_3 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    def numpy_ere(z, t, pixel_size, cutoff):
        scaled = z.astype(np.float64) / t
        p = np.exp(scaled - scaled.max())
        p /= p.sum()
        row_hat, col_hat = np.unravel_index(np.argmax(p), p.shape)
        rows, cols = np.nonzero(p / p.max() > cutoff)
        q = p[rows, cols] / p[rows, cols].sum()
        return float(np.sum(q * np.hypot((cols - col_hat) * pixel_size[0], (rows - row_hat) * pixel_size[1])))

    z = reader.logits(start_image)[0, start_landmark].numpy()
    T = float(temperatures[start_landmark])
    ere_t, ere_2t = (numpy_ere(z, t, reader.dataset.pixel_size_mm[start_image], reader.ere_cutoff) for t in (T, 2 * T))
    answer_06_3 = {"verdict": "c", "ere_at_T_mm": ere_t, "ere_at_2T_mm": ere_2t, "larger_at_2T": ere_2t > ere_t}

# %% [markdown]
# Check your answer:

# %%
exercise_results["06_3"] = check.exercise_06_3(answer_06_3, reader.logits(start_image)[0, start_landmark].numpy(),
                                               float(temperatures[start_landmark]),
                                               reader.dataset.pixel_size_mm[start_image], reader.ere_cutoff)

# %% [markdown]
# The notebook's key numbers go to `RUN_DIR/06_heatmap_inspector/metrics.json` for the test suite
# (`chh_lib/summaries/notebook_06.py` lists them):

# %%
written = write_summary("06", globals())

# %% [markdown]
# ## References
#
# - J. McCouat and I. Voiculescu. *Contour-Hugging Heatmaps for Landmark Detection.* CVPR 2022.
# - C. Guo, G. Pleiss, Y. Sun and K. Q. Weinberger. *On Calibration of Modern Neural Networks.* ICML 2017.
# - M. P. Naeini, G. F. Cooper and M. Hauskrecht. *Obtaining Well Calibrated Probabilities Using Bayesian
#   Binning.* AAAI 2015 (the expected calibration error with equal-width bins).
# - J. Nixon, M. W. Dusenberry, L. Zhang, G. Jerfel and D. Tran. *Measuring Calibration in Deep Learning.*
#   CVPR Workshops 2019 (adaptive, equal-mass bins).
# - O. Ronneberger, P. Fischer and T. Brox. *U-Net: Convolutional Networks for Biomedical Image
#   Segmentation.* MICCAI 2015.
# - C.-W. Wang et al. *A benchmark for comparison of dental radiography analysis algorithms.* Medical Image
#   Analysis 31, 2016 (the ISBI 2015 cephalometric landmark challenge).

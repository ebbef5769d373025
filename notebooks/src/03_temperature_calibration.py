"""Source of notebooks/03_temperature_calibration.ipynb (build with: python notebooks/build.py 03)."""

# %% [markdown]
# # 03 · Temperature calibration: is the mode probability a probability?
#
# The third notebook of the *chh-kit* series on **Contour-Hugging Heatmaps for Landmark Detection**
# (McCouat & Voiculescu, CVPR 2022). The network of notebook 02 outputs a probability for every
# pixel; here we ask whether those probabilities can be trusted, and fix them with a temperature: one
# per landmark as in the paper, one for all, or none at all, whichever held-out data supports.
#
# **How long:** about 3 minutes on a 2-core CPU under the `cpu` profile (the shipped model; 180-190 s in
# the publishing runs recorded in `benchmarks/README.md`, 226 s when the notebook also calibrated the run
# first; the bootstraps and the small-calibration-set draws take most of it), 13 s under `smoke`
# in the smoke series (`chh notebooks --profile smoke`, 64 s for the six; more when it must first train
# the two-epoch model); under `paper` it needs the model that notebook 02 trains on a GPU.
#
# **Learning goals**
#
# 1. See what a **temperature** does to a softmax: it flattens or sharpens the distribution and never
#    moves its arg-max.
# 2. Know what *calibrated* means for a heatmap: the **mode probability** should equal the chance that
#    the prediction is correct, "correct" meaning within the radius of one pixel's area.
# 3. Build the **reliability diagram** and the **expected calibration error (ECE)** step by step, and
#    see when the paper's bins, made for a 640 x 800 model, stop resolving the confidences of a coarser
#    one.
# 4. Fit **per-landmark temperatures** on a held-out calibration split and measure the effect on the
#    test split (ECE, adaptive ECE and NLL), with the arg-max, and so MRE and SDR, unchanged.
# 5. Decide between no temperature, one for all landmarks and one per landmark **from held-out
#    evidence** (cross-validation on the calibration split), as `chh calibrate` does by default.
# 6. Say **how sure** a calibration result is: bootstrap intervals by image for the ECE before and
#    after and for its change, and how much the fitted $T$ and the test ECE vary when the calibration
#    set is small.
#
# The notebook ends with a recap, common pitfalls, three exercises with checked answers, and
# references. The model is the one in `RUN_DIR/model` (trained by notebook 02, or the shipped
# pretrained one for the `cpu` profile); everything missing is made on the way.

# %% [markdown]
# ## Imports

# %%
import math

import ipywidgets
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from matplotlib.figure import Figure

from chh_lib import exercises as check
from chh_lib.calibration import (
    MIN_CALIBRATION_IMAGES,
    TEMPERATURE_RANGE,
    TEMPERATURE_SCOPES,
    choose_scope,
    collect_logits,
    cross_validated_nll,
    fit_temperatures_nll,
    pooled_nll,
    subset_logits,
)
from chh_lib.devices import choose_device
from chh_lib.engine import predict
from chh_lib.evaluation import load_run
from chh_lib.heatmaps import MISSING_INDEX, argmax_2d, mode_probability, scale_logits, softmax_2d
from chh_lib.metrics import (
    adaptive_reliability_bins,
    bootstrap_ci,
    chh_bin_edges,
    correct_within_pixel,
    radial_error_mm,
    reliability_bins,
)
from chh_lib.plots import reliability_diagram
from chh_lib.summaries import write_summary
from chh_lib.widgets import show_figure
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
# `profile` is `smoke` (tiny model, for tests), `cpu` (the default; the shipped pretrained phantom model
# when none exists yet) or `paper`; it is read from `CHH_PROFILE` when set. Relative paths are resolved
# against the repository root; `None` selects the profile's defaults. `solutions = True` runs the hidden
# solutions of the exercises at the end (the test suite does; a student leaves it `False`).

# %% tags=["parameters"]
profile = notebook_profile()  # CHH_PROFILE, else "cpu"
data_dir = None  # None: the profile's phantom
run_dir = None  # None: runs/notebooks/<profile>
seed = 0
device = "auto"  # auto: CUDA, then MPS, then CPU
solutions = False  # True: run the exercises' hidden solutions

# %% [markdown]
# ## Set-up
#
# The data set and a trained model are made when missing (`ensure_trained_run`), and
# `ensure_calibrated` fits the temperatures on the `calibration` split unless the run already holds
# them (as `chh calibrate` does: how, and whether none, global or per landmark, is explained below). Like
# `chh calibrate`, it also chooses notebook 05's ERE threshold on that split, and warns when the split
# has few outliers to choose it from. `run.model` is the network, in eval mode.

# %%
paths = notebook_paths("03_temperature_calibration", profile, data_dir, run_dir)
ensure_phantom(paths.data_dir, profile)
ensure_trained_run(paths.model_dir, paths.data_dir, profile, device, seed)
temperatures = ensure_calibrated(paths.model_dir, paths.data_dir, device)
torch_device = choose_device(device)
run = load_run(paths.model_dir, paths.data_dir)
model = run.model.eval().to(torch_device)
landmarks = run.data.landmarks
K = landmarks.num_landmarks
width, height = run.config.data.image_size
calibration_info = run.payload.get("calibration", {})
print(f"model {paths.show(paths.model_dir)}: {run.config.model.name} at {width} x {height}, device {torch_device.type}")
stored_scope = calibration_info.get("scope", "per_landmark")
print(f"temperatures fitted by method {calibration_info.get('method')!r}, scope {stored_scope!r}, on split "
      f"{calibration_info.get('split')!r} ({len(calibration_info.get('image_ids', []))} images)")

# %% [markdown]
# ## Softmax with a temperature
#
# The heatmap of a landmark is the 2D softmax of its logits $z_i$ over the pixels $i$. Dividing the
# logits by a **temperature** $T > 0$ first gives
#
# $$p_T(i) = \frac{\exp(z_i / T)}{\sum_j \exp(z_j / T)} .$$
#
# $T > 1$ flattens the distribution (towards uniform as $T \to \infty$), $T < 1$ sharpens it (towards
# one-hot on the arg-max as $T \to 0$). Because $z \mapsto z / T$ is increasing, the **order** of the
# pixels never changes, so the arg-max, the predicted position, stays where it is. A toy row of
# 21 "pixels" with a main peak and a smaller second one:

# %%
# NBVAL_CHECK_OUTPUT
positions = np.arange(21)
toy_logits_1d = 4.0 - 0.08 * (positions - 8.0) ** 2 + 2.5 * np.exp(-0.5 * (positions - 15.0) ** 2)
toy_temperatures = [0.5, 1.0, 2.0, 4.0]
rows = []
for T in toy_temperatures:
    p = softmax_2d(scale_logits(torch.tensor(toy_logits_1d).view(1, 1, 1, -1), T))[0, 0, 0].numpy()
    rows.append({"T": T, "arg-max pixel": int(np.argmax(p)), "mode probability": round(float(p.max()), 3),
                 "mass on second peak (13-17)": round(float(p[13:18].sum()), 3)})
print(pd.DataFrame(rows).to_string(index=False))

# %% [markdown]
# The same in pictures: the 1D distributions at the four temperatures (left), and a toy 2D heatmap
# whose logits form an elongated ridge, as along a contour, at three temperatures on a log scale. The
# peak stays on the same pixel; only the spread changes.

# %%
yy, xx = np.mgrid[0:40, 0:40]
along, across = (xx - 20) * 0.8 + (yy - 20) * 0.6, -(xx - 20) * 0.6 + (yy - 20) * 0.8
toy_logits_2d = torch.tensor(-(along / 6.0) ** 2 - (across / 1.5) ** 2, dtype=torch.float32).view(1, 1, 40, 40)
figure = Figure(figsize=(13, 3.4), layout="constrained")
grid = figure.add_gridspec(1, 4, width_ratios=(1.5, 1, 1, 1))
axes = figure.add_subplot(grid[0, 0])
for T in toy_temperatures:
    p = softmax_2d(scale_logits(torch.tensor(toy_logits_1d).view(1, 1, 1, -1), T))[0, 0, 0].numpy()
    axes.plot(positions, p, marker="o", markersize=3, label=f"T = {T:g}")
axes.set_xlabel("pixel")
axes.set_ylabel("probability $p_T(i)$")
axes.set_title("1D toy: same arg-max, different spread", fontsize=9)
axes.legend(fontsize=8)
for panel, T in enumerate([0.5, 1.0, 3.0]):
    p = softmax_2d(scale_logits(toy_logits_2d, T))[0, 0].numpy()
    axes = figure.add_subplot(grid[0, panel + 1])
    shown = axes.imshow(np.log10(np.maximum(p, 1e-8)), cmap="inferno", vmin=-8, vmax=0)
    axes.set_title(f"2D toy, T = {T:g}: mode probability {p.max():.3f}", fontsize=9)
    axes.set_xlabel("x (px)")
    axes.set_ylabel("y (px)")
figure.colorbar(shown, ax=axes, label="log10 probability", shrink=0.85)
save_figure(figure, paths.output_dir / "toy_temperatures.png")

# %% [markdown]
# In a live Jupyter session the slider below redraws the 1D toy at any temperature (a copy of the notebook
# viewed without a kernel cannot show the widget; the static figure above is the same thing).

# %%
def toy_figure(temperature):
    """The 1D toy distribution at one temperature, as a figure (drawn by the slider below)."""
    p = softmax_2d(scale_logits(torch.tensor(toy_logits_1d).view(1, 1, 1, -1), temperature))[0, 0, 0].numpy()
    slider_figure = Figure(figsize=(5, 2.6), layout="constrained")
    slider_axes = slider_figure.add_subplot()
    slider_axes.bar(positions, p, color="tab:blue")
    slider_axes.set_ylim(0, 1)
    slider_axes.set_xlabel("pixel")
    slider_axes.set_ylabel("probability")
    slider_axes.set_title(f"T = {temperature:.2f}: mode probability {p.max():.3f}, arg-max {int(np.argmax(p))}")
    return slider_figure


def redraw_toy(change):
    """Slider callback: show the toy at the slider's temperature."""
    show_figure(toy_output, toy_figure(change["new"]), f"toy at T = {change['new']:.2f}")


slider = ipywidgets.FloatLogSlider(value=1.0, base=10, min=-1, max=1, step=0.05, description="T")
toy_output = ipywidgets.Output()
slider.observe(redraw_toy, names="value")
show_figure(toy_output, toy_figure(slider.value), f"toy at T = {slider.value:.2f}")
display(ipywidgets.VBox([slider, toy_output]))

# %% [markdown]
# ## What "calibrated" means for a heatmap
#
# The **confidence** of a prediction is its **mode probability** $c = \max_i p(i)$: the probability the
# model gives to the very pixel it predicts. It is *calibrated* when, among predictions of confidence
# $c$, a fraction $c$ is correct. "Correct" means the prediction falls within the pixel, made round:
# the radial error is below the radius of a disc with one pixel's area,
#
# $$e < r_\text{pixel} = \sqrt{\frac{s_x s_y}{\pi}},$$
#
# with $(s_x, s_y)$ the image's own pixel size at the network's input. The authors' code hard-codes
# 0.30234 mm, which is the *width* of one pixel of an ISBI image (0.1 mm) at 640 x 800, whatever the
# data; the kit uses each image's pixel size instead:

# %%
# NBVAL_CHECK_OUTPUT
for grid_width, pixel in [(640, 0.1 * 1935 / 640), (160, 0.1 * 1935 / 160)]:
    print(f"ISBI at width {grid_width}: pixel {pixel:.5f} mm, disc radius sqrt(s^2/pi) = {math.sqrt(pixel**2 / math.pi):.4f} mm")

# %% [markdown]
# On the test split (never used to fit anything) we decode every landmark with `chh_lib.engine.predict`,
# which returns the mode probability at $T = 1$ (`mode_prob_before`) and with the run's temperatures
# (`mode_prob`: with scope none $T = 1$, the same; with scope global one $T$; with scope per-landmark one
# $T_k$ per landmark). Missing landmarks are left out. The test logits are also kept, computed once
# (`collect_logits`), for the measurements below that need whole heatmaps.

# %%
test_set = run.dataset("test")
predictions = predict(model, test_set, torch_device, run.config.eval.batch_size, temperatures)
test_logits = collect_logits(model, test_set, torch_device, run.config.eval.batch_size)  # (N, K, H, W) on the CPU
errors_mm = radial_error_mm(predictions.pred_px, test_set.target_px, test_set.pixel_size_mm)  # (N, K)
present = ~np.isnan(errors_mm)
pixel_of_pair = np.broadcast_to(test_set.pixel_size_mm[:, None, :], errors_mm.shape + (2,))[present]
correct = correct_within_pixel(errors_mm[present], pixel_of_pair)
confidence_before = predictions.mode_prob_before[present]
confidence_after = predictions.mode_prob[present]
radius_mm = np.sqrt(pixel_of_pair[:, 0] * pixel_of_pair[:, 1] / np.pi)
run_keeps_t_1 = bool(np.all(np.asarray(temperatures, dtype=np.float64) == 1.0))  # scope none: nothing changes
run_temperatures_words = ("the run's temperatures (T = 1 kept: the same)" if run_keeps_t_1
                          else f"the run's temperatures (scope {stored_scope})")
print(f"test split: {len(test_set)} images, {present.sum()} (image, landmark) pairs; pixel size "
      f"{pixel_of_pair[:, 0].min():.3f}-{pixel_of_pair[:, 0].max():.3f} mm, radius {radius_mm.min():.3f}-"
      f"{radius_mm.max():.3f} mm")
print(f"correct: {100 * correct.mean():.1f} %; mean confidence {confidence_before.mean():.3f} at T = 1, "
      f"{confidence_after.mean():.3f} with {run_temperatures_words}")

# %% [markdown]
# ## Reliability diagram and ECE, step by step
#
# Sort the $N$ predictions into confidence bins $b$. In each, compare the **accuracy** (fraction correct)
# $\mathrm{acc}_b$ with the **mean confidence** $\mathrm{conf}_b$; the reliability diagram plots one
# against the other, and the **expected calibration error** is their gap averaged with the bins' sizes
# $n_b$ as weights, in percent:
#
# $$\mathrm{ECE} = 100\sum_b \frac{n_b}{N}\,\bigl|\mathrm{acc}_b - \mathrm{conf}_b\bigr| .$$
#
# Its worst-case sibling, the **maximum calibration error** $\mathrm{MCE} = 100\max_{b:\,n_b>0}
# \lvert\mathrm{acc}_b - \mathrm{conf}_b\rvert$ (Naeini et al. 2015), is the largest gap of any non-empty
# bin; the reliability diagrams below print both.
#
# The paper's **CHH bins** take the edges of ten equal bins over $[0, 0.15]$ and replace the last edge,
# 0.15, by 1.1: nine bins of width 0.015 up to 0.135, and a last bin $[0.135, 1.1]$ that holds every
# larger confidence. Bins are $[a, b)$, the last one closed, as `numpy.histogram`. A plain
# implementation, one bin at a time:

# %%
def readable_reliability(confidence, correct, edges):
    """Per-bin count, mean confidence and accuracy, and the ECE in percent (empty bins skipped)."""
    total = len(confidence)
    table, ece = [], 0.0
    for b in range(len(edges) - 1):
        low, high = edges[b], edges[b + 1]
        is_last = b == len(edges) - 2
        in_bin = (confidence >= low) & ((confidence <= high) if is_last else (confidence < high))
        n_b = int(in_bin.sum())
        conf_b = confidence[in_bin].mean() if n_b else np.nan
        acc_b = correct[in_bin].mean() if n_b else np.nan
        if n_b:
            ece += 100.0 * n_b / total * abs(acc_b - conf_b)
        table.append({"bin": f"[{low:.3f}, {high:.3f}{']' if is_last else ')'}", "n_b": n_b,
                      "conf_b": conf_b, "acc_b": acc_b})
    return pd.DataFrame(table), ece


edges = chh_bin_edges()
readable_table, readable_ece_before = readable_reliability(confidence_before, correct, edges)
display(readable_table.set_index("bin").round(3).T)

# %% [markdown]
# `chh_lib.metrics.reliability_bins` computes the same thing vectorised; both must agree exactly, before
# and after temperature scaling.

# %%
bins_before = reliability_bins(confidence_before, correct)
bins_after = reliability_bins(confidence_after, correct)
_, readable_ece_after = readable_reliability(confidence_after, correct, edges)
readable_matches = (
    math.isclose(readable_ece_before, bins_before.ece_percent, rel_tol=1e-12, abs_tol=1e-12)
    and math.isclose(readable_ece_after, bins_after.ece_percent, rel_tol=1e-12, abs_tol=1e-12)
    and np.array_equal(readable_table["n_b"].to_numpy(), bins_before.count)
)
assert readable_matches
print(f"ECE at T = 1: readable {readable_ece_before:.4f} %, chh_lib {bins_before.ece_percent:.4f} %")
print(f"ECE with the run's temperatures: readable {readable_ece_after:.4f} %, chh_lib {bins_after.ece_percent:.4f} %")

# %% [markdown]
# ## Do the CHH bins fit this model?
#
# The CHH bins resolve only confidences below 0.135 (nine narrow bins; every larger one falls into the
# last bin), so they describe a model in detail only when most of its mode probabilities are that small.
# They were chosen for the paper's 640 x 800 network, whose pixels are about 0.3 mm; where this model's
# mode probabilities fall is shown by the bin counts printed further below. At a coarser grid the
# same anatomical spread covers fewer pixels, so the mode probability grows. While a heatmap spreads
# over many pixels, the mass on one pixel grows in proportion to the pixel's area; once it covers only a
# few, it grows less (it can never pass 1). The cell below prints the ratio of pixel areas between the
# paper's grid and this one, and measures the growth on this model's own test heatmaps by merging
# blocks of 2 x 2 pixels (4 times the area) and taking the mode probability again. The growth counts
# as proportional when it is at least 3 of the 4 (a stated threshold).

# %%
paper_grid = (640, 800)
area_ratio = paper_grid[0] * paper_grid[1] / (width * height)
with torch.no_grad():
    test_heatmaps = softmax_2d(test_logits.logits)  # (N, K, H, W), T = 1
    merged = torch.nn.functional.avg_pool2d(test_heatmaps, 2) * 4  # (N, K, H/2, W/2): 2 x 2 blocks summed
    mode_fine = test_heatmaps.flatten(2).amax(dim=2).numpy()[present]  # (pairs,)
    mode_merged = merged.flatten(2).amax(dim=2).numpy()[present]
del test_heatmaps, merged
merge_growth = float(np.median(mode_merged / mode_fine))
growth_is_proportional = merge_growth >= 3.0
print(f"one pixel at {width} x {height} has {area_ratio:g} times the area of one at "
      f"{paper_grid[0]} x {paper_grid[1]} (same field of view)")
print(f"merging 2 x 2 pixels (4 times the area) multiplies the mode probability by {merge_growth:.2f} "
      f"(median over the {present.sum()} test pairs; median mode probability {np.median(mode_fine):.3f} -> "
      f"{np.median(mode_merged):.3f}): "
      + ("roughly in proportion to the area: the heatmaps still spread over many pixels" if growth_is_proportional
         else "less than in proportion to the area: the heatmaps already cover only a few pixels"))

# %% [markdown]
# When most predictions land in the wide last bin (from 0.135 up), the ECE degenerates into a single
# global gap: the weighted $|\mathrm{acc}_b - \mathrm{conf}_b|$ of that one bin. The histogram of the
# confidences, with the CHH edges as dotted lines, and below it the count of every CHH bin and how
# much of the ECE the last one gives ("most" meaning at least half of the predictions):

# %%
share_above = float(np.mean(confidence_before >= 0.15))
share_last_bin = float(np.mean(confidence_before >= edges[-2]))
figure = Figure(figsize=(9, 3.4), layout="constrained")
axes = figure.add_subplot()
histogram_bins = np.linspace(0, max(0.2, float(np.max(confidence_before)) * 1.02), 60)
axes.hist(confidence_before, bins=histogram_bins, alpha=0.6, label="T = 1")
axes.hist(confidence_after, bins=histogram_bins, alpha=0.6,
          label="run's temperatures (T = 1 kept)" if run_keeps_t_1 else f"run's temperatures ({stored_scope})")
for edge in edges[:-1]:
    axes.axvline(edge, color="0.3", linestyle=":", linewidth=0.9)
axes.axvline(edges[-2], color="tab:red", linewidth=1.2, label=f"{edges[-2]:.3f}: start of the last CHH bin (to 1.1)")
axes.set_xlabel("confidence (mode probability)")
axes.set_ylabel("predictions")
axes.set_title(f"test split at {width} x {height}, T = 1: {100 * share_above:.1f} % of the mode probabilities are "
               f">= 0.15, {100 * share_last_bin:.1f} % in the last CHH bin", fontsize=10)
axes.legend(fontsize=8)
save_figure(figure, paths.output_dir / "confidence_histogram.png")
last_bin_count, binned_count = int(bins_before.count[-1]), int(bins_before.count.sum())
last_bin_gap = abs(bins_before.accuracy[-1] - bins_before.mean_confidence[-1]) if last_bin_count else 0.0
last_bin_ece_share = (100 * last_bin_count / binned_count * last_bin_gap / bins_before.ece_percent
                      if bins_before.ece_percent > 0 else float("nan"))
print(f"CHH bins at T = 1, predictions per bin: {bins_before.count.tolist()}")
print(f"the last bin holds {last_bin_count} of {binned_count} predictions ({100 * share_last_bin:.1f} %) and gives "
      f"{100 * last_bin_ece_share:.0f} % of the ECE: "
      + ("the CHH ECE here is close to one global gap, blind to how calibration varies with the confidence"
         if share_last_bin >= 0.5 else "the CHH bins still separate this model's confidences"))

# %% [markdown]
# **Adaptive (equal-mass) bins** avoid the problem: sort the predictions by confidence and cut them into
# ten groups of equal size (`chh_lib.metrics.adaptive_reliability_bins`), so every bin holds a tenth of
# the data wherever the confidences lie. Their ECE is the *adaptive ECE*. Both are single numbers from
# one test split; how far they would move on other test images is measured in "Is the change larger
# than the noise?" below.

# %%
adaptive_before = adaptive_reliability_bins(confidence_before, correct)
adaptive_after = adaptive_reliability_bins(confidence_after, correct)
display(pd.DataFrame({
    "T = 1": [bins_before.ece_percent, adaptive_before.ece_percent],
    "run's T": [bins_after.ece_percent, adaptive_after.ece_percent],
}, index=["ECE, CHH bins (%)", "adaptive ECE, 10 equal-mass bins (%)"]).round(2))

# %% [markdown]
# ## Fitting the temperatures
#
# One temperature $T_k$ per landmark is fitted on the **calibration split** (images held out from
# training and never reported) by minimising the one-hot NLL of the annotated pixel, as in training
# but with the network frozen. With $P_k$ the calibration images in which landmark $k$ is annotated,
# $t_{nk}$ its annotated pixel in image $n$ and $z_{nk}$ the network's logits for it there,
#
# $$T_k = \arg\min_{T > 0} \; \frac{1}{|P_k|}\sum_{n \in P_k} -\log p_{T}\bigl(t_{nk} \mid z_{nk}\bigr)
#   = \arg\min_{T > 0} \frac{1}{|P_k|}\sum_{n \in P_k} \Bigl(\log\sum_j e^{z_{nk}(j)/T} - \frac{z_{nk}(t_{nk})}{T}\Bigr).$$
#
# `chh_lib.calibration` computes the calibration logits once **in eval mode** and fits $\log T_k$ by
# L-BFGS. We fit the per-landmark temperatures here on those logits. The run's stored temperatures
# (from `ensure_calibrated`, i.e. `chh calibrate`) are those of the scope it chose, printed in the set-up
# above: scope none, $T = 1$ for every landmark (nothing fitted); global, one $T$ for all; per-landmark,
# one $T_k$ each. The section "No temperature, one for all, or one per landmark?" below shows how that
# choice is made.
#
# *Replication notes.* The authors' code differs in two ways that the kit does not copy:
# (1) **test leak**: it fitted the temperatures on the test images it then reported, so its
# calibration numbers are optimistic; the kit refuses to fit on `test` or `test2`. (2) **BatchNorm
# drift**: it ran the network in training mode while fitting, so every forward pass updated the
# BatchNorm running statistics and the network being calibrated was not the one evaluated; the kit
# keeps the model in eval mode. (`chh calibrate --method paper` reproduces their optimiser, Adam with a
# selection by ECE, without these two defects.)

# %%
calibration_set = run.dataset("calibration")
held_out = collect_logits(model, calibration_set, torch_device, run.config.eval.batch_size)
per_landmark_fit = fit_temperatures_nll(held_out)
per_landmark_temperatures = per_landmark_fit.temperatures  # (K,)
stored = torch.as_tensor(temperatures, dtype=torch.float32)
nll_calibration_before = float(pooled_nll(held_out.logits, held_out.target_index, torch.ones(K)))
nll_calibration_after = float(pooled_nll(held_out.logits, held_out.target_index, stored))
print(f"calibration split: {len(calibration_set)} images; NLL {nll_calibration_before:.4f} nats at T = 1, "
      f"{per_landmark_fit.nll_after:.4f} nats with the per-landmark T_k fitted here, "
      f"{nll_calibration_after:.4f} nats with the run's stored ({stored_scope}) temperatures")

# %% [markdown]
# The per-landmark temperatures: above 1 the network was over-confident for that landmark (its heatmaps
# are flattened), below 1 under-confident (sharpened).

# %%
temperature_table = pd.DataFrame({"abbr.": landmarks.abbreviations, "temperature": per_landmark_temperatures},
                                 index=pd.Index(landmarks.names, name="landmark"))
display(temperature_table.set_index("abbr.").round(3).T)
figure = Figure(figsize=(10, 3.2), layout="constrained")
axes = figure.add_subplot()
colours = ["tab:red" if t > 1 else "tab:blue" for t in per_landmark_temperatures]
axes.bar(np.arange(K), per_landmark_temperatures, color=colours)
axes.axhline(1.0, color="0.3", linestyle="--", linewidth=1, label="T = 1 (unchanged)")
axes.set_xticks(np.arange(K), landmarks.abbreviations, fontsize=8)
axes.set_xlabel("landmark")
axes.set_ylabel("per-landmark temperature $T_k$")
axes.set_title("red: over-confident (flattened), blue: under-confident (sharpened)", fontsize=9)
axes.legend(fontsize=8)
save_figure(figure, paths.output_dir / "temperatures.png")

# %% [markdown]
# ## Before and after, on the test split
#
# With the run's stored temperatures. Reliability diagrams with the CHH bins
# (`chh_lib.plots.reliability_diagram`): bars are the accuracy
# per bin, the hatched part the gap to the bin's mean confidence, the dashed line perfect calibration;
# below, the number of predictions per bin. When the run keeps $T = 1$ (scope none) the two panels are
# the same (the line under the figure says whether it does); the section "No temperature, one for all,
# or one per landmark?" shows what a global $T$ would change.

# %%
after_title = "T = 1 kept (scope none)" if run_keeps_t_1 else f"run's temperatures ({stored_scope})"
figure = reliability_diagram(bins_before, bins_after, titles=("CHH bins, T = 1", f"CHH bins, {after_title}"))
save_figure(figure, paths.output_dir / "reliability_chh_bins.png")
print("the run keeps T = 1 (scope none): both panels are the same" if run_keeps_t_1
      else f"right: the run's {stored_scope} temperatures")

# %% [markdown]
# The same with the adaptive equal-mass bins, which resolve the range where this model's confidences
# actually lie:

# %%
figure = reliability_diagram(adaptive_before, adaptive_after,
                             titles=("equal-mass bins, T = 1", f"equal-mass bins, {after_title}"))
save_figure(figure, paths.output_dir / "reliability_adaptive_bins.png")

# %% [markdown]
# ## The arg-max does not move
#
# Dividing by $T_k > 0$ keeps the order of the logits, so the predicted pixel, and with it the MRE and
# SDR, is the same before and after. We check it on the real logits of the calibration split with the
# run's temperatures, and show how much the mode probability changes at the same time. When the run
# keeps $T = 1$ (scope none) nothing changes at all, so the check then uses the per-landmark $T_k$
# fitted above instead (the line below says which):

# %%
shown_temperatures = torch.as_tensor(per_landmark_temperatures, dtype=torch.float32) if run_keeps_t_1 else stored
scaled = scale_logits(held_out.logits, shown_temperatures)
argmax_unchanged = bool(torch.equal(argmax_2d(held_out.logits), argmax_2d(scaled)))
assert argmax_unchanged
mode_change = (mode_probability(scaled) - mode_probability(held_out.logits)).abs()
print(("the run keeps T = 1, which changes nothing; with the per-landmark T_k fitted above instead: "
       if run_keeps_t_1 else f"with the run's {stored_scope} temperatures: ")
      + f"arg-max unchanged on {held_out.logits.shape[0]} x {K} real logit maps: {argmax_unchanged}; "
      f"mode probability changed by up to {float(mode_change.max()):.3f} (mean {float(mode_change.mean()):.3f})")

# %% [markdown]
# ## Negative log-likelihood before and after
#
# The NLL of the annotated pixel (nats, lower is better) is what a fitted temperature minimises on the
# calibration split; on the test split it shows whether that carries over to new images. When the run
# keeps $T = 1$ (scope none) the two columns are the same.

# %%
nll_test_before = float(np.nanmean(predictions.nll_before))
nll_test_after = float(np.nanmean(predictions.nll))
display(pd.DataFrame({
    "T = 1": [nll_calibration_before, nll_test_before, bins_before.ece_percent, adaptive_before.ece_percent],
    "run's T": [nll_calibration_after, nll_test_after, bins_after.ece_percent, adaptive_after.ece_percent],
}, index=["NLL, calibration split (nats)", "NLL, test split (nats)", "ECE, test, CHH bins (%)",
          "adaptive ECE, test (%)"]).round(3))

# %% [markdown]
# ## Is the change larger than the noise?
#
# The ECE, the adaptive ECE and the NLL above come from one test split of a limited number of images;
# a different draw of test images would give other values. A **bootstrap by image** measures that:
# draw as many test images as there are, with replacement (all landmarks of a drawn image together,
# since they share the image), and recompute the statistic; the 2.5 and 97.5 percentiles of
# `num_ece_resamples` draws give a 95 % interval (`chh_lib.metrics.bootstrap_ci`). For the **change**
# after minus before, each draw measures both on the same images (a paired interval): it is much
# narrower than the two separate intervals suggest, because the same hard images pull both. When the
# paired interval contains 0, the change is within the noise of this test split. When the run keeps
# $T = 1$ (scope none) there is no change to measure and the verdict says so; the same paired interval
# for a global $T$ and for per-landmark $T_k$ against $T = 1$ follows the scope table in the next section.

# %%
num_ece_resamples = 200 if profile == "smoke" else 1000
correct_by_pair = np.zeros(present.shape, dtype=bool)  # (N, K): correct within the pixel radius
correct_by_pair[present] = correct
nll_by_pair = {"before": predictions.nll_before, "after": predictions.nll}  # (N, K), NaN = missing
mode_prob_by_pair = {"before": predictions.mode_prob_before, "after": predictions.mode_prob}  # (N, K)
measures = {"ece": "ECE, CHH bins (%)", "adaptive_ece": "adaptive ECE (%)", "nll": "NLL (nats)"}


def test_statistic(indices, which, measure):
    """ECE (%), adaptive ECE (%) or mean NLL (nats) of the test images at ``indices`` (repeats allowed)."""
    if measure == "nll":
        return float(np.nanmean(nll_by_pair[which][indices]))
    mode_prob = mode_prob_by_pair[which]
    keep = present[indices]
    binning = reliability_bins if measure == "ece" else adaptive_reliability_bins
    return binning(mode_prob[indices][keep], correct_by_pair[indices][keep]).ece_percent


def change_verdict(change_ci):
    """Verdict words on a change (after minus before) from its paired 95 % interval."""
    if change_ci[1] < 0:
        return "lower beyond noise"
    if change_ci[0] > 0:
        return "higher beyond noise"
    return "within noise (CI holds 0)"


interval_rows, intervals = [], {}
for measure, label in measures.items():
    everything = np.arange(len(test_set))
    before_value, after_value = test_statistic(everything, "before", measure), test_statistic(everything, "after", measure)
    # the same seed draws the same images for all three: the change is paired
    before_ci = bootstrap_ci(lambda i: test_statistic(i, "before", measure), len(test_set), num_ece_resamples, seed)
    after_ci = bootstrap_ci(lambda i: test_statistic(i, "after", measure), len(test_set), num_ece_resamples, seed)
    change_ci = bootstrap_ci(lambda i: test_statistic(i, "after", measure) - test_statistic(i, "before", measure),
                             len(test_set), num_ece_resamples, seed)
    within_noise = bool(change_ci[0] <= 0.0 <= change_ci[1])
    intervals[measure] = {"before": before_ci, "after": after_ci, "change": change_ci, "within_noise": within_noise}
    interval_rows.append({
        "": label,
        "T = 1 [95 % CI]": f"{before_value:.3f} [{before_ci[0]:.3f}, {before_ci[1]:.3f}]",
        "run's T [95 % CI]": f"{after_value:.3f} [{after_ci[0]:.3f}, {after_ci[1]:.3f}]",
        "change [paired 95 % CI]": f"{after_value - before_value:+.3f} [{change_ci[0]:+.3f}, {change_ci[1]:+.3f}]",
        "verdict": "no change: the run keeps T = 1" if run_keeps_t_1 else change_verdict(change_ci),
    })
display(pd.DataFrame(interval_rows).set_index(""))
print(f"{num_ece_resamples} bootstrap draws of the {len(test_set)} test images, seed {seed}")

# %% [markdown]
# ## No temperature, one for all, or one per landmark?
#
# The paper fits one $T_k$ per landmark: 19 parameters from the calibration split. The argument for it:
# landmarks differ in how sharp the network's heatmaps are, so one temperature cannot flatten an
# over-confident landmark and sharpen an under-confident one at the same time. The argument against: a
# small calibration split estimates 19 numbers less reliably than one, and a $T_k$ fitted to the noise of
# a few images can do worse on new images than a single global $T$; and when the network is already
# close to calibrated, even one fitted $T$ can do worse than none ($T = 1$). Which wins is a question
# for the data, and it must be answered **without the test split**: 5-fold cross-validation over the
# calibration images (`chh_lib.calibration.cross_validated_nll`) fits each scope on four fifths of the
# images and measures the NLL of the unseen fifth ($T = 1$ needs no fit). `chh calibrate` does exactly
# this by default (`--scope auto`, `chh_lib.calibration.choose_scope`: the lowest cross-validated NLL,
# a tie going to fewer parameters) and stores the winner; `--scope none`, `global` or `per-landmark`
# forces one. The test split then checks the choice, and it may disagree (the line under the table
# says whether it does). It can, because the cross-validated NLL of each scope is itself an average over
# a few images: when the scopes differ by little (the line prints the margin, in nats per prediction),
# another set of calibration images could reverse their order, and a scope that helps on new images can
# lose on the held-out folds of a small split, or the other way round.
#
# The variability of each $T_k$ comes from a bootstrap over calibration images (refit on each resample;
# `num_temperature_resamples` of them, few because each is a full per-landmark fit: the intervals are
# rough).

# %%
num_temperature_resamples = 5 if profile == "smoke" else 20
num_folds = min(5, len(calibration_set))
scope_cv = cross_validated_nll(held_out, num_folds=num_folds, seed=0)  # the folds of chh calibrate
global_fit = fit_temperatures_nll(held_out, per_landmark=False)
global_temperature = float(global_fit.temperatures[0])
per_landmark_predictions = predict(model, test_set, torch_device, run.config.eval.batch_size, per_landmark_temperatures)
global_predictions = predict(model, test_set, torch_device, run.config.eval.batch_size, global_fit.temperatures)
bins_per_landmark = reliability_bins(per_landmark_predictions.mode_prob[present], correct)
bins_global = reliability_bins(global_predictions.mode_prob[present], correct)
nll_test_per_landmark = float(np.nanmean(per_landmark_predictions.nll))
nll_test_global = float(np.nanmean(global_predictions.nll))
rng = np.random.default_rng(seed)
resampled = np.array([
    fit_temperatures_nll(subset_logits(held_out, rng.integers(0, len(calibration_set), len(calibration_set))),
                         warn_clipped=False).temperatures  # the fit above already warned once
    for _ in range(num_temperature_resamples)
])  # (resamples, K)
temperature_ci = np.percentile(resampled, [2.5, 97.5], axis=0)  # (2, K)
better_scope = choose_scope(scope_cv)
test_nll_by_scope = {"none": nll_test_before, "global": nll_test_global, "per_landmark": nll_test_per_landmark}
test_scope = min(TEMPERATURE_SCOPES, key=lambda scope: (test_nll_by_scope[scope], TEMPERATURE_SCOPES.index(scope)))
runner_up = min((scope for scope in TEMPERATURE_SCOPES if scope != better_scope), key=scope_cv.get)
global_inside_ci = int(np.sum((temperature_ci[0] <= global_temperature) & (global_temperature <= temperature_ci[1])))
display(pd.DataFrame({
    f"{num_folds}-fold CV NLL, calibration split (nats)": [scope_cv[scope] for scope in TEMPERATURE_SCOPES],
    "NLL, test split (nats)": [test_nll_by_scope[scope] for scope in TEMPERATURE_SCOPES],
    "ECE, test, CHH bins (%)": [bins_before.ece_percent, bins_global.ece_percent, bins_per_landmark.ece_percent],
}, index=["none: T = 1", f"global T = {global_temperature:.3f}", "per-landmark T_k"]).round(4))
print(f"cross-validation on the calibration split favours scope {better_scope!r}, by "
      f"{scope_cv[runner_up] - scope_cv[better_scope]:.4f} nats per prediction over {runner_up!r}; the test split "
      f"{'agrees' if test_scope == better_scope else 'disagrees'} (lowest: {test_scope!r})")
print(f"the run's stored scope (chh calibrate --scope auto): {stored_scope!r}; the global T lies inside the "
      f"bootstrap 95 % interval of {global_inside_ci} of the {K} landmarks' T_k")

# %% [markdown]
# The table compares the scopes by single numbers from one test split. As in "Is the change larger than
# the noise?", a paired bootstrap by test image (the same `num_ece_resamples` draws, the same `seed`)
# gives the 95 % interval of the change from $T = 1$ to the global $T$ and to the per-landmark $T_k$,
# both fitted on the calibration split. The cross-validated choice is itself an estimate from a small
# split, so it can keep $T = 1$ while the test split shows a fitted $T$ lowering the ECE beyond noise,
# or pick a fitted $T$ whose test change is within noise; the lines below the table say which holds here.

# %%
scope_words = {"none": "T = 1", "global": f"the global T = {global_temperature:.3f}",
               "per_landmark": "the per-landmark T_k"}
measure_words = {"ece": "CHH-bin ECE", "adaptive_ece": "adaptive ECE", "nll": "NLL"}
fitted_scopes = ("global", "per_landmark")
everything = np.arange(len(test_set))
for scope, fitted_predictions in [("global", global_predictions), ("per_landmark", per_landmark_predictions)]:
    mode_prob_by_pair[scope], nll_by_pair[scope] = fitted_predictions.mode_prob, fitted_predictions.nll
scope_rows, scope_intervals = [], {scope: {} for scope in fitted_scopes}
for measure, label in measures.items():
    row = {"": label}
    for scope in fitted_scopes:
        change = test_statistic(everything, scope, measure) - test_statistic(everything, "before", measure)
        # the same seed as the interval cell: the same draws of test images, paired with T = 1
        change_ci = bootstrap_ci(lambda i: test_statistic(i, scope, measure) - test_statistic(i, "before", measure),
                                 len(test_set), num_ece_resamples, seed)
        scope_intervals[scope][measure] = {"change": change_ci, "verdict": change_verdict(change_ci)}
        column = f"global T = {global_temperature:.3f}" if scope == "global" else "per-landmark T_k"
        row[f"{column}: change [paired 95 % CI]"] = f"{change:+.3f} [{change_ci[0]:+.3f}, {change_ci[1]:+.3f}]"
        row[f"{column}: verdict"] = change_verdict(change_ci)
    scope_rows.append(row)
display(pd.DataFrame(scope_rows).set_index(""))


def moved(scope, direction):
    """The measures that the scope's temperatures move ``direction`` ("lower" or "higher") beyond noise."""
    return [measure_words[m] for m in measures if scope_intervals[scope][m]["verdict"].startswith(direction)]


def effect(scope):
    """What the scope's temperatures do to the test split against T = 1, in words."""
    parts = ([f"lowers the {' and the '.join(moved(scope, 'lower'))}"] if moved(scope, "lower") else []) + (
        [f"raises the {' and the '.join(moved(scope, 'higher'))}"] if moved(scope, "higher") else [])
    return f"{scope_words[scope]} " + (" and ".join(parts) + " beyond noise" if parts else "changes nothing beyond noise")


print(f"{num_ece_resamples} paired bootstrap draws of the {len(test_set)} test images, seed {seed}; against T = 1, "
      f"{effect('global')}; {effect('per_landmark')}")
few_calibration_images = len(calibration_set) < MIN_CALIBRATION_IMAGES
fewer_words = (f" (fewer than the {MIN_CALIBRATION_IMAGES} that chh calibrate asks for)" if few_calibration_images
               else "")
clear_gains = [scope for scope in fitted_scopes if moved(scope, "lower") and not moved(scope, "higher")]
if better_scope == "none":
    if clear_gains:
        print(f"cross-validation on the {len(calibration_set)} calibration images{fewer_words} kept T = 1, but on the "
              f"test split {'; '.join(effect(scope) for scope in clear_gains)}: the calibration split was too small "
              "to see that gain")
    elif not any(moved(scope, "lower") for scope in fitted_scopes):
        print("cross-validation kept T = 1, and the test split agrees: no fitted temperature lowers the ECE, the "
              "adaptive ECE or the NLL beyond noise")
    else:
        print("cross-validation kept T = 1; on the test split each fitted temperature that lowers one measure "
              "beyond noise raises another: no clear gain was missed")
else:
    lower, higher = moved(better_scope, "lower"), moved(better_scope, "higher")
    agreement = ("supports" if lower and not higher else "contradicts" if higher and not lower
                 else "neither supports nor contradicts")
    print(f"cross-validation chose {scope_words[better_scope]} (scope {better_scope!r}); the test split {agreement} "
          f"it: {effect(better_scope)}" + (f"; a calibration split of {len(calibration_set)} images{fewer_words}"
                                           if few_calibration_images else ""))

# %% [markdown]
# Left: each $T_k$ with its bootstrap 95 % interval, and the global $T$. Where the intervals of most
# landmarks contain the global value, the calibration split cannot tell the landmarks apart. Right: the
# test NLL of a single temperature as it varies, with $T = 1$, the global fit and the per-landmark fit
# marked.

# %%
temperature_grid = np.geomspace(0.5, 4.0, 29)
grid_nll = [float(pooled_nll(test_logits.logits, test_logits.target_index, torch.tensor([t])))
            for t in temperature_grid]
figure = Figure(figsize=(11, 3.8), layout="constrained")
left, right = figure.subplots(1, 2, width_ratios=[1.6, 1])
left.errorbar(np.arange(K), per_landmark_temperatures, yerr=np.abs(temperature_ci - per_landmark_temperatures),
              fmt="o", capsize=3, label="per-landmark $T_k$ (bootstrap 95 %)")
left.axhline(global_temperature, color="tab:orange", linestyle="--", label=f"global T = {global_temperature:.2f}")
left.set_xticks(np.arange(K), landmarks.abbreviations, fontsize=8)
left.set_xlabel("landmark")
left.set_ylabel("temperature")
left.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
right.plot(temperature_grid, grid_nll, color="0.3", label="one temperature for all")
right.axvline(1.0, color="0.6", linestyle=":", label="T = 1 (none)")
right.axvline(global_temperature, color="tab:orange", linestyle="--", label="global fit (calibration split)")
right.axhline(nll_test_per_landmark, color="tab:blue", linestyle=":", label="per-landmark fit")
right.set_xscale("log")
right.set_xticks([0.5, 1, 2, 4], labels=["0.5", "1", "2", "4"])
right.tick_params(axis="x", which="minor", labelbottom=False)
right.set_xlabel("temperature T")
right.set_ylabel("test NLL (nats)")
right.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=1)
save_figure(figure, paths.output_dir / "temperature_scope.png")

# %% [markdown]
# ## Small calibration sets
#
# How many calibration images are enough? Fit the temperature on many small calibration sets and
# watch how much it, and the test ECE it gives, vary. We draw sets of `small_size` and of `large_size`
# images, with replacement, from a **pool of held-out images**: the calibration split and, when the
# data set has one, the `test2` split (images that training never saw; this notebook neither reports
# `test2` nor stores anything fitted on it). The test split, whose ECE we report, is never in the pool.
# When the pool holds fewer distinct images than `large_size`, the large draws repeat images: they
# then show only how the estimator's spread shrinks with the sample size, not what new images would
# add, and the cell says so.
#
# The temperature here is the global one (a single $T$: the scope with the fewest parameters that still
# fits something; a per-landmark $T_k$ sees only its own landmark's pairs, $K$ times fewer, and varies
# more). Refitting by L-BFGS on every draw would take a full pass over the logits per step, so we
# compute, once, each pool image's summed NLL on a fine grid of temperatures (log-spaced, `num_grid`
# values around the calibration fit, moved when the whole pool's own fit falls on the grid's edge):
# the NLL of a draw at every grid temperature is then a weighted sum, its minimum is refined by a
# parabola through the three lowest grid points, and the test mode probability and NLL of every pair at
# any $T$ are interpolated (quadratically in $\log T$) from their values on the same grid. The cell
# checks both shortcuts against `fit_temperatures_nll` and the exact softmax: the fit on one draw, the
# test ECE at that draw's $T$ and at $T = 1$.

# %%
small_size, large_size = 25, 100
num_set_draws = 100 if profile == "smoke" else 500
num_grid = 33  # log-spaced temperatures over a factor of 4 each side of the grid's centre


def grid_statistics(logits_of_split, grid):
    """Per pair on the grid (G,) of temperatures: the NLL and -log mode probability (N, K, G); presence (N, K)."""
    flat = logits_of_split.logits.flatten(2)  # (N, K, H*W)
    present_pairs = logits_of_split.target_index != MISSING_INDEX
    target = flat.gather(2, logits_of_split.target_index.clamp(min=0)[..., None])[..., 0].double().numpy()  # (N, K)
    peak = flat.amax(dim=2).double().numpy()  # (N, K)
    with torch.no_grad():
        lse = torch.stack([torch.logsumexp(flat / t, dim=2) for t in grid.tolist()], dim=-1).double().numpy()
    return lse - target[..., None] / grid, lse - peak[..., None] / grid, present_pairs.numpy()


extra_records = run.data.splits.get("test2", [])
pool_parts = [held_out] + ([collect_logits(model, run.dataset("test2"), torch_device, run.config.eval.batch_size)]
                           if extra_records else [])
pool_size = sum(part.logits.shape[0] for part in pool_parts)
pool_splits = "calibration" + (" + test2" if extra_records else "")
grid_centre = global_temperature
for _ in range(3):  # move the grid when the whole pool's own fit falls on its edge
    temperature_grid_fit = grid_centre * np.geomspace(1 / 4, 4, num_grid)  # (G,)
    pool_nll_sum, pool_count = [], []  # per pool image: summed NLL on the grid (G,), present landmarks
    for part in pool_parts:
        nll_grid, _, present_pairs = grid_statistics(part, temperature_grid_fit)
        pool_nll_sum.append(np.where(present_pairs[..., None], nll_grid, 0.0).sum(axis=1))
        pool_count.append(present_pairs.sum(axis=1))
    pool_nll_sum, pool_count = np.concatenate(pool_nll_sum), np.concatenate(pool_count)  # (pool, G), (pool,)
    pool_best = int(np.argmin(pool_nll_sum.sum(axis=0)))
    if 0 < pool_best < num_grid - 1:
        break
    grid_centre = float(temperature_grid_fit[pool_best])
del pool_parts
log_grid = np.log(temperature_grid_fit)
log_step = log_grid[1] - log_grid[0]
test_nll_grid, test_neg_log_mode, test_present = grid_statistics(test_logits, temperature_grid_fit)


def on_grid(values, temperature):
    """Quadratic interpolation in log T of ``values`` (..., G) at one temperature."""
    position = (np.log(temperature) - log_grid[0]) / log_step
    g = int(np.clip(np.rint(position), 1, num_grid - 2))
    s = position - g
    below, middle, above = values[..., g - 1], values[..., g], values[..., g + 1]
    return middle + s * (above - below) / 2 + s * s * (above - 2 * middle + below) / 2


def fit_on_grid(image_indices):
    """The global temperature of the pool images at ``image_indices`` (repeats count), and whether it hit the grid's edge."""
    weights = np.bincount(image_indices, minlength=pool_size).astype(np.float64)
    objective = weights @ pool_nll_sum / (weights @ pool_count)  # (G,) mean NLL of the draw
    best = int(np.argmin(objective))
    g = int(np.clip(best, 1, num_grid - 2))
    below, middle, above = objective[g - 1:g + 2]
    offset = 0.5 * (below - above) / (below - 2 * middle + above)
    return float(np.exp(log_grid[g] + np.clip(offset, -1, 1) * log_step)), best in (0, num_grid - 1)


def test_at(temperature):
    """Test ECE (%), adaptive ECE (%) and mean NLL (nats) with one temperature for all landmarks."""
    confidence = np.exp(-on_grid(test_neg_log_mode, temperature))[present]
    nll = float(on_grid(test_nll_grid, temperature)[test_present].mean())
    return (reliability_bins(confidence, correct).ece_percent,
            adaptive_reliability_bins(confidence, correct).ece_percent, nll)


set_rng = np.random.default_rng(seed)
check_draw = set_rng.integers(0, len(calibration_set), small_size)  # calibration images come first in the pool
check_temperature, _ = fit_on_grid(check_draw)
library_temperature = float(fit_temperatures_nll(subset_logits(held_out, check_draw), per_landmark=False,
                                                 warn_clipped=False).temperatures[0])
exact_confidence = mode_probability(scale_logits(test_logits.logits, torch.tensor([check_temperature]))).numpy()[present]
exact_ece = reliability_bins(exact_confidence, correct).ece_percent
one_inside_grid = bool(log_grid[0] <= 0.0 <= log_grid[-1])
ece_at_one, adaptive_at_one, nll_at_one = test_at(1.0) if one_inside_grid else (
    bins_before.ece_percent, adaptive_before.ece_percent, nll_test_before)
# the library clips a fitted T to TEMPERATURE_RANGE (degenerate data, e.g. a barely trained model)
grid_matches_library = (math.isclose(float(np.clip(check_temperature, *TEMPERATURE_RANGE)), library_temperature,
                                     rel_tol=5e-3)
                        and math.isclose(test_at(check_temperature)[0], exact_ece, abs_tol=0.05)
                        and math.isclose(ece_at_one, bins_before.ece_percent, abs_tol=0.05))
assert grid_matches_library, (check_temperature, library_temperature, test_at(check_temperature)[0], exact_ece)
print(f"check on one draw of {small_size} calibration images: T = {check_temperature:.4f} on the grid, "
      f"{library_temperature:.4f} by fit_temperatures_nll; test ECE {test_at(check_temperature)[0]:.4f} % "
      f"interpolated, {exact_ece:.4f} % exact; at T = 1 {ece_at_one:.4f} % interpolated, "
      f"{bins_before.ece_percent:.4f} % exact" + ("" if one_inside_grid else " (T = 1 is outside the grid: exact)"))
set_draws = {}
for size in (small_size, large_size):
    fits = [fit_on_grid(set_rng.integers(0, pool_size, size)) for _ in range(num_set_draws)]
    draws = np.array([[t, *test_at(t)] for t, _ in fits])  # (draws, 4): T, ECE, adaptive ECE, NLL
    set_draws[size] = {"temperature": draws[:, 0], "ece": draws[:, 1], "adaptive_ece": draws[:, 2],
                       "nll": draws[:, 3], "at_grid_edge": int(sum(edge for _, edge in fits))}
new_information = pool_size >= large_size
percentiles = [2.5, 25, 50, 75, 97.5]
spread_table = pd.DataFrame({
    (f"{size} images", name): np.percentile(set_draws[size][key], percentiles)
    for size in (small_size, large_size)
    for key, name in [("temperature", "T"), ("ece", "ECE (%)"), ("adaptive_ece", "adaptive ECE (%)")]
}, index=pd.Index([f"{q:g} %" for q in percentiles], name="percentile"))
display(spread_table.round(3))
share_worse = {size: float(np.mean(set_draws[size]["nll"] > nll_at_one)) for size in (small_size, large_size)}
width_of = {size: float(np.subtract(*np.percentile(set_draws[size]["temperature"], [97.5, 2.5])))
            for size in (small_size, large_size)}
print(f"pool: {pool_size} held-out images ({pool_splits}); {num_set_draws} draws of each size; test split at T = 1: "
      f"ECE {bins_before.ece_percent:.3f} %, adaptive ECE {adaptive_before.ece_percent:.3f} %, NLL "
      f"{nll_test_before:.4f} nats (exact; the draws' test values are interpolated on the grid, which gives "
      f"{ece_at_one:.3f} %, {adaptive_at_one:.3f} % and {nll_at_one:.4f} nats at T = 1)")
if not new_information:
    print(f"the pool holds fewer than {large_size} distinct images: the {large_size}-image draws repeat images, so "
          "they show only how the estimator's spread shrinks with the sample size, not new information")
print(f"95 % of the fitted T lie within a width of {width_of[small_size]:.3f} from {small_size} images and "
      f"{width_of[large_size]:.3f} from {large_size} (ratio {width_of[small_size] / max(width_of[large_size], 1e-12):.2f}; "
      f"1 / sqrt(n) predicts {math.sqrt(large_size / small_size):.2f}); at chh calibrate's minimum of "
      f"{MIN_CALIBRATION_IMAGES} images that rule gives about "
      f"{width_of[large_size] * math.sqrt(large_size / MIN_CALIBRATION_IMAGES):.3f}")
print(f"the fitted T gave a worse test NLL than T = 1 in {100 * share_worse[small_size]:.1f} % of the "
      f"{small_size}-image draws and {100 * share_worse[large_size]:.1f} % of the {large_size}-image draws; "
      f"draws whose T hit the grid's edge: {set_draws[small_size]['at_grid_edge']} and "
      f"{set_draws[large_size]['at_grid_edge']}")
share_above_one = {size: float(np.mean(set_draws[size]["temperature"] > 1.0)) for size in (small_size, large_size)}
if min(share_above_one.values()) >= 0.95 or max(share_above_one.values()) <= 0.05:
    pool_above = min(share_above_one.values()) >= 0.95
    t_side = (f"consistently {'above' if pool_above else 'below'} 1 (in at least 95 % of the draws of both sizes)"
              + (", like" if (global_temperature > 1) == pool_above else ", unlike")
              + f" the global T = {global_temperature:.3f} of the calibration split alone")
else:
    t_side = "on both sides of 1: sets of these sizes do not settle whether a global T should flatten or sharpen"
print(f"the fitted global T is above 1 in {100 * share_above_one[small_size]:.1f} % of the {small_size}-image draws "
      f"and {100 * share_above_one[large_size]:.1f} % of the {large_size}-image draws: {t_side}")

# %% [markdown]
# The same draws as histograms: the fitted global $T$ (left) and the test adaptive ECE it gives
# (right), with $T = 1$ and its test adaptive ECE marked.

# %%
figure = Figure(figsize=(11, 3.4), layout="constrained")
left, right = figure.subplots(1, 2)
for size, colour in [(small_size, "tab:red"), (large_size, "tab:blue")]:
    left.hist(set_draws[size]["temperature"], bins=30, alpha=0.55, color=colour, label=f"{size} images")
    right.hist(set_draws[size]["adaptive_ece"], bins=30, alpha=0.55, color=colour, label=f"{size} images")
left.axvline(1.0, color="0.3", linestyle=":", label="T = 1")
right.axvline(adaptive_at_one, color="0.3", linestyle=":", label="T = 1")
left.set_xlabel("fitted global temperature T")
right.set_xlabel("test adaptive ECE (%)")
for axes in (left, right):
    axes.set_ylabel("draws")
    axes.legend(fontsize=8)
figure.suptitle(f"{num_set_draws} calibration sets drawn from {pool_size} held-out images ({pool_splits})",
                fontsize=10)
save_figure(figure, paths.output_dir / "small_calibration_sets.png")
del test_logits

# %% [markdown]
# **What to do with your own data**, from these numbers:
#
# 1. Calibrate on at least the number of images that `chh calibrate` asks for (printed above; it warns
#    below it), and on more when the spread of $T$ from sets of that size is wider than the change in
#    $T$ you hope to see.
# 2. Check the cross-validated NLL (`chh calibrate --scope auto` does; it prints the three values):
#    it is measured on calibration images each fit did not see.
# 3. Treat the choice of `--scope auto` as uncertain when the calibration split holds fewer images than
#    `chh calibrate`'s minimum of 50 (`MIN_CALIBRATION_IMAGES`): the cross-validated NLL of each scope is
#    then an average over few images, a small margin between scopes can reverse on other images, and the
#    choice (keep $T = 1$ or fit) can go either way. Look at the test change of the NLL and
#    the ECE from $T = 1$ to the global $T$ and at its paired interval (the table after the scope
#    comparison), and collect more calibration images; or force `--scope global` when the draws above put
#    the global $T$ consistently on the same side of 1 as the calibration split's own global $T$ (the last
#    line above says whether they do). Either way, a test change inside its paired interval is not a
#    result.
# 4. Report intervals: the ECE and NLL before and after with bootstrap intervals by image, and the
#    paired interval of the change, as in "Is the change larger than the noise?".

# %% [markdown]
# ## Recap
#
# - Dividing the logits by a temperature $T$ flattens ($T > 1$) or sharpens ($T < 1$) a heatmap and never
#   moves its arg-max: MRE and SDR are untouched by calibration.
# - A heatmap is calibrated when its **mode probability** equals the chance that the prediction lies
#   within the radius of one pixel's area, $\sqrt{s_x s_y / \pi}$, from the truth.
# - The reliability diagram compares accuracy and mean confidence per bin; the ECE is their gap weighted
#   by the bins' sizes, the MCE the largest gap.
# - The paper's CHH bins resolve only mode probabilities below 0.135; a coarser grid raises the mode
#   probability, and when most predictions fall in the wide last bin (the bin counts above say whether
#   they do here) the CHH ECE is one global gap and equal-mass (adaptive) bins measure the calibration
#   better.
# - Temperatures are fitted on a held-out **calibration** split, by the NLL of the annotated pixel, with
#   the network in eval mode; fitting on the reported test images (as the authors' code did) is a leak.
# - None ($T = 1$), global or per landmark is decided by cross-validation on the calibration split, never
#   by the test split; `chh calibrate --scope auto` (its default) does this. The test split checks the
#   choice and can disagree: on a small calibration split a small margin between the scopes'
#   cross-validated NLLs can reverse on other images, so read the paired interval of the test change too.
# - Every number from a test split is an estimate: a bootstrap by image gives its interval, and a paired
#   bootstrap the interval of a change; a change whose paired interval holds 0 is within the noise.
# - The spread of a fitted temperature shrinks roughly as $1/\sqrt{n}$ with $n$ calibration images; a
#   small calibration set gives temperatures, and test ECEs, that vary widely from one set to the next.

# %% [markdown]
# > **Common pitfalls**
# >
# > - *Fitting the temperatures on the test images you report.* The calibration then looks better than
# >   it will be on new images (the authors' code did this); fit on a held-out calibration split.
# > - *Fitting with the network in training mode.* BatchNorm then updates its running statistics on
# >   every forward pass, and the network you calibrate is not the one you evaluate.
# > - *Expecting calibration to change the MRE or SDR.* A temperature never moves the arg-max; only
# >   the probabilities (mode probability, ECE, NLL, ERE) change.
# > - *Reading the CHH-bin ECE of a coarse model.* When one bin holds most predictions, the ECE is one
# >   global gap; look at the bin counts and at the adaptive ECE.
# > - *Reporting an ECE drop without an interval.* On a test split of limited size a small change can
# >   be noise; give the paired bootstrap interval and say whether it holds 0.
# > - *Fitting one temperature per landmark to a small calibration set.* Compare the scopes by
# >   cross-validated NLL first, and keep $T = 1$ when nothing fitted beats it; on a small split, treat
# >   that choice as uncertain too and check the paired interval of the test change.

# %% [markdown]
# ## Exercises
#
# Each exercise has three cells: **yours** (replace the `...`), a **hidden solution** (it runs only when
# the parameter `solutions` is `True`, so "Run All" never overwrites your answer), and a **check** that
# prints "not attempted yet", confirms a right answer, or raises an `ExerciseError` with a hint. The
# checks compute their own expected values from this notebook's data.

# %%
exercise_results = {}  # exercise -> passed

# %% [markdown]
# ### Exercise 03.1 · A temperature by hand
#
# For the 1D toy logits `toy_logits_1d` (shape (21,)) at $T = 2$, compute with NumPy alone (no
# `chh_lib`, no torch) the softmax $p_T(i) = e^{z_i/T} / \sum_j e^{z_j/T}$, and give its mode
# probability, its arg-max and the temperature $T^\star$ at which the mode probability is exactly
# $0.2$ (the mode probability falls as $T$ grows, so a bisection on $T \in [0.1, 10]$ finds it; to
# $10^{-4}$). Answer with `answer_03_1 = {"mode_probability": ..., "argmax": ..., "temperature_for_0_2": ...}`.

# %% tags=["exercise"]
answer_03_1 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    def toy_mode_probability(temperature):
        scaled = toy_logits_1d / temperature
        p = np.exp(scaled - scaled.max())  # subtract the maximum: no overflow
        return (p / p.sum()).max(), int(np.argmax(p))

    low, high = 0.1, 10.0
    while high - low > 1e-6:
        middle = (low + high) / 2
        low, high = (middle, high) if toy_mode_probability(middle)[0] > 0.2 else (low, middle)
    mode_at_2, argmax_at_2 = toy_mode_probability(2.0)
    answer_03_1 = {"mode_probability": mode_at_2, "argmax": argmax_at_2, "temperature_for_0_2": (low + high) / 2}

# %% [markdown]
# Check your answer:

# %%
exercise_results["03_1"] = check.exercise_03_1(answer_03_1, toy_logits_1d)

# %% [markdown]
# ### Exercise 03.2 · Predict, then check: ten equal-width bins over [0, 1]
#
# Naeini et al. (2015) and Guo et al. (2017) use $B = 10$ equal-width bins over $[0, 1]$ rather than the
# CHH bins. **Predict first**, from the histogram of the confidences above and before computing
# anything: which statement will hold for these bins and this model's confidences (`confidence_after`)?
#
# - **(a)** One bin holds at least half of the predictions: like the CHH bins here, these bins reduce
#   the ECE to about one gap between accuracy and mean confidence.
# - **(b)** No bin holds half of the predictions: these bins resolve how the calibration varies with
#   the confidence.
# - **(c)** The share of the fullest bin is the fraction of correct predictions.
#
# Then check your prediction: with `confidence_after` and `correct` (the test pairs, run's
# temperatures), compute the ECE and the MCE in percent over the edges `np.linspace(0, 1, 11)` (bins
# $[a, b)$, the last one closed, empty bins skipped) and the largest share of the predictions in any one
# bin. Answer with `answer_03_2 = {"verdict": "a", "b" or "c", "ece_percent": ..., "mce_percent": ...,
# "largest_bin_share": ...}`; the check says why the right letter is right.

# %% tags=["exercise"]
answer_03_2 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    ten_bins, ten_bins_ece = readable_reliability(confidence_after, correct, np.linspace(0, 1, 11))
    filled = ten_bins[ten_bins["n_b"] > 0]
    largest_share = float(ten_bins["n_b"].max() / ten_bins["n_b"].sum())
    answer_03_2 = {
        "verdict": "a" if largest_share >= 0.5 else "b",
        "ece_percent": ten_bins_ece,
        "mce_percent": float(100 * np.max(np.abs(filled["acc_b"] - filled["conf_b"]))),
        "largest_bin_share": largest_share,
    }

# %% [markdown]
# Check your answer:

# %%
exercise_results["03_2"] = check.exercise_03_2(answer_03_2, confidence_after, correct)

# %% [markdown]
# ### Exercise 03.3 · One global temperature by a grid search
#
# Without L-BFGS: evaluate the pooled NLL of the calibration logits (`held_out.logits`,
# `held_out.target_index`; `pooled_nll` from `chh_lib.calibration`) at one temperature for all landmarks
# over `np.geomspace(0.1, 10.0, 401)`, take the best $T$, and measure the **test** NLL at that $T$ with
# `test_set` and `predict` (as above), so that you can say whether your global $T$ beats the per-landmark
# fit on the test split (`nll_test_per_landmark`). Answer with
# `answer_03_3 = {"global_temperature": ..., "test_nll": ..., "beats_per_landmark_on_test": ...}`.

# %% tags=["exercise"]
answer_03_3 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    grid = np.geomspace(0.1, 10.0, 401)
    calibration_nll = [float(pooled_nll(held_out.logits, held_out.target_index, torch.tensor([t]))) for t in grid]
    best_temperature = float(grid[int(np.argmin(calibration_nll))])
    at_best = predict(model, test_set, torch_device, run.config.eval.batch_size, np.full(K, best_temperature))
    answer_03_3 = {
        "global_temperature": best_temperature,
        "test_nll": float(np.nanmean(at_best.nll)),
        "beats_per_landmark_on_test": bool(np.nanmean(at_best.nll) < nll_test_per_landmark),
    }

# %% [markdown]
# Check your answer:

# %%
def test_nll_at(temperature):
    """Mean test NLL (nats) with one temperature for every landmark."""
    at_temperature = predict(model, test_set, torch_device, run.config.eval.batch_size, np.full(K, temperature))
    return float(np.nanmean(at_temperature.nll))


exercise_results["03_3"] = check.exercise_03_3(answer_03_3, global_temperature, test_nll_at, nll_test_per_landmark)

# %% [markdown]
# ## Summary (for the test suite)
#
# The key numbers go to `RUN_DIR/03_temperature_calibration/metrics.json` (with the figures above), for the
# test suite (`chh_lib.summaries.notebook_03` lists them); they include how many exercises were attempted
# and passed.

# %%
written = write_summary("03", globals())

# %% [markdown]
# ## References
#
# - J. McCouat and I. Voiculescu. *Contour-Hugging Heatmaps for Landmark Detection.* CVPR 2022.
# - C. Guo, G. Pleiss, Y. Sun and K. Q. Weinberger. *On Calibration of Modern Neural Networks.* ICML 2017
#   (temperature scaling; ECE with ten equal-width bins).
# - M. P. Naeini, G. F. Cooper and M. Hauskrecht. *Obtaining Well Calibrated Probabilities Using Bayesian
#   Binning.* AAAI 2015 (the expected and maximum calibration errors, with equal-width bins).
# - J. Nixon, M. W. Dusenberry, L. Zhang, G. Jerfel and D. Tran. *Measuring Calibration in Deep Learning.*
#   CVPR Workshops 2019 (adaptive, equal-mass bins).
# - B. Efron and R. J. Tibshirani. *An Introduction to the Bootstrap.* Chapman & Hall, 1993 (percentile
#   intervals; resampling whole images, since the landmarks of one image are not independent).
# - O. Ronneberger, P. Fischer and T. Brox. *U-Net: Convolutional Networks for Biomedical Image
#   Segmentation.* MICCAI 2015.
# - C.-W. Wang et al. *A benchmark for comparison of dental radiography analysis algorithms.* Medical Image
#   Analysis 31, 2016 (the ISBI 2015 cephalometric landmark challenge).

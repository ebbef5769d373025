"""Source of notebooks/04_expected_radial_error.ipynb (build with: python notebooks/build.py 04)."""

# %% [markdown]
# # 04 · Expected radial error: how far off does the heatmap expect to be?
#
# The fourth notebook of the *chh-kit* series on **Contour-Hugging Heatmaps for Landmark Detection**
# (McCouat & Voiculescu, CVPR 2022). A calibrated heatmap is a distribution over positions; the paper
# turns it into one number per landmark, the **expected radial error (ERE)**, and reports that it
# correlates strongly with the error actually made. This notebook derives the ERE and then asks how well
# it really tracks the error, pair by pair and in the paper's binned form, which give very different
# answers.
#
# **How long:** 16 s on a 2-core CPU under the `cpu` profile in the publishing run recorded in
# `benchmarks/README.md` (the shipped model, no training; the bootstrap intervals take part of it), and
# 7 s under `smoke` in the smoke series (`chh notebooks --profile smoke`, 64 s for the six; more when it
# must first train the two-epoch model); under `paper` it needs the model that notebook 02 trains on a
# GPU.
#
# **Learning goals**
#
# 1. Derive the ERE from the heatmap as the expected distance to the prediction, and implement it in a
#    few lines (checked against `chh_lib.metrics.expected_radial_error`).
# 2. Understand the **5 % cutoff** and what changing it does.
# 3. Measure how well the ERE tracks the true radial error: Pearson and Spearman over all pairs, the
#    paper's binned Pearson $r$ (each with a bootstrap 95 % interval over images), and why binning
#    sorted pairs inflates $r$.
# 4. Test whether contour landmarks, whose heatmaps spread **along** the contour, have a larger ERE than
#    sella, and see how a large ERE flags a real failure on a hard image.
#
# The notebook ends with a recap, three exercises with checked answers, and references.

# %% [markdown]
# ## Imports

# %%
import numpy as np
import pandas as pd
import torch
from IPython.display import display
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse
from torch.utils.data import DataLoader

from chh_lib import exercises as check
from chh_lib.devices import choose_device
from chh_lib.evaluation import load_run
from chh_lib.heatmaps import argmax_2d, scale_logits, softmax_2d
from chh_lib.exercises.notebook_04 import SAME_SIZE_MARGIN, VERDICTS_04_3
from chh_lib.metrics import (
    binned_means,
    binned_pearson,
    bootstrap_ci,
    expected_radial_error,
    radial_error_mm,
    spearman,
)
from chh_lib.plots import ere_vs_error, heatmap_overlay
from chh_lib.workflow import (
    ensure_calibrated,
    ensure_phantom,
    ensure_trained_run,
    notebook_paths,
    notebook_profile,
    save_figure,
)
from chh_lib.summaries import write_summary

# %% [markdown]
# ## Parameters
#
# `profile` is `smoke` (tiny model, for tests), `cpu` (the default; the shipped pretrained phantom model
# when none exists yet) or `paper`; it is read from `CHH_PROFILE` when set. Relative paths are resolved
# against the repository root; `None` selects the profile's defaults. `num_resamples` is the number of
# bootstrap resamples of the test images behind each interval (None: the run's `eval.bootstrap_resamples`,
# as `chh evaluate` uses, 1000 under `cpu`; 50 under `smoke`, to stay fast).
# `solutions = True` runs the hidden solutions of the exercises at the end (the test suite does; a
# student leaves it `False`).

# %% tags=["parameters"]
profile = notebook_profile()  # CHH_PROFILE, else "cpu"
data_dir = None  # None: the profile's phantom
run_dir = None  # None: runs/notebooks/<profile>
seed = 0
device = "auto"  # auto: CUDA, then MPS, then CPU
num_resamples = None
solutions = False  # True: run the exercises' hidden solutions

# %% [markdown]
# ## Set-up
#
# The data set, a trained model and its temperatures (notebook 03: none, one for all or one per
# landmark, whichever its cross-validation chose; the range is printed below) are made when missing. All
# heatmaps below use the run's temperatures, $\mathrm{softmax}_{2D}(z_k / T_k)$: every $T_k = 1$ when the
# run's scope is none (the network's own softmax), all $T_k$ equal when it is global.

# %%
paths = notebook_paths("04_expected_radial_error", profile, data_dir, run_dir)
ensure_phantom(paths.data_dir, profile)
ensure_trained_run(paths.model_dir, paths.data_dir, profile, device, seed)
temperatures = ensure_calibrated(paths.model_dir, paths.data_dir, device)
torch_device = choose_device(device)
run = load_run(paths.model_dir, paths.data_dir)
model = run.model.eval().to(torch_device)
landmarks = run.data.landmarks
K = landmarks.num_landmarks
width, height = run.config.data.image_size
test_set = run.dataset("test")
hard_ids = set(run.data.descriptor.get("hard_cases", []))
resamples = int(num_resamples) if num_resamples is not None else (
    50 if profile == "smoke" else run.config.eval.bootstrap_resamples)
bootstrap_seed = run.config.eval.bootstrap_seed  # the seed of chh evaluate's resamples
print(f"model {paths.show(paths.model_dir)}: {run.config.model.name} at {width} x {height}; test split "
      f"{len(test_set)} images ({len(hard_ids & set(test_set.image_ids))} hard); temperatures "
      f"{temperatures.min():.2f}-{temperatures.max():.2f}")

# %% [markdown]
# ## From a heatmap to an expected error
#
# Read the heatmap $p(i)$ of one landmark as a distribution over the pixel positions $\mathbf{x}_i$ at
# which the landmark may lie. The prediction is its mode $\hat{\mathbf{x}} = \mathbf{x}_{\arg\max_i p(i)}$.
# If the true position were drawn from $p$, the expected distance to the prediction would be
# $\sum_i p(i)\,\lVert \mathbf{x}_i - \hat{\mathbf{x}} \rVert$. Over a whole image, however, the far tail
# of a softmax (hundreds of thousands of tiny probabilities at 640 x 800) adds up to a large and
# meaningless contribution, so the paper keeps only the **significant** pixels, those above a fraction
# $c = 0.05$ of the mode, and renormalises over them:
#
# $$S = \Bigl\{ i : \frac{p(i)}{\max_j p(j)} > c \Bigr\}, \qquad
#   q(i) = \frac{p(i)}{\sum_{j \in S} p(j)} \;\; (i \in S), \qquad
#   \mathrm{ERE} = \sum_{i \in S} q(i)\,\sqrt{\bigl((x_i - \hat{x})\,s_x\bigr)^2 + \bigl((y_i - \hat{y})\,s_y\bigr)^2}$$
#
# in mm, with $(s_x, s_y)$ the pixel size ($x$ = column, $y$ = row; the arg-max is the first maximum in
# row-major order). A sharp heatmap gives an ERE near 0; one spread along a contour gives a large ERE
# even when the prediction happens to be right. A toy map with pixel size 0.5 mm: half of the mass on
# the mode, a quarter on each horizontal neighbour, and a far pixel below the cutoff that is ignored,
# so $\mathrm{ERE} = 0.5 \cdot 0 + 2 \cdot 0.25 \cdot 0.5 = 0.25$ mm.

# %%
# NBVAL_CHECK_OUTPUT
def readable_ere(heatmap, pixel_size_mm, cutoff=0.05):
    """ERE (mm) of one (H, W) heatmap, directly from the definition above."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    y_hat, x_hat = np.unravel_index(np.argmax(heatmap), heatmap.shape)  # first maximum, row-major
    normalised = heatmap / heatmap.max()
    rows, cols = np.nonzero(normalised > cutoff)  # the significant pixels S
    q = normalised[rows, cols] / normalised[rows, cols].sum()
    distance_mm = np.hypot((cols - x_hat) * pixel_size_mm[0], (rows - y_hat) * pixel_size_mm[1])
    return float(np.sum(q * distance_mm))


toy = np.zeros((5, 9))
toy[2, 4], toy[2, 3], toy[2, 5], toy[0, 8] = 0.5, 0.25, 0.25, 0.02  # 0.02 / 0.5 = 4 % < 5 %: ignored
toy_library = expected_radial_error(torch.tensor(toy)[None, None], torch.tensor([[0.5, 0.5]], dtype=torch.float64))
print(f"toy ERE: readable {readable_ere(toy, (0.5, 0.5)):.4f} mm, chh_lib {float(toy_library):.4f} mm")

# %% [markdown]
# ## The readable version against the library, on real heatmaps
#
# `chh_lib.metrics.expected_radial_error` computes the same number vectorised over images and landmarks
# (and fast at 640 x 800). We run the model at the run's temperatures (T = 1 when it kept none) over
# the test split **one batch at a time**, compute the ERE both ways in float64 and compare every map. The same loop keeps, per (image,
# landmark): the prediction, the ERE at several cutoffs, and the covariance of the significant part of
# the heatmap (used further down), so that no full-size heatmap tensor of the whole split is ever held.

# %%
cutoffs = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4]
temperature = torch.as_tensor(temperatures, dtype=torch.float32)
parts = {"pred_px": [], "ere": [], "ere_readable": [], "ere_by_cutoff": [], "mean_px": [], "covariance_mm2": []}
ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                        indexing="ij")
with torch.no_grad():
    for batch in DataLoader(test_set, batch_size=run.config.eval.batch_size, shuffle=False):
        logits = model(batch["image"].to(torch_device)).float().cpu()
        heatmaps = softmax_2d(scale_logits(logits, temperature)).double()  # (B, K, H, W)
        pixel = batch["pixel_size_mm"].double()  # (B, 2)
        parts["pred_px"].append(argmax_2d(logits).numpy())
        parts["ere"].append(expected_radial_error(heatmaps, pixel).numpy())
        parts["ere_readable"].append(np.array([[readable_ere(heatmaps[n, k].numpy(), pixel[n].numpy())
                                                for k in range(K)] for n in range(len(heatmaps))]))
        parts["ere_by_cutoff"].append(np.stack([expected_radial_error(heatmaps, pixel, c).numpy() for c in cutoffs], -1))
        # covariance (mm^2) of the renormalised significant part q of each heatmap
        normalised = heatmaps / heatmaps.amax((-2, -1), keepdim=True)
        q = torch.where(normalised > 0.05, normalised, torch.zeros_like(normalised))
        q = q / q.sum((-2, -1), keepdim=True)
        x_mm = xs * pixel[:, 0, None, None, None]  # (B, 1, H, W)
        y_mm = ys * pixel[:, 1, None, None, None]
        mean_x, mean_y = (q * x_mm).sum((-2, -1)), (q * y_mm).sum((-2, -1))
        dx, dy = x_mm - mean_x[..., None, None], y_mm - mean_y[..., None, None]
        cov = torch.stack([(q * dx * dx).sum((-2, -1)) + pixel[:, 0, None] ** 2 / 12,  # + a pixel's own extent
                           (q * dx * dy).sum((-2, -1)),
                           (q * dy * dy).sum((-2, -1)) + pixel[:, 1, None] ** 2 / 12], -1)
        parts["covariance_mm2"].append(cov.numpy())
        parts["mean_px"].append(torch.stack([mean_x / pixel[:, 0, None], mean_y / pixel[:, 1, None]], -1).numpy())
results = {name: np.concatenate(values) for name, values in parts.items()}
difference = np.abs(results["ere"] - results["ere_readable"])
max_abs_difference_mm = float(np.max(difference))
readable_matches_library = bool(max_abs_difference_mm < 1e-6)
assert readable_matches_library
print(f"{difference.size} heatmaps: largest |readable - chh_lib| = {max_abs_difference_mm:.2e} mm")

# %% [markdown]
# ## Changing the cutoff
#
# The cutoff decides how much of the tail counts. A lower cutoff adds more distant pixels and the ERE
# grows; a higher one keeps only the core around the mode and the ERE shrinks towards 0. Mean ERE over
# the test images for a few landmarks (the paper's 0.05 dashed), and how the agreement with the true
# error (Spearman $\rho$, below) depends on it:

# %%
errors_mm = radial_error_mm(results["pred_px"], test_set.target_px, test_set.pixel_size_mm)  # (N, K)
present = ~np.isnan(errors_mm)
shown_landmarks = [a for a in ("S", "N", "A", "Go", "Me", "Po") if a in landmarks.abbreviations] \
    or list(landmarks.abbreviations[:5])
figure = Figure(figsize=(7.5, 4), layout="constrained")
axes = figure.add_subplot()
for abbreviation in shown_landmarks:
    k = landmarks.index(abbreviation)
    axes.plot(cutoffs, np.nanmean(results["ere_by_cutoff"][:, k, :], axis=0), marker="o", markersize=3,
              label=landmarks.names[k])
axes.axvline(0.05, color="0.3", linestyle="--", linewidth=1, label="cutoff 0.05 (paper)")
axes.set_xscale("log")
axes.set_xlabel("cutoff c (fraction of the mode)")
axes.set_ylabel("mean ERE over the test images (mm)")
axes.legend(fontsize=8)
save_figure(figure, paths.output_dir / "ere_vs_cutoff.png")
cutoff_table = pd.DataFrame({
    "mean ERE (mm)": [np.nanmean(results["ere_by_cutoff"][..., i][present]) for i in range(len(cutoffs))],
    "Spearman rho": [spearman(results["ere_by_cutoff"][..., i][present], errors_mm[present])
                     for i in range(len(cutoffs))],
}, index=pd.Index(cutoffs, name="cutoff"))
display(cutoff_table.round(3).T)

# %% [markdown]
# ## ERE against the true error
#
# If the ERE is a useful uncertainty, pairs with a larger ERE should have larger radial errors. There
# are several ways to measure "should", and they do not agree, so we compute four over the $M$
# present (image, landmark) pairs:
#
# - **Pearson $r$ over the raw pairs**: linear association; a few huge errors can carry it.
# - **Spearman $\rho$ over the raw pairs**: the Pearson $r$ of the ranks; it asks only whether a larger
#   ERE goes with a larger error, whatever the scale, and no single pair can dominate it.
# - **The paper's binned Pearson $r$**: sort the pairs by ERE, cut them into consecutive bins of 36
#   from the smallest ERE up, and correlate the bins' mean ERE with their mean radial error. When $M$ is
#   not a multiple of 36, the remainder, the $M \bmod 36$ pairs of **largest** ERE, falls in no bin (the
#   definition drops it), so the most extreme predictions are left out of this statistic; the line
#   under the intervals names them and gives the binned $r$ with them put into the top bin instead.
# - The same **without the top bin**, the 36 pairs of largest ERE that the bins keep.
#
# The test split is one sample of images, so each number gets a 95 % **bootstrap interval**: resample the
# test images with replacement (`num_resamples` times, whole images, because the 19 landmarks of one
# image fail together), recompute, and take the 2.5th and 97.5th percentiles (`chh_lib.metrics.bootstrap_ci`,
# the same resamples as `chh evaluate`'s `ere_error_binned_pearson_ci95` and `spearman_ci95`). The width
# of an interval is how far the number could move on another test set of the same size: a binned $r$
# made of few bins, one of them the gross failures, can move far when a few hard images are drawn or
# left out. The line under the intervals compares the widths and says whether the intervals overlap. The figure
# (`chh_lib.plots.ere_vs_error`) shows the raw pairs and the bin means on log-log axes.

# %%
ere = results["ere"][present]
errors = errors_mm[present]
ere_mean_mm = float(ere.mean())
raw_r = float(np.corrcoef(ere, errors)[0, 1]) if ere.size > 1 else float("nan")
rho = spearman(ere, errors)
binned_r = binned_pearson(ere, errors, bin_size=36)
binned_r_without_top = binned_pearson(ere, errors, bin_size=36, drop_top_bins=1)


def over_resampled_images(statistic):
    """A bootstrap statistic: ``statistic(ere, error)`` over the present pairs of the drawn test images."""
    def on_images(indices):
        keep = present[indices]
        return statistic(results["ere"][indices][keep], errors_mm[indices][keep])
    return on_images


num_test_images = len(test_set)
binned_r_ci95 = bootstrap_ci(over_resampled_images(lambda e, r: binned_pearson(e, r, bin_size=36)),
                             num_test_images, resamples, bootstrap_seed)
rho_ci95 = bootstrap_ci(over_resampled_images(spearman), num_test_images, resamples, bootstrap_seed)
binned_r_ci_width = float(binned_r_ci95[1] - binned_r_ci95[0])
rho_ci_width = float(rho_ci95[1] - rho_ci95[0])
intervals_overlap = bool(binned_r_ci95[0] <= rho_ci95[1] and rho_ci95[0] <= binned_r_ci95[1])
print(f"{ere.size} pairs ({ere.size // 36} bins of 36): mean ERE {ere_mean_mm:.3f} mm, mean radial error "
      f"{errors.mean():.3f} mm")
num_left_over = ere.size % 36
if num_left_over and ere.size >= 72:
    by_ere = np.argsort(ere, kind="stable")
    # the paper's rule drops the left-over pairs of largest ERE; the alternative puts them into the top bin
    binned_r_with_rest = binned_pearson(ere, errors, bin_size=36, remainder="top")
    print(f"left over: the {num_left_over} pairs of largest ERE ({ere[by_ere[-num_left_over:]].min():.2f}-"
          f"{ere.max():.2f} mm, mean error {errors[by_ere[-num_left_over:]].mean():.2f} mm) are in no bin, as the "
          f"paper's definition drops the remainder; put into the top bin instead they give a binned r of "
          f"{binned_r_with_rest:.3f} (against {binned_r:.3f})")
print(f"95 % intervals over {resamples} resamples of the {num_test_images} test images: binned r {binned_r:.3f} "
      f"[{binned_r_ci95[0]:.3f}, {binned_r_ci95[1]:.3f}], Spearman rho {rho:.3f} [{rho_ci95[0]:.3f}, {rho_ci95[1]:.3f}]")
if np.isfinite([binned_r_ci_width, rho_ci_width]).all():
    print(f"widths: binned r {binned_r_ci_width:.3f}, Spearman rho {rho_ci_width:.3f}; the binned r's interval is "
          + ("the wider" if binned_r_ci_width > rho_ci_width else "not the wider") + ", and the two intervals "
          + ("overlap: on this test set the gap between r and rho could be sampling noise" if intervals_overlap
             else "do not overlap: the gap between r and rho is not sampling noise of the test images"))
display(pd.DataFrame({"value": [raw_r, rho, binned_r, binned_r_without_top]}, index=pd.Index(
    ["Pearson r, raw pairs", "Spearman rho, raw pairs", "binned Pearson r (paper)", "binned r without the top bin"],
    name="measure")).round(3).T)
figure = ere_vs_error(ere, errors, bin_size=36, binned_r=binned_r, spearman_rho=rho)
save_figure(figure, paths.output_dir / "ere_vs_error.png")

# %% [markdown]
# ### Why the binned $r$ is so much higher
#
# Two things lift the correlation of bin means above that of the pairs, and neither says that the ERE
# predicts an individual error well.
#
# 1. **Averaging removes the noise.** Write a pair's error as a trend plus noise,
#    $e = f(\mathrm{ERE}) + \varepsilon$ with $\operatorname{Var}\varepsilon = \sigma^2$. A bin of
#    $n = 36$ pairs of similar ERE has mean error $\bar f + \bar\varepsilon$ with
#    $\operatorname{Var}\bar\varepsilon = \sigma^2 / n$: the noise shrinks six-fold in SD while the trend
#    stays, so the bin means lie close to the curve $f$ and their $r$ approaches 1 for **any** increasing
#    trend, however noisy the single errors are.
# 2. **The most extreme bins can carry Pearson's $r$.** The bin means spread along a line with a long
#    tail: the top bin collects the gross failures, whose mean ERE and mean error are several times those
#    of every other bin. Pearson's $r$ of a cloud with a few far points is mostly the direction to those
#    points (leverage); the check below shows how far $r$ falls as the top bins are dropped one at a time.
#
# The check: drop the top bins one at a time; correlate the bin means by rank (Spearman, not carried by
# one point); and bin the pairs after **shuffling** the errors, which destroys any real relation, to see
# how high a binned $r$ chance alone gives (200 shuffles). We call the fall **sharp** when dropping the
# single top bin lowers $r$ by more than `SHARP_FALL` = 0.2 (of a scale that ends at 1): then one bin of
# 36 pairs out of thousands decides the headline number.

# %%
SHARP_FALL = 0.2  # a fall of the binned r larger than this, from dropping the top bin, counts as sharp
ere_means_mm, error_means_mm = binned_means(ere, errors, bin_size=36)
shuffle_rng = np.random.default_rng(seed)
shuffled_binned_r = np.array([binned_pearson(ere, shuffle_rng.permutation(errors), bin_size=36) for _ in range(200)])
binning_check = pd.DataFrame({
    "binned Pearson r": [binned_pearson(ere, errors, 36, drop_top_bins=d) for d in range(4)],
    "bins used": [max(ere_means_mm.size - d, 0) for d in range(4)],
}, index=pd.Index(range(4), name="top bins dropped"))
display(binning_check.round(3).T)
if ere_means_mm.size >= 2:
    print(f"top bin: mean ERE {ere_means_mm[-1]:.2f} mm, mean error {error_means_mm[-1]:.2f} mm; the other "
          f"bins: mean ERE {ere_means_mm[:-1].min():.2f}-{ere_means_mm[:-1].max():.2f} mm, mean error "
          f"{error_means_mm[:-1].min():.2f}-{error_means_mm[:-1].max():.2f} mm")
    fall_without_top = binned_r - binned_r_without_top
    rests_on_top_bin = bool(fall_without_top > SHARP_FALL)
    if rests_on_top_bin:
        fall_words = (f"a fall of {fall_without_top:.3f}, sharp (> {SHARP_FALL}): the binned r rests on the top bin, "
                      "the gross failures")
    elif fall_without_top >= 0:
        fall_words = (f"a fall of {fall_without_top:.3f}, not sharp (<= {SHARP_FALL}): the binned r does not rest "
                      "on the top bin alone")
    else:
        fall_words = (f"a rise of {-fall_without_top:.3f}: the top bin lowers the binned r, it does not carry it")
    print(f"binned r {binned_r:.3f} with the top bin, {binned_r_without_top:.3f} without it: " + fall_words)
    print(f"Spearman rho of the {ere_means_mm.size} bin means: {spearman(ere_means_mm, error_means_mm):.3f}")
if np.isfinite(shuffled_binned_r).any():
    print(f"binned r with the errors shuffled: median {np.nanmedian(shuffled_binned_r):.3f}, 95th percentile "
          f"{np.nanpercentile(shuffled_binned_r, 95):.3f}")

# %% [markdown]
# Read the numbers together. The paper's binned $r$ summarises the **trend of the means**; when it falls
# sharply without the top bin (the line above says whether it does here), it mostly measures the ERE's
# ability to single out the gross failures. The pairwise Spearman $\rho$ answers the question a user
# asks, "does a larger ERE mean a larger error for this landmark on this image?", and a $\rho$ well below
# the binned $r$ says: only roughly. That is why notebook 05 uses the ERE as a **detector of outliers** (does
# the ERE rank the failures above the rest?) rather than as a predictor of the error's size.

# %% [markdown]
# ## Do contour landmarks have a larger ERE?
#
# The ERE of a landmark is large when its heatmap is **spread**, and a contour landmark's heatmap
# spreads **along** its contour (notebook 02), so one may expect contour landmarks to have the larger
# ERE. But the ERE averages the distance to the mode over the significant pixels: a heatmap that is long
# along the contour and narrow across it can have the ERE of a round heatmap of middling size. The data
# decide. We measure the shape of the significant part $q$ of each
# heatmap by its covariance in mm, $\Sigma = \sum_i q(i)(\mathbf{x}_i - \boldsymbol\mu)(\mathbf{x}_i -
# \boldsymbol\mu)^\top$ (plus $s^2/12$ on each axis, the variance of a position spread uniformly over one
# pixel, so that a heatmap one pixel wide does not get a zero width), with eigenvalues
# $\lambda_1 \ge \lambda_2$: the SDs along its major and minor axes are $\sqrt{\lambda_1}$ and
# $\sqrt{\lambda_2}$, and its **elongation** is $\sqrt{\lambda_1 / \lambda_2}$ (1 for a round heatmap).
# These axes are the heatmap's own, not the contour's tangent (notebook 01 measures the annotators
# along the tangent; here we measure shape, not direction). Sella, the only point landmark, should be
# the roundest.
#
# The table gives **medians** over the test images, with the means beside them: a mean is pulled up by
# the few hard images, where a failed heatmap has an ERE and an error of centimetres (the line under the
# table shows how much for sella). Under the figure: how many contour landmarks have a median ERE above
# sella's, and whether the median ERE of the 19 landmarks follows the **size** of the spread,
# $\sqrt{\lambda_1 + \lambda_2}$, or its **shape**, the elongation (Spearman $\rho$ over the landmarks;
# two $\rho$ closer than `CLEAR_RHO_GAP` = 0.1 count as "about equally").

# %%
cov = results["covariance_mm2"]  # (N, K, 3): var_x, cov_xy, var_y
trace, det = cov[..., 0] + cov[..., 2], cov[..., 0] * cov[..., 2] - cov[..., 1] ** 2
root = np.sqrt(np.maximum(trace**2 / 4 - det, 0.0))
lambda_1, lambda_2 = trace / 2 + root, np.maximum(trace / 2 - root, 1e-12)
elongation = np.sqrt(lambda_1 / lambda_2)
ere_present = np.where(present, results["ere"], np.nan)  # (N, K) mm
shape_table = pd.DataFrame({
    "ERE median (mm)": np.nanmedian(ere_present, axis=0),
    "ERE mean (mm)": np.nanmean(ere_present, axis=0),
    "error median (mm)": np.nanmedian(errors_mm, axis=0),
    "error mean (mm)": np.nanmean(errors_mm, axis=0),
    "SD major axis (mm)": np.median(np.sqrt(lambda_1), axis=0),
    "SD minor axis (mm)": np.median(np.sqrt(lambda_2), axis=0),
    "elongation": np.median(elongation, axis=0),
}, index=pd.Index(landmarks.abbreviations, name="landmark"))
display(shape_table.round(2).T)
is_hard_row = np.isin(test_set.image_ids, sorted(hard_ids))  # (N,)
point_landmarks = [a for a in ("S",) if a in landmarks.abbreviations]
contour_elongation = shape_table.drop(index=point_landmarks)["elongation"]
if point_landmarks and is_hard_row.any() and (~is_hard_row).any():
    sella = landmarks.index("S")
    print(f"sella: mean ERE {np.nanmean(ere_present[~is_hard_row, sella]):.2f} mm on the "
          f"{int((~is_hard_row).sum())} normal images, {np.nanmean(ere_present[is_hard_row, sella]):.2f} mm on the "
          f"{int(is_hard_row.sum())} hard ones; median over all {shape_table.loc['S', 'ERE median (mm)']:.2f} mm")
figure = Figure(figsize=(10, 3.2), layout="constrained")
axes = figure.add_subplot()
axes.bar(np.arange(K), shape_table["elongation"],
         color=["tab:cyan" if a in point_landmarks else "tab:purple" for a in landmarks.abbreviations])
axes.axhline(1.0, color="0.3", linestyle="--", linewidth=1, label="round heatmap")
axes.set_xticks(np.arange(K), landmarks.abbreviations, fontsize=8)
axes.set_xlabel("landmark (cyan: point landmark)")
axes.set_ylabel("median elongation $\\sqrt{\\lambda_1/\\lambda_2}$")
axes.legend(fontsize=8, loc="upper right")
save_figure(figure, paths.output_dir / "heatmap_elongation.png")
spread_size_mm = np.median(np.sqrt(lambda_1 + lambda_2), axis=0)  # (K,)
CLEAR_RHO_GAP = 0.1  # rho with size and with shape closer than this: the ERE follows both about equally
rho_ere_with_size = spearman(spread_size_mm, shape_table["ERE median (mm)"].to_numpy())
rho_ere_with_shape = spearman(shape_table["elongation"].to_numpy(), shape_table["ERE median (mm)"].to_numpy())
contour_median_ere = shape_table.drop(index=point_landmarks)["ERE median (mm)"]
num_contour_above_point = None
if point_landmarks:
    sella_median_ere = shape_table.loc["S", "ERE median (mm)"]
    at_or_below = contour_median_ere[contour_median_ere <= sella_median_ere]
    num_contour_above_point = int(contour_median_ere.size - at_or_below.size)
    print(f"median elongation: sella {shape_table.loc['S', 'elongation']:.2f}, contour landmarks median "
          f"{contour_elongation.median():.2f} (max {contour_elongation.max():.2f}, {contour_elongation.idxmax()})")
    print(f"median ERE: sella {sella_median_ere:.2f} mm; {num_contour_above_point} of {contour_median_ere.size} "
          f"contour landmarks above it, {at_or_below.size} at or below it"
          + (": " + ", ".join(f"{a} {v:.2f}" for a, v in at_or_below.sort_values().items()) if at_or_below.size else ""))
if abs(rho_ere_with_size - rho_ere_with_shape) <= CLEAR_RHO_GAP:
    follows = f"the size and the shape of the spread about equally (rho within {CLEAR_RHO_GAP})"
else:
    follows = ("the size" if rho_ere_with_size > rho_ere_with_shape else "the shape") + " of the spread more"
print(f"over the {K} landmarks, the median ERE follows {follows}: Spearman rho "
      f"{rho_ere_with_size:.2f} with its size sqrt(lambda_1 + lambda_2), {rho_ere_with_shape:.2f} with its elongation")

# %% [markdown]
# ## Examples
#
# Three heatmaps on a log scale (`chh_lib.plots.heatmap_overlay`, cropped to a square of
# $\pm h$ pixels around the prediction, $h$ = `crop`: an eighth of the network's width, at least 8 px),
# each with the outline of its significant set $S$ (white line)
# and the 2-sigma ellipse of its covariance $\Sigma$ (dashed):
#
# 1. a contour landmark on a normal image, predicted well, with a large ERE **that comes from the visible
#    heatmap**: among the well-predicted contour pairs we take the most elongated large-ERE one whose ERE
#    owes less than 10 % to pixels outside the crop (an ERE made by a faint far-away blob would not show
#    contour hugging);
# 2. sella on the same image, round and compact;
# 3. on a hard image (when the data set lists any), the pair with the largest ERE: there the large ERE
#    flags a real error, and its ground truth may lie outside the crop.
#
# Under each panel's title: the share of the ERE that comes from beyond the crop. A missing ellipse is
# named in the output, never dropped silently.

# %%
def ere_share_beyond(heatmap, pixel_size_mm, radius_px, cutoff=0.05):
    """Share of the ERE of one (H, W) heatmap contributed by significant pixels farther than radius_px
    (Chebyshev distance, the square crop) from the arg-max."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    y_hat, x_hat = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    rows, cols = np.nonzero(heatmap / heatmap.max() > cutoff)
    weighted = heatmap[rows, cols] * np.hypot((cols - x_hat) * pixel_size_mm[0], (rows - y_hat) * pixel_size_mm[1])
    beyond = np.maximum(np.abs(cols - x_hat), np.abs(rows - y_hat)) > radius_px
    return float(weighted[beyond].sum() / weighted.sum()) if weighted.sum() > 0 else 0.0


def calibrated_heatmaps(n):
    """(K, H, W) calibrated heatmaps of test image n."""
    with torch.no_grad():
        logits = model(test_set[n]["image"][None].to(torch_device)).float().cpu()
    return softmax_2d(scale_logits(logits, temperature))[0].double().numpy()


crop = max(8, width // 8)  # h, pixels
easy_rows = [n for n in range(len(test_set)) if not is_hard_row[n]] or list(range(len(test_set)))
hard_rows = [n for n in range(len(test_set)) if is_hard_row[n]]
point_k = [landmarks.index(a) for a in point_landmarks]
contour_k = [k for k in range(K) if k not in point_k]
# (1): well-predicted contour pairs of normal images, best ERE x elongation first; the first whose ERE
# comes mostly from inside the crop
candidates = sorted(((results["ere"][n, k] * elongation[n, k], n, k) for n in easy_rows for k in contour_k
                     if present[n, k] and errors_mm[n, k] < np.nanmedian(errors_mm)), reverse=True)
contour_n, contour_landmark = (candidates[0][1], candidates[0][2]) if candidates else (easy_rows[0], contour_k[0])
for _, n, k in candidates[:40]:
    if ere_share_beyond(calibrated_heatmaps(n)[k], test_set.pixel_size_mm[n], crop) < 0.10:
        contour_n, contour_landmark = n, k
        break
# (3): on a hard image (else any image), the pair with the largest ERE
rows_for_failure = hard_rows or list(range(len(test_set)))
failure_ere = np.where(present[rows_for_failure], results["ere"][rows_for_failure], -np.inf)
flat = int(np.argmax(failure_ere))
failure_n, failure_landmark = rows_for_failure[flat // K], flat % K
examples = [(contour_n, contour_landmark), (contour_n, point_k[0] if point_k else contour_k[-1]),
            (failure_n, failure_landmark)]
figure = Figure(figsize=(15, 5.8), layout="constrained")
for panel, (n, k) in enumerate(examples):
    item = test_set[n]
    heatmap = calibrated_heatmaps(n)[k]
    share_beyond = ere_share_beyond(heatmap, test_set.pixel_size_mm[n], crop)
    axes = figure.add_subplot(1, 3, panel + 1)
    hard_note = " (hard)" if is_hard_row[n] else ""
    heatmap_overlay(item["image"][0].numpy(), heatmap, prediction_px=results["pred_px"][n, k],
                    target_px=test_set.target_px[n, k], annotators_px=test_set.annotations_px[n, :, k],
                    crop_half_size_px=crop, ax=axes, significant_cutoff=0.05,
                    title=f"{test_set.image_ids[n]}{hard_note}, {landmarks.names[k]}\nERE "
                          f"{results['ere'][n, k]:.2f} mm ({100 * share_beyond:.0f} % from beyond the crop)\n"
                          f"radial error {errors_mm[n, k]:.2f} mm")
    legend_handles, legend_labels = axes.get_legend_handles_labels()
    axes.get_legend().remove()  # one legend for the three panels, below them
    s_x, s_y = test_set.pixel_size_mm[n]
    var_x, cov_xy, var_y = cov[n, k] / np.array([s_x * s_x, s_x * s_y, s_y * s_y])  # mm^2 -> px^2
    eigenvalues, eigenvectors = np.linalg.eigh(np.array([[var_x, cov_xy], [cov_xy, var_y]]))
    if 2 * np.sqrt(eigenvalues[-1]) > crop:
        print(f"panel {panel + 1}: no ellipse, its 2-sigma half-length {2 * np.sqrt(eigenvalues[-1]):.0f} px "
              f"exceeds the {crop} px crop (the heatmap's mass is spread beyond the window)")
        continue
    angle = np.degrees(np.arctan2(eigenvectors[1, -1], eigenvectors[0, -1]))
    axes.add_patch(Ellipse(results["mean_px"][n, k], 4 * np.sqrt(eigenvalues[-1]),
                           4 * np.sqrt(max(eigenvalues[0], 0.0)), angle=angle, fill=False, color="white",
                           linestyle="--", linewidth=1.2))
figure.legend(legend_handles, legend_labels, loc="outside lower center", ncol=len(legend_labels), fontsize=9)
save_figure(figure, paths.output_dir / "examples.png")

# %% [markdown]
# > **Common pitfalls**
# >
# > - *Reading the binned $r$ as the agreement for one prediction.* It is the trend of bin means; the
# >   pairwise Spearman $\rho$ says how well the ERE ranks single errors.
# > - *Quoting a binned $r$ without dropping its top bin.* One bin of gross failures can carry it; show
# >   the dropped-bin table and the shuffled baseline.
# > - *Comparing EREs computed at different cutoffs or temperatures.* Both move the scale of the ERE;
# >   fix them (0.05 and the calibrated $T$) before comparing runs or landmarks.
# > - *Comparing landmarks by the mean ERE.* A few failed heatmaps on hard images pull a mean; use medians.
# > - *Forgetting the pixel size.* The ERE is in mm only when each axis's distance is scaled by its own
# >   pixel size $(s_x, s_y)$.

# %% [markdown]
# ## Recap
#
# - A calibrated heatmap $p$ is a distribution over positions; its **expected radial error** is the
#   expected distance in mm from its mode $\hat{\mathbf{x}}$, over the significant pixels
#   $S = \{i : p(i)/\max_j p(j) > c\}$ renormalised to $q$.
# - A few lines of NumPy reproduce `chh_lib.metrics.expected_radial_error` on every real heatmap to
#   better than $10^{-6}$ mm.
# - The cutoff $c$ (0.05 in the paper) sets the **scale** of the ERE: a lower cutoff lets the far tail in and
#   the mean ERE grows; how the ERE **ranks** the predictions changes much less (Spearman $\rho$ per cutoff).
# - The paper's binned Pearson $r$ (bins of 36 pairs sorted by ERE) averages away the noise of single
#   errors and leans on its most extreme bins: drop the top bins and it can fall sharply (the table of
#   dropped bins shows how far here, and the line under it whether the fall passes `SHARP_FALL`).
#   Spearman $\rho$ over the raw pairs needs no binning and answers the user's question; it is far
#   lower. Quote both with their bootstrap intervals: a binned $r$ rests on few bins, so its interval
#   tends to be the wider (the line under the intervals says whether it is here).
# - Bin means of sorted data give a high $r$ for any increasing trend; check a binned statistic by
#   dropping its extreme bins and against shuffled data before trusting it.
# - Contour landmarks' heatmaps are elongated (their median elongation is printed against that of
#   sella, a point landmark, whose heatmap is round); that they stretch along the contour is what
#   notebook 02's figures show, as this notebook measures the shape, not the direction. Elongation is not size:
#   whether it raises their ERE is for the data to say, and the lines under the elongation figure count
#   the contour landmarks above sella and say whether the ERE follows the size or the shape of the
#   spread. Compare landmarks by the median ERE, not the mean: a few failures on hard images inflate a
#   mean.
# - On a hard image a large ERE flags a real failure: the ERE is an uncertainty one can act on
#   (notebook 05 turns it into an outlier detector).

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
# ### Exercise 04.1 · The ERE of one heatmap by hand, and the mass the cutoff throws away
#
# `heatmap` (shape (H, W)) still holds the heatmap (at the run's temperature) of the third example above (image
# `failure_n`, landmark `failure_landmark`, pixel size `test_set.pixel_size_mm[failure_n]`). Without
# calling `readable_ere` or `chh_lib`, compute
#
# 1. its ERE in mm at the paper's cutoff $c = 0.05$ (the formula at the top: significant pixels $S$,
#    renormalised weights $q$, distance in mm to the first arg-max), and
# 2. the share of the probability mass that the cutoff discards,
#    $\sum_{i \notin S} p(i) \big/ \sum_i p(i)$.
#
# Answer with `answer_04_1 = {"ere_mm": ..., "discarded_mass": ...}`.

# %% tags=["exercise"]
answer_04_1 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    s_x, s_y = test_set.pixel_size_mm[failure_n]
    p = heatmap.astype(np.float64)
    row_hat, col_hat = np.unravel_index(np.argmax(p), p.shape)  # first maximum, row-major
    significant = p / p.max() > 0.05  # S
    rows, cols = np.nonzero(significant)
    q = p[rows, cols] / p[rows, cols].sum()
    answer_04_1 = {
        "ere_mm": float(np.sum(q * np.hypot((cols - col_hat) * s_x, (rows - row_hat) * s_y))),
        "discarded_mass": float(p[~significant].sum() / p.sum()),
    }

# %% [markdown]
# Check your answer:

# %%
exercise_results["04_1"] = check.exercise_04_1(answer_04_1, heatmap, test_set.pixel_size_mm[failure_n])

# %% [markdown]
# ### Exercise 04.2 · The cutoff moves the scale of the ERE, not its ranking
#
# `results["ere_by_cutoff"]` (shape (N, K, C)) holds the ERE at each of the `cutoffs`. Over the present
# pairs (`present`, where the radial error `errors_mm` is defined), compute at the notebook's lowest
# cutoff $c = 0.001$ (almost no cutoff) and at the paper's $c = 0.05$:
#
# 1. the mean ERE $m_c$ in mm, and
# 2. Spearman's $\rho_c$ between ERE and radial error (`spearman` from `chh_lib.metrics`);
#
# then decide whether the rank correlation changes less than the mean, i.e. whether
# $|\rho_{0.001} - \rho_{0.05}| < |m_{0.001} - m_{0.05}| / m_{0.05}$. (Compute: the table above shows
# the values rounded, the check wants them to 0.1 %.) Answer with
# `answer_04_2 = {"mean_ere_mm": (m_0001, m_005), "spearman": (rho_0001, rho_005), "rank_correlation_changes_less": ...}`.

# %% tags=["exercise"]
answer_04_2 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    ere_low = results["ere_by_cutoff"][..., cutoffs.index(0.001)][present]
    ere_high = results["ere_by_cutoff"][..., cutoffs.index(0.05)][present]
    mean_low, mean_high = ere_low.mean(), ere_high.mean()
    rho_low, rho_high = spearman(ere_low, errors_mm[present]), spearman(ere_high, errors_mm[present])
    answer_04_2 = {
        "mean_ere_mm": (mean_low, mean_high),
        "spearman": (rho_low, rho_high),
        "rank_correlation_changes_less": bool(abs(rho_low - rho_high) < abs(mean_low - mean_high) / mean_high),
    }

# %% [markdown]
# Check your answer:

# %%
exercise_results["04_2"] = check.exercise_04_2(answer_04_2, results["ere_by_cutoff"], cutoffs, errors_mm)

# %% [markdown]
# ### Exercise 04.3 · Predict, then check: do contour landmarks have the larger ERE?
#
# Contour landmarks' heatmaps are elongated, sella's is round. **First predict**, without computing,
# which statement holds for the **median** ERE over all (image, landmark) pairs of the contour landmarks
# (every channel not in `point_k`) against that of the point landmarks (the channels in `point_k`:
# sella), with a margin of `SAME_SIZE_MARGIN` (20 %):
#
# - **(a)** the contour landmarks' median is more than 20 % larger;
# - **(b)** the two medians are within 20 % of each other;
# - **(c)** the contour landmarks' median is more than 20 % smaller.
#
# Then compute both medians from `results["ere"]` (shape (N, K), mm) over the present pairs (a median,
# because a few failed heatmaps pull a mean). Answer with
# `answer_04_3 = {"verdict": "a", "b" or "c", "median_ere_contour_mm": ..., "median_ere_point_mm": ...}`;
# the check tests the letter first and explains the right one.

# %% tags=["exercise"]
answer_04_3 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    is_point = np.isin(np.arange(K), point_k)  # (K,)
    median_contour = float(np.median(results["ere"][present & ~is_point]))
    median_point = float(np.median(results["ere"][present & is_point]))
    ratio = median_contour / median_point
    letter = "a" if ratio > 1 + SAME_SIZE_MARGIN else ("c" if ratio < 1 - SAME_SIZE_MARGIN else "b")
    answer_04_3 = {"verdict": letter, "median_ere_contour_mm": median_contour, "median_ere_point_mm": median_point}
    print(f"ratio of the medians {ratio:.2f}: ({letter}) {VERDICTS_04_3[letter]}")

# %% [markdown]
# Check your answer:

# %%
exercise_results["04_3"] = check.exercise_04_3(answer_04_3, results["ere"], errors_mm, point_k)

# %% [markdown]
# The notebook's key numbers go to `RUN_DIR/04_expected_radial_error/metrics.json` for the test suite
# (`chh_lib/summaries/notebook_04.py` lists them):

# %%
written = write_summary("04", globals())

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

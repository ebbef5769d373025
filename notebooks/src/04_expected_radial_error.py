"""Source of notebooks/04_expected_radial_error.ipynb (build with: python notebooks/build.py 04)."""

# %% [markdown]
# # 04 · Expected radial error: how far off does the heatmap expect to be?
#
# The fourth notebook of the *chh-kit* series on **Contour-Hugging Heatmaps for Landmark Detection**
# (McCouat & Voiculescu, CVPR 2022). A calibrated heatmap is a distribution over positions; the paper
# turns it into one number per landmark, the **expected radial error (ERE)**, and shows that it predicts
# the error actually made.
#
# **Learning goals**
#
# 1. Derive the ERE from the heatmap as the expected distance to the prediction, and implement it in a
#    few lines (checked against `chh_lib.metrics.expected_radial_error`).
# 2. Understand the **5 % cutoff** and what changing it does.
# 3. Measure how well ERE predicts the true radial error (binned Pearson r as in the paper, Spearman
#    rank correlation over all pairs).
# 4. See why the ERE is large for contour landmarks (the heatmap spreads **along** the contour) and how a
#    large ERE flags a real failure on a hard image.
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
from chh_lib.metrics import (
    binned_pearson,
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
    write_notebook_metrics,
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
# The data set, a trained model and its per-landmark temperatures (notebook 03) are made when missing.
# All heatmaps below are the **calibrated** ones, $\mathrm{softmax}_{2D}(z_k / T_k)$.

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
# (and fast at 640 x 800). We run the calibrated model over the test split **one batch at a time**,
# compute the ERE both ways in float64 and compare every map. The same loop keeps, per (image,
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
# If the ERE is a useful uncertainty, landmarks with a larger ERE should have larger radial errors.
# Individual errors are noisy (a prediction can be lucky), so the paper sorts the (image, landmark)
# pairs by ERE, averages them in consecutive **bins of 36** and reports the Pearson correlation $r$ of
# the bin means; we also give the Spearman rank correlation $\rho$ over all raw pairs, which needs no
# binning. The figure (`chh_lib.plots.ere_vs_error`) shows both, on log-log axes.

# %%
ere = results["ere"][present]
errors = errors_mm[present]
ere_mean_mm = float(ere.mean())
binned_r = binned_pearson(ere, errors, bin_size=36)
rho = spearman(ere, errors)
raw_r = float(np.corrcoef(ere, errors)[0, 1]) if ere.size > 1 else float("nan")
print(f"{ere.size} pairs ({ere.size // 36} bins of 36): mean ERE {ere_mean_mm:.3f} mm, mean radial error "
      f"{errors.mean():.3f} mm")
print(f"binned Pearson r {binned_r:.3f}; Spearman rho (raw pairs) {rho:.3f}; Pearson r (raw pairs) {raw_r:.3f}")
figure = ere_vs_error(ere, errors, bin_size=36, binned_r=binned_r, spearman_rho=rho)
save_figure(figure, paths.output_dir / "ere_vs_error.png")

# %% [markdown]
# ## Why contour landmarks have a large ERE
#
# The ERE of a landmark is large when its heatmap is **spread**, and a contour landmark's heatmap
# spreads **along** its contour (notebook 02). We measure the shape of the significant part $q$ of each
# heatmap by its covariance in mm, $\Sigma = \sum_i q(i)(\mathbf{x}_i - \boldsymbol\mu)(\mathbf{x}_i -
# \boldsymbol\mu)^\top$ (plus $s^2/12$ on each axis, the variance of a position spread uniformly over one
# pixel, so that a heatmap one pixel wide does not get a zero width), with eigenvalues
# $\lambda_1 \ge \lambda_2$, and its **elongation** $\sqrt{\lambda_1 / \lambda_2}$ (1 for a round
# heatmap). Sella, the only point landmark, should be the roundest; the median over the test images per
# landmark:

# %%
cov = results["covariance_mm2"]  # (N, K, 3): var_x, cov_xy, var_y
trace, det = cov[..., 0] + cov[..., 2], cov[..., 0] * cov[..., 2] - cov[..., 1] ** 2
root = np.sqrt(np.maximum(trace**2 / 4 - det, 0.0))
lambda_1, lambda_2 = trace / 2 + root, np.maximum(trace / 2 - root, 1e-12)
elongation = np.sqrt(lambda_1 / lambda_2)
shape_table = pd.DataFrame({
    "ERE (mm)": np.nanmean(np.where(present, results["ere"], np.nan), axis=0),
    "radial error (mm)": np.nanmean(errors_mm, axis=0),
    "SD along (mm)": np.median(np.sqrt(lambda_1), axis=0),
    "SD across (mm)": np.median(np.sqrt(lambda_2), axis=0),
    "elongation": np.median(elongation, axis=0),
}, index=pd.Index(landmarks.abbreviations, name="landmark"))
display(shape_table.round(2).T)
point_landmarks = [a for a in ("S",) if a in landmarks.abbreviations]
contour_elongation = shape_table.drop(index=point_landmarks)["elongation"]
figure = Figure(figsize=(10, 3.2), layout="constrained")
axes = figure.add_subplot()
axes.bar(np.arange(K), shape_table["elongation"],
         color=["tab:cyan" if a in point_landmarks else "tab:purple" for a in landmarks.abbreviations])
axes.axhline(1.0, color="0.3", linestyle="--", linewidth=1, label="round heatmap")
axes.set_xticks(np.arange(K), landmarks.abbreviations, fontsize=8)
axes.set_xlabel("landmark (cyan: point landmark)")
axes.set_ylabel("heatmap elongation $\\sqrt{\\lambda_1/\\lambda_2}$")
axes.legend(fontsize=8)
save_figure(figure, paths.output_dir / "heatmap_elongation.png")
if point_landmarks:
    print(f"elongation: sella {shape_table.loc['S', 'elongation']:.2f}, contour landmarks median "
          f"{contour_elongation.median():.2f} (max {contour_elongation.max():.2f}, {contour_elongation.idxmax()})")

# %% [markdown]
# ## Examples
#
# Three heatmaps on a log scale (`chh_lib.plots.heatmap_overlay`, cropped around the prediction), each
# with the 2-sigma ellipse of its covariance $\Sigma$ (white): (1) a contour landmark with a large ERE
# although the prediction is close to the truth: the heatmap hugs the contour; (2) sella on the same
# image, round and compact; (3) on a hard image (when the data set lists any), the landmark with the
# largest ERE: there the large ERE flags a real error (the ground truth may lie outside the crop; an
# ellipse larger than the crop is not drawn).

# %%
easy_rows = [n for n, image_id in enumerate(test_set.image_ids) if image_id not in hard_ids] or list(range(len(test_set)))
hard_rows = [n for n, image_id in enumerate(test_set.image_ids) if image_id in hard_ids]
point_k = [landmarks.index(a) for a in point_landmarks]
contour_k = [k for k in range(K) if k not in point_k]
# (1): among well-predicted contour pairs of normal images, the largest ERE x elongation
candidates = [(results["ere"][n, k] * elongation[n, k], n, k) for n in easy_rows for k in contour_k
              if present[n, k] and errors_mm[n, k] < np.nanmedian(errors_mm)]
_, contour_n, contour_landmark = max(candidates) if candidates else (0, easy_rows[0], contour_k[0])
# (3): on a hard image (else any image), the pair with the largest ERE
rows_for_failure = hard_rows or list(range(len(test_set)))
failure_ere = np.where(present[rows_for_failure], results["ere"][rows_for_failure], -np.inf)
flat = int(np.argmax(failure_ere))
failure_n, failure_landmark = rows_for_failure[flat // K], flat % K
examples = [(contour_n, contour_landmark), (contour_n, point_k[0] if point_k else contour_k[-1]),
            (failure_n, failure_landmark)]
crop = max(8, width // 8)
figure = Figure(figsize=(15, 4.8), layout="constrained")
for panel, (n, k) in enumerate(examples):
    item = test_set[n]
    with torch.no_grad():
        logits = model(item["image"][None].to(torch_device)).float().cpu()
    heatmap = softmax_2d(scale_logits(logits, temperature))[0, k].numpy()
    axes = figure.add_subplot(1, 3, panel + 1)
    hard_note = " (hard)" if test_set.image_ids[n] in hard_ids else ""
    heatmap_overlay(item["image"][0].numpy(), heatmap, prediction_px=results["pred_px"][n, k],
                    target_px=test_set.target_px[n, k], annotators_px=test_set.annotations_px[n, :, k],
                    crop_half_size_px=crop, ax=axes,
                    title=f"{test_set.image_ids[n]}{hard_note}, {landmarks.names[k]}\nERE "
                          f"{results['ere'][n, k]:.2f} mm, radial error {errors_mm[n, k]:.2f} mm")
    s_x, s_y = test_set.pixel_size_mm[n]
    var_x, cov_xy, var_y = cov[n, k] / np.array([s_x * s_x, s_x * s_y, s_y * s_y])  # mm^2 -> px^2
    eigenvalues, eigenvectors = np.linalg.eigh(np.array([[var_x, cov_xy], [cov_xy, var_y]]))
    centre = results["mean_px"][n, k]
    angle = np.degrees(np.arctan2(eigenvectors[1, -1], eigenvectors[0, -1]))
    if 2 * np.sqrt(eigenvalues[-1]) > crop:  # a spread beyond the crop: no ellipse
        continue
    axes.add_patch(Ellipse(centre, 4 * np.sqrt(eigenvalues[-1]), 4 * np.sqrt(max(eigenvalues[0], 0.0)),
                           angle=angle, fill=False, color="white", linewidth=1.2))
save_figure(figure, paths.output_dir / "examples.png")

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
#   errors; Spearman $\rho$ over the raw pairs needs no binning and is the stricter measure.
# - Contour landmarks have heatmaps elongated **along** the contour, so their ERE is large even when the
#   prediction is right; sella, a point landmark, is round and compact.
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
# `heatmap` (shape (H, W)) still holds the calibrated heatmap of the third example above (image
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
# ### Exercise 04.3 · Contour landmarks against point landmarks, with medians
#
# A few failed heatmaps pull a mean; a median is robust to them. Using `results["ere"]` (shape (N, K), mm)
# over the present pairs, compute the **median** ERE of all (image, landmark) pairs of the contour
# landmarks (every channel not in `point_k`) and of the point landmarks (the channels in `point_k`:
# sella), and whether the contour median is the larger. Answer with
# `answer_04_3 = {"median_ere_contour_mm": ..., "median_ere_point_mm": ..., "contour_is_larger": ...}`.

# %% tags=["exercise"]
answer_04_3 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    is_point = np.isin(np.arange(K), point_k)  # (K,)
    median_contour = float(np.median(results["ere"][present & ~is_point]))
    median_point = float(np.median(results["ere"][present & is_point]))
    answer_04_3 = {
        "median_ere_contour_mm": median_contour,
        "median_ere_point_mm": median_point,
        "contour_is_larger": median_contour > median_point,
    }

# %% [markdown]
# Check your answer:

# %%
exercise_results["04_3"] = check.exercise_04_3(answer_04_3, results["ere"], errors_mm, point_k)

# %% [markdown]
# ## Summary (for the test suite)
#
# The key numbers go to `RUN_DIR/04_expected_radial_error/metrics.json` (with the figures above), for the
# test suite; they include how many exercises were attempted and passed.

# %%
summary = {
    "profile": profile,
    "image_size": [width, height],
    "num_pairs": int(ere.size),
    "num_bins": int(ere.size // 36),
    "ere_mean_mm": ere_mean_mm,
    "mre_mm": float(errors.mean()),
    "binned_pearson": binned_r,
    "spearman": rho,
    "raw_pearson": raw_r,
    "readable_matches_library": readable_matches_library,
    "max_abs_difference_mm": max_abs_difference_mm,
    "mean_ere_by_cutoff_mm": dict(zip([f"{c:g}" for c in cutoffs], cutoff_table["mean ERE (mm)"])),
    "sella_elongation": float(shape_table.loc["S", "elongation"]) if point_landmarks else None,
    "median_contour_elongation": float(contour_elongation.median()),
    "per_landmark_ere_mm": dict(zip(landmarks.abbreviations, shape_table["ERE (mm)"])),
    "exercises_attempted": sum(check.is_attempted(a) for a in (answer_04_1, answer_04_2, answer_04_3)),
    "exercises_passed": sum(exercise_results.values()),
}
written = write_notebook_metrics(paths.output_dir, summary)
print(f"wrote {paths.show(written)}: mean ERE {ere_mean_mm:.2f} mm, binned r {binned_r:.2f}, Spearman {rho:.2f}; "
      f"exercises passed {summary['exercises_passed']}/{summary['exercises_attempted']} attempted")

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

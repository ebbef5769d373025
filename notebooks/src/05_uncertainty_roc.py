"""Source of notebooks/05_uncertainty_roc.ipynb (build with: python notebooks/build.py 05)."""

# %% [markdown]
# # 05 · Uncertainty as an outlier detector: ROC curves and the ERE threshold
#
# The fifth notebook of the *chh-kit* series on **Contour-Hugging Heatmaps for Landmark Detection**
# (McCouat & Voiculescu, CVPR 2022). A landmark detector that says *when it is wrong* is far more
# useful in a clinic than one that is only right on average. The paper's proposal is the **expected
# radial error (ERE)** of each heatmap; here we test how well it picks out the predictions that
# actually failed.
#
# **How long** (measured on 2 CPU cores; a laptop should be as fast or faster):
# 7 s under `smoke` in the smoke series (`chh notebooks --profile smoke`, 64 s for the six; more when it
# must first write its phantom and train the two-epoch model) and 67 s under `cpu` in the
# publishing run recorded in `benchmarks/README.md` (the shipped model with the temperatures notebook
# 03 stored; most of the time goes to the bootstrap); under `paper`
# it needs the model that notebook 02 trains on a GPU.
#
# **Learning goals**
#
# 1. Define outliers by their true radial error and measure, with **ROC curves** and the **AUROC**
#    (with bootstrap 95 % intervals over images), how well the ERE and three other heatmap scores
#    (negative mode probability, entropy, spatial spread) detect them, and whether the gap between two
#    AUROCs is larger than the noise of so few outliers.
# 2. Choose an ERE threshold in mm on held-out data for a target true positive rate, apply it to the
#    test split and read off its rates there, beside the threshold the test split would pick itself.
# 3. Split the predictions into a *good* and an *erroneous* set **by the ERE**, as a deployed system
#    must, and compare their MRE and SDR.
# 4. Look at a true detection, a false alarm and a missed outlier side by side, and see how the
#    authors' split (by the true error) differs from a split by the ERE.
#
# The notebook ends with common pitfalls, a recap, four exercises with checked answers (the last a
# predict-then-check question on a threshold chosen from more outliers), and references.

# %% [markdown]
# ## Imports

# %%
import numpy as np
import pandas as pd
from IPython.display import display
from matplotlib.figure import Figure
from scipy.stats import rankdata

from chh_lib import exercises as check
from chh_lib.devices import choose_device
from chh_lib.engine import predict
from chh_lib.evaluation import load_run
from chh_lib.metrics import (
    bootstrap_ci,
    outliers,
    radial_error_mm,
    roc_curve_for,
    score_threshold_at_tpr,
    split_by_score,
)
from chh_lib.plots import heatmap_overlay, roc_curves
from chh_lib.summaries import write_summary
from chh_lib.uncertainty import MIN_OUTLIERS, choose_ere_threshold
from chh_lib.widgets import HeatmapReader
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
# `CHH_PROFILE` when set. `outlier_mm` is the radial error above which a prediction counts as failed
# (4 mm by default, the largest SDR radius and the paper's cut), `target_tpr` the share of outliers the
# ERE threshold must catch, and `num_resamples` the number of bootstrap resamples (None: 1000, or 50
# under `smoke`). `solutions = True` runs the hidden solutions of the exercises at the end (the test
# suite does; a student leaves it `False`).

# %% tags=["parameters"]
profile = notebook_profile()  # CHH_PROFILE, else "cpu"
data_dir = None  # None: the profile's phantom
run_dir = None  # None: runs/notebooks/<profile>
seed = 0
device = "auto"
outlier_mm = 4.0
target_tpr = 0.5
num_resamples = None
solutions = False  # True: run the exercises' hidden solutions

# %% [markdown]
# ## Set-up and predictions
#
# The phantom, a trained model and its temperatures (notebook 03's choice; T = 1 when it kept none)
# are made when missing (and reused from the earlier notebooks otherwise). `chh_lib.engine.predict`
# then decodes every heatmap of the test split once, at the run's temperatures: the arg-max prediction
# and the four uncertainty scores of each (image, landmark).

# %%
paths = notebook_paths("05_uncertainty_roc", profile, data_dir, run_dir)
ensure_phantom(paths.data_dir, profile)
ensure_trained_run(paths.model_dir, paths.data_dir, profile, device, seed)
temperatures = ensure_calibrated(paths.model_dir, paths.data_dir, device)
torch_device = choose_device(device)
resamples = int(num_resamples) if num_resamples is not None else (50 if profile == "smoke" else 1000)
run = load_run(paths.model_dir, paths.data_dir)
landmarks = run.data.landmarks
dataset = run.dataset("test")
predictions = predict(run.model, dataset, torch_device, temperatures=temperatures,
                      ere_cutoff=run.config.eval.ere_cutoff)
errors = radial_error_mm(predictions.pred_px, dataset.target_px, dataset.pixel_size_mm)  # (N, K) mm
present = ~np.isnan(errors)
N, K = errors.shape
print(f"profile {profile}: {N} test images x {K} landmarks = {int(present.sum())} annotated predictions; "
      f"MRE {np.nanmean(errors):.2f} mm; {resamples} bootstrap resamples")

# %% [markdown]
# ## Outliers and the four scores
#
# A prediction is an **outlier** when its radial error exceeds $r_\text{out}$ = `outlier_mm`:
# $o_{nk} = [\,e_{nk} > r_\text{out}\,]$. Each score $s_{nk}$ is higher for a less certain heatmap:
#
# * **ERE** (mm): the heatmap's expected distance from its own mode (notebook 04);
# * **negative mode probability** $-\max_i p_{nk}(i)$;
# * **entropy** $-\sum_i p_{nk}(i) \log p_{nk}(i)$ (nats);
# * **spatial spread** (mm): the root of the trace of the heatmap's position covariance.
#
# The phantom marks some images as **hard** (low contrast, occluders, cropped anatomy); the line below
# says how many of the outliers lie on them.

# %%
is_outlier = outliers(errors, outlier_mm)
score_names = {"ere": "ERE", "neg_mode_prob": "negative mode probability", "entropy": "entropy",
               "spread": "spatial spread"}
outlier_fraction = float(is_outlier[present].mean())
hard_ids = set(run.data.descriptor.get("hard_cases", []))
non_hard_rows = np.array([image_id not in hard_ids for image_id in dataset.image_ids])  # (N,)
non_hard = present & non_hard_rows[:, None]  # (N, K): present pairs of the non-hard images
outliers_on_hard = int(is_outlier[present & ~non_hard_rows[:, None]].sum())
print(f"outliers (> {outlier_mm:g} mm): {int(is_outlier[present].sum())} of {int(present.sum())} "
      f"({100 * outlier_fraction:.1f} %); {outliers_on_hard} of them on the {int((~non_hard_rows).sum())} "
      f"hard images, {int(is_outlier[non_hard].sum())} on the {int(non_hard_rows.sum())} others")
display(pd.DataFrame({label: pd.Series(predictions.scores[name][present]).describe()[["mean", "50%", "max"]]
                      for name, label in score_names.items()}).round(3))

# %% [markdown]
# ## ROC curves and AUROC
#
# Flagging every prediction with $s_{nk} \ge t$ as an outlier gives, for each threshold $t$,
#
# $$\text{TPR}(t) = \frac{|\{(n,k) : s_{nk} \ge t,\ o_{nk}\}|}{|\{(n,k) : o_{nk}\}|}, \qquad
# \text{FPR}(t) = \frac{|\{(n,k) : s_{nk} \ge t,\ \lnot o_{nk}\}|}{|\{(n,k) : \lnot o_{nk}\}|} .$$
#
# The ROC curve traces $(\text{FPR}(t), \text{TPR}(t))$ over all $t$; its area is the probability that
# a random outlier scores higher than a random inlier:
#
# $$\text{AUROC} = \int_0^1 \text{TPR} \; d\,\text{FPR} = P\left(s_\text{outlier} > s_\text{inlier}\right)
# \quad (0.5 = \text{chance}, 1 = \text{perfect}).$$
#
# The second form can be checked by hand. Three outliers and four inliers make $3 \times 4 = 12$
# (outlier, inlier) pairs; the AUROC is the share of them that the score orders correctly, a tie
# counting one half:

# %%
# NBVAL_CHECK_OUTPUT
toy_scores = np.array([0.9, 0.4, 0.7, 0.2, 0.5, 0.4, 0.1])
toy_is_outlier = np.array([True, True, True, False, False, False, False])
toy_pairs = toy_scores[toy_is_outlier][:, None] - toy_scores[~toy_is_outlier][None, :]  # (3, 4)
toy_share = float(np.mean((toy_pairs > 0) + 0.5 * (toy_pairs == 0)))
print(f"{int((toy_pairs > 0).sum())} of {toy_pairs.size} pairs ordered, {int((toy_pairs == 0).sum())} tied: "
      f"share {toy_share:.4f}; chh_lib AUROC {roc_curve_for(toy_scores, toy_is_outlier).auroc:.4f}")

# %% [markdown]
# On the test split, the 95 % intervals come from a percentile bootstrap that resamples whole **images**
# (the 19 landmarks of one image are not independent). With only one class present (e.g. no outlier at
# all) the AUROC is undefined and shown as `nan`.

# %%
curves = {name: roc_curve_for(predictions.scores[name][present], is_outlier[present]) for name in score_names}
auroc = {name: curve.auroc for name, curve in curves.items()}


def auroc_statistic(name):
    """AUROC of one score on the images drawn by a bootstrap resample."""
    def statistic(indices):
        keep = present[indices]
        return roc_curve_for(predictions.scores[name][indices][keep], is_outlier[indices][keep]).auroc
    return statistic


auroc_ci95 = {name: bootstrap_ci(auroc_statistic(name), N, resamples, seed) for name in score_names}
num_outliers = int(is_outlier[present].sum())
print(f"AUROC over {num_outliers} outliers and {int(present.sum()) - num_outliers} inliers ({N} test images), "
      f"95 % intervals from {resamples} resamples of the images:")
display(pd.DataFrame({"AUROC": auroc, "CI 2.5 %": {n: c[0] for n, c in auroc_ci95.items()},
                      "CI 97.5 %": {n: c[1] for n, c in auroc_ci95.items()}}).rename(index=score_names).round(3))

# %% [markdown]
# ### Is the ERE better than the entropy?
#
# Compare the gaps between the AUROCs above with the widths of their intervals. Many of the outliers may
# sit on the hard images (the line printed under "Outliers and the four scores" says how many), where a
# failed heatmap is often spread wide and several scores rank it high (not always: the gallery below
# shows outliers on hard images whose ERE stays small). The AUROC over all images mixes those with the
# rest. The sharper test is the **non-hard images**, where an outlier is a single landmark gone wrong on
# an otherwise ordinary image. The same
# AUROC, restricted to them, with bootstrap intervals over those images:

# %%
auroc_non_hard = {name: roc_curve_for(predictions.scores[name][non_hard], is_outlier[non_hard]).auroc
                  for name in score_names}
rows_non_hard = np.nonzero(non_hard_rows)[0]


def auroc_non_hard_statistic(name):
    """AUROC of one score on a bootstrap resample of the non-hard images."""
    def statistic(indices):
        rows = rows_non_hard[indices]
        keep = present[rows]
        return roc_curve_for(predictions.scores[name][rows][keep], is_outlier[rows][keep]).auroc
    return statistic


auroc_non_hard_ci95 = {name: bootstrap_ci(auroc_non_hard_statistic(name), len(rows_non_hard), resamples, seed)
                       for name in score_names}
print(f"all images: over {num_outliers} outliers; non-hard images: over {int(is_outlier[non_hard].sum())} outliers")
display(pd.DataFrame({
    "AUROC, all images": auroc,
    f"AUROC, {len(rows_non_hard)} non-hard images": auroc_non_hard,
    "non-hard CI 2.5 %": {n: c[0] for n, c in auroc_non_hard_ci95.items()},
    "non-hard CI 97.5 %": {n: c[1] for n, c in auroc_non_hard_ci95.items()},
}).rename(index=score_names).round(3))

# %% [markdown]
# Two intervals that overlap do not yet say that the difference is noise, and two point values that
# differ by 0.01 do not say that it is real. What answers the question is an interval for the
# **difference** $\Delta = \text{AUROC}_\text{ERE} - \text{AUROC}_\text{entropy}$, computed on the same
# bootstrap resample for both scores (a *paired* bootstrap: an image that makes both scores look good
# moves both AUROCs together and cancels in $\Delta$). If its 95 % interval contains 0, these images do
# not show which score is better.

# %%
def auroc_difference_statistic(rows_of_images, first="ere", second="entropy"):
    """AUROC(first) - AUROC(second) on a bootstrap resample of the given image rows."""
    def statistic(indices):
        rows = rows_of_images[indices]
        keep = present[rows]
        labels = is_outlier[rows][keep]
        return (roc_curve_for(predictions.scores[first][rows][keep], labels).auroc
                - roc_curve_for(predictions.scores[second][rows][keep], labels).auroc)
    return statistic


SETTLED_OUTLIERS = 30  # a verdict from fewer outliers is called suggestive: each one moves the AUROC by > 1/30


def verdict(low, high):
    """What a 95 % interval of AUROC(ERE) - AUROC(entropy) supports."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "undefined (the resamples hold only outliers or only inliers)"
    if low > 0:
        return "the ERE is better (the interval lies above 0)"
    if high < 0:
        return "the entropy is better (the interval lies below 0)"
    return "no evidence either way (the interval contains 0)"


all_rows = np.arange(N)
difference = {"all images": auroc["ere"] - auroc["entropy"],
              "non-hard images": auroc_non_hard["ere"] - auroc_non_hard["entropy"]}
difference_ci95 = {
    "all images": bootstrap_ci(auroc_difference_statistic(all_rows), N, resamples, seed),
    "non-hard images": bootstrap_ci(auroc_difference_statistic(rows_non_hard), len(rows_non_hard), resamples, seed),
}
outlier_counts = {"all images": int(is_outlier[present].sum()), "non-hard images": int(is_outlier[non_hard].sum())}
for images, delta in difference.items():
    low, high = difference_ci95[images]
    if not np.isfinite(delta):
        print(f"{images} ({outlier_counts[images]} outliers): the difference is undefined (one class only)")
        continue
    few = outlier_counts[images] < SETTLED_OUTLIERS and (low > 0 or high < 0)
    print(f"{images} ({outlier_counts[images]} outliers): AUROC(ERE) - AUROC(entropy) = {delta:+.3f}, "
          f"95 % interval [{low:+.3f}, {high:+.3f}]: {verdict(low, high)}"
          + (f"; from fewer than {SETTLED_OUTLIERS} outliers: suggestive, not settled" if few else ""))

# %% [markdown]
# Read the verdicts, not the signs of the point values. "No evidence either way" does not mean that
# the two scores are equally good: with few outliers the interval may be too wide to resolve a gap of a
# few hundredths. An interval that excludes 0 but rests on fewer than `SETTLED_OUTLIERS` = 30 outliers
# (the count is printed beside it; the line then says "suggestive") is suggestive rather than settled:
# each outlier then carries more than a thirtieth of the AUROC, and a bootstrap of so few positives
# tends to give intervals that are too narrow. Confirming it needs more outliers (more images, or a
# harder data set).

# %% [markdown]
# ## Choosing an ERE threshold on held-out data
#
# The threshold is the largest ERE $t^\ast$ whose true positive rate reaches `target_tpr`
# (`chh_lib.uncertainty.choose_ere_threshold`): the operating point with the fewest false alarms among
# those that catch that share of the outliers. Its value is in millimetres, so a clinician can read
# it as "flag every landmark whose heatmap expects an error of $t^\ast$ mm or more".
#
# A deployed system must choose $t^\ast$ before it sees the test images, so it is chosen on the
# **calibration split** (the images on which notebook 03 chose the temperatures, T = 1 included; never
# the test split) and then
# applied to the test split. `chh calibrate` does the same and stores $t^\ast$ in the run. The
# threshold that the test split itself would pick is printed beside it as an *oracle*: the gap between
# the two is what tuning on the reported data would flatter. With fewer than
# `chh_lib.uncertainty.MIN_OUTLIERS` = 10 outliers on the calibration split, `chh calibrate` stores no
# threshold at all (it names an outlier cut that would give enough); the line below says where this
# split stands.

# %%
calibration_set = run.dataset("calibration")
calibration_predictions = predict(run.model, calibration_set, torch_device, temperatures=temperatures,
                                  ere_cutoff=run.config.eval.ere_cutoff)
calibration_errors = radial_error_mm(calibration_predictions.pred_px, calibration_set.target_px,
                                     calibration_set.pixel_size_mm)
chosen = choose_ere_threshold(calibration_predictions.ere_mm, calibration_errors, outlier_mm, target_tpr)
ere_threshold = chosen["ere_threshold_mm"]
ere = predictions.ere_mm[present]
outlier_flat = is_outlier[present]
oracle_threshold = score_threshold_at_tpr(ere, outlier_flat, target_tpr)
flagged = ere >= ere_threshold
tpr_at = float(flagged[outlier_flat].mean()) if outlier_flat.any() else float("nan")
fpr_at = float(flagged[~outlier_flat].mean()) if (~outlier_flat).any() else float("nan")
oracle_flagged = ere >= oracle_threshold
oracle_tpr = float(oracle_flagged[outlier_flat].mean()) if outlier_flat.any() else float("nan")
oracle_fpr = float(oracle_flagged[~outlier_flat].mean()) if (~outlier_flat).any() else float("nan")
print(f"calibration split: {len(calibration_set)} images, {chosen['num_outliers']} outliers of "
      f"{chosen['num_predictions']} predictions -> ERE threshold {ere_threshold:.2f} mm"
      + (f" (fewer than {MIN_OUTLIERS} outliers: chh calibrate would store none; a cut of "
         f"{chosen['suggested_outlier_threshold_mm']:g} mm would give {MIN_OUTLIERS})"
         if chosen["num_outliers"] < MIN_OUTLIERS else f" ({MIN_OUTLIERS} or more outliers: chh calibrate stores it)"))
print(f"applied to the test split: TPR {tpr_at:.3f}, FPR {fpr_at:.3f}; "
      f"{int(flagged.sum())} of {flagged.size} predictions flagged")
print(f"oracle (tuned on the test split itself): {oracle_threshold:.2f} mm -> TPR {oracle_tpr:.3f}, "
      f"FPR {oracle_fpr:.3f}")

# %% [markdown]
# $t^\ast$ is itself an estimate, made from only the calibration split's outliers (their number is
# printed above). With a handful of them, the TPR that $t^\ast$ reaches on new images can fall far from
# `target_tpr`, in either direction; compare the TPR on the test split with the target, and $t^\ast$
# with the oracle. A larger calibration split (or a target TPR fixed with a margin) is the remedy, not
# tuning on the test split.

# %% [markdown]
# The ROC curves of the four scores, with the AUROC, its bootstrap interval and the chosen ERE
# operating point:

# %%
figure = roc_curves({score_names[n]: (c.fpr, c.tpr) for n, c in curves.items()},
                    {score_names[n]: v for n, v in auroc.items()},
                    {score_names[n]: v for n, v in auroc_ci95.items()},
                    operating_point=(fpr_at, tpr_at) if np.isfinite(fpr_at) and np.isfinite(tpr_at) else None,
                    operating_label=f"ERE ≥ {ere_threshold:.2f} mm")
figure.axes[0].set_title(f"detecting radial errors > {outlier_mm:g} mm: {num_outliers} outliers in {N} test images",
                         fontsize=10)
figure.axes[0].set_xlabel("false positive rate (share of inliers flagged)")
figure.axes[0].set_ylabel("true positive rate (share of outliers flagged)")
_ = save_figure(figure, paths.output_dir / "roc_curves.png")

# %% [markdown]
# ## Good and erroneous sets, split by the ERE
#
# A deployed system knows only the ERE, so the split must use it: predictions with
# $\text{ERE} \ge t^\ast$ form the **erroneous set** (sent to a human), the rest the **good set**
# (`chh_lib.metrics.split_by_score`). The true error then measures each set: MRE in mm and SDR in %.

# %%
split = split_by_score(predictions.ere_mm, errors, ere_threshold)


def split_table(result):
    """One row per set: count, MRE (mm) and SDR (%)."""
    return pd.DataFrame({name: {"count": s["count"], "MRE (mm)": s["mre_mm"],
                                **{f"SDR<{t} mm (%)": v for t, v in s["sdr_percent"].items()}}
                         for name, s in result.items()}).T


display(split_table(split).round(2))

# %% [markdown]
# ## Detections, false alarms and missed outliers
#
# At the threshold $t^\ast$ every present prediction falls into one of four kinds:
#
# | | error $> r_\text{out}$ (outlier) | error $\le r_\text{out}$ (inlier) |
# |---|---|---|
# | $\text{ERE} \ge t^\ast$ (flagged) | **true positive** | **false alarm** |
# | $\text{ERE} < t^\ast$ (kept) | **missed outlier** | true negative |
#
# The gallery shows up to three of each of the first three kinds, each from a different image: the true
# positives and false alarms with the largest ERE, and the missed outliers with the largest error. Each
# panel is the heatmap (log scale, the run's temperature, its colour bar beside it) around the prediction
# (red x), with the ground truth (green circle) and the annotators (triangles); when the ground truth
# lies outside the crop, the panel shows the whole image instead. A false alarm is a heatmap whose mass
# spreads far from a mode that is nonetheless right; a missed outlier is a heatmap in the wrong place
# whose ERE stays below $t^\ast$. Look at where the mass of each lies. A kind with no example is named in
# the output rather than shown as an empty panel. The first line below counts each kind (and how many
# of them lie on hard images), the last how many missed outliers the oracle threshold would have caught.

# %%
gallery_threshold = ere_threshold if np.isfinite(ere_threshold) else oracle_threshold
if not np.isfinite(ere_threshold):
    print(f"the calibration split chose no threshold; the gallery uses the oracle {oracle_threshold:.2f} mm")
flagged_nk = present & (predictions.ere_mm >= gallery_threshold)  # (N, K); all False when the threshold is NaN
kinds = {
    "true positive": (flagged_nk & is_outlier, predictions.ere_mm),
    "false alarm": (flagged_nk & ~is_outlier & present, predictions.ere_mm),
    "missed outlier": (present & ~flagged_nk & is_outlier, errors),
}
kind_counts = {kind: int(members.sum()) for kind, (members, _) in kinds.items()}
on_hard = {kind: int((members & ~non_hard_rows[:, None]).sum()) for kind, (members, _) in kinds.items()}
print(f"at ERE >= {gallery_threshold:.2f} mm: "
      + ", ".join(f"{c} {k}s ({on_hard[k]} on hard images)" for k, c in kind_counts.items())
      + f", {int((present & ~flagged_nk & ~is_outlier).sum())} true negatives")
per_kind = 3
gallery = {}  # kind -> [(n, k)], largest ranking value first
for kind, (members, ranking) in kinds.items():
    order = np.argsort(np.where(members, ranking, -np.inf), axis=None)[::-1][:int(members.sum())]
    gallery[kind] = []
    for n, k in zip(*np.unravel_index(order, errors.shape)):
        if len(gallery[kind]) < per_kind and all(n != used for used, _ in gallery[kind]):  # one per image
            gallery[kind].append((int(n), int(k)))
    if not gallery[kind]:
        print(f"no {kind} at this threshold on the test split: nothing to show for that kind")
shown_kinds = [kind for kind in gallery if gallery[kind]]
reader = HeatmapReader(run, "test", torch_device)
width, height = run.config.data.image_size
crop = max(8, width // 8)  # half-size of the default crop, px
if shown_kinds:
    figure = Figure(figsize=(4.4 * per_kind, 4.0 * len(shown_kinds) + 0.6), layout="constrained")
    legend_entries = {}
    for row, kind in enumerate(shown_kinds):
        for column, (n, k) in enumerate(gallery[kind]):
            reading = reader.read(n, k)
            reach = float(np.max(np.abs(reading.prediction_px - reading.target_px)))  # px to the ground truth
            axes = figure.add_subplot(len(shown_kinds), per_kind, row * per_kind + column + 1)
            hard_note = "" if non_hard_rows[n] else " (hard image)"
            heatmap_overlay(reader.image(n), reading.heatmap, reading.prediction_px, reading.target_px,
                            reading.annotators_px, crop_half_size_px=crop if reach < crop - 1 else None,
                            ax=axes, colorbar=True,
                            title=f"{kind}: ERE {predictions.ere_mm[n, k]:.1f} mm, error {errors[n, k]:.1f} mm\n"
                                  f"{dataset.image_ids[n].split('/')[-1]}{hard_note}, {landmarks.names[k]}")
            handles, labels = axes.get_legend_handles_labels()
            legend_entries.update(zip(labels, handles))
            axes.get_legend().remove()
            axes.title.set_fontsize(9)
            axes.tick_params(labelsize=7)
    figure.legend(list(legend_entries.values()), list(legend_entries), loc="outside lower center",
                  ncol=len(legend_entries), fontsize=8)
    figure.suptitle(f"test split at the calibration threshold ERE >= {gallery_threshold:.2f} mm "
                    f"(outlier: error > {outlier_mm:g} mm)", fontsize=10)
    save_figure(figure, paths.output_dir / "flagged_gallery.png")
gallery_table = pd.DataFrame([{"kind": kind, "image": dataset.image_ids[n].split("/")[-1], "hard": not non_hard_rows[n],
                               "landmark": landmarks.abbreviations[k], "ERE (mm)": predictions.ere_mm[n, k],
                               "error (mm)": errors[n, k]} for kind in gallery for n, k in gallery[kind]])
if len(gallery_table):
    display(gallery_table.round(2))
top_ere = np.argsort(np.where(present, predictions.ere_mm, -np.inf), axis=None)[::-1][:10]
top_ere_outliers = int(is_outlier.ravel()[top_ere].sum())
missed_caught_by_oracle = int((kinds["missed outlier"][0] & (predictions.ere_mm >= oracle_threshold)).sum())
print(f"{top_ere_outliers} of the 10 highest-ERE predictions of the test split are outliers; the oracle threshold "
      f"{oracle_threshold:.2f} mm would catch {missed_caught_by_oracle} of the {kind_counts['missed outlier']} "
      f"missed outliers")

# %% [markdown]
# ## Replication notes: splitting by the true error
#
# The authors' code built its "good" and "erroneous" sets from the **true** radial error rather than
# from the ERE (and parsed an outlier threshold that it never used). A split by the true error is an
# oracle: it needs the ground truth the system is meant to do without, and it makes the erroneous set
# look as bad, and the good set as good, as possible. Below, the same threshold $t^\ast$ (mm) applied to
# the true error instead of the ERE, next to the ERE split, and how many predictions the two put in
# different sets.

# %%
flat_errors = errors[present]
by_error = split_by_score(flat_errors, flat_errors, ere_threshold)
comparison = pd.concat({"split by ERE (kit)": split_table(split), "split by true error (authors)": split_table(by_error)})
display(comparison.round(2))
flagged_by_error = flat_errors >= ere_threshold
disagree = int((flagged != flagged_by_error).sum())
print(f"the two splits disagree on {disagree} of {flagged.size} predictions "
      f"({int((flagged & ~flagged_by_error).sum())} flagged only by the ERE, "
      f"{int((~flagged & flagged_by_error).sum())} only by the true error)")

# %% [markdown]
# > **Common pitfalls**
# >
# > - *Quoting an AUROC without its number of outliers.* An AUROC over 10 outliers and one over 500 are
# >   different evidence; give the count and the bootstrap interval beside it.
# > - *Resampling (image, landmark) pairs instead of images.* The landmarks of one image fail together;
# >   a pairwise bootstrap gives intervals that are too narrow.
# > - *Choosing the ERE threshold on the test split.* That is the oracle; choose it on held-out images
# >   and report what it does on the test split.
# > - *Expecting the target TPR on new images.* A threshold chosen from a few outliers lands far from its
# >   target; pool held-out splits, or state the TPR's interval.
# > - *Splitting good and erroneous sets by the true error.* A deployed system knows only the ERE.

# %% [markdown]
# ## Recap
#
# - An **outlier** is a prediction whose true radial error exceeds $r_\text{out}$ = `outlier_mm` (4 mm by
#   default, the largest SDR radius); an uncertainty score detects outliers when it is higher on them
#   than on the inliers.
# - The **AUROC** is the probability that a random outlier scores above a random inlier (ties count one
#   half): 0.5 is chance, 1 is perfect, and reversing the score turns $A$ into $1 - A$.
# - With only tens of outliers the AUROC is noisy: resample whole **images** for its bootstrap interval,
#   and compare two scores by a **paired** bootstrap of their difference, not by two point values; a gap
#   that its interval straddles with 0 is no evidence that one score is better.
# - Most outliers may sit on hard images, where any score is high; the **non-hard images** are the
#   sharper test of a score, and have even fewer outliers, so wider intervals for each score's AUROC.
# - The ERE threshold $t^\ast$ (mm) must be chosen on held-out data (the calibration split) and only
#   applied to the test split; the test split's own choice is an oracle. Chosen from few outliers,
#   $t^\ast$ need not reach its target TPR on new images.
# - A deployed system splits its predictions **by the ERE**; the authors' split by the true error is an
#   oracle that makes both sets look better separated than any detector can.
# - At any threshold there are false alarms (large ERE, small error) and missed outliers (small ERE,
#   large error); looking at both, beside the true detections, shows what the score can and cannot see.

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
# ### Exercise 05.1 · The AUROC on the non-hard images, by the rank formula
#
# The AUROC is also the Mann–Whitney statistic. Rank all $n_1 + n_0$ scores together (1 for the
# smallest, tied scores sharing their average rank) and let $R_1$ be the sum of the ranks of the $n_1$
# outliers; then
#
# $$\text{AUROC} = \frac{R_1 - n_1 (n_1 + 1) / 2}{n_1\, n_0}.$$
#
# Using `predictions.scores["ere"]` and `predictions.scores["entropy"]` (shape (N, K)), `is_outlier`
# (shape (N, K)) and the mask `non_hard` (shape (N, K): the present pairs of the non-hard images), compute
# both AUROCs on the non-hard images **with this formula** (`scipy.stats.rankdata` ranks with ties
# averaged; do not call `roc_curve_for` or scikit-learn). The check compares them with
# `chh_lib.metrics.roc_curve_for`. Answer with `answer_05_1 = {"ere": ..., "entropy": ...}`.

# %% tags=["exercise"]
answer_05_1 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    def rank_auroc(scores, labels):
        """AUROC by the Mann-Whitney rank formula; NaN with one class only."""
        ranks = rankdata(scores)  # ties share their average rank
        n_1, n_0 = int(labels.sum()), int((~labels).sum())
        if n_1 == 0 or n_0 == 0:
            return float("nan")
        return float((ranks[labels].sum() - n_1 * (n_1 + 1) / 2) / (n_1 * n_0))

    answer_05_1 = {name: rank_auroc(predictions.scores[name][non_hard], is_outlier[non_hard])
                   for name in ("ere", "entropy")}

# %% [markdown]
# Check your answer:

# %%
exercise_results["05_1"] = check.exercise_05_1(answer_05_1, predictions.scores, is_outlier, non_hard, present)

# %% [markdown]
# ### Exercise 05.2 · What the calibration threshold does on the test split
#
# Flag every present test prediction with $\text{ERE} \ge t^\ast$, where $t^\ast$ = `ere_threshold` (mm,
# chosen on the calibration split), and call it an outlier when its radial error `errors` exceeds
# `outlier_mm`. Compute from `predictions.ere_mm` and `errors` (both (N, K); NaN errors are missing
# landmarks, leave them out)
#
# $$\text{TPR} = \frac{TP}{TP + FN}, \qquad \text{FPR} = \frac{FP}{FP + TN}, \qquad
# \text{precision} = \frac{TP}{TP + FP},$$
#
# the last being the share of flagged predictions that really are outliers, what a clinician who checks
# each flag experiences (use `float("nan")` for a rate whose denominator is 0). Answer with
# `answer_05_2 = {"tpr": ..., "fpr": ..., "precision": ...}`.

# %% tags=["exercise"]
answer_05_2 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    test_flagged = predictions.ere_mm[present] >= ere_threshold
    test_outlier = errors[present] > outlier_mm
    true_positives = int((test_flagged & test_outlier).sum())
    answer_05_2 = {
        "tpr": true_positives / test_outlier.sum() if test_outlier.any() else float("nan"),
        "fpr": (test_flagged & ~test_outlier).sum() / (~test_outlier).sum() if (~test_outlier).any() else float("nan"),
        "precision": true_positives / test_flagged.sum() if test_flagged.any() else float("nan"),
    }

# %% [markdown]
# Check your answer:

# %%
exercise_results["05_2"] = check.exercise_05_2(answer_05_2, predictions.ere_mm, errors, ere_threshold, outlier_mm)

# %% [markdown]
# ### Exercise 05.3 · Two reference points: the reversed score and a random score
#
# Over all present test pairs (`ere` and `outlier_flat`, shape (M,), from the threshold section):
#
# 1. compute the AUROC of the **negative** ERE, $-\text{ERE}$ (a detector that flags the most *confident*
#    heatmaps), with `roc_curve_for`; it should be exactly $1 - \text{AUROC}_\text{ERE}$ (why do ties not
#    break this?);
# 2. draw one random number per pair, independent of the data
#    (`np.random.default_rng(seed).random(...)`), and compute the AUROC of these random scores. The check
#    says how many standard errors it lies from 0.5.
#
# Answer with `answer_05_3 = {"auroc_negative_ere": ..., "random_scores": ..., "auroc_random": ...}`.

# %% tags=["exercise"]
answer_05_3 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    random_scores = np.random.default_rng(seed).random(ere.size)
    answer_05_3 = {
        "auroc_negative_ere": roc_curve_for(-ere, outlier_flat).auroc,
        "random_scores": random_scores,
        "auroc_random": roc_curve_for(random_scores, outlier_flat).auroc,
    }

# %% [markdown]
# Check your answer:

# %%
exercise_results["05_3"] = check.exercise_05_3(answer_05_3, ere, outlier_flat)

# %% [markdown]
# ### Exercise 05.4 · Predict, then check: a threshold chosen from more outliers
#
# The calibration split gave $t^\ast$ from only the outliers counted in the threshold section, and its
# TPR on the test split was printed there; compare it with the target `target_tpr` (a parameter of this
# notebook, 0.5 by default). A remedy is to choose the
# threshold on **more held-out images**: the cell below pools the calibration split with `test2` (images
# that training never saw, never reported here) into `pool_ere_mm` and `pool_errors_mm` (shape
# (N_pool, K), mm).
#
# **First predict**, without computing: on the test split, the pooled threshold's TPR will be
#
# - **(a)** closer to `target_tpr` than the calibration threshold's;
# - **(b)** farther from it;
# - **(c)** the same.
#
# Then choose the pooled threshold with `choose_ere_threshold(pool_ere_mm, pool_errors_mm, outlier_mm,
# target_tpr)` and apply it to the present test pairs (`predictions.ere_mm`, `errors`; flag
# $\text{ERE} \ge t$, outlier when the error exceeds `outlier_mm`). Answer with
# `answer_05_4 = {"verdict": ..., "threshold_mm": ..., "num_outliers": ..., "test_tpr": ..., "test_fpr": ...}`
# (`num_outliers`: the pool's). The check tests the letter first, and explains why the test TPR can miss
# the target even with a good threshold.

# %%
pool_names = ["calibration"] + (["test2"] if run.data.splits.get("test2") else [])
pool_sets = [calibration_set] + [run.dataset(name) for name in pool_names[1:]]
pool_predictions = [calibration_predictions] + [
    predict(run.model, extra, torch_device, temperatures=temperatures, ere_cutoff=run.config.eval.ere_cutoff)
    for extra in pool_sets[1:]]
pool_ere_mm = np.concatenate([p.ere_mm for p in pool_predictions])  # (N_pool, K)
pool_errors_mm = np.concatenate([radial_error_mm(p.pred_px, d.target_px, d.pixel_size_mm)
                                 for p, d in zip(pool_predictions, pool_sets)])
print(f"pool: {' + '.join(pool_names)} = {pool_ere_mm.shape[0]} images")

# %% [markdown]
# Your answer (the letter you predicted before computing, then the numbers):

# %% tags=["exercise"]
answer_05_4 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    pooled = choose_ere_threshold(pool_ere_mm, pool_errors_mm, outlier_mm, target_tpr)
    pooled_flagged = predictions.ere_mm[present] >= pooled["ere_threshold_mm"]
    pooled_outlier = errors[present] > outlier_mm
    pooled_tpr = float(pooled_flagged[pooled_outlier].mean()) if pooled_outlier.any() else float("nan")
    pooled_fpr = float(pooled_flagged[~pooled_outlier].mean()) if (~pooled_outlier).any() else float("nan")
    gap_pooled, gap_plain = abs(pooled_tpr - target_tpr), abs(tpr_at - target_tpr)
    letter = "c" if abs(gap_pooled - gap_plain) <= 1e-9 else ("a" if gap_pooled < gap_plain else "b")
    closeness = {"a": "closer to", "b": "farther from", "c": "as far from"}[letter]
    answer_05_4 = {"verdict": letter, "threshold_mm": pooled["ere_threshold_mm"],
                   "num_outliers": pooled["num_outliers"], "test_tpr": pooled_tpr, "test_fpr": pooled_fpr}
    print(f"pooled: {pooled['ere_threshold_mm']:.2f} mm from {pooled['num_outliers']} outliers -> test TPR "
          f"{pooled_tpr:.3f}, FPR {pooled_fpr:.3f}; calibration only: {ere_threshold:.2f} mm from "
          f"{chosen['num_outliers']} -> TPR {tpr_at:.3f}, FPR {fpr_at:.3f}; the pooled TPR is {closeness} the "
          f"target {target_tpr:g}")

# %% [markdown]
# Check your answer:

# %%
exercise_results["05_4"] = check.exercise_05_4(answer_05_4, pool_ere_mm, pool_errors_mm, predictions.ere_mm, errors,
                                               ere_threshold, outlier_mm, target_tpr)

# %% [markdown]
# The notebook's key numbers go to `RUN_DIR/05_uncertainty_roc/metrics.json` for the test suite
# (`chh_lib/summaries/notebook_05.py` lists them):

# %%
written = write_summary("05", globals())

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

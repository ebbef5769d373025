"""Source of notebooks/01_data_exploration.ipynb (build with: python notebooks/build.py 01)."""

# %% [markdown]
# # 01 · Data exploration: cephalograms, landmarks and annotator disagreement
#
# This is the first notebook of the *chh-kit* series on **Contour-Hugging Heatmaps for
# Landmark Detection** (McCouat & Voiculescu, CVPR 2022). Before training anything we look
# at the data.
#
# **How long:** 12 s under the `smoke` profile in the smoke series on 2 cores (`chh notebooks --profile
# smoke`, 64 s for the six, 2026-12-06), and 28 s
# under `cpu` in the publishing run recorded in `benchmarks/README.md` (2 cores, nothing else running;
# writing the 400-image phantom, which that run did first, took 12 s of them); `paper` reads the same
# phantom and should take about as long as `cpu` (an estimate). No model is trained here.
#
# **Learning goals**
#
# 1. Know the 19 ISBI 2015 cephalometric landmarks, their abbreviations and where each sits.
# 2. Measure how much two annotators disagree per landmark (in mm), and how much more **along** the
#    contour a landmark sits on than **across** it: the ambiguity that contour-hugging heatmaps model.
# 3. Know what that measurement means on the kit's synthetic phantom (the generator builds the
#    elongation in, so finding it checks the generator) and what to test on real data.
# 4. Find the hard cases and preview the data augmentation used in training.
#
# The notebook runs on the kit's synthetic **phantom** by default (generated on first use); point
# `data_dir` at the real ISBI 2015 data, or at your own labelme/CSV data, and it works the same way
# (see "Run it on ISBI 2015 or your own data" near the end). It ends with a recap, common pitfalls, four
# exercises with checked answers (the last one a prediction to check), and references.

# %% [markdown]
# ## Imports
#
# Everything the notebook needs comes from the kit's package `chh_lib`; the helpers in
# `chh_lib.workflow` make the notebook runnable on its own (they create the data when it is missing).

# %%
import numpy as np
import pandas as pd
from IPython.display import display
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse

from chh_lib import exercises as check
from chh_lib.config import profile_config
from chh_lib.data.dataset import resize_geometry
from chh_lib.data.disagreement import (
    along_across_sd,
    annotator_differences_mm,
    principal_axes,
)
from chh_lib.data.formats import image_size_of, read_image, read_landmark_data
from chh_lib.data.phantom import CONTOUR_LANDMARKS, annotator_model_sd_mm
from chh_lib.data.phantom_dataset import phantom_tangents_mm
from chh_lib.engine import make_training_dataset
from chh_lib.evaluation import default_cache_dir
from chh_lib.landmarks import ISBI_2015, ISBI_2015_PIXEL_SIZE_MM
from chh_lib.plots import augmentation_preview
from chh_lib.summaries import write_summary
from chh_lib.workflow import (
    ensure_phantom,
    notebook_paths,
    notebook_profile,
    save_figure,
)

# %% [markdown]
# ## Parameters
#
# `profile` is `smoke` (tiny phantom, for tests), `cpu` (the default) or `paper`; it is read from
# the environment variable `CHH_PROFILE` when set. Relative paths are resolved against the
# repository root, whatever the current directory; `None` selects the profile's default
# (`data/phantom` or `data/phantom_smoke`, and `runs/notebooks/<profile>`). Papermill overrides
# these values when it runs the series (`chh_lib.notebooks.run_notebooks`). `solutions = True` runs
# the hidden solutions of the exercises at the end (the test suite does; a student leaves it `False`).

# %% tags=["parameters"]
profile = notebook_profile()  # CHH_PROFILE, else "cpu"
data_dir = None  # None: the profile's phantom; or e.g. "data/isbi2015"
run_dir = None  # None: runs/notebooks/<profile>
seed = 0
device = "auto"
solutions = False  # True: run the exercises' hidden solutions

# %% [markdown]
# ## The data set
#
# `ensure_phantom` writes the phantom when `data_dir` holds no data set yet and does nothing
# otherwise. `read_landmark_data` reads any supported format through its `dataset.yaml`. The
# phantom uses the ISBI 2015 layout, with the `clean` protocol: 20 % of the training images are held
# out as a `calibration` split, so `test` and `test2` are never used for fitting anything.

# %%
paths = notebook_paths("01_data_exploration", profile, data_dir, run_dir)
ensure_phantom(paths.data_dir, profile)
data = read_landmark_data(paths.data_dir)
landmarks = data.landmarks
K = landmarks.num_landmarks
split_counts = {name: len(records) for name, records in data.splits.items()}
by_id = {r.image_id: r for records_of_split in data.splits.values() for r in records_of_split}
records = list(by_id.values())  # every image once (under the paper protocol some splits overlap)
pixel_sizes = sorted({tuple(round(v, 4) for v in r.pixel_size_mm) for r in records})
image_sizes = sorted({image_size_of(r.image_path) for r in records[:20]})
print(f"data set {paths.show(paths.data_dir)}: format {data.format}, protocol {data.protocol}, "
      f"{K} landmarks, annotators {', '.join(data.annotators)}")
print(f"image size (first 20 images): {', '.join(f'{w} x {h} px' for w, h in image_sizes)}; pixel size: "
      f"{', '.join(f'{x:g} x {y:g} mm' for x, y in pixel_sizes[:3])}{' ...' if len(pixel_sizes) > 3 else ''}")
display(pd.DataFrame({"images": split_counts}).T)

# %% [markdown]
# ## The 19 ISBI 2015 landmarks
#
# Heatmap channel $k$ of the network is landmark $k$ in this order. A landmark is a *contour
# landmark* when its definition places it on an edge (the lowest point of a border, the deepest
# point of a concavity, ...) rather than at an isolated point: only sella, the centre of the pituitary
# fossa, is not. On a contour, the definition fixes the position *across* the edge precisely, but
# *along* it only loosely.

# %%
# NBVAL_CHECK_OUTPUT
where = {
    "S": "centre of the sella turcica (pituitary fossa)",
    "N": "most anterior point of the frontonasal suture",
    "Or": "lowest point of the inferior orbital margin",
    "Po": "highest point of the external auditory meatus",
    "A": "deepest point of the anterior concavity of the maxilla",
    "B": "deepest point of the anterior concavity of the mandible",
    "Pog": "most anterior point of the bony chin",
    "Me": "lowest point of the mandibular symphysis",
    "Gn": "midway between pogonion and menton on the chin",
    "Go": "most posterior-inferior point of the mandibular angle",
    "LIT": "incisal tip of the lower central incisor",
    "UIT": "incisal tip of the upper central incisor",
    "UL": "most anterior point of the upper lip",
    "LL": "most anterior point of the lower lip",
    "Sn": "junction of the nasal septum and the upper lip",
    "PogS": "most anterior point of the soft-tissue chin",
    "PNS": "tip of the posterior nasal spine",
    "ANS": "tip of the anterior nasal spine",
    "Ar": "crossing of the ramus and the cranial base outlines",
}
isbi_table = pd.DataFrame({
    "abbr.": ISBI_2015.abbreviations,
    "landmark": ISBI_2015.names,
    "contour": ["yes" if c else "no" for c in CONTOUR_LANDMARKS],
    "where it sits": [where[a] for a in ISBI_2015.abbreviations],
}, index=pd.RangeIndex(19, name="channel"))
print(isbi_table.to_string())
print(f"\n{sum(CONTOUR_LANDMARKS)} of {len(CONTOUR_LANDMARKS)} landmarks are contour landmarks")

# %% [markdown]
# Which landmarks of *this* data set count as contour landmarks: the phantom's `dataset.yaml`
# lists them; for ISBI data the definitions above apply; for other data sets we treat every
# landmark as a possible contour landmark.

# %%
if "contour_landmarks" in data.descriptor:
    is_contour = np.array(data.descriptor["contour_landmarks"], dtype=bool)
elif landmarks.names == ISBI_2015.names:
    is_contour = np.array(CONTOUR_LANDMARKS, dtype=bool)
else:
    is_contour = np.ones(K, dtype=bool)
print(f"{int(is_contour.sum())} of {K} landmarks of this data set are treated as contour landmarks")

# %% [markdown]
# ## A few images with their landmarks
#
# The ground truth of each landmark is the mean of the annotators. The phantom images are lateral
# cephalograms with the face to the right; axes are image pixels (their size in mm is printed above).

# %%
def draw_case(axes, record, title):
    """One image with the mean annotation of every landmark, labelled by abbreviation.

    Each label takes the first of six places around its point that keeps clear of the labels placed
    before it and of the other points (else the clearest one), so that neighbours (incisor tips,
    menton and gnathion) stay readable.
    """
    image = read_image(record.image_path)
    truth = record.annotations_px.mean(axis=0)
    axes.imshow(image, cmap="gray")
    axes.scatter(truth[:, 0], truth[:, 1], s=14, c="tab:red", edgecolors="white", linewidths=0.4)
    figure_width_pt = axes.figure.get_figwidth() * 72 * axes.get_position().width
    px_per_pt = image.shape[1] / figure_width_pt  # image pixels per typographic point, roughly
    places = [(4, 0), (-4, 0), (4, 8), (-4, 8), (4, -8), (-4, -8)]  # label offsets in points
    placed = []  # label centres in image pixels
    present = np.isfinite(truth).all(axis=1)
    for k, abbreviation in enumerate(landmarks.abbreviations):
        if not present[k]:
            continue
        others = truth[present & (np.arange(K) != k)]
        half_width = 2.6 * len(abbreviation)  # points
        centres = [truth[k] + px_per_pt * np.array([dx + np.sign(dx) * half_width, -dy]) for dx, dy in places]
        clearance = [min(np.hypot(*(np.vstack([others, *placed]) - c).T), default=np.inf) for c in centres]
        clear = [i for i, c in enumerate(clearance) if c > 9 * px_per_pt]
        best = clear[0] if clear else int(np.argmax(clearance))
        dx, dy = places[best]
        placed.append(centres[best])
        axes.annotate(abbreviation, truth[k], xytext=(dx, dy), textcoords="offset points",
                      ha="left" if dx > 0 else "right", va="center", color="yellow", fontsize=8,
                      bbox={"boxstyle": "round,pad=0.1", "facecolor": "black", "alpha": 0.45, "linewidth": 0})
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("x (px)")
    axes.set_ylabel("y (px)")


train_records = data.split("train")
figure = Figure(figsize=(11, 4.8), layout="constrained")
for panel, record in enumerate(train_records[:3]):
    draw_case(figure.add_subplot(1, 3, panel + 1), record, f"{record.image_id} (train)")
save_figure(figure, paths.output_dir / "examples.png")

# %% [markdown]
# ## What the phantom builds in, and what should carry over to real data
#
# The phantom's two annotators are **simulated**: `_annotations_mm` in `chh_lib/data/phantom.py`
# moves each true landmark by an offset drawn along the local contour tangent $\mathbf{t}$ and across
# it (the normal $\mathbf{n}$),
#
# $$\mathbf{a}^{(j)} = \mathbf{x} + c_j \bigl(\sigma_{\parallel,k}\, z_1 + b_{jk}\bigr)\,\mathbf{t}
#   + c_j\, \sigma_{\perp}\, z_2\, \mathbf{n}, \qquad z_1, z_2 \sim \mathcal{N}(0, 1) \text{ clipped to } \pm 3,$$
#
# with the per-landmark SD along the contour $\sigma_{\parallel,k}$ = `_SIGMA_ALONG_MM`, one SD across
# it for all landmarks $\sigma_\perp$ = `_SIGMA_ACROSS_MM` (smaller than every $\sigma_{\parallel,k}$), the
# annotators' scales $c_j$ = `_ANNOTATOR_NOISE_SCALE` (the junior's larger than the senior's) and a
# constant junior bias along the contour $b_{jk}$ = `_JUNIOR_BIAS_ALONG_MM` (zero for the senior); sella
# gets an isotropic offset (`_SIGMA_POINT_MM`). All are module constants of `chh_lib/data/phantom.py`. The
# elongation of the disagreement along the contours is therefore an **input** of the phantom: seeing
# it below is a check that the generator and the measurement do what they claim, not a discovery
# about anatomy.
#
# What should carry over to ISBI 2015 is the mechanism: a definition such as "the deepest point of a
# concavity" pins a point down across the edge but only loosely along it, so real annotators should
# also disagree more along an edge than across it. For ISBI 2015 that is a **claim to test** on the real
# annotations (`chh data check data/isbi2015` prints the ratio defined below for every landmark, and
# this notebook run with `data_dir` pointing at the data draws the ellipses on the images), not a given.
#
# The generator's parameters imply an SD of the inter-annotator difference
# $\mathbf{a}^{(1)} - \mathbf{a}^{(2)}$ along and across the contour
# (`chh_lib.data.phantom.annotator_model_sd_mm`); the bias is constant, so it adds nothing to an SD:

# %%
is_phantom = (data.descriptor.get("generator") or {}).get("name") == "chh phantom"
model_sd_along_mm, model_sd_across_mm = annotator_model_sd_mm()
if is_phantom:
    model_table = pd.DataFrame({
        "SD along (mm)": model_sd_along_mm, "SD across (mm)": model_sd_across_mm,
        "ratio": np.where(is_contour, model_sd_along_mm / model_sd_across_mm, np.nan),
    }, index=pd.Index(ISBI_2015.abbreviations, name="landmark"))
    display(model_table.round(2).T)
else:
    print("not a phantom: its annotators are real, and nothing about their disagreement is known in advance")

# %% [markdown]
# ## Annotator disagreement
#
# For image $n$ and landmark $k$ let
# $\mathbf{d}_{nk} = (\mathbf{a}^{(1)}_{nk} - \mathbf{a}^{(2)}_{nk}) \odot \mathbf{s}_n$ be the difference
# between the two annotators' positions in mm (pixel offsets times the pixel size $\mathbf{s}_n$), and
# $\mathbf{t}_{nk}$ the unit tangent of the contour at the landmark, $\mathbf{n}_{nk} = (-t_y, t_x)$ its
# normal. The kit's **along/across ratio** (one definition, in `chh_lib.data.disagreement.along_across_sd`,
# used by `chh phantom`, `chh data check` and this notebook) is the ratio of the standard deviations
# of the difference projected on the tangent and on the normal:
#
# $$\rho_k = \frac{\operatorname{SD}_n\bigl(\mathbf{d}_{nk} \cdot \mathbf{t}_{nk}\bigr)}
#                 {\operatorname{SD}_n\bigl(\mathbf{d}_{nk} \cdot \mathbf{n}_{nk}\bigr)}
#   \qquad \text{(sample SDs over the images where both annotators marked } k\text{)}.$$
#
# An SD, not an RMS: a constant offset between the annotators (a bias) does not count as spread.
# On the phantom the tangents come from the generator (`phantom_tangents_mm` recomputes them from the
# seed in `dataset.yaml`; one per image, since the anatomy and the pose vary). Real data carries no
# contours; there the best one can do from the annotations alone is one fixed direction per landmark,
# the **principal axis** of the differences. With the covariance
#
# $$\Sigma_k = \frac{1}{N-1} \sum_n (\mathbf{d}_{nk} - \bar{\mathbf{d}}_k)(\mathbf{d}_{nk} - \bar{\mathbf{d}}_k)^\top
#   = \lambda_1 \mathbf{u}_1 \mathbf{u}_1^\top + \lambda_2 \mathbf{u}_2 \mathbf{u}_2^\top, \quad \lambda_1 \ge \lambda_2,$$
#
# taking $\mathbf{t}_{nk} = \mathbf{u}_1$ for every image gives the **pooled ratio**
# $\sqrt{\lambda_1 / \lambda_2}$ (`along_across_sd(difference_mm)` without tangents). The mean distance
# is $\frac{1}{N}\sum_n \lVert \mathbf{d}_{nk} \rVert$.

# %%
difference_mm = annotator_differences_mm(records)  # (N, K, 2) mm, first minus second annotator
generator_tangents = phantom_tangents_mm(data, records)  # (N, K, 2), or None for real data
tangent_source = "phantom generator" if generator_tangents is not None else "principal axis"
along_across = along_across_sd(difference_mm, generator_tangents)
pooled = along_across_sd(difference_mm)  # tangent = principal axis u1 of each landmark
distance_mm = np.linalg.norm(difference_mm, axis=-1)  # (N, K)
disagreement = pd.DataFrame({
    "mean distance (mm)": np.nanmean(distance_mm, axis=0),
    "SD along (mm)": along_across.sd_along_mm,
    "SD across (mm)": along_across.sd_across_mm,
    "along/across": along_across.ratio,
    "pooled ratio": pooled.ratio,
    "contour": is_contour,
}, index=pd.Index(landmarks.abbreviations, name="landmark"))
if is_phantom:
    disagreement.insert(4, "generator ratio", model_table["ratio"].to_numpy())
print(f"{len(records)} images; tangents from the {tangent_source}")
display(disagreement.round(2))

# %% [markdown]
# How well the measurement recovers the generator (on the phantom), and how the pooled ratio compares.
# The sample SD of $N$ normal values has a relative standard error of about $1/\sqrt{2(N-1)}$, so a
# ratio of two independent SDs is uncertain by about $1/\sqrt{N-1}$. The pooled ratio treats the tangent
# as one fixed direction, but the contour turns from image to image (anatomy and pose vary), so part
# of the along-contour spread leaks into the fixed "across" direction and the pooled ratio drops. An
# opposite pull exists too, since the fitted axis is the one that makes the sample look most elongated;
# it matters only with few images (e.g. under the `smoke` profile). The last line below, the median of
# pooled over along/across ratio, says which pull wins here: below 1, the leak. The spread of the tangent's direction is the circular SD of its axis
# angle $\theta$ (an axis has no sign, hence the doubled angle):
# $\tfrac{1}{2}\sqrt{-2 \ln \lvert \overline{e^{2i\theta}} \rvert}$.

# %%
contour_rows = disagreement[disagreement["contour"] & np.isfinite(disagreement["along/across"])]
ratio_standard_error = 1 / np.sqrt(max(len(records) - 1, 1))
exercise_k = landmarks.index("ANS") if "ANS" in landmarks.abbreviations else int(
    np.nanargmax(np.where(is_contour, pooled.ratio, np.nan)))
if generator_tangents is not None:
    relative_gap = (contour_rows["along/across"] / contour_rows["generator ratio"] - 1).abs()
    print(f"measured / generator ratio - 1 over the {len(contour_rows)} contour landmarks: median "
          f"{relative_gap.median():.1%}, largest {relative_gap.max():.1%} ({relative_gap.idxmax()}); "
          f"expected sampling error about {ratio_standard_error:.0%} for {len(records)} images")
    angle = np.arctan2(generator_tangents[..., 1], generator_tangents[..., 0])  # (N, K)
    resultant = np.abs(np.mean(np.exp(2j * angle), axis=0))
    with np.errstate(divide="ignore"):
        tangent_spread_deg = np.degrees(0.5 * np.sqrt(-2 * np.log(np.clip(resultant, 1e-12, 1.0))))
    tangent_spread_deg[~is_contour] = np.nan
    k = exercise_k
    print(f"{landmarks.abbreviations[k]}: along/across {along_across.ratio[k]:.2f} "
          f"(generator {model_table['ratio'].iloc[k]:.2f}), pooled {pooled.ratio[k]:.2f}; its tangent's "
          f"direction varies by {tangent_spread_deg[k]:.1f} degrees (circular SD)")
    print(f"pooled / along-across ratio, median over the contour landmarks: "
          f"{np.nanmedian(pooled.ratio[is_contour] / along_across.ratio[is_contour]):.2f}")
else:
    print(f"no contours known: the along/across ratio is the pooled one "
          f"(sampling error about {ratio_standard_error:.0%})")

# %% [markdown]
# The figure shows, for every landmark, the annotator differences $\mathbf{d}_{nk}$ (one dot per
# image) and their **2-sigma ellipse** (semi-axes $2\sqrt{\lambda_1}$ and $2\sqrt{\lambda_2}$ along
# $\mathbf{u}_1$ and $\mathbf{u}_2$), on the same scale for all panels; each title gives the along/across
# ratio $\rho_k$ and, in brackets, the pooled ratio that the ellipse shows. Elongated ellipses belong to
# contour landmarks; sella's (the only point landmark) is round. The image $y$ axis points down.

# %%
def covariance_ellipse(d, **style):
    """The 2-sigma ellipse (a matplotlib patch, in mm) of the present rows of d (N, 2)."""
    d = d[np.isfinite(d).all(axis=1)]
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(d.T))  # ascending
    minor, major = np.sqrt(np.maximum(eigenvalues, 1e-12))
    angle = np.degrees(np.arctan2(eigenvectors[1, -1], eigenvectors[0, -1]))
    return d.mean(axis=0), 4 * major, 4 * minor, angle


limit = float(np.ceil(np.nanpercentile(np.abs(difference_mm), 99.5)))
columns = 5
rows_of_panels = int(np.ceil(K / columns))
figure = Figure(figsize=(2.4 * columns, 2.45 * rows_of_panels), layout="constrained")
for k in range(K):
    axes = figure.add_subplot(rows_of_panels, columns, k + 1)
    d = difference_mm[:, k]
    shown = d[:: max(1, len(d) // 300)]
    axes.scatter(shown[:, 0], shown[:, 1], s=3, alpha=0.35, color="tab:blue")
    centre, width, height, angle = covariance_ellipse(d)
    axes.add_patch(Ellipse(centre, width, height, angle=angle, fill=False, color="tab:red", linewidth=1.6))
    axes.set_xlim(-limit, limit)
    axes.set_ylim(limit, -limit)
    axes.set_aspect("equal")
    ratio_text = "point" if np.isnan(along_across.ratio[k]) else f"ρ {along_across.ratio[k]:.1f}"
    axes.set_title(f"{landmarks.abbreviations[k]}: {ratio_text} (pooled {pooled.ratio[k]:.1f})", fontsize=9)
    axes.tick_params(labelsize=8)
    if k % columns == 0:
        axes.set_ylabel("Δy (mm)", fontsize=9)
    if k >= K - columns:
        axes.set_xlabel("Δx (mm)", fontsize=9)
figure.legend(handles=[Line2D([], [], marker="o", linestyle="", color="tab:blue", alpha=0.5, label="one image"),
                       Line2D([], [], color="tab:red", label="2-sigma ellipse (pooled)")],
              loc="outside lower center", ncol=2, fontsize=9)
save_figure(figure, paths.output_dir / "annotator_ellipses.png")

# %% [markdown]
# The same ellipses placed on an image, enlarged three times so that they are visible at the scale
# of the skull: on the phantom each one lies along the edge its landmark sits on. On real data, this is
# the figure that shows whether the long axes follow the edges.

# %%
record = train_records[0]
image = read_image(record.image_path)
truth = record.annotations_px.mean(axis=0)
scale_px = 3.0 / np.asarray(record.pixel_size_mm)  # three times the mm extent, in pixels
figure = Figure(figsize=(5.6, 7.0), layout="constrained")
axes = figure.add_subplot()
axes.imshow(image, cmap="gray")
for k in range(K):
    if np.isfinite(truth[k]).all():
        _, width, height, angle = covariance_ellipse(difference_mm[:, k])
        axes.add_patch(Ellipse(truth[k], width * scale_px[0], height * scale_px[1], angle=angle, fill=False,
                               color="tab:red" if is_contour[k] else "tab:cyan", linewidth=1.2))
axes.set_title(f"2-sigma annotator ellipses (x3) on {record.image_id}", fontsize=9)
axes.set_xlabel("x (px)")
axes.set_ylabel("y (px)")
figure.legend(handles=[Line2D([], [], color="tab:red", label="contour landmark"),
                       Line2D([], [], color="tab:cyan", label="point landmark")],
              loc="outside lower center", ncol=2, fontsize=9)
save_figure(figure, paths.output_dir / "annotator_ellipses_on_image.png")

# %% [markdown]
# Summary of the disagreement (all numbers computed above):

# %%
contour_ratios = disagreement.loc[disagreement["contour"], "along/across"].dropna()
mean_distance_mm = float(np.nanmean(distance_mm))
print(f"mean annotator distance over all landmarks and images: {mean_distance_mm:.2f} mm")
print(f"along/across ratio of the contour landmarks ({tangent_source}): min {contour_ratios.min():.2f} "
      f"({contour_ratios.idxmin()}), median {contour_ratios.median():.2f}, max {contour_ratios.max():.2f} "
      f"({contour_ratios.idxmax()})")
print(f"largest mean distance: {disagreement['mean distance (mm)'].idxmax()} "
      f"({disagreement['mean distance (mm)'].max():.2f} mm)")

# %% [markdown]
# ## Hard cases
#
# A phantom lists its *hard* images in `dataset.yaml` (the fraction is the generator's `hard_fraction`):
# low contrast, occluding objects or cropped anatomy (each annotation file ends with a hard flag and a
# bit mask of the kinds: 1 low contrast, 2 occluder, 4 cropped). For other data sets we show the images
# on which the annotators disagree most.

# %%
kind_bits = {1: "low contrast", 2: "occluder", 4: "cropped"}
hard_ids = [i for i in data.descriptor.get("hard_cases", []) if i in by_id]


def hard_kinds(image_id):
    """Kinds of a phantom hard case, from the last line of its first annotator's file."""
    stem = image_id.split("/")[1]
    lines = (paths.data_dir / "AnnotationsByMD" / data.annotators[0] / f"{stem}.txt").read_text().split()
    mask = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    return ", ".join(name for bit, name in kind_bits.items() if mask & bit) or "-"


if hard_ids:
    chosen, seen = [], set()
    for image_id in hard_ids:  # prefer one case of each kind
        kinds = hard_kinds(image_id)
        if kinds not in seen:
            chosen.append((image_id, kinds))
            seen.add(kinds)
    chosen = (chosen + [(i, hard_kinds(i)) for i in hard_ids if i not in dict(chosen)])[:3]
    print(f"{len(hard_ids)} hard cases of {len(records)} images ({len(hard_ids) / len(records):.0%})")
else:
    per_image = np.nanmean(distance_mm, axis=1)
    chosen = [(records[i].image_id, f"annotator distance {per_image[i]:.2f} mm") for i in np.argsort(-per_image)[:3]]
    print("no hard cases listed: showing the images with the largest annotator disagreement")
figure = Figure(figsize=(11, 4.8), layout="constrained")
for panel, (image_id, kinds) in enumerate(chosen):
    draw_case(figure.add_subplot(1, len(chosen), panel + 1), by_id[image_id], f"{image_id}: {kinds}")
save_figure(figure, paths.output_dir / "hard_cases.png")

# %% [markdown]
# ## The augmentation pipeline
#
# Training uses the paper's augmentation (`chh_lib.data.augment`): a random shift, scale and
# rotation, intensity multiplication, gamma and an elastic deformation, with the landmarks moved
# through the same transformation. The first panel is the resized image without augmentation; each
# other panel shows the draws of one epoch, at the input size printed below (the `cpu` profile's for
# `smoke` and `cpu`, the `paper` profile's for `paper`).

# %%
preview_config = profile_config("paper" if profile == "paper" else "cpu")
preview_config.augment.enabled = True
print(f"network input: {preview_config.data.image_size[0]} x {preview_config.data.image_size[1]} px")
preview_set = make_training_dataset(preview_config, train_records[:1], default_cache_dir(paths.data_dir, paths.run_dir))
figure = augmentation_preview(preview_set, index=0, num_samples=6, first_seed=seed)
save_figure(figure, paths.output_dir / "augmentation_preview.png")

# %% [markdown]
# ## Run it on ISBI 2015 or your own data
#
# 1. **Get the data.** The kit never ships the ISBI 2015 images; obtain them from the challenge's
#    organisers (Wang et al. 2016) and unpack them into `data/isbi2015/` in the layout that
#    `data/README.md` shows (`RawImage/TrainingData`, `AnnotationsByMD/400_senior`, ...). ISBI data need
#    no descriptor; for your own data write a `dataset.yaml` next to the images (format `labelme` or
#    `csv`, landmark names, pixel size, annotator folders, splits: see `data/README.md`).
# 2. **Check it** without training: `chh data check data/isbi2015` lists every problem with its file
#    name, the images per split, and per landmark the annotators' mean distance and the along/across
#    ratio (along the principal axis, since real data has no contours). `--protocol clean` (the default)
#    holds out 20 % of the training images as a `calibration` split and leaves `test` and `test2`
#    untouched; `--protocol paper` reproduces the authors' use (calibration and model selection on the
#    two halves of Test1Data, which is also the test split). `chh train` takes the same option; a
#    `protocol:` entry in `dataset.yaml` sets it for the notebooks.
# 3. **Run this notebook on it**: set the parameter `data_dir = "data/isbi2015"` (or your folder) in the
#    parameters cell, or pass `-p data_dir data/isbi2015` to papermill. Nothing else changes: this
#    notebook looks at every image once, whatever the split, and skips the phantom-only parts (the
#    generator's table and ratios, the hard-case kinds).

# %% [markdown]
# ## Recap
#
# - The ISBI 2015 set has 19 landmarks; all but sella are defined on a contour, where a definition fixes
#   the position across the edge but only loosely along it.
# - The kit measures annotator disagreement per landmark in mm: the mean distance, and the
#   **along/across ratio** $\rho_k$, the SD of the inter-annotator difference along the contour tangent
#   over the SD across it (`chh_lib.data.disagreement.along_across_sd`, the one definition behind
#   `chh phantom`, `chh data check` and this notebook).
# - On the phantom the elongation is built in (`_SIGMA_ALONG_MM` against `_SIGMA_ACROSS_MM` in
#   `chh_lib/data/phantom.py`): measuring it checks the generator, up to a sampling error of about
#   $1/\sqrt{N-1}$.
# - Without contours (real data) the tangent is estimated as the principal axis of the differences; that
#   **pooled ratio** $\sqrt{\lambda_1/\lambda_2}$ can understate the elongation of a landmark whose contour
#   turns between images, and overstate it when there are few images.
# - On ISBI 2015, "annotators disagree more along an edge than across it" is a claim to test with
#   `chh data check` and the ellipse figures, not an assumption.
# - Hard cases (low contrast, occluders, cropped anatomy) are listed in a phantom's `dataset.yaml`; the
#   augmentation moves the landmarks through the same transformation as the image.

# %% [markdown]
# > **Common pitfalls**
# >
# > - *Mixing pixels and millimetres.* Annotations are in pixels of the image they index; a distance in
# >   mm multiplies each axis by that image's pixel size (x and y may differ), before taking the norm.
# > - *Reading the phantom's elongation as a finding.* The generator builds it in; on ISBI 2015 the
# >   along/across ratio is a claim to test with `chh data check`, not a given.
# > - *An RMS where an SD is meant.* A constant offset between two annotators (a bias) is not spread;
# >   subtract the mean before measuring it.
# > - *Trusting one fixed axis for a turning contour.* The pooled ratio of the principal axis understates
# >   the elongation when the contour's direction varies between images (exercise 01.4).
# > - *Forgetting the resize.* The network sees padded, resized images: its pixels are larger than the
# >   original's, and a point moves by $(\mathbf{x} + 0.5) \odot \mathbf{s} - 0.5$ (exercise 01.3).
# > - *Letting the test split leak.* Under the `clean` protocol the calibration images are held out of
# >   training; `test` and `test2` are used for nothing but the final numbers.

# %% [markdown]
# ## Exercises
#
# Each exercise has three cells: **yours** (replace the `...`), a **hidden solution** (it runs only when
# the parameter `solutions` is `True`, so "Run All" never overwrites your answer), and a **check** that
# prints "not attempted yet", confirms a right answer, or raises an `ExerciseError` with a hint. The
# checks compute their own expected values from this notebook's data. `exercise_results` collects them.

# %%
exercise_results = {}  # exercise -> passed
annotations_px = np.stack([r.annotations_px for r in records])  # (N, A, K, 2) pixels
pixel_size_mm = np.array([r.pixel_size_mm for r in records])  # (N, 2) mm
tangent_mm = generator_tangents if generator_tangents is not None else np.broadcast_to(
    principal_axes(difference_mm), difference_mm.shape).copy()  # (N, K, 2)
print(f"annotations_px {annotations_px.shape}, pixel_size_mm {pixel_size_mm.shape}, difference_mm "
      f"{difference_mm.shape}, tangent_mm {tangent_mm.shape} ({tangent_source}); exercise landmark "
      f"exercise_k = {exercise_k} ({landmarks.names[exercise_k]})")

# %% [markdown]
# ### Exercise 01.1 · The annotators' mean distance per landmark, by hand
#
# From `annotations_px` (shape (N, A, K, 2), pixels; annotator 0 and 1 on axis 1; NaN = missing) and
# `pixel_size_mm` (shape (N, 2), the (x, y) pixel size of each image), compute for every landmark the
# mean over the images of the distance in mm between the two annotators,
# $\bar D_k = \frac{1}{N_k}\sum_n \lVert (\mathbf{a}^{(1)}_{nk} - \mathbf{a}^{(2)}_{nk}) \odot \mathbf{s}_n \rVert$,
# without `annotator_differences_mm`, and the abbreviation of the landmark where it is largest. Answer with
# `answer_01_1 = {"mean_distance_mm": array of K numbers, "largest": "abbreviation"}`.

# %% tags=["exercise"]
answer_01_1 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    offset_mm = (annotations_px[:, 0] - annotations_px[:, 1]) * pixel_size_mm[:, None, :]  # (N, K, 2)
    mean_distance = np.nanmean(np.linalg.norm(offset_mm, axis=-1), axis=0)  # (K,)
    answer_01_1 = {"mean_distance_mm": mean_distance,
                   "largest": landmarks.abbreviations[int(np.nanargmax(mean_distance))]}

# %% [markdown]
# Check your answer:

# %%
exercise_results["01_1"] = check.exercise_01_1(answer_01_1, annotations_px, pixel_size_mm, landmarks.abbreviations)

# %% [markdown]
# ### Exercise 01.2 · The along/across ratio of one landmark from its tangent
#
# For landmark `exercise_k` (printed above), project each image's difference `difference_mm[:, exercise_k]`
# (shape (N, 2), mm) on that image's contour tangent `tangent_mm[:, exercise_k]` (shape (N, 2); normalise
# it to unit length first) and on its normal $(-t_y, t_x)$, and compute the two sample SDs
# (`ddof=1`, over the images without NaN) and their ratio, without `along_across_sd`. Answer with
# `answer_01_2 = {"sd_along_mm": ..., "sd_across_mm": ..., "ratio": ...}`.

# %% tags=["exercise"]
answer_01_2 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    d = difference_mm[:, exercise_k]  # (N, 2)
    t = tangent_mm[:, exercise_k] / np.linalg.norm(tangent_mm[:, exercise_k], axis=-1, keepdims=True)
    n = np.stack([-t[:, 1], t[:, 0]], axis=-1)
    keep = np.isfinite(d).all(axis=1)
    sd_along = np.std(np.sum(d * t, axis=-1)[keep], ddof=1)
    sd_across = np.std(np.sum(d * n, axis=-1)[keep], ddof=1)
    answer_01_2 = {"sd_along_mm": sd_along, "sd_across_mm": sd_across, "ratio": sd_along / sd_across}

# %% [markdown]
# Check your answer:

# %%
exercise_results["01_2"] = check.exercise_01_2(answer_01_2, difference_mm, tangent_mm, exercise_k)

# %% [markdown]
# ### Exercise 01.3 · What a pixel is worth on the network's grid
#
# The network does not see the original images: each is padded with zeros on the right or at the bottom
# to the aspect ratio $W/H$ of the network input and then resized to $W \times H$ (see `data/README.md`).
# With $\mathbf{s} = (W / w_{\mathrm{pad}}, H / h_{\mathrm{pad}})$ the pixel size becomes
# $\text{pixel size} / \mathbf{s}$ and a point moves to $(\mathbf{x} + 0.5) \odot \mathbf{s} - 0.5$.
# An ISBI 2015 image is `isbi_size` = 1935 x 2400 px at `ISBI_2015_PIXEL_SIZE_MM`; this profile's network
# input is `network_size` (printed below). Compute the network's (x, y) pixel size in mm, and where the
# ISBI point `isbi_point_px` lands on the network grid, without `resize_geometry`. Answer with
# `answer_01_3 = {"pixel_size_mm": (s_x, s_y), "point_px": (x, y)}`.

# %%
isbi_size = (1935, 2400)
isbi_point_px = (1000.0, 1200.0)
network_size = profile_config(profile).data.image_size
phantom_geometry = resize_geometry(image_size_of(records[0].image_path), network_size)
print(f"network input ({profile}): {network_size[0]} x {network_size[1]} px; this data set's first image "
      f"{phantom_geometry.source_size[0]} x {phantom_geometry.source_size[1]} px at "
      f"{records[0].pixel_size_mm[0]:g} mm becomes "
      f"{records[0].pixel_size_mm[0] / phantom_geometry.scale[0]:.4g} mm per network pixel")

# %% [markdown]
# Your answer:

# %% tags=["exercise"]
answer_01_3 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    w, h = isbi_size
    W, H = network_size
    if w / h >= W / H:  # too wide: pad at the bottom
        padded = (w, max(h, int(np.ceil(w * H / W - 1e-9))))
    else:  # too tall: pad on the right
        padded = (max(w, int(np.ceil(h * W / H - 1e-9))), h)
    s = np.array([W / padded[0], H / padded[1]])
    answer_01_3 = {"pixel_size_mm": tuple(np.array(ISBI_2015_PIXEL_SIZE_MM) / s),
                   "point_px": tuple((np.array(isbi_point_px) + 0.5) * s - 0.5)}

# %% [markdown]
# Check your answer:

# %%
exercise_results["01_3"] = check.exercise_01_3(answer_01_3, isbi_size, ISBI_2015_PIXEL_SIZE_MM, network_size,
                                               isbi_point_px)

# %% [markdown]
# ### Exercise 01.4 · Predict, then check: the pooled ellipse, without knowing the contour
#
# On real data there is no tangent, and the best one can do is the fixed principal axis $\mathbf{u}_1$ of
# the differences. **Predict first**, before computing anything, from what this notebook printed about
# landmark `exercise_k` (how much its tangent's direction varies between images) and from the number of
# images: compared with your ratio along the tangents of exercise 01.2, the pooled ratio
# $\sqrt{\lambda_1/\lambda_2}$ of the same differences will be
#
# - **(a)** lower,
# - **(b)** higher,
# - **(c)** equal.
#
# Then check it: from the present rows of `difference_mm[:, exercise_k]` alone, compute the sample
# covariance $\Sigma$ (`np.cov`), the pooled ratio of its eigenvalues, and the direction of its long axis
# $\mathbf{u}_1$ as an angle in degrees from the $+x$ axis towards $+y$ (image rows, pointing down), in
# $[0, 180)$. Answer with `answer_01_4 = {"verdict": "a", "b" or "c", "pooled_ratio": ...,
# "major_axis_angle_deg": ...}`; the check says why the right letter is right.

# %% tags=["exercise"]
answer_01_4 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    d = difference_mm[:, exercise_k]
    d = d[np.isfinite(d).all(axis=1)]
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(d.T))  # ascending
    u1 = eigenvectors[:, 1]
    pooled_ratio_k = np.sqrt(eigenvalues[1] / eigenvalues[0])
    tangent_ratio_k = along_across_sd(difference_mm[:, exercise_k : exercise_k + 1],
                                      tangent_mm[:, exercise_k : exercise_k + 1]).ratio[0]
    if np.isclose(pooled_ratio_k, tangent_ratio_k, rtol=1e-6, atol=0):
        verdict_01_4 = "c"
    else:
        verdict_01_4 = "a" if pooled_ratio_k < tangent_ratio_k else "b"
    answer_01_4 = {"verdict": verdict_01_4, "pooled_ratio": pooled_ratio_k,
                   "major_axis_angle_deg": np.degrees(np.arctan2(u1[1], u1[0])) % 180}

# %% [markdown]
# Check your answer:

# %%
exercise_results["01_4"] = check.exercise_01_4(answer_01_4, difference_mm, tangent_mm, exercise_k)

# %% [markdown]
# The notebook's key numbers go to `RUN_DIR/01_data_exploration/metrics.json` (with the figures above);
# the test suite reads them.

# %%
written = write_summary("01", globals())

# %% [markdown]
# ## References
#
# - J. McCouat and I. Voiculescu. *Contour-Hugging Heatmaps for Landmark Detection.* CVPR 2022.
# - O. Ronneberger, P. Fischer and T. Brox. *U-Net: Convolutional Networks for Biomedical Image
#   Segmentation.* MICCAI 2015.
# - C.-W. Wang et al. *A benchmark for comparison of dental radiography analysis algorithms.* Medical Image
#   Analysis 31, 2016 (the ISBI 2015 cephalometric landmark challenge).

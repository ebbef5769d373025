"""Source of notebooks/01_data_exploration.ipynb (build with: python notebooks/build.py 01)."""

# %% [markdown]
# # 01 · Data exploration: cephalograms, landmarks and annotator disagreement
#
# This is the first notebook of the *chh-kit* series on **Contour-Hugging Heatmaps for
# Landmark Detection** (McCouat & Voiculescu, CVPR 2022). Before training anything we look
# at the data.
#
# **Learning goals**
#
# 1. Know the 19 ISBI 2015 cephalometric landmarks, their abbreviations and where each sits.
# 2. See that most landmarks are defined *on a contour* (an edge of bone or soft tissue) and
#    that two annotators disagree far more **along** such a contour than **across** it, which
#    is the ambiguity that contour-hugging heatmaps model.
# 3. Quantify the disagreement per landmark (in mm) and find the hard cases.
# 4. Preview the data augmentation used in training.
#
# The notebook runs on the kit's synthetic **phantom** by default (generated on first use); point
# `data_dir` at the real ISBI 2015 data, or at your own labelme/CSV data, and it works the same way.

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
from matplotlib.patches import Ellipse

from chh_lib.config import profile_config
from chh_lib.data.formats import read_image, read_landmark_data
from chh_lib.data.phantom import CONTOUR_LANDMARKS
from chh_lib.engine import make_training_dataset
from chh_lib.evaluation import default_cache_dir
from chh_lib.landmarks import ISBI_2015
from chh_lib.plots import augmentation_preview
from chh_lib.workflow import (
    ensure_phantom,
    notebook_paths,
    notebook_profile,
    save_figure,
    write_notebook_metrics,
)

# %% [markdown]
# ## Parameters
#
# `profile` is `smoke` (tiny phantom, for tests), `cpu` (the default) or `paper`; it is read from
# the environment variable `CHH_PROFILE` when set. Relative paths are resolved against the
# repository root, whatever the current directory; `None` selects the profile's default
# (`data/phantom` or `data/phantom_smoke`, and `runs/notebooks/<profile>`). Papermill overrides
# these values when it runs the series (`chh_lib.notebooks.run_notebooks`).

# %% tags=["parameters"]
profile = notebook_profile()  # CHH_PROFILE, else "cpu"
data_dir = None  # None: the profile's phantom
run_dir = None  # None: runs/notebooks/<profile>
seed = 0
device = "auto"

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
records = [r for name in ("train", "calibration", "test", "test2") for r in data.splits.get(name, [])]
print(f"data set {paths.show(paths.data_dir)}: format {data.format}, protocol {data.protocol}, "
      f"{K} landmarks, annotators {', '.join(data.annotators)}")
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
# cephalograms with the face to the right; axes are image pixels (the phantom's pixels are
# 0.3 mm at 640 x 800).

# %%
def draw_case(axes, record, title):
    """One image with the mean annotation of every landmark, labelled by abbreviation."""
    image = read_image(record.image_path)
    truth = record.annotations_px.mean(axis=0)
    axes.imshow(image, cmap="gray")
    axes.scatter(truth[:, 0], truth[:, 1], s=14, c="tab:red", edgecolors="white", linewidths=0.4)
    for (x, y), abbreviation in zip(truth, landmarks.abbreviations):
        if np.isfinite(x) and np.isfinite(y):
            axes.annotate(abbreviation, (x, y), xytext=(3, -3), textcoords="offset points",
                          color="yellow", fontsize=6.5)
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("x (px)")
    axes.set_ylabel("y (px)")


train_records = data.split("train")
figure = Figure(figsize=(11, 4.8), layout="constrained")
for panel, record in enumerate(train_records[:3]):
    draw_case(figure.add_subplot(1, 3, panel + 1), record, f"{record.image_id} (train)")
save_figure(figure, paths.output_dir / "examples.png")

# %% [markdown]
# ## Annotator disagreement
#
# For image $n$ and landmark $k$ let $\mathbf{d}_{nk} = \mathbf{a}^{(1)}_{nk} - \mathbf{a}^{(2)}_{nk}$
# be the difference between the two annotators' positions, in mm (pixel offsets times the pixel
# size). Its covariance over the images,
#
# $$\Sigma_k = \frac{1}{N-1} \sum_n (\mathbf{d}_{nk} - \bar{\mathbf{d}}_k)(\mathbf{d}_{nk} - \bar{\mathbf{d}}_k)^\top
#   = \lambda_1 \mathbf{u}_1 \mathbf{u}_1^\top + \lambda_2 \mathbf{u}_2 \mathbf{u}_2^\top, \quad \lambda_1 \ge \lambda_2,$$
#
# is drawn as its **2-sigma ellipse** (semi-axes $2\sqrt{\lambda_1}$ and $2\sqrt{\lambda_2}$ along the
# eigenvectors). For a contour landmark the long axis $\mathbf{u}_1$ follows the contour, so the
# ratio $\sqrt{\lambda_1 / \lambda_2}$ estimates the **along/across-contour ratio** from the
# annotations alone (no contour needed, so it works for real data too). The mean distance is
# $\frac{1}{N}\sum_n \lVert \mathbf{d}_{nk} \rVert$.

# %%
annotations = np.stack([r.annotations_px for r in records])  # (N, A, K, 2) pixels
pixel_mm = np.array([r.pixel_size_mm for r in records])[:, None, :]  # (N, 1, 2)
difference_mm = (annotations[:, 0] - annotations[:, 1]) * pixel_mm  # (N, K, 2)
rows = []
ellipses = []
for k in range(K):
    d = difference_mm[:, k]
    d = d[np.isfinite(d).all(axis=1)]
    covariance = np.cov(d.T)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    major, minor = np.sqrt(np.maximum(eigenvalues[::-1], 1e-12))
    angle = np.degrees(np.arctan2(eigenvectors[1, -1], eigenvectors[0, -1]))
    ellipses.append((d, d.mean(axis=0), major, minor, angle))
    rows.append({
        "abbr.": landmarks.abbreviations[k],
        "mean distance (mm)": np.linalg.norm(d, axis=1).mean(),
        "SD along (mm)": major,
        "SD across (mm)": minor,
        "along/across": major / minor,
        "mean offset (mm)": np.linalg.norm(d.mean(axis=0)),
        "contour": bool(is_contour[k]),
    })
disagreement = pd.DataFrame(rows, index=pd.Index(landmarks.names, name="landmark"))
display(disagreement.round(2))

# %% [markdown]
# The figure shows, for every landmark, the annotator differences $\mathbf{d}_{nk}$ (one dot per
# image) and their 2-sigma ellipse, on the same scale for all panels. Elongated ellipses belong to
# contour landmarks; sella's (the only point landmark) is round. The image $y$ axis points down.

# %%
limit = float(np.ceil(np.nanpercentile(np.abs(difference_mm), 99.5)))
columns = 5
rows_of_panels = int(np.ceil(K / columns))
figure = Figure(figsize=(2.3 * columns, 2.3 * rows_of_panels), layout="constrained")
for k, (d, centre, major, minor, angle) in enumerate(ellipses):
    axes = figure.add_subplot(rows_of_panels, columns, k + 1)
    shown = d[:: max(1, len(d) // 300)]
    axes.scatter(shown[:, 0], shown[:, 1], s=3, alpha=0.35, color="tab:blue")
    axes.add_patch(Ellipse(centre, 4 * major, 4 * minor, angle=angle, fill=False, color="tab:red", linewidth=1.6))
    axes.set_xlim(-limit, limit)
    axes.set_ylim(limit, -limit)
    axes.set_aspect("equal")
    axes.set_title(f"{landmarks.abbreviations[k]}  ratio {major / minor:.1f}", fontsize=8)
    axes.tick_params(labelsize=7)
    if k % columns == 0:
        axes.set_ylabel("Δy (mm)", fontsize=8)
    if k >= K - columns:
        axes.set_xlabel("Δx (mm)", fontsize=8)
save_figure(figure, paths.output_dir / "annotator_ellipses.png")

# %% [markdown]
# The same ellipses placed on an image, enlarged three times so that they are visible at the scale
# of the skull: each one lies along the edge its landmark sits on.

# %%
record = train_records[0]
image = read_image(record.image_path)
truth = record.annotations_px.mean(axis=0)
scale_px = 3.0 / np.asarray(record.pixel_size_mm)  # three times the mm extent, in pixels
figure = Figure(figsize=(5.6, 6.4), layout="constrained")
axes = figure.add_subplot()
axes.imshow(image, cmap="gray")
for k, (d, centre, major, minor, angle) in enumerate(ellipses):
    if np.isfinite(truth[k]).all():
        axes.add_patch(Ellipse(truth[k], 4 * major * scale_px[0], 4 * minor * scale_px[1], angle=angle,
                               fill=False, color="tab:red" if is_contour[k] else "tab:cyan", linewidth=1.2))
axes.set_title(f"2-sigma annotator ellipses (x3) on {record.image_id}", fontsize=9)
axes.set_xlabel("x (px)")
axes.set_ylabel("y (px)")
save_figure(figure, paths.output_dir / "annotator_ellipses_on_image.png")

# %% [markdown]
# Summary of the disagreement (all numbers computed above):

# %%
contour_ratios = disagreement.loc[disagreement["contour"], "along/across"]
mean_distance_mm = float(np.nanmean(np.linalg.norm(difference_mm, axis=-1)))
print(f"mean annotator distance over all landmarks and images: {mean_distance_mm:.2f} mm")
print(f"along/across ratio of the contour landmarks: min {contour_ratios.min():.2f} "
      f"({contour_ratios.idxmin()}), median {contour_ratios.median():.2f}, max {contour_ratios.max():.2f} "
      f"({contour_ratios.idxmax()})")
print(f"largest mean distance: {disagreement['mean distance (mm)'].idxmax()} "
      f"({disagreement['mean distance (mm)'].max():.2f} mm)")

# %% [markdown]
# ## Hard cases
#
# About 10 % of the phantom images are *hard*: low contrast, occluding objects or cropped anatomy
# (its `dataset.yaml` lists them; each annotation file ends with a hard flag and a bit mask of the
# kinds: 1 low contrast, 2 occluder, 4 cropped). For other data sets we show the images on which
# the annotators disagree most.

# %%
kind_bits = {1: "low contrast", 2: "occluder", 4: "cropped"}
by_id = {r.image_id: r for r in records}
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
    print(f"{len(hard_ids)} hard cases of {len(records)} images")
else:
    per_image = np.nanmean(np.linalg.norm(difference_mm, axis=-1), axis=1)
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
# other panel shows the draws of one epoch (at the `cpu` profile's 160 x 200 input, or 640 x 800
# for `paper`).

# %%
preview_config = profile_config("paper" if profile == "paper" else "cpu")
preview_config.augment.enabled = True
preview_set = make_training_dataset(preview_config, train_records[:1], default_cache_dir(paths.data_dir, paths.run_dir))
figure = augmentation_preview(preview_set, index=0, num_samples=6, first_seed=seed)
save_figure(figure, paths.output_dir / "augmentation_preview.png")

# %% [markdown]
# ## Summary
#
# The key numbers go to `RUN_DIR/01_data_exploration/metrics.json` (with the figures above); the
# test of the notebook series checks them.

# %%
metrics = {
    "profile": profile,
    "num_images": split_counts,
    "num_images_total": len(records),
    "num_landmarks": K,
    "num_contour_landmarks": int(is_contour.sum()),
    "num_hard_cases": len(hard_ids),
    "mean_annotator_distance_mm": mean_distance_mm,
    "min_contour_along_across_ratio": float(contour_ratios.min()) if len(contour_ratios) else None,
    "median_contour_along_across_ratio": float(contour_ratios.median()) if len(contour_ratios) else None,
    "point_landmark_along_across_ratio": {
        a: float(r) for a, r, c in zip(landmarks.abbreviations, disagreement["along/across"], is_contour) if not c
    },
    "per_landmark_mean_distance_mm": dict(zip(landmarks.abbreviations, disagreement["mean distance (mm)"])),
}
written = write_notebook_metrics(paths.output_dir, metrics)
print(f"wrote {paths.show(written)} and {len(list(paths.output_dir.glob('*.png')))} figures")

"""Source of notebooks/02_one_hot_heatmap_training.ipynb (build with: python notebooks/build.py 02)."""

# %% [markdown]
# # 02 · Training with one-hot heatmaps: 2D softmax and negative log-likelihood
#
# The second notebook of the *chh-kit* series on **Contour-Hugging Heatmaps for Landmark Detection**
# (McCouat & Voiculescu, CVPR 2022). We train the heatmap network the way the paper does and look
# at what it learns.
#
# **Learning goals**
#
# 1. Understand why the paper trains with a **one-hot target**, a **2D softmax** and the
#    **negative log-likelihood** instead of Gaussian target heatmaps and a mean squared error.
# 2. Train the network (GPU when there is one, CPU otherwise) and read its learning curve.
# 3. See that the predicted heatmaps, on a log scale, **hug the contours** their landmarks lie on.
# 4. Decode landmark positions by arg-max and measure the MRE and SDR per landmark.
#
# The trained model goes to `RUN_DIR/model`, a normal chh run directory that the later notebooks reuse.

# %% [markdown]
# ## Imports

# %%
import math

import numpy as np
import torch
from IPython.display import display
from matplotlib.figure import Figure

from chh_lib.config import profile_config
from chh_lib.data.dataset import LandmarkDataset
from chh_lib.data.formats import read_landmark_data
from chh_lib.devices import choose_device
from chh_lib.evaluation import default_cache_dir, evaluate_run, load_run
from chh_lib.heatmaps import argmax_2d, one_hot_nll, softmax_2d
from chh_lib.plots import heatmap_overlay
from chh_lib.workflow import (
    ensure_phantom,
    notebook_paths,
    notebook_profile,
    save_figure,
    train_or_reuse,
    training_history,
    write_notebook_metrics,
)

# %% [markdown]
# ## Parameters
#
# `profile` selects the training schedule (`smoke`: two epochs at 64 x 80 for tests; `cpu`: 40 epochs
# at 160 x 200, about five minutes on two CPU cores; `paper`: the paper's ResNet-34 U-Net at
# 640 x 800, for a GPU). It is read from `CHH_PROFILE` when set. A model already in `RUN_DIR/model`
# is reused (an unfinished one is resumed) unless `retrain` is True. Relative paths are resolved
# against the repository root.

# %% tags=["parameters"]
profile = notebook_profile()  # CHH_PROFILE, else "cpu"
data_dir = None  # None: the profile's phantom
run_dir = None  # None: runs/notebooks/<profile>
seed = 0
device = "auto"  # auto: CUDA, then MPS, then CPU
retrain = False

# %% [markdown]
# ## Set-up
#
# The data set is written when missing (the phantom), the profile's configuration is loaded and the
# device chosen.

# %%
paths = notebook_paths("02_one_hot_heatmap_training", profile, data_dir, run_dir)
ensure_phantom(paths.data_dir, profile)
config = profile_config(profile)
torch_device = choose_device(device)
width, height = config.data.image_size
print(f"profile {profile}: {config.model.name} at {width} x {height}, {config.train.epochs} epochs, "
      f"batch {config.train.batch_size}, Adam lr {config.train.lr:g}, augmentation "
      f"{'on' if config.augment.enabled else 'off'}; device {torch_device.type}")

# %% [markdown]
# ## One-hot targets, 2D softmax and NLL
#
# The network outputs one logit map $z_k$ of size $H \times W$ per landmark $k$. A **2D softmax** over
# all pixels turns it into a probability distribution over positions:
#
# $$p_k(i) = \frac{\exp z_k(i)}{\sum_{j=1}^{HW} \exp z_k(j)}, \qquad \sum_i p_k(i) = 1 .$$
#
# The target is **one-hot**: the single pixel $t_k$ nearest the annotated position (the mean of the
# annotators). Training minimises the **negative log-likelihood** of that pixel, averaged over the
# images $n$ and landmarks $k$ present in a batch ($P$):
#
# $$\mathcal{L} = -\frac{1}{|P|} \sum_{(n,k) \in P} \log p_{n,k}(t_{n,k}) \quad \text{(nats)}.$$
#
# The usual alternative regresses a **Gaussian target** $g_k(i) = \exp\!\left(-\lVert \mathbf{x}_i -
# \mathbf{t}_k \rVert^2 / 2\sigma^2\right)$ with the mean squared error
# $\mathcal{L}_\text{MSE} = \frac{1}{HW} \sum_i (h_k(i) - g_k(i))^2$. That fixes the *shape* of every
# heatmap in advance: a round blob of width $\sigma$, however ambiguous the landmark. With the NLL the
# shape is learned: when annotators place a landmark anywhere along an edge, the likelihood is highest
# for a distribution spread **along that edge**, so the heatmap learns to hug the contour, and its
# spread becomes a measure of uncertainty. A prediction that knows nothing (uniform over the image)
# pays $\log HW$ nats; spreading the mass evenly over $m$ pixels of a contour costs only $\log m$:

# %%
# NBVAL_CHECK_OUTPUT
for grid_width, grid_height in [(64, 80), (160, 200), (640, 800)]:
    print(f"uniform over {grid_width} x {grid_height}: NLL = log({grid_width * grid_height}) = "
          f"{math.log(grid_width * grid_height):.2f} nats")
toy_logits = torch.zeros(1, 1, 200, 160)
toy_logits[0, 0, 100, 70:80] = 20.0  # mass spread evenly over 10 pixels of a horizontal 'contour'
toy_target = torch.tensor([[100 * 160 + 75]])
print(f"mass spread over 10 contour pixels, target on the contour: NLL = {one_hot_nll(toy_logits, toy_target):.2f} nats"
      f" (log 10 = {math.log(10):.2f})")

# %% [markdown]
# Both kinds of target for one landmark of a test image, at the network's input size (a crop around
# the landmark): the one-hot target is a single pixel; the Gaussian target ($\sigma = 2$ px) is a
# round blob that ignores the contour.

# %%
data = read_landmark_data(paths.data_dir, protocol=config.data.protocol)
landmarks = data.landmarks
hard = set(data.descriptor.get("hard_cases", []))
test_records = [r for r in data.split("test") if r.image_id not in hard] or data.split("test")
example_set = LandmarkDataset(test_records[:1], config.data.image_size, default_cache_dir(paths.data_dir, paths.run_dir))
example = example_set[0]
shown_k = landmarks.index("Go") if "Go" in landmarks.abbreviations else 0
target = example["target_px"][shown_k].numpy()
rows_, cols_ = np.mgrid[0:height, 0:width]
one_hot = np.zeros((height, width))
one_hot[round(target[1]), round(target[0])] = 1.0
sigma_px = 2.0
gaussian = np.exp(-((cols_ - target[0]) ** 2 + (rows_ - target[1]) ** 2) / (2 * sigma_px**2))
half = max(6, width // 12)
figure = Figure(figsize=(11, 3.8), layout="constrained")
panels = [("image", example["image"][0].numpy(), "gray"), ("one-hot target (NLL)", one_hot, "viridis"),
          (f"Gaussian target, σ = {sigma_px:g} px (MSE)", gaussian, "viridis")]
for panel, (title, values, cmap) in enumerate(panels):
    axes = figure.add_subplot(1, 3, panel + 1)
    shown = axes.imshow(values, cmap=cmap, interpolation="nearest")
    axes.scatter([target[0]], [target[1]], s=60, facecolors="none", edgecolors="red", linewidths=1.2)
    axes.set_xlim(target[0] - half, target[0] + half)
    axes.set_ylim(target[1] + half, target[1] - half)
    axes.set_title(f"{landmarks.names[shown_k]}: {title}", fontsize=9)
    axes.set_xlabel("x (px)")
    axes.set_ylabel("y (px)")
    if panel:
        figure.colorbar(shown, ax=axes, label="target value", shrink=0.8)
save_figure(figure, paths.output_dir / "targets.png")

# %% [markdown]
# ## Training
#
# `train_or_reuse` trains the profile's network by the one-hot NLL with `chh_lib.engine.train` (the
# same code as `chh train`), checkpointing after every epoch into `RUN_DIR/model`. On a GPU it trains
# there (with bf16 autocast on CUDA); otherwise on the CPU with the profile's settings. A finished
# model in `RUN_DIR/model` is reused.

# %%
outcome = train_or_reuse(paths.model_dir, paths.data_dir, profile, device, seed, retrain=retrain)
history = training_history(paths.model_dir)
train_seconds = float(history["seconds"].sum()) if len(history) else float("nan")
print(f"{outcome.action} {paths.show(paths.model_dir)}: {len(history)} epochs, "
      f"{train_seconds:.0f} s of training, final training NLL {history['loss'].iloc[-1]:.3f} nats")

# %% [markdown]
# ## Learning curve
#
# The mean training NLL per epoch (with augmentation, when the profile uses it). The dashed line is
# $\log HW$, the loss of a uniform heatmap; the learning rate (right axis) drops at the profile's
# milestones.

# %%
figure = Figure(figsize=(7.5, 4), layout="constrained")
axes = figure.add_subplot()
axes.plot(history["epoch"], history["loss"], marker="o", markersize=3, label="training NLL")
axes.axhline(math.log(width * height), color="grey", linestyle="--", linewidth=1,
             label=f"uniform heatmap, log({width}·{height})")
axes.set_xlabel("epoch")
axes.set_ylabel("NLL (nats)")
axes.set_ylim(bottom=0)
lr_axes = axes.twinx()
lr_axes.step(history["epoch"], history["lr"], where="mid", color="tab:orange", linewidth=1, label="learning rate")
lr_axes.set_yscale("log")
lr_axes.set_ylabel("learning rate")
handles = axes.get_legend_handles_labels()[0] + lr_axes.get_legend_handles_labels()[0]
axes.legend(handles=handles, loc="upper right", fontsize=8)
save_figure(figure, paths.output_dir / "learning_curve.png")

# %% [markdown]
# ## Heatmaps hug the contours
#
# The trained network's heatmaps $p_k$ for a test image, on a **log scale** ($\log_{10} p_k(i)$, floor
# $10^{-6}$ of the maximum), so that the tails are visible. The first panel shows the largest of all
# 19 heatmaps at each pixel over the whole image; the others are crops around single landmarks with
# the prediction (red x), the ground truth (green circle) and the two annotators (triangles). The
# probability mass stretches along the bone or soft-tissue edge each landmark sits on, in the
# direction in which the annotators disagree.

# %%
run = load_run(paths.model_dir, paths.data_dir)
model = run.model.eval().to(torch_device)
test_set = LandmarkDataset(test_records[:1], run.config.data.image_size, run.cache_dir)
item = test_set[0]
with torch.no_grad():
    logits = model(item["image"][None].to(torch_device)).float().cpu()
heatmaps = softmax_2d(logits)[0].numpy()  # (K, H, W), each sums to 1
predicted = argmax_2d(logits)[0].numpy()  # (K, 2) as (x, y)
image = item["image"][0].numpy()
crop = max(8, run.config.data.image_size[0] // 8)
chosen = [a for a in ("Go", "Me", "N", "S", "A") if a in landmarks.abbreviations] or list(landmarks.abbreviations[:5])
figure = Figure(figsize=(13, 8), layout="constrained")
heatmap_overlay(image, heatmaps.max(axis=0), ax=figure.add_subplot(2, 3, 1),
                title=f"{test_records[0].image_id}: all landmarks (max)")
for panel, abbreviation in enumerate(chosen):
    k = landmarks.index(abbreviation)
    heatmap_overlay(image, heatmaps[k], prediction_px=predicted[k], target_px=item["target_px"][k].numpy(),
                    annotators_px=item["annotations_px"][:, k].numpy(), crop_half_size_px=crop,
                    ax=figure.add_subplot(2, 3, panel + 2), title=f"{landmarks.names[k]} ({abbreviation})")
save_figure(figure, paths.output_dir / "heatmaps.png")

# %% [markdown]
# ## Decoding and evaluation
#
# The predicted position is the **arg-max** of each heatmap, $\hat{\mathbf{x}}_k = \arg\max_i p_k(i)$,
# mapped back to millimetres with the pixel size. The radial error of landmark $k$ in image $n$ is
# $e_{nk} = \lVert \hat{\mathbf{x}}_{nk} - \mathbf{t}_{nk} \rVert$ in mm; the **mean radial error**
# is $\text{MRE} = \frac{1}{|P|} \sum_{(n,k)} e_{nk}$ and the **successful detection rate**
# $\text{SDR}(r) = \frac{100}{|P|} \left|\{(n,k) : e_{nk} < r\}\right|$ % for $r$ = 2, 2.5, 3 and 4 mm.
# The baseline predicts every landmark at its mean training position; the annotator distance is how
# far the two annotators are apart. `evaluate_run` computes all of them on the test split (and writes
# them to `RUN_DIR/model/eval_test/`).

# %%
result = evaluate_run(paths.model_dir, "test", paths.data_dir, torch_device, figures=False)
metrics = result.metrics
sdr = metrics["sdr_percent"]
print(f"test split: {metrics['num_images']} images; MRE {metrics['mre_mm']:.2f} mm (SD {metrics['mre_sd_mm']:.2f}); "
      + ", ".join(f"SDR<{t} mm {v:.1f} %" for t, v in sdr.items()))
print(f"baseline MRE {metrics['baseline_mre_mm']:.2f} mm; annotator distance "
      f"{metrics['mean_annotator_distance_mm']:.2f} mm")

# %% [markdown]
# Per landmark (MRE, SDR at 2 mm and 4 mm, the baseline and the annotator distance, all in mm except
# the SDR in %):

# %%
per_landmark = result.per_landmark.set_index("abbreviation")[
    ["mre_mm", "sd_mm", "sdr_2mm_percent", "sdr_4mm_percent", "baseline_mre_mm", "annotator_distance_mm"]
]
display(per_landmark.round(2).T)

# %% [markdown]
# The same comparison as a figure: the model's MRE per landmark next to the annotator distance (how
# well a second human agrees) and the mean-position baseline.

# %%
figure = Figure(figsize=(11, 3.8), layout="constrained")
axes = figure.add_subplot()
positions = np.arange(len(per_landmark))
for offset, (column, label) in zip((-0.27, 0.0, 0.27), [("mre_mm", "model MRE"),
                                                         ("annotator_distance_mm", "annotator distance"),
                                                         ("baseline_mre_mm", "baseline MRE")]):
    axes.bar(positions + offset, per_landmark[column], width=0.27, label=label)
axes.set_xticks(positions, per_landmark.index, fontsize=8)
axes.set_xlabel("landmark")
axes.set_ylabel("mean radial error (mm)")
axes.legend(fontsize=8)
save_figure(figure, paths.output_dir / "per_landmark_mre.png")

# %% [markdown]
# ## Summary
#
# The key numbers go to `RUN_DIR/02_one_hot_heatmap_training/metrics.json` (with the figures above).

# %%
summary = {
    "profile": profile,
    "device": torch_device.type,
    "training": outcome.action,
    "epochs": len(history),
    "train_seconds": train_seconds,
    "final_train_nll": float(history["loss"].iloc[-1]),
    "num_test_images": int(metrics["num_images"]),
    "mre_mm": float(metrics["mre_mm"]),
    "mre_sd_mm": float(metrics["mre_sd_mm"]),
    "sdr_percent": {str(t): float(v) for t, v in sdr.items()},
    "baseline_mre_mm": float(metrics["baseline_mre_mm"]),
    "mean_annotator_distance_mm": float(metrics["mean_annotator_distance_mm"]),
    "uniform_nll": math.log(width * height),
}
written = write_notebook_metrics(paths.output_dir, summary)
print(f"wrote {paths.show(written)}: MRE {summary['mre_mm']:.2f} mm, SDR<2 mm {sdr['2']:.1f} %")

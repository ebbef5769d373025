"""Source of notebooks/02_one_hot_heatmap_training.ipynb (build with: python notebooks/build.py 02)."""

# %% [markdown]
# # 02 · Training with one-hot heatmaps: 2D softmax and negative log-likelihood
#
# The second notebook of the *chh-kit* series on **Contour-Hugging Heatmaps for Landmark Detection**
# (McCouat & Voiculescu, CVPR 2022). We train the heatmap network the way the paper does, train the
# usual alternative (Gaussian targets and a mean squared error) beside it, and look at what each learns.
#
# **Learning goals**
#
# 1. Derive why a **one-hot target**, a **2D softmax** and the **negative log-likelihood** (NLL) make the
#    heatmap learn the annotators' distribution, and what its gradient is.
# 2. See what a Gaussian target with the MSE learns instead, and where the two really differ.
# 3. Follow one training step by hand, then train the network (GPU when there is one, CPU otherwise) and
#    read its training and held-out learning curves.
# 4. See that the predicted heatmaps, on a log scale, **hug the contours** their landmarks lie on.
# 5. Decode landmark positions by arg-max, measure the MRE and SDR, and understand the two things that
#    shape them: the pixel grid (a quantisation floor) and a few hard images (the standard deviation).
#
# The trained model goes to `RUN_DIR/model`, a normal chh run directory that the later notebooks reuse.
# The notebook ends with a recap, common pitfalls, four exercises with checked answers (the last one a
# prediction to check), and references.
#
# **How long** (measured on 2 CPU cores): 13 s under `smoke` in the smoke series (`chh notebooks
# --profile smoke`, 64 s for the six, 2026-12-06), with its two short trainings.
# Under `cpu` it trains two networks of 40 epochs each; each training cell prints the seconds its
# epochs took in this run. In the publishing runs recorded in `benchmarks/README.md` and the root
# `README.md` they took 189 s to 341 s for the NLL network and 201 s to 547 s for the MSE network,
# depending on the other jobs sharing the cores (the parameter `mse_epochs` shortens the second). A
# finished model in `RUN_DIR` is reused, and the notebook then takes about 2 minutes (the latest
# publishing run spent 112 s outside its two trainings).

# %% [markdown]
# ## Imports

# %%
import math

import numpy as np
import pandas as pd
import torch
from IPython.display import display
from matplotlib.figure import Figure
from torch.utils.data import DataLoader

from chh_lib import exercises as check
from chh_lib.config import profile_config
from chh_lib.data.dataset import LandmarkDataset
from chh_lib.data.formats import read_landmark_data
from chh_lib.devices import choose_device
from chh_lib.engine import (
    LAST_CHECKPOINT,
    as_distribution,
    decode_heatmaps,
    load_checkpoint,
    make_training_dataset,
    model_from_checkpoint,
    print_epoch,
)
from chh_lib.evaluation import default_cache_dir, evaluate_run, load_run
from chh_lib.exercises.notebook_02 import elongated_q
from chh_lib.heatmaps import (
    argmax_2d,
    gaussian_heatmaps,
    one_hot_nll,
    softmax_2d,
)
from chh_lib.metrics import mean_radial_error, radial_error_mm, success_detection_rate
from chh_lib.model import build_model, count_parameters
from chh_lib.plots import heatmap_overlay, learning_curves
from chh_lib.summaries import write_summary
from chh_lib.workflow import (
    ensure_phantom,
    notebook_paths,
    notebook_profile,
    save_figure,
    train_or_reuse,
    training_history,
)

# %% [markdown]
# ## Parameters
#
# `profile` selects the training schedule (`smoke`: two epochs at 64 x 80 for tests; `cpu`: 40 epochs
# at 160 x 200 for two CPU cores; `paper`: the paper's ResNet-34 U-Net at 640 x 800, for a GPU). It is
# read from `CHH_PROFILE` when set. A model already in `RUN_DIR/model` is reused (an unfinished one is
# resumed) unless `retrain` is True. `mse_epochs` sets the epochs of the Gaussian-target comparison
# network (`None`: the profile's schedule, the same as the NLL network's) and `mse_sigma_px` the width
# of its targets in pixels (see "The Gaussian-target MSE network" below for why 6). `max_steps` stops
# each of the two trainings after that many optimiser steps, as `chh train --max-steps` does (`None`:
# the whole schedule); `max_steps = 3`, for example, tries the `paper` profile's training on a CPU, whose numbers
# then mean nothing (the evaluation still runs over the whole test split). Relative paths are resolved
# against the repository root. `progress_bar = True` shows a progress bar over the batches while
# training (a Jupyter widget: a saved copy of the notebook keeps only its first state, no batch done, so it is
# off by default; the line printed after every epoch is the lasting record). `solutions = True` runs the
# hidden solutions of the exercises at the end (the test suite does; a student leaves it `False`).

# %% tags=["parameters"]
profile = notebook_profile()  # CHH_PROFILE, else "cpu"
data_dir = None  # None: the profile's phantom
run_dir = None  # None: runs/notebooks/<profile>
seed = 0
device = "auto"  # auto: CUDA, then MPS, then CPU
retrain = False
mse_epochs = None  # None: the profile's epochs
mse_sigma_px = 6.0  # width of the MSE network's Gaussian targets (pixels)
max_steps = None  # None: the whole schedule; e.g. 3 for a bounded run
progress_bar = False  # True: a batch progress bar while training (interactive use)
solutions = False  # True: run the exercises' hidden solutions

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
# ### Why the NLL learns the annotators' distribution
#
# Annotators do not agree. Where a landmark sits on an edge, they place it anywhere along that edge, so
# over the training images that look alike to the network, the target pixel falls at different points of
# the edge. Treat the target pixel $t$ as random, with distribution $q(t)$ given the image (the
# annotators' distribution); the network cannot do better than predict $q$. The NLL it pays on average
# is
#
# $$\mathbb{E}_{t \sim q}\left[-\log p(t)\right] = -\sum_i q(i) \log p(i)
#   = \underbrace{-\sum_i q(i) \log q(i)}_{H(q)} \; + \; \underbrace{\sum_i q(i) \log \frac{q(i)}{p(i)}}_{\mathrm{KL}(q\,\|\,p)} .$$
#
# The entropy $H(q)$ does not depend on the network, and the Kullback–Leibler divergence is never
# negative and is zero only for $p = q$ (Gibbs' inequality). So the expected NLL is minimised exactly
# when the heatmap **is** the annotators' distribution: if they disagree along an edge, the best heatmap
# spreads along that edge, and its spread is a measure of uncertainty.
#
# The gradient says the same. With $\log p(t) = z(t) - \log \sum_j e^{z(j)}$,
#
# $$\frac{\partial\,(-\log p(t))}{\partial z(i)} = -[i = t] + \frac{e^{z(i)}}{\sum_j e^{z(j)}} = p(i) - [i = t],$$
#
# i.e. $p - \text{onehot}$ (divided by $|P|$ for the batch mean). Averaged over $t \sim q$ it is
# $p - q$: gradient descent pushes $p$ towards $q$ and stops when they agree. (Exercise 02.1 checks the
# formula against autograd.)
#
# A prediction that knows nothing (uniform over the image) pays $\log HW$ nats; spreading the mass evenly
# over $m$ pixels of a contour costs only $\log m$. Read backwards, an NLL of $L$ nats is what a
# heatmap would pay that spreads its mass uniformly over $e^L$ pixels (2 nats: $e^2 \approx 7$ pixels):

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
print(f"an NLL of 2 nats = uniform over e^2 = {math.exp(2):.1f} pixels")

# %% [markdown]
# ### The usual alternative: Gaussian targets and the mean squared error
#
# Most heatmap regressors instead put a **Gaussian target**
# $g_{\mathbf{t}}(i) = \exp\!\left(-\lVert \mathbf{x}_i - \mathbf{t} \rVert^2 / 2\sigma^2\right)$ (peak 1)
# on the target and regress the output map $h$ onto it with a squared error,
# $\mathcal{L}_\text{MSE} = \sum_i (h(i) - g_{\mathbf{t}}(i))^2$ (the mean squared error over the pixels
# times $HW$; summing keeps the gradients large enough for Adam).
#
# It is tempting to say that this fixes the heatmap's shape to a round blob. It does not, once the
# targets are noisy: for each pixel, the constant that minimises $\mathbb{E}_{t \sim q}[(h(i) - g_t(i))^2]$
# is the mean target, so the MSE-optimal output is
#
# $$h^*(i) = \sum_t q(t)\, g_t(i) = (q \ast g)(i),$$
#
# the annotators' distribution **blurred by the Gaussian**. It is elongated along the contour too.
# The real differences are two:
#
# - **Normalisation.** $h^*$ is not a probability distribution: it sums to $2\pi\sigma^2$ (in pixels) and
#   nothing constrains the network's output to be positive or to sum to anything. Probabilities, an NLL,
#   temperature calibration and the expected radial error (notebooks 03–05) need a distribution.
# - **Blur.** The spread of $h^*$ is that of $q$ plus the Gaussian's: the variances add,
#   $\sigma_x^2(h^*) = \sigma_x^2(q) + \sigma^2$, and the same along $y$. The NLL's heatmap has no such
#   floor, so a confident landmark can be sharper than $\sigma$.
#
# Exercise 02.4 computes $h^*$ for a toy $q$. Both kinds of target for one landmark of a test image, at
# the network's input size (a crop around the landmark):

# %%
data = read_landmark_data(paths.data_dir, protocol=config.data.protocol)
landmarks = data.landmarks
K = landmarks.num_landmarks
hard = set(data.descriptor.get("hard_cases", []))
test_records = [r for r in data.split("test") if r.image_id not in hard] or data.split("test")
example_set = LandmarkDataset(test_records[:1], config.data.image_size, default_cache_dir(paths.data_dir, paths.run_dir))
example = example_set[0]
shown_k = landmarks.index("Go") if "Go" in landmarks.abbreviations else 0
target = example["target_px"][shown_k].numpy()
one_hot = np.zeros((height, width))
one_hot[round(target[1]), round(target[0])] = 1.0
gaussian = gaussian_heatmaps(example["target_px"][None], width, height, mse_sigma_px)[0, shown_k].numpy()
half = max(6, width // 12)
figure = Figure(figsize=(11, 3.8), layout="constrained")
panels = [("image", example["image"][0].numpy(), "gray"), ("one-hot target (NLL)", one_hot, "viridis"),
          (f"Gaussian target, σ = {mse_sigma_px:g} px (MSE)", gaussian, "viridis")]
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
# ## The network
#
# The profile's U-Net (Ronneberger et al. 2015): an encoder that halves the resolution stage by stage, a
# decoder that doubles it back and concatenates the encoder's features at the same scale (the skip
# connections), and a final $3 \times 3$ convolution (`head`) that outputs one logit map per landmark at
# the input resolution. The table runs one blank image through it and lists each block's output shape
# and parameter count.

# %%
network = build_model(config.model.name, K, **config.model.options).eval()
blocks = []
for name, child in network.named_children():
    if isinstance(child, torch.nn.ModuleList):
        blocks += [(f"{name}[{i}]", block) for i, block in enumerate(child)]
    elif count_parameters(child):
        blocks.append((name, child))
shapes = {}


def record_shape(name):
    """A forward hook that stores the block's output shape (C x H x W) under ``name``."""
    def hook(module, inputs, output):
        output = output[-1] if isinstance(output, (list, tuple)) else output  # an encoder returns every stage
        shapes[name] = " x ".join(str(n) for n in output.shape[1:])
    return hook


hooks = [block.register_forward_hook(record_shape(name)) for name, block in blocks]
with torch.no_grad():
    network(torch.zeros(1, 1, height, width))
for hook in hooks:
    hook.remove()
layer_table = pd.DataFrame({"output (C x H x W)": [shapes[name] for name, _ in blocks],
                            "parameters": [count_parameters(block) for _, block in blocks]},
                           index=pd.Index([name for name, _ in blocks], name="block"))
num_parameters = count_parameters(network)
display(layer_table.T)
print(f"{config.model.name}: {num_parameters:,} parameters in all; input 1 x {height} x {width}, "
      f"output {K} x {height} x {width} logits")

# %% [markdown]
# ## One training step, written out
#
# Before handing over to the library's loop, one step by hand on a fresh, untrained copy of the network
# and one batch of training images (augmented, when the profile augments): forward pass, one-hot NLL,
# backward pass (the gradient $p - \text{onehot}$ flows from the logits into every weight), Adam step.
# The loss on the same batch, before and after:

# %%
train_set = make_training_dataset(config, data.split("train"), default_cache_dir(paths.data_dir, paths.run_dir))
batch = next(iter(DataLoader(train_set, batch_size=config.train.batch_size, shuffle=False)))
images, target_index = batch["image"].to(torch_device), batch["target_index"].to(torch_device)  # (N, 1, H, W), (N, K)
torch.manual_seed(seed)
step_model = build_model(config.model.name, K, **config.model.options).to(torch_device).train()
optimizer = torch.optim.Adam(step_model.parameters(), lr=config.train.lr)

batch_logits = step_model(images)  # (N, K, H, W)
loss = one_hot_nll(batch_logits, target_index)  # scalar, nats
optimizer.zero_grad()
loss.backward()  # d loss / d logits = (softmax(logits) - onehot) / |P|, then back through the network
gradient_norm = torch.sqrt(sum((p.grad**2).sum() for p in step_model.parameters())).item()
optimizer.step()
with torch.no_grad():
    loss_after = one_hot_nll(step_model(images), target_index)
print(f"batch of {len(images)} images, {int((target_index >= 0).sum())} landmarks present")
print(f"NLL before the step {loss.item():.4f} nats (uniform heatmap: {math.log(width * height):.4f}); "
      f"gradient norm {gradient_norm:.3g}; after one Adam step {loss_after.item():.4f} nats")

# %% [markdown]
# ## Training
#
# `train_or_reuse` trains the profile's network by the one-hot NLL with `chh_lib.engine.train` (the same
# loop as `chh train`: the step above, for every batch of every epoch, with the profile's learning-rate
# schedule), checkpointing after every epoch into `RUN_DIR/model`. On a GPU it trains there (with bf16
# autocast on CUDA). One line per epoch gives the mean training NLL and the **held-out NLL** on the
# calibration split (images never trained on; notebook 03 uses them to decide whether to fit a
# temperature). A finished model in `RUN_DIR/model` is reused, and then nothing is printed per
# epoch.

# %%
outcome = train_or_reuse(paths.model_dir, paths.data_dir, profile, device, seed, retrain=retrain, progress=progress_bar,
                         held_out_split="calibration", on_epoch_end=print_epoch, max_steps=max_steps)
history = training_history(paths.model_dir)
train_seconds = float(history["seconds"].sum()) if len(history) else float("nan")
print(f"{outcome.action} {paths.show(paths.model_dir)}: {len(history)} epochs, "
      f"{train_seconds:.0f} s of training, final training NLL {history['loss'].iloc[-1]:.3f} nats")

# %% [markdown]
# ## Learning curves
#
# The mean training NLL per epoch (measured on the augmented images while the weights change during the
# epoch) beside the held-out NLL (measured after the epoch, on fixed images without augmentation). The
# dashed line is $\log HW$, the loss of a uniform heatmap. The learning rate (right axis) starts at a
# tenth of its value for the profile's `warmup_epochs` (1 under `cpu`: the first epoch's line prints
# 2.00e-04), so that the first large gradients of a random network do not throw Adam's estimates off,
# and then drops by a factor of 10 at each of the profile's milestones.

# %%
uniform_nll = math.log(width * height)
save_figure(learning_curves(history, uniform_loss=uniform_nll), paths.output_dir / "learning_curve.png")
final = history.iloc[-1]
held_out_nll = float(final["held_out_loss"]) if "held_out_loss" in history else float("nan")
gap = held_out_nll - float(final["loss"])
if math.isnan(held_out_nll):
    print("this run records no held-out NLL (a model trained before the option existed; retrain=True adds it)")
else:
    print(f"last epoch: training NLL {final['loss']:.3f} nats (uniform over e^{final['loss']:.2f} = "
          f"{math.exp(final['loss']):.0f} px), held-out NLL {held_out_nll:.3f} nats (e^{held_out_nll:.2f} = "
          f"{math.exp(held_out_nll):.0f} px); gap {gap:+.3f} nats: the held-out target pixel is on average "
          + (f"{math.exp(abs(gap)):.3f} times {'less' if gap > 0 else 'more'} probable than a training one"
             if gap != 0 else "as probable as a training one"))

# %% [markdown]
# **Reading the gap.** An NLL of $L$ nats is the loss of a heatmap that spreads its mass uniformly over
# $e^{L}$ pixels (its *perplexity*), so a gap of $\Delta$ nats between held-out and training NLL means the
# held-out target pixel gets on average $e^{\Delta}$ times less probability: a gap of 2 nats is a heatmap
# about $e^2 \approx 7$ times too spread out, or too often wrong. The two curves differ for three
# reasons: the held-out images were never trained on (over-fitting widens the gap); the training NLL is
# measured on augmented images, which are harder (that narrows it, or reverses it); and it is averaged
# over the epoch while the model improves. A gap that keeps growing while the held-out NLL rises is
# over-fitting. Notebook 03 uses these held-out images to decide whether a temperature would correct how
# confident the heatmaps are (none, one for all, or one per landmark, by cross-validation), which never
# moves their arg-max.

# %% [markdown]
# ## Heatmaps hug the contours
#
# The trained network's heatmaps $p_k$ for a test image, on a **log scale** ($\log_{10} p_k(i)$, floor
# $10^{-6}$ of the maximum), so that the tails are visible. The first panel shows the largest of all
# heatmaps at each pixel over the whole image; the others are crops around single landmarks with
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
# is $\text{MRE} = \frac{1}{|P|} \sum_{(n,k)} e_{nk}$, SD its standard deviation over the pairs, and the
# **successful detection rate** $\text{SDR}(r) = \frac{100}{|P|} \left|\{(n,k) : e_{nk} < r\}\right|$ %
# for $r$ = 2, 2.5, 3 and 4 mm. The baseline predicts every landmark at its mean training position; the
# annotator distance is how far the two annotators are apart. `evaluate_run` computes all of them on the
# test split (and writes them to `RUN_DIR/model/eval_test/`).

# %%
result = evaluate_run(paths.model_dir, "test", paths.data_dir, torch_device, figures=False)
metrics = result.metrics
sdr = metrics["sdr_percent"]
print(f"test split: {metrics['num_images']} images; MRE {metrics['mre_mm']:.2f} mm (SD {metrics['mre_sd_mm']:.2f}); "
      + ", ".join(f"SDR<{t} mm {v:.1f} %" for t, v in sdr.items()))
print(f"baseline MRE {metrics['baseline_mre_mm']:.2f} mm; annotator distance "
      f"{metrics['mean_annotator_distance_mm']:.2f} mm")

# %% [markdown]
# ### The quantisation floor of the arg-max
#
# The arg-max can only answer a pixel centre. Even a perfect model, one whose mode is always the pixel
# nearest the truth, makes an error: the offset $\mathbf{u} = (\mathbf{t} - \mathrm{round}(\mathbf{t}))
# \odot \mathbf{s}$ between the true position and the pixel centre. If the true position is uniform
# within its pixel (side $s$), the expected error is
#
# $$\mathbb{E}\lVert\mathbf{u}\rVert = s \int_{-1/2}^{1/2}\!\!\int_{-1/2}^{1/2} \sqrt{a^2 + b^2}\,da\,db
#   = 8 s \int_0^{\pi/4}\!\!\int_0^{1/(2\cos\theta)} r^2\,dr\,d\theta
#   = \frac{s}{3}\int_0^{\pi/4} \sec^3\theta\,d\theta = \frac{\sqrt{2} + \ln(1 + \sqrt{2})}{6}\,s
#   \approx 0.383\,s$$
#
# (the square split into eight triangles, polar coordinates in each). The floor of the profile's grid,
# measured by rounding the true test positions to the grid, and the formula at its pixel size:

# %%
full_test = run.dataset("test")
rounded_px = np.round(full_test.target_px)  # (N, K, 2): the best pixel centre a perfect arg-max could answer
floor_mm = float(np.nanmean(radial_error_mm(rounded_px, full_test.target_px, full_test.pixel_size_mm)))
pixel_x_mm, pixel_y_mm = np.median(full_test.pixel_size_mm, axis=0)
uniform_factor = (math.sqrt(2) + math.asinh(1)) / 6  # asinh(1) = ln(1 + sqrt 2)
print(f"pixel size {pixel_x_mm:.3f} x {pixel_y_mm:.3f} mm at {width} x {height}: floor of a perfect arg-max "
      f"{floor_mm:.3f} mm (measured), {uniform_factor:.4f} x s = {uniform_factor * pixel_x_mm:.3f} mm (formula)")
print(f"the model's MRE {metrics['mre_mm']:.2f} mm is {metrics['mre_mm'] / floor_mm:.1f} times the floor")

# %% [markdown]
# The floor is proportional to the pixel size. How much of an MRE it takes, on this grid and on the
# paper's 640 x 800 grid (by the formula, at the pixel size the test images get there; exercise 02.3
# measures it), taking this model's MRE as the yardstick; a share below `SMALL_FLOOR_SHARE` counts as a
# small part of the MRE, one above it as a visible part:

# %%
SMALL_FLOOR_SHARE = 0.10
paper_grid = LandmarkDataset(data.split("test"), (640, 800))  # reads the image sizes only
paper_floor_mm = uniform_factor * float(np.median(paper_grid.pixel_size_mm[:, 0]))
for grid_name, grid_floor_mm in [(f"this grid ({width} x {height})", floor_mm), ("the paper's grid (640 x 800)",
                                                                                 paper_floor_mm)]:
    share = grid_floor_mm / metrics["mre_mm"]
    print(f"{grid_name}: floor {grid_floor_mm:.3f} mm, {share:.1%} of the MRE "
          f"({'a small' if share < SMALL_FLOOR_SHARE else 'a visible'} part of it)")

# %% [markdown]
# Sub-pixel decoding (e.g. a local centre of mass around the mode) lowers the floor; the paper, and this
# kit, keep the plain arg-max.
#
# ### Why the standard deviation is large: hard images
#
# The SD printed above is large compared with the MRE because the errors are far from normal: most are
# small, and a few are very large (a heatmap whose mode lands on the wrong structure). The phantom marks
# some images as **hard cases** (low contrast, an occluder or a cropped border, listed as `hard_cases`
# in its `dataset.yaml`). MRE and SD on the two groups of the test split:

# %%
per_image = result.per_image.set_index("image_id")
errors_mm = per_image[[f"{a}_error_mm" for a in landmarks.abbreviations]].to_numpy()  # (N, K) mm
is_hard_image = per_image.index.isin(sorted(hard))
group_rows = []
for group, mask in [("normal", ~is_hard_image), ("hard", is_hard_image), ("all", np.ones_like(is_hard_image))]:
    group_errors = errors_mm[mask]
    present = group_errors[~np.isnan(group_errors)]
    mre, sd = mean_radial_error(group_errors)
    group_rows.append({"images": int(mask.sum()), "MRE (mm)": mre, "SD (mm)": sd,
                       "median (mm)": float(np.median(present)) if present.size else float("nan"),
                       "errors > 4 mm (%)": 100 * float((present > 4).mean()) if present.size else float("nan"),
                       "largest (mm)": float(present.max()) if present.size else float("nan")})
groups = pd.DataFrame(group_rows, index=pd.Index(["normal", "hard", "all"], name="test images"))
display(groups.round(2))
large = errors_mm > 4
share_of_large = float(large[is_hard_image].sum() / max(large.sum(), 1))
print(f"hard images: {is_hard_image.mean():.0%} of the test images, {share_of_large:.0%} of the errors above 4 mm")

# %% [markdown]
# Compare the SD of the normal images with that of all of them, and the median with the MRE. When a few
# large failures drive the SD (with a trained model they cluster on the hard images), the normal group's
# SD is much the smaller, and the median, which ignores the failures, sits below the MRE. Notebook 05
# asks whether the heatmap's own uncertainty can flag these failures without knowing the truth.
#
# Per landmark (MRE, SD, SDR at 2 mm and 4 mm, the baseline and the annotator distance, all in mm except
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
# ## The Gaussian-target MSE network, side by side
#
# The same network, data, augmentation and schedule, trained instead by the MSE against Gaussian targets
# of width $\sigma$ = `mse_sigma_px` into `RUN_DIR/02_one_hot_heatmap_training/gaussian_mse_model`
# (`mse_epochs` epochs when set). Two settings follow the heatmap-regression literature, so that the
# comparison is fair:
#
# - **The output layer starts near zero.** The output convolution starts with weights of SD 0.001 and
#   zero bias (Xiao et al. 2018 do the same). With the initialisation the NLL network uses, the first
#   outputs are noise whose squared error, summed over the map, is far above that of the targets
#   ($\approx \pi\sigma^2$), and the schedule goes into removing it.
# - **The target is wide enough for the grid.** $\sigma$ is a hyper-parameter that the one-hot NLL does
#   not have. On this profile's coarse grid (pixels of about 1.2 mm on the phantom) the library's default,
#   2 px, leaves a target of a dozen pixels' worth of signal per map against thousands of pixels to keep
#   at zero, and after the same 40 epochs many landmarks still sit on the wrong structure; a wider target
#   gives the regressor more signal from the first epochs and fewer gross failures, at the price of a
#   blurrier map. `benchmarks/bench_mse_sigma.py` trained this network with the widths 2, 4 and 6 px
#   under the `cpu` profile, with this notebook's data, seed and schedule (its record is in
#   `benchmarks/README.md`): test MRE 31.64, 11.34 and 5.06 mm, medians 2.62, 1.80 and 2.34 mm. The
#   width of 6 px gives the lowest MRE, i.e. the fewest gross failures, while 4 px places the typical
#   landmark better; no width brings the MSE network to the NLL network's MRE after the same epochs.
#   Set `mse_sigma_px = 2.0` (and a fresh `run_dir`) to see the difference.
#
# The network's output is read as it is meant to be: the arg-max of the map, and, for its shape, the map
# clipped at 0 and divided by its sum.

# %%
mse_dir = paths.output_dir / "gaussian_mse_model"
mse_checkpoint = mse_dir / LAST_CHECKPOINT
other_width = mse_checkpoint.is_file() and load_checkpoint(mse_checkpoint)["loss"].get("sigma_px") != mse_sigma_px
mse_outcome = train_or_reuse(mse_dir, paths.data_dir, profile, device, seed, retrain=retrain or other_width,
                             progress=progress_bar, loss="gaussian_mse", epochs=mse_epochs, sigma_px=mse_sigma_px,
                             held_out_split="calibration", on_epoch_end=print_epoch, max_steps=max_steps)
mse_history = training_history(mse_dir)
mse_payload = load_checkpoint(mse_checkpoint)
sigma_px = float(mse_payload["loss"]["sigma_px"])
mse_model = model_from_checkpoint(mse_payload, mse_checkpoint).eval().to(torch_device)
print(f"{mse_outcome.action} {paths.show(mse_dir)}: {len(mse_history)} epochs (the NLL network: {len(history)}), "
      f"sigma {sigma_px:g} px, {mse_history['seconds'].sum():.0f} s of training, "
      f"final training MSE {mse_history['loss'].iloc[-1]:.3f} (an all-zero output: {math.pi * sigma_px**2:.3f})")

# %% [markdown]
# Both learning curves. For the MSE the dashed line is the loss of an output that is **zero everywhere**,
# $\sum_i g(i)^2 \approx \pi\sigma^2$: a network below it has learned to put peaks where the landmarks
# are.

# %%
zero_output_mse = math.pi * sigma_px**2
figure = Figure(figsize=(13, 4), layout="constrained")
nll_axes, mse_axes = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
learning_curves(history, uniform_loss=uniform_nll, ax=nll_axes)
learning_curves(mse_history, uniform_loss=zero_output_mse, loss_label="MSE", ax=mse_axes, reference_label="zero output")
nll_axes.set_title("one-hot NLL")
mse_axes.set_title(f"Gaussian targets (σ = {sigma_px:g} px), MSE")
save_figure(figure, paths.output_dir / "learning_curves_nll_mse.png")

# %% [markdown]
# The heatmaps of the two networks for the test image above, on a **linear** scale (each map divided by
# its sum, so that the shapes compare): the NLL network's softmax (top) and the MSE network's clipped
# output (bottom).

# %%
with torch.no_grad():
    mse_outputs = mse_model(item["image"][None].to(torch_device)).float().cpu()
mse_heatmaps = as_distribution(mse_outputs, "heatmap")[0].numpy()  # (K, H, W), each sums to 1
mse_predicted = argmax_2d(mse_outputs)[0].numpy()
compared = chosen[:3]
figure = Figure(figsize=(13, 8), layout="constrained")
for column, abbreviation in enumerate(compared):
    k = landmarks.index(abbreviation)
    for row, (label, maps, points) in enumerate([("NLL", heatmaps, predicted), ("MSE", mse_heatmaps, mse_predicted)]):
        heatmap_overlay(image, maps[k], prediction_px=points[k], target_px=item["target_px"][k].numpy(),
                        annotators_px=item["annotations_px"][:, k].numpy(), crop_half_size_px=crop, log_scale=False,
                        ax=figure.add_subplot(2, len(compared), row * len(compared) + column + 1),
                        title=f"{label}: {landmarks.names[k]} ({abbreviation})")
save_figure(figure, paths.output_dir / "heatmaps_nll_mse.png")

# %% [markdown]
# MRE, SD and SDR of both on the whole test split, and the **spread** of their heatmaps: the root of the
# summed variances along $x$ and $y$ (mm) of the pixels above 5 % of each map's maximum, so that the MSE
# output's small noise far from the peak does not dominate (the same rule for both). Were both networks
# to learn the same $q$, the blur alone would add $2\sigma^2 s^2$ to the MSE heatmap's squared spread
# (printed below the table).

# %%
comparison_rows = []
for label, network_model, output in [("one-hot NLL", model, "logits"), ("Gaussian MSE", mse_model, "heatmap")]:
    pred_px, spread_mm = decode_heatmaps(network_model, full_test, torch_device, output,
                                         batch_size=run.config.eval.batch_size)
    errors = radial_error_mm(pred_px, full_test.target_px, full_test.pixel_size_mm)
    mre, sd = mean_radial_error(errors)
    rates = success_detection_rate(errors, (2.0, 4.0))
    comparison_rows.append({"MRE (mm)": mre, "SD (mm)": sd, "median (mm)": float(np.nanmedian(errors)),
                            "SDR<2 mm (%)": rates[2.0], "SDR<4 mm (%)": rates[4.0],
                            "median spread (mm)": float(np.nanmedian(spread_mm)), "spread_mm": spread_mm})
comparison = pd.DataFrame([{k: v for k, v in row.items() if k != "spread_mm"} for row in comparison_rows],
                          index=pd.Index(["one-hot NLL", "Gaussian MSE"], name="training"))
display(comparison.round(2))
spread_by_landmark = pd.DataFrame({label: np.nanmedian(row["spread_mm"], axis=0)
                                   for label, row in zip(comparison.index, comparison_rows)},
                                  index=landmarks.abbreviations)
wider = int((spread_by_landmark["Gaussian MSE"] > spread_by_landmark["one-hot NLL"]).sum())
blur_mm2 = 2 * (sigma_px * pixel_x_mm) ** 2  # 2 sigma^2 s^2: the Gaussian's variance along x plus along y
nll_spread, mse_spread = comparison["median spread (mm)"]
print(f"median spread: NLL {nll_spread:.2f} mm, with the Gaussian's blur added {math.sqrt(nll_spread**2 + blur_mm2):.2f} "
      f"mm; MSE {mse_spread:.2f} mm. The MSE heatmap is the wider one for {wider} of {K} landmarks.")
nll_mre, mse_mre = comparison["MRE (mm)"]
baseline_mre = float(metrics["baseline_mre_mm"])
print(f"MRE after the same schedule: NLL {nll_mre:.2f} mm, MSE {mse_mre:.2f} mm "
      f"({'the NLL network is the more accurate' if nll_mre < mse_mre else 'the MSE network is as accurate or more'}); "
      f"the mean-position baseline {baseline_mre:.2f} mm: the MSE network "
      f"{'beats it' if mse_mre < baseline_mre else 'does not beat it, so it is no fair competitor here'}")

# %% [markdown]
# What to read in the table and the figure: the MSE-optimal output is $q$ blurred, not a round blob, so
# the MSE network's heatmaps can follow the contours too (the figure shows whether they do here); but they
# are not probabilities, their width includes the Gaussian's, and how well they place the landmarks
# depends on $\sigma$, the initialisation and the schedule (the table gives both networks' MRE, median and
# SDR after the same epochs; a gap between MRE and median is a few gross failures). Were both networks to
# learn the same $q$, the MSE spread would equal the NLL spread with the blur added (the line under the
# table prints both); an MSE spread well above that is a map wider than $q$ blurred, mass away from the
# peak that the regressor has not removed after the same epochs. The NLL needs no $\sigma$, and its
# softmax is a distribution that notebooks 03–05 calibrate and turn into an expected error.
#
# ## Run it on ISBI 2015 or your own data
#
# The notebook works on any data set the kit reads, at the profile's resolution:
#
# 1. Check the data first: `chh data check /path/to/ISBI2015` (the ISBI 2015 folders `RawImage` and
#    `AnnotationsByMD`, or a folder with a `dataset.yaml` describing your own images and landmarks). It
#    lists the splits and any problems without training; `--protocol paper` shows the authors' split.
# 2. In this notebook set the parameter `data_dir = "/path/to/ISBI2015"` (and a fresh `run_dir`), or
#    from a terminal: `papermill notebooks/02_one_hot_heatmap_training.ipynb out.ipynb -p data_dir
#    /path/to/ISBI2015 -p run_dir runs/isbi`. The notebook uses the data set's default split protocol
#    (`clean` for ISBI 2015: a seeded calibration split held out from the training images).
# 3. For the authors' split train headless with `chh train --data /path/to/ISBI2015 --run-dir
#    runs/isbi/model --protocol paper --profile cpu` (or `--profile paper` on a GPU); `chh evaluate
#    --run-dir runs/isbi/model` then reports the same metrics as above.
#
# An ISBI 2015 image (1935 x 2400 pixels of 0.1 mm) is padded and resized by a factor of about 12 to
# 160 x 200 (pixels of about 1.2 mm, a quantisation floor of about 0.46 mm) and by about 3 to the `paper`
# profile's 640 x 800 (about 0.3 mm, a floor of about 0.12 mm).

# %% [markdown]
# ## Recap
#
# - The 2D softmax makes each heatmap a distribution over pixels; the one-hot NLL's expectation under
#   the annotators' distribution $q$ is $H(q) + \mathrm{KL}(q\,\|\,p)$, minimised exactly at $p = q$, and
#   its gradient with respect to the logits is $p - \text{onehot}$.
# - An NLL of $L$ nats is the loss of a heatmap uniform over $e^L$ pixels; the gap between held-out and
#   training NLL reads the same way ($e^{\Delta}$ times less probability on the held-out targets).
# - One training step is forward, one-hot NLL, backward, Adam step; `chh_lib.engine.train` repeats it
#   for every batch and epoch, with a line per epoch (and, if asked, a progress bar) and a checkpoint per epoch.
# - The trained heatmaps hug the contours their landmarks lie on, along the direction in which the
#   annotators disagree.
# - Gaussian targets with the MSE learn $q$ blurred by the Gaussian, elongated too; the differences are
#   normalisation (no probabilities) and the blur (variances add $\sigma^2$ per axis). A regressor's output
#   layer must start near zero, or its schedule goes into removing the initial noise.
# - The arg-max cannot beat the quantisation floor, about $0.383\,s$ for pixels of side $s$.
# - The SD of the radial error is dominated by a few failures, many on hard images; the median and the
#   per-group table show it.

# %% [markdown]
# > **Common pitfalls**
# >
# > - *A softmax over the channels instead of the pixels.* Each landmark's heatmap is a distribution over
# >   its $H \times W$ positions; `softmax_2d` flattens the two spatial axes, not the landmark axis.
# > - *Reading the held-out/training gap with the wrong sign.* $e^{\Delta}$ times less probable when the
# >   held-out NLL is higher; a negative gap (augmented training images are harder) means more probable.
# > - *Comparing the NLL of two grids.* The uniform heatmap's NLL is $\log HW$: losses at different
# >   resolutions are not comparable, nor a loss with the MSE's.
# > - *Judging a regressor with a badly chosen $\sigma$ or initialisation.* A Gaussian-MSE network needs
# >   a target width fitted to the grid and an output layer that starts near zero; compare it with the
# >   mean-position baseline before drawing a lesson from it.
# > - *Forgetting the arg-max floor.* On a coarse grid a perfect model still errs by about $0.383\,s$;
# >   compare the MRE with the floor before asking for more epochs.
# > - *Trusting the MRE alone.* A few gross failures drive the MRE and SD; look at the median and the
# >   SDR too.

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
# ### Exercise 02.1 · The gradient of the NLL, by hand and by autograd
#
# `logits[0, shown_k]` (shape (H, W)) holds the trained network's logits $z$ for landmark `shown_k` of
# the test image above, and `int(item["target_index"][shown_k])` the flat (row-major) index $t$ of its
# target pixel. Without autograd, compute the gradient of $-\log p(t)$ with respect to $z$, i.e.
# $p - \text{onehot}$ with $p = \mathrm{softmax}_{2D}(z)$. Then let autograd compute it: a copy
# `leaf = logits[0, shown_k][None, None].clone().requires_grad_(True)`, the loss
# `one_hot_nll(leaf, torch.tensor([[t]]))`, `.backward()`, and `leaf.grad[0, 0]`. Answer with
# `answer_02_1 = {"gradient": <(H, W) array>, "max_abs_difference": <largest |yours - autograd's|>}`.

# %% tags=["exercise"]
answer_02_1 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    z = logits[0, shown_k].double()  # (H, W)
    t = int(item["target_index"][shown_k])
    by_hand = torch.softmax(z.flatten(), dim=0)  # p over all H*W pixels
    by_hand[t] -= 1.0  # p - onehot
    by_hand = by_hand.reshape(z.shape)
    leaf = logits[0, shown_k][None, None].clone().requires_grad_(True)
    one_hot_nll(leaf, torch.tensor([[t]])).backward()
    answer_02_1 = {"gradient": by_hand.numpy(),
                   "max_abs_difference": float((by_hand - leaf.grad[0, 0].double()).abs().max())}

# %% [markdown]
# Check your answer:

# %%
exercise_results["02_1"] = check.exercise_02_1(answer_02_1, logits[0, shown_k], int(item["target_index"][shown_k]))

# %% [markdown]
# ### Exercise 02.2 · Expected NLL = entropy + KL divergence
#
# A synthetic annotators' distribution for landmark `shown_k` of the same image: $q$ an elongated
# Gaussian over the pixels, centred on the target, with SD `q_sd_along_px` along the contour and
# `q_sd_across_px` across it, the contour's direction taken as the long axis of the trained heatmap
# (`elongated_q` from `chh_lib.exercises.notebook_02`, cut at 4 SDs; the next cell builds it). With $p$
# the trained heatmap `p_shown` (shape (H, W), sums to 1), compute in nats the expected NLL
# $\mathbb{E}_{t\sim q}[-\log p(t)]$, the entropy $H(q)$ and $\mathrm{KL}(q\,\|\,p)$ (sums over the pixels
# where $q > 0$), and see that the first is the sum of the other two. Answer with
# `answer_02_2 = {"expected_nll": ..., "entropy": ..., "kl": ...}`.

# %%
q_sd_along_px, q_sd_across_px = 6.0, 1.0  # the toy's SDs along and across the contour (pixels)
p_shown = torch.softmax(logits[0, shown_k].double().flatten(), dim=0).reshape(height, width).numpy()  # (H, W)
grid_rows, grid_cols = np.mgrid[0:height, 0:width]
centred = np.stack([grid_cols.ravel(), grid_rows.ravel()]) - np.array([[(p_shown * grid_cols).sum()],
                                                                      [(p_shown * grid_rows).sum()]])
contour_direction = np.linalg.eigh((centred * p_shown.ravel()) @ centred.T)[1][:, 1]  # (x, y) of p's long axis
q = elongated_q(np.round(item["target_px"][shown_k].numpy()), contour_direction, q_sd_along_px, q_sd_across_px,
                width, height)
print(f"q: SD {q_sd_along_px:g} px along the direction ({contour_direction[0]:+.2f}, {contour_direction[1]:+.2f}) "
      f"and {q_sd_across_px:g} px across, over {int((q > 0).sum())} pixels")

# %% [markdown]
# Your answer:

# %% tags=["exercise"]
answer_02_2 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    support = q > 0
    expected_nll = float(-(q[support] * np.log(p_shown[support])).sum())
    entropy = float(-(q[support] * np.log(q[support])).sum())
    answer_02_2 = {"expected_nll": expected_nll, "entropy": entropy,
                   "kl": float((q[support] * np.log(q[support] / p_shown[support])).sum())}

# %% [markdown]
# Check your answer:

# %%
exercise_results["02_2"] = check.exercise_02_2(answer_02_2, q, p_shown)

# %% [markdown]
# ### Exercise 02.3 · The quantisation floor at the paper's resolution
#
# The floor above is that of this profile's grid. Build the test split at the paper's 640 x 800 grid,
# `LandmarkDataset(data.split("test"), (640, 800))` (it only reads the image sizes), and compute the floor
# on both grids as above (round `target_px`, `radial_error_mm` with the grid's `pixel_size_mm`, mean over
# the present pairs), and their ratio. Answer with
# `answer_02_3 = {"floor_mm": ..., "floor_paper_mm": ..., "ratio": floor_mm / floor_paper_mm}`.

# %% tags=["exercise"]
answer_02_3 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    floors = []
    for grid in (LandmarkDataset(data.split("test"), (width, height)), LandmarkDataset(data.split("test"), (640, 800))):
        floors.append(float(np.nanmean(radial_error_mm(np.round(grid.target_px), grid.target_px, grid.pixel_size_mm))))
    answer_02_3 = {"floor_mm": floors[0], "floor_paper_mm": floors[1], "ratio": floors[0] / floors[1]}

# %% [markdown]
# Check your answer:

# %%
exercise_results["02_3"] = check.exercise_02_3(answer_02_3, data.split("test"), (width, height), (640, 800))

# %% [markdown]
# ### Exercise 02.4 · Predict, then check: the MSE-optimal heatmap under label noise
#
# Take the toy $q$ of exercise 02.2 (SD `q_sd_along_px` along the contour, `q_sd_across_px` across) as
# the distribution of the target pixel, and Gaussian targets of width `sigma_px` (the MSE network's,
# peak 1, centred on pixel centres). **Predict first**, before computing anything: the output that
# minimises the expected MSE, $h^*(i) = \sum_t q(t)\, g_t(i)$, is
#
# - **(a)** round: the Gaussian target fixes the heatmap's shape;
# - **(b)** elongated exactly as much as $q$;
# - **(c)** elongated, but less than $q$.
#
# and predict the ratio of its SDs along and across the contour as a number (the section on Gaussian
# targets above says how the spreads combine). Then check: compute $h^*$ on the whole $H \times W$ grid
# (`gaussian_heatmaps` from `chh_lib.heatmaps` makes the $g_t$, or write them with NumPy). Answer with
# `answer_02_4 = {"verdict": "a", "b" or "c", "sd_ratio": ..., "optimal_heatmap": <(H, W) array>}`; the
# check measures the ratio on your $h^*$ and says why the right letter is right.

# %% tags=["exercise"]
answer_02_4 = ...  # your code here

# %% [markdown]
# Solution (hidden; expand it after trying):

# %% tags=["solution"]
if solutions:
    rows_q, cols_q = np.nonzero(q)
    centres = torch.tensor(np.stack([cols_q, rows_q], axis=-1)[None], dtype=torch.float32)  # (1, M, 2) as (x, y)
    targets = gaussian_heatmaps(centres, width, height, sigma_px)[0].double().numpy()  # (M, H, W)
    answer_02_4 = {"verdict": "c",
                   "sd_ratio": math.sqrt((q_sd_along_px**2 + sigma_px**2) / (q_sd_across_px**2 + sigma_px**2)),
                   "optimal_heatmap": np.tensordot(q[rows_q, cols_q], targets, axes=1)}

# %% [markdown]
# Check your answer:

# %%
exercise_results["02_4"] = check.exercise_02_4(answer_02_4, q, sigma_px, q_sd_along_px, q_sd_across_px)

# %% [markdown]
# The notebook's key numbers go to `RUN_DIR/02_one_hot_heatmap_training/metrics.json` (with the figures
# above); the test suite reads them.

# %%
written = write_summary("02", globals())

# %% [markdown]
# ## References
#
# - J. McCouat and I. Voiculescu. *Contour-Hugging Heatmaps for Landmark Detection.* CVPR 2022.
# - C. Guo, G. Pleiss, Y. Sun and K. Q. Weinberger. *On Calibration of Modern Neural Networks.* ICML 2017.
# - M. P. Naeini, G. F. Cooper and M. Hauskrecht. *Obtaining Well Calibrated Probabilities Using Bayesian
#   Binning.* AAAI 2015 (the expected calibration error with equal-width bins).
# - J. Nixon, M. W. Dusenberry, L. Zhang, G. Jerfel and D. Tran. *Measuring Calibration in Deep Learning.*
#   CVPR Workshops 2019 (adaptive, equal-mass bins).
# - B. Xiao, H. Wu and Y. Wei. *Simple Baselines for Human Pose Estimation and Tracking.* ECCV 2018 (Gaussian
#   heatmap regression by the MSE, output layer initialised with an SD of 0.001).
# - O. Ronneberger, P. Fischer and T. Brox. *U-Net: Convolutional Networks for Biomedical Image
#   Segmentation.* MICCAI 2015.
# - C.-W. Wang et al. *A benchmark for comparison of dental radiography analysis algorithms.* Medical Image
#   Analysis 31, 2016 (the ISBI 2015 cephalometric landmark challenge).

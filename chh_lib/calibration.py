r"""Temperature scaling: fit one temperature per landmark on held-out data.

The calibrated heatmap of landmark :math:`k` is :math:`\mathrm{softmax}_{2D}(z_k / T_k)`.
A temperature flattens or sharpens the distribution without moving its arg-max,
so MRE and SDR do not change; the mode probabilities, and with them the
reliability diagram, ECE and ERE, do.

Two methods:

``nll`` (default)
    The model is put in eval mode (so BatchNorm uses its running statistics) and
    the calibration split's logits are computed once; :math:`\log T` is then
    fitted by L-BFGS to minimise the one-hot NLL of the calibration targets.
    Per-landmark temperatures are independent, so one joint L-BFGS on the sum of
    the per-landmark mean NLLs fits them all.
``paper``
    The authors' procedure, for comparison: the temperatures themselves (not
    :math:`\log T`) start at 1 and are stepped by Adam (lr 0.01) on the NLL of
    augmented calibration batches for 15 epochs; after each epoch the ECE is
    measured on a selection set (the second half of the calibration data when no
    ``selection`` split exists) and the epoch with the lowest ECE is kept, so
    the untouched :math:`T = 1` is never returned. Two departures, both needed
    for a correct result: the model is in eval mode (the authors' code left it
    in training mode, which lets BatchNorm statistics drift), and after each
    step the temperatures are clipped to ``TEMPERATURE_RANGE`` (a step below 0
    would flip the heatmap).

Never fit on data that ``chh evaluate`` reports: the split names ``test`` and
``test2`` are refused.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from chh_lib.data.dataset import LandmarkDataset
from chh_lib.devices import float32_logits
from chh_lib.errors import ConfigError
from chh_lib.heatmaps import (
    MISSING_INDEX,
    TemperatureScaling,
    argmax_2d,
    check_finite,
    mode_probability,
    scale_logits,
    target_nll,
)
from chh_lib.metrics import correct_within_pixel, radial_error_mm, reliability_bins

logger = logging.getLogger(__name__)

REPORTED_SPLITS = ("test", "test2")
#: Temperature scopes, fewest parameters first: T = 1 (nothing fitted), one for all landmarks, one per landmark.
TEMPERATURE_SCOPES = ("none", "global", "per_landmark")
#: Below this many images in the calibration split, ``chh calibrate`` warns that the fitted
#: temperatures and the ERE threshold may not transfer (notebook 03, "Small calibration sets",
#: measures the spread of T and of the ECE over resamples of 25 and of 100 images).
MIN_CALIBRATION_IMAGES = 50
#: Fitted temperatures are kept within this range; beyond it a heatmap is all but uniform or one-hot.
TEMPERATURE_RANGE = (0.01, 100.0)


@dataclass
class HeldOutLogits:
    """Logits of a held-out split, computed once in eval mode.

    Attributes
    ----------
    logits : Tensor, shape (N, K, H, W), float32, on the CPU
    target_index : Tensor, shape (N, K), int64
        Flat index of the one-hot target, -1 when missing.
    """

    logits: torch.Tensor
    target_index: torch.Tensor
    target_px: np.ndarray
    pixel_size_mm: np.ndarray


@dataclass
class CalibrationResult:
    """Fitted temperatures and the NLL on the calibration data before and after.

    Attributes
    ----------
    temperatures : ndarray, shape (K,)
        One per landmark (all equal for a global temperature).
    nll_before, nll_after : float
        Mean one-hot NLL (nats) of the calibration split at T = 1 and at the fitted T.
    scope : str
        ``per_landmark``, ``global`` or ``none`` (T = 1: nothing fitted).
    ere_threshold : dict, optional
        The ERE threshold chosen with these temperatures (``chh calibrate`` sets it).
    """

    temperatures: np.ndarray
    method: str
    split: str
    num_images: int
    nll_before: float
    nll_after: float
    details: dict = field(default_factory=dict)
    scope: str = "per_landmark"
    ere_threshold: dict | None = None


def check_calibration_split(split: str) -> None:
    """Refuse to fit temperatures on a split that ``chh evaluate`` reports."""
    if split in REPORTED_SPLITS:
        raise ConfigError(
            f"temperatures may not be fitted on the {split!r} split, which evaluation reports; "
            "use the 'calibration' split"
        )


@torch.no_grad()
def collect_logits(model: nn.Module, dataset: LandmarkDataset, device: torch.device, batch_size: int = 8) -> HeldOutLogits:
    """Run ``model`` in eval mode over ``dataset`` once and keep the float32 logits on the CPU."""
    model.eval().to(device)
    logits, targets = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        output = float32_logits(model, batch["image"].to(device))
        check_finite(output, f"model output for {len(batch['image'])} calibration images")
        logits.append(output.cpu())
        targets.append(batch["target_index"])
    return HeldOutLogits(torch.cat(logits), torch.cat(targets), dataset.target_px.copy(), dataset.pixel_size_mm.copy())


def per_landmark_nll(logits: torch.Tensor, target_index: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    r"""Mean NLL of each landmark over the images where it is present, at the given temperatures.

    Parameters
    ----------
    logits : Tensor, shape (N, K, H, W)
    target_index : Tensor, shape (N, K), int64 (-1 = missing)
    temperature : Tensor, shape (K,) or (1,)

    Returns
    -------
    Tensor, shape (K,)
        :math:`\frac{1}{|P_k|}\sum_{n \in P_k} \left(\log\sum_j e^{z_{n,k}(j)/T_k} - z_{n,k}(t_{n,k})/T_k\right)`;
        NaN for a landmark present in no image.
    """
    nll = target_nll(scale_logits(logits, temperature), target_index)  # (N, K), NaN = missing
    present = target_index != MISSING_INDEX
    return torch.where(present, nll, torch.zeros_like(nll)).sum(dim=0) / present.sum(dim=0)


def pooled_nll(logits: torch.Tensor, target_index: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """NLL averaged over every present (image, landmark) pair, in nats (differentiable in ``temperature``)."""
    nll = target_nll(scale_logits(logits, temperature), target_index)  # (N, K), NaN = missing
    return nll[target_index != MISSING_INDEX].mean()


def fit_temperatures_nll(held_out: HeldOutLogits, per_landmark: bool = True, max_iter: int = 100,
                         warn_clipped: bool = True) -> CalibrationResult:
    """Fit :math:`\\log T` by L-BFGS on the held-out NLL (see the module docstring).

    Parameters
    ----------
    held_out : HeldOutLogits
    per_landmark : bool
        One temperature per landmark (default) or a single global one.
    warn_clipped : bool
        Log a warning when temperatures are clipped to ``TEMPERATURE_RANGE`` (the folds of
        :func:`cross_validated_nll` stay quiet: the final fit says it once).
    """
    num_landmarks = held_out.logits.shape[1]
    present = (held_out.target_index != MISSING_INDEX).any(dim=0)  # (K,)
    if not bool(present.any()):
        raise ConfigError("no landmark is present in the calibration split: nothing to fit")
    scaling = TemperatureScaling(num_landmarks if per_landmark else 1)
    optimizer = torch.optim.LBFGS(scaling.parameters(), lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        temperature = scaling.temperature.expand(num_landmarks)
        if per_landmark:
            loss = per_landmark_nll(held_out.logits, held_out.target_index, temperature)[present].sum()
        else:
            loss = pooled_nll(held_out.logits, held_out.target_index, temperature)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperatures = scaling.temperature.detach().expand(num_landmarks).clone()
    temperatures[~present] = 1.0  # nothing to fit: leave those landmarks unscaled
    bounded = temperatures.clamp(*TEMPERATURE_RANGE)
    if not torch.equal(bounded, temperatures) and warn_clipped:
        logger.warning(
            "%d fitted temperatures fell outside %s and were clipped: the calibration data may be too few "
            "or the model barely trained", int((bounded != temperatures).sum()), TEMPERATURE_RANGE,
        )
    temperatures = bounded
    with torch.no_grad():
        nll_before = float(pooled_nll(held_out.logits, held_out.target_index, torch.ones(num_landmarks)))
        nll_after = float(pooled_nll(held_out.logits, held_out.target_index, temperatures))
    return CalibrationResult(
        temperatures=temperatures.numpy().astype(np.float64),
        method="nll",
        split="",
        num_images=int(held_out.logits.shape[0]),
        nll_before=nll_before,
        nll_after=nll_after,
        details={"per_landmark": per_landmark},
    )


def cross_validated_nll(held_out: HeldOutLogits, num_folds: int = 5, seed: int = 0) -> dict[str, float]:
    """Held-out NLL of no temperature, a global one and one per landmark, by K-fold cross-validation over images.

    The images of ``held_out`` are shuffled (``seed``) into ``num_folds`` folds; each
    fold's NLL is measured at the temperatures fitted on the other folds (``none``:
    at T = 1, nothing fitted). With few calibration images, per-landmark
    temperatures (K parameters) can over-fit where one global temperature does not,
    and a temperature fitted on a few images can be worse on new ones than none;
    this measures which generalises best without touching the test split.

    Returns
    -------
    dict
        ``none``, ``global`` and ``per_landmark``: mean NLL (nats) over all present
        pairs of the held-out folds; ``num_folds``.
    """
    num_images = held_out.logits.shape[0]
    if num_images < num_folds or num_folds < 2:
        raise ConfigError(f"{num_folds}-fold cross-validation needs at least {max(num_folds, 2)} images, "
                          f"the calibration split has {num_images}")
    num_landmarks = held_out.logits.shape[1]
    order = np.random.default_rng(seed).permutation(num_images)
    folds = np.array_split(order, num_folds)
    totals = dict.fromkeys(TEMPERATURE_SCOPES, 0.0)
    count = 0
    for fold in folds:
        inside = np.setdiff1d(order, fold)
        fitting = subset_logits(held_out, inside)
        testing = subset_logits(held_out, fold)
        present = int((testing.target_index != MISSING_INDEX).sum())
        for scope in TEMPERATURE_SCOPES:
            if scope == "none":
                temperature = torch.ones(num_landmarks)
            else:
                fitted = fit_temperatures_nll(fitting, per_landmark=scope == "per_landmark", warn_clipped=False)
                temperature = torch.as_tensor(fitted.temperatures)
            nll = pooled_nll(testing.logits, testing.target_index, temperature)
            totals[scope] += float(nll) * present
        count += present
    return {scope: total / count for scope, total in totals.items()} | {"num_folds": num_folds}


def choose_scope(cross_validation: dict[str, float]) -> str:
    """The scope of lowest cross-validated NLL; on a tie the one with fewer parameters (none, global, per_landmark)."""
    return min(TEMPERATURE_SCOPES, key=lambda scope: (cross_validation[scope], TEMPERATURE_SCOPES.index(scope)))


def unit_temperatures(held_out: HeldOutLogits) -> CalibrationResult:
    """The result of choosing no temperature (T = 1 for every landmark): the NLL is unchanged."""
    num_landmarks = held_out.logits.shape[1]
    with torch.no_grad():
        nll = float(pooled_nll(held_out.logits, held_out.target_index, torch.ones(num_landmarks)))
    return CalibrationResult(temperatures=np.ones(num_landmarks), method="nll", split="",
                             num_images=int(held_out.logits.shape[0]), nll_before=nll, nll_after=nll,
                             details={"per_landmark": False}, scope="none")


def subset_logits(held_out: HeldOutLogits, indices: np.ndarray) -> HeldOutLogits:
    """The images of ``held_out`` at ``indices`` (repeats allowed, as in a bootstrap resample)."""
    index = torch.as_tensor(np.sort(indices))
    return HeldOutLogits(held_out.logits[index], held_out.target_index[index],
                         held_out.target_px[index.numpy()], held_out.pixel_size_mm[index.numpy()])


def selection_ece_percent(held_out: HeldOutLogits, temperature: torch.Tensor) -> float:
    """CHH ECE (percent) of ``held_out`` at the given temperatures; the arg-max is computed at T = 1."""
    with torch.no_grad():
        pred_px = argmax_2d(held_out.logits).numpy()
        confidence = mode_probability(scale_logits(held_out.logits, temperature)).numpy()
    errors = radial_error_mm(pred_px, held_out.target_px, held_out.pixel_size_mm)  # (N, K)
    keep = ~np.isnan(errors)
    pixel_size = np.broadcast_to(held_out.pixel_size_mm[:, None, :], errors.shape + (2,))
    correct = correct_within_pixel(errors[keep], pixel_size[keep])
    return float(reliability_bins(confidence[keep], correct).ece_percent)


def fit_temperatures_paper(
    model: nn.Module,
    calibration: LandmarkDataset,
    selection: HeldOutLogits,
    device: torch.device,
    epochs: int = 15,
    batch_size: int = 4,
    lr: float = 0.01,
) -> CalibrationResult:
    """The authors' procedure: Adam on T over augmented calibration batches, the epoch of lowest selection ECE kept.

    Parameters
    ----------
    calibration : LandmarkDataset
        Fitting data, normally with the training augmentation (the model runs in
        eval mode, without gradients).
    selection : HeldOutLogits
        Logits of the selection data, on which each epoch's ECE is measured.
    epochs : int
        At least 1 (the authors: 15).
    """
    if epochs < 1:
        raise ConfigError(f"the paper calibration method needs at least one epoch, got {epochs}")
    model.eval().to(device)
    num_landmarks = selection.logits.shape[1]
    temperature = torch.nn.Parameter(torch.ones(num_landmarks, device=device))
    optimizer = torch.optim.Adam([temperature], lr=lr)
    history = [{"epoch": 0, "selection_ece_percent": selection_ece_percent(selection, torch.ones(num_landmarks))}]
    best_ece, best, best_epoch = float("inf"), torch.ones(num_landmarks), 0
    for epoch in range(epochs):
        calibration.set_epoch(epoch)
        for batch in DataLoader(calibration, batch_size=batch_size, shuffle=True,
                                generator=torch.Generator().manual_seed(epoch)):
            target_index = batch["target_index"].to(device)
            if not bool((target_index != MISSING_INDEX).any()):
                continue
            with torch.no_grad():
                logits = float32_logits(model, batch["image"].to(device))
            loss = pooled_nll(logits, target_index, temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                temperature.clamp_(*TEMPERATURE_RANGE)
        current = temperature.detach().cpu().clone()
        ece = selection_ece_percent(selection, current)
        history.append({"epoch": epoch + 1, "selection_ece_percent": ece})
        if ece < best_ece:
            best_ece, best, best_epoch = ece, current, epoch + 1
    ones = torch.ones(num_landmarks)
    return CalibrationResult(
        temperatures=best.numpy().astype(np.float64),
        method="paper",
        split="",
        num_images=len(calibration),
        nll_before=float(pooled_nll(selection.logits, selection.target_index, ones)),
        nll_after=float(pooled_nll(selection.logits, selection.target_index, best)),
        details={"selection_ece_percent": best_ece, "best_epoch": best_epoch, "history": history,
                 "nll_measured_on": "selection"},
    )

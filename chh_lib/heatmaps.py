r"""Heatmaps as 2D probability distributions over pixel positions.

A network outputs one logit map :math:`z_{k}` per landmark :math:`k`. The 2D softmax

.. math:: p_k(i) = \frac{\exp z_k(i)}{\sum_{j \in H \times W} \exp z_k(j)}

turns it into a distribution over all :math:`H W` pixels. Everything here works in
float32 whatever the input dtype (bf16 logits from autocast included), and uses
``log_softmax`` (max-subtracted) so that logits of :math:`\pm 10^4` stay finite.

Shapes: logits and heatmaps are (N, K, H, W); points are (N, K, 2) as (x, y) in
pixels of the heatmap, float.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from chh_lib.errors import NonFiniteError

MISSING_INDEX = -1
#: Width in pixels of the Gaussian target heatmaps (the MSE alternative to the one-hot target).
DEFAULT_SIGMA_PX = 2.0


def log_softmax_2d(logits: torch.Tensor) -> torch.Tensor:
    r"""Log of the 2D softmax over each (H, W) map, in float32.

    Parameters
    ----------
    logits : Tensor, shape (N, K, H, W)

    Returns
    -------
    Tensor, shape (N, K, H, W), float32
        :math:`\log p_k(i) = z_k(i) - \log\sum_j \exp z_k(j)`.
    """
    _check_4d(logits)
    flat = logits.float().flatten(2)  # (N, K, H*W)
    return F.log_softmax(flat, dim=-1).view(logits.shape)


def softmax_2d(logits: torch.Tensor) -> torch.Tensor:
    """2D softmax over each (H, W) map, in float32; each map sums to 1. Shape (N, K, H, W)."""
    return log_softmax_2d(logits).exp()


def target_flat_index(target_px: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Flat pixel index ``row * width + column`` of the one-hot target at the rounded position.

    Parameters
    ----------
    target_px : Tensor, shape (..., 2)
        (x, y) in pixels; NaN marks a missing landmark.

    Returns
    -------
    Tensor, shape (...), int64
        :data:`MISSING_INDEX` (-1) where the landmark is missing or its rounded
        position lies outside the ``width`` x ``height`` grid (never clipped).
    """
    rounded = torch.round(target_px)
    x, y = rounded[..., 0], rounded[..., 1]
    inside = torch.isfinite(x) & torch.isfinite(y) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
    index = torch.where(inside, y * width + x, torch.zeros_like(x)).long()
    return torch.where(inside, index, torch.full_like(index, MISSING_INDEX))


def one_hot_nll(logits: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
    r"""Negative log-likelihood of the one-hot target pixel, averaged over present landmarks.

    .. math:: \mathcal{L} = -\frac{1}{|P|} \sum_{(n, k) \in P} \log p_{n,k}(t_{n,k})

    where :math:`P` is the set of (image, landmark) pairs whose target is present.

    Parameters
    ----------
    logits : Tensor, shape (N, K, H, W)
    target_index : Tensor, shape (N, K), int64
        Flat index of the target pixel (see :func:`target_flat_index`), -1 = missing.

    Returns
    -------
    Tensor, scalar float32
        NaN-free; raises :class:`ValueError` if no landmark is present.
    """
    _check_4d(logits)
    n, k = logits.shape[:2]
    if target_index.shape != (n, k):
        raise ValueError(f"target_index shape {tuple(target_index.shape)} does not match logits {(n, k)}")
    if not bool((target_index != MISSING_INDEX).any()):
        raise ValueError("no landmark is present in this batch: the loss is undefined")
    flat = logits.float().reshape(n * k, -1)  # (N*K, H*W)
    return F.cross_entropy(flat, target_index.reshape(-1), ignore_index=MISSING_INDEX)


def target_nll(logits: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
    r"""NLL of each target pixel: :math:`\log\sum_j e^{z_{n,k}(j)} - z_{n,k}(t_{n,k})`, in float32.

    Parameters
    ----------
    logits : Tensor, shape (N, K, H, W)
        Divide by the temperatures first for the calibrated NLL (differentiable in them).
    target_index : Tensor, shape (N, K), int64
        Flat index of the target pixel, -1 = missing.

    Returns
    -------
    Tensor, shape (N, K), float32
        Nats; NaN where the target is missing.
    """
    _check_4d(logits)
    flat = logits.float().flatten(2)  # (N, K, H*W)
    present = target_index != MISSING_INDEX
    safe_index = torch.where(present, target_index, torch.zeros_like(target_index))
    nll = torch.logsumexp(flat, dim=-1) - flat.gather(-1, safe_index.unsqueeze(-1)).squeeze(-1)
    return torch.where(present, nll, torch.full_like(nll, float("nan")))


def gaussian_heatmaps(target_px: torch.Tensor, width: int, height: int, sigma_px: float = DEFAULT_SIGMA_PX) -> torch.Tensor:
    r"""Gaussian target heatmaps, :math:`g_k(i) = \exp(-\lVert \mathbf{x}_i - \mathbf{t}_k \rVert^2 / 2\sigma^2)`.

    The usual alternative to the one-hot target: a round blob of peak 1 centred on the
    (unrounded) target position.

    Parameters
    ----------
    target_px : Tensor, shape (N, K, 2)
        (x, y) in pixels of the ``width`` x ``height`` grid; NaN marks a missing landmark.
    width, height : int
        Grid size in pixels.
    sigma_px : float
        Standard deviation of the Gaussian in pixels (positive).

    Returns
    -------
    Tensor, shape (N, K, height, width), float32
        All zeros for a missing landmark.
    """
    if sigma_px <= 0:
        raise ValueError(f"sigma_px must be positive, got {sigma_px}")
    if target_px.ndim != 3 or target_px.shape[-1] != 2:
        raise ValueError(f"expected (N, K, 2) target positions, got shape {tuple(target_px.shape)}")
    target = target_px.float()
    xs = torch.arange(width, dtype=torch.float32, device=target.device)  # (W,)
    ys = torch.arange(height, dtype=torch.float32, device=target.device)  # (H,)
    dx2 = (xs - target[..., 0:1]) ** 2  # (N, K, W)
    dy2 = (ys - target[..., 1:2]) ** 2  # (N, K, H)
    maps = torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2 * sigma_px**2))  # (N, K, H, W)
    return torch.nan_to_num(maps, nan=0.0)


def gaussian_mse_per_landmark(outputs: torch.Tensor, target_px: torch.Tensor, sigma_px: float = DEFAULT_SIGMA_PX) -> torch.Tensor:
    r"""Squared error of each output map against its Gaussian target, summed over the pixels, in float32.

    .. math:: E_{n,k} = \sum_i \left(h_{n,k}(i) - g_{n,k}(i)\right)^2

    Summed rather than averaged over the :math:`HW` pixels: the two differ by the constant
    :math:`HW`, but with the mean the gradients of a nearly trained network are so small
    (about :math:`10^{-8}`) that Adam's :math:`\epsilon` damps its steps. An output that is zero
    everywhere scores :math:`\sum_i g(i)^2 \approx \pi\sigma^2`, whatever the grid.

    Parameters
    ----------
    outputs : Tensor, shape (N, K, H, W)
        The network's output maps :math:`h` (no softmax).
    target_px : Tensor, shape (N, K, 2)
        (x, y) in pixels; NaN marks a missing landmark.
    sigma_px : float
        Width of the Gaussian target (see :func:`gaussian_heatmaps`).

    Returns
    -------
    Tensor, shape (N, K), float32
        NaN where the landmark is missing.
    """
    _check_4d(outputs)
    n, k, height, width = outputs.shape
    if target_px.shape != (n, k, 2):
        raise ValueError(f"target_px shape {tuple(target_px.shape)} does not match outputs {(n, k)}")
    target = gaussian_heatmaps(target_px.to(outputs.device), width, height, sigma_px)
    mse = ((outputs.float() - target) ** 2).sum(dim=(-2, -1))  # (N, K)
    present = torch.isfinite(target_px.to(outputs.device)).all(dim=-1)
    return torch.where(present, mse, torch.full_like(mse, float("nan")))


def gaussian_mse(outputs: torch.Tensor, target_px: torch.Tensor, sigma_px: float = DEFAULT_SIGMA_PX) -> torch.Tensor:
    r"""The Gaussian-target squared-error loss, averaged over present landmarks.

    .. math:: \mathcal{L}_\mathrm{MSE} = \frac{1}{|P|} \sum_{(n, k) \in P}
        \sum_i \left(h_{n,k}(i) - g_{n,k}(i)\right)^2

    (the per-pixel mean squared error times :math:`HW`; see :func:`gaussian_mse_per_landmark`).

    Parameters
    ----------
    outputs : Tensor, shape (N, K, H, W)
    target_px : Tensor, shape (N, K, 2)
        NaN marks a missing landmark.
    sigma_px : float

    Returns
    -------
    Tensor, scalar float32
        Raises :class:`ValueError` if no landmark is present.
    """
    per_landmark = gaussian_mse_per_landmark(outputs, target_px, sigma_px)  # (N, K)
    present = ~torch.isnan(per_landmark)
    if not bool(present.any()):
        raise ValueError("no landmark is present in this batch: the loss is undefined")
    return per_landmark[present].mean()


def quadratic_peak_2d(logits: torch.Tensor) -> torch.Tensor:
    r"""Sub-pixel position of each heatmap's mode: the arg-max pixel moved by a parabola fit.

    Along x (and the same along y), a parabola through the log-probabilities
    :math:`l_{-1}, l_0, l_{+1}` of the arg-max pixel and its two neighbours peaks at

    .. math:: \delta = \frac{1}{2}\,\frac{l_{-1} - l_{+1}}{l_{-1} - 2 l_0 + l_{+1}},

    clipped to :math:`[-\tfrac12, \tfrac12]`; exact for a Gaussian heatmap (whose log is
    a parabola). The offset is 0 on the border of the grid or where the three values are
    not concave. Log-probabilities and logits differ by a constant per map, and a
    temperature scales both sides alike, so the result depends on neither.

    Parameters
    ----------
    logits : Tensor, shape (N, K, H, W)

    Returns
    -------
    Tensor, shape (N, K, 2), float32
        (x, y) in pixels of the grid.
    """
    _check_4d(logits)
    values = logits.float()
    n, k, height, width = values.shape
    peak = argmax_2d(values)  # (N, K, 2)
    x, y = peak[..., 0].long(), peak[..., 1].long()
    flat = values.flatten(2)  # (N, K, H*W)

    def at(row: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        index = (row.clamp(0, height - 1) * width + column.clamp(0, width - 1))[..., None]
        return flat.gather(-1, index)[..., 0]

    centre = at(y, x)

    def offset(before: torch.Tensor, after: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        curvature = before - 2 * centre + after
        usable = inside & (curvature < 0) & torch.isfinite(curvature)
        delta = 0.5 * (before - after) / torch.where(usable, curvature, torch.ones_like(curvature))
        return torch.where(usable, delta.clamp(-0.5, 0.5), torch.zeros_like(delta))

    dx = offset(at(y, x - 1), at(y, x + 1), (x > 0) & (x < width - 1))
    dy = offset(at(y - 1, x), at(y + 1, x), (y > 0) & (y < height - 1))
    return peak + torch.stack([dx, dy], dim=-1)


def argmax_2d(maps: torch.Tensor) -> torch.Tensor:
    """Position of the first maximum of each map, in row-major order.

    Parameters
    ----------
    maps : Tensor, shape (N, K, H, W)
        Logits or heatmaps (softmax and temperature do not move the arg-max).

    Returns
    -------
    Tensor, shape (N, K, 2), float32
        (x, y) = (column, row) in pixels.
    """
    _check_4d(maps)
    width = maps.shape[-1]
    index = maps.flatten(2).argmax(dim=-1)  # (N, K)
    return torch.stack([index % width, torch.div(index, width, rounding_mode="floor")], dim=-1).float()


def mode_probability(logits: torch.Tensor) -> torch.Tensor:
    r"""Probability of the hottest pixel, :math:`\max_i p_k(i) = \exp(\max_i z_k(i) - \log\sum_j e^{z_k(j)})`.

    Parameters
    ----------
    logits : Tensor, shape (N, K, H, W)

    Returns
    -------
    Tensor, shape (N, K), float32
    """
    _check_4d(logits)
    flat = logits.float().flatten(2)
    return torch.exp(flat.max(dim=-1).values - torch.logsumexp(flat, dim=-1))


def check_finite(logits: torch.Tensor, where: str) -> None:
    """Raise :class:`NonFiniteError` naming ``where`` if ``logits`` holds NaN or infinity."""
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).sum())
        raise NonFiniteError(f"{where}: {bad} non-finite logit values (NaN or infinity)")


def _check_4d(tensor: torch.Tensor) -> None:
    if tensor.ndim != 4:
        raise ValueError(f"expected a (N, K, H, W) tensor, got shape {tuple(tensor.shape)}")


def scale_logits(logits: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    r"""Divide each landmark's logits by its temperature, in float32: :math:`z_k / T_k`.

    Parameters
    ----------
    logits : Tensor, shape (N, K, H, W)
    temperature : Tensor of shape (K,) or (1,), or a float
        Positive temperatures; :math:`T > 1` flattens the heatmap, :math:`T < 1` sharpens it.
        The arg-max is unchanged.

    Returns
    -------
    Tensor, shape (N, K, H, W), float32
    """
    _check_4d(logits)
    temperature = torch.as_tensor(temperature, dtype=torch.float32, device=logits.device).reshape(-1)
    if temperature.numel() not in (1, logits.shape[1]):
        raise ValueError(f"{temperature.numel()} temperatures for {logits.shape[1]} landmarks")
    if not bool((temperature > 0).all()):
        raise ValueError("temperatures must be positive")
    return logits.float() / temperature.view(1, -1, 1, 1)


class TemperatureScaling(torch.nn.Module):
    r"""Learnable temperatures, stored as :math:`\log T` so that :math:`T` stays positive.

    Parameters
    ----------
    num_temperatures : int
        ``K`` for one temperature per landmark, 1 for a single global one.
    """

    def __init__(self, num_temperatures: int) -> None:
        super().__init__()
        self.log_temperature = torch.nn.Parameter(torch.zeros(num_temperatures))

    @property
    def temperature(self) -> torch.Tensor:
        """(K,) or (1,) positive temperatures."""
        return self.log_temperature.exp()

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Scaled logits (N, K, H, W), float32."""
        return logits.float() / self.temperature.view(1, -1, 1, 1)

"""Benchmark the expected radial error (ERE) on a realistic (4, 19, 800, 640) batch.

Times, on the same seeded float32 batch of sharp heatmaps (round, contour-hugging
arcs and a few bimodal ones, about 100-200 pixels above the 5 % cutoff each):

- ``chh_lib.metrics.expected_radial_error`` (band maxima, then only candidate bands);
- the authors' algorithm, re-implemented here from its description: per map,
  normalise by the maximum, threshold, then a Python loop over the significant pixels;
- a simple sparse version: threshold the whole tensor, ``nonzero``, gather, ``index_add_``;
- a naive dense version: the distance of every pixel to the mode, masked;
- one ``max`` + ``argmax`` pass over the tensor (a floor for any exact method);
- ``expected_radial_error`` on CUDA when a GPU is present.

Each is run once to warm up, then ``--repeats`` times; the median is reported.
Torch uses 2 threads. Writes ``benchmarks/results/ere.json``.

Usage::

    python benchmarks/bench_ere.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from chh_lib.metrics import expected_radial_error

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "ere.json"
SHAPE = (4, 19, 800, 640)
CUTOFF = 0.05


def realistic_heatmaps(shape: tuple[int, int, int, int] = SHAPE, seed: int = 0) -> torch.Tensor:
    """Seeded softmax heatmaps like a trained model's: 70 % round, 20 % arcs, 10 % bimodal."""
    n, k, height, width = shape
    gen = torch.Generator().manual_seed(seed)
    ys = torch.arange(height, dtype=torch.float64)[:, None]
    xs = torch.arange(width, dtype=torch.float64)[None, :]
    logits = torch.empty(n * k, height, width, dtype=torch.float64)

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))

    for index in range(n * k):
        cx, cy = uniform(60, width - 60), uniform(60, height - 60)
        kind = uniform(0, 1)
        if kind < 0.7:  # round peak, sigma 2.2-3.2 px
            sigma = uniform(2.2, 3.2)
            log_density = -0.5 * ((xs - cx) ** 2 + (ys - cy) ** 2) / sigma**2
        elif kind < 0.9:  # contour-hugging: narrow across an arc, wide along it
            radius, phase = uniform(30, 60), uniform(-3.1, 3.1)
            ox, oy = cx - radius * torch.cos(torch.tensor(phase)), cy - radius * torch.sin(torch.tensor(phase))
            dist = torch.sqrt((xs - ox) ** 2 + (ys - oy) ** 2)
            angle = torch.remainder(torch.atan2(ys - oy, xs - ox) - phase + torch.pi, 2 * torch.pi) - torch.pi
            across, along = uniform(1.2, 1.8), uniform(5.0, 8.0)
            log_density = -0.5 * ((dist - radius) / across) ** 2 - 0.5 * (radius * angle / along) ** 2
        else:  # bimodal: two peaks 20-40 px apart
            sep, theta = uniform(20, 40), uniform(0, 3.1)
            sigma = uniform(2.0, 2.8)
            second = torch.tensor(uniform(-1.0, -0.2), dtype=torch.float64)
            first_peak = -0.5 * ((xs - cx) ** 2 + (ys - cy) ** 2) / sigma**2
            bx, by = cx + sep * torch.cos(torch.tensor(theta)), cy + sep * torch.sin(torch.tensor(theta))
            second_peak = second - 0.5 * ((xs - bx) ** 2 + (ys - by) ** 2) / sigma**2
            log_density = torch.logaddexp(first_peak, second_peak)
        noise = 0.2 * torch.randn(height, width, generator=gen, dtype=torch.float64)
        logits[index] = torch.clamp(log_density, min=-25.0) + noise
    return torch.softmax(logits.flatten(1), dim=-1).view(shape).float()


def authors_ere(heatmaps: torch.Tensor, pixel_size_mm: torch.Tensor, cutoff: float = CUTOFF) -> torch.Tensor:
    """The authors' algorithm, in NumPy as their code is: per map, normalise and threshold the
    whole map, then loop in Python over the significant pixels only."""
    maps = heatmaps.numpy()
    sizes = pixel_size_mm.numpy()
    n, k, _, width = maps.shape
    out = np.zeros((n, k))
    for image in range(n):
        px, py = sizes[image]
        for landmark in range(k):
            heatmap = maps[image, landmark]
            norm = heatmap / heatmap.max()
            norm[norm <= cutoff] = 0.0
            q = norm / norm.sum()
            y_hat, x_hat = np.unravel_index(np.argmax(heatmap), heatmap.shape)
            total = 0.0
            for y, x in zip(*np.nonzero(q)):
                total += q[y, x] * np.hypot((x - x_hat) * px, (y - y_hat) * py)
            out[image, landmark] = total
    return torch.from_numpy(out)


def sparse_ere(heatmaps: torch.Tensor, pixel_size_mm: torch.Tensor, cutoff: float = CUTOFF) -> torch.Tensor:
    """Simple sparse version: threshold the whole tensor, nonzero, gather, index_add_."""
    n, k, height, width = heatmaps.shape
    flat = heatmaps.reshape(n * k, height * width)
    peak, argmax = flat.max(-1)
    norm = flat / peak[:, None]
    owner, index = torch.nonzero(norm > cutoff, as_tuple=True)
    weight = norm[owner, index]
    pixel = pixel_size_mm.to(heatmaps.dtype)[torch.div(owner, k, rounding_mode="floor")]
    dx = ((index % width) - (argmax % width)[owner]).to(heatmaps.dtype) * pixel[:, 0]
    dy = (torch.div(index, width, rounding_mode="floor") - torch.div(argmax, width, rounding_mode="floor")[owner])
    distance = torch.hypot(dx, dy.to(heatmaps.dtype) * pixel[:, 1])
    total = torch.zeros(n * k, dtype=heatmaps.dtype).index_add_(0, owner, weight)
    moment = torch.zeros(n * k, dtype=heatmaps.dtype).index_add_(0, owner, weight * distance)
    return (moment / total).view(n, k)


def dense_ere(heatmaps: torch.Tensor, pixel_size_mm: torch.Tensor, cutoff: float = CUTOFF) -> torch.Tensor:
    """Naive dense version: distance of every pixel to the mode, masked by the threshold."""
    n, k, height, width = heatmaps.shape
    peak, argmax = heatmaps.flatten(2).max(-1)
    norm = heatmaps / peak[..., None, None]
    weight = torch.where(norm > cutoff, norm, torch.zeros_like(norm))
    pixel = pixel_size_mm.to(heatmaps.dtype)
    xs = torch.arange(width, dtype=heatmaps.dtype)
    ys = torch.arange(height, dtype=heatmaps.dtype)
    dx = (xs - (argmax % width)[..., None].to(heatmaps.dtype)) * pixel[:, None, None, 0]
    dy = (ys - torch.div(argmax, width, rounding_mode="floor")[..., None].to(heatmaps.dtype)) * pixel[:, None, None, 1]
    distance = torch.hypot(dx[..., None, :], dy[..., :, None])
    return (weight * distance).sum((-2, -1)) / weight.sum((-2, -1))


def max_argmax_floor(heatmaps: torch.Tensor) -> torch.Tensor:
    """One max + argmax pass: what any exact ERE must at least do."""
    return heatmaps.flatten(2).max(-1).indices


def median_ms(function: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    function()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        sync()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--authors-repeats", type=int, default=3, help="repeats of the slow Python-loop version")
    args = parser.parse_args()
    torch.set_num_threads(2)
    heatmaps = realistic_heatmaps()
    pixel_size = torch.tensor([[0.1, 0.1], [0.1, 0.12], [0.095, 0.1], [0.11, 0.11]])
    significant = (heatmaps / heatmaps.amax((-2, -1), keepdim=True) > CUTOFF).sum((-2, -1)).float()

    ours = expected_radial_error(heatmaps, pixel_size)
    reference = authors_ere(heatmaps.double(), pixel_size.double())
    max_difference = float((ours.double() - reference).abs().max())

    timings = {
        "ours_ms": median_ms(lambda: expected_radial_error(heatmaps, pixel_size), args.repeats),
        "authors_ms": median_ms(lambda: authors_ere(heatmaps, pixel_size), args.authors_repeats),
        "sparse_ms": median_ms(lambda: sparse_ere(heatmaps, pixel_size), args.repeats),
        "dense_ms": median_ms(lambda: dense_ere(heatmaps, pixel_size), max(3, args.repeats // 2)),
        "max_argmax_floor_ms": median_ms(lambda: max_argmax_floor(heatmaps), args.repeats),
    }
    if torch.cuda.is_available():
        gpu_maps, gpu_pixel = heatmaps.cuda(), pixel_size.cuda()
        timings["ours_cuda_ms"] = median_ms(
            lambda: expected_radial_error(gpu_maps, gpu_pixel), args.repeats, torch.cuda.synchronize
        )
        timings["max_argmax_floor_cuda_ms"] = median_ms(
            lambda: max_argmax_floor(gpu_maps), args.repeats, torch.cuda.synchronize
        )
    ratios = {
        "authors_over_ours": timings["authors_ms"] / timings["ours_ms"],
        "ours_over_floor": timings["ours_ms"] / timings["max_argmax_floor_ms"],
    }

    print(f"batch {SHAPE} float32, torch threads {torch.get_num_threads()}, "
          f"significant pixels per map: mean {significant.mean():.0f}, "
          f"min {significant.min():.0f}, max {significant.max():.0f}")
    print(f"max |ours - authors (float64)| = {max_difference:.2e} mm")
    print(f"{'method':<34}{'median ms':>10}")
    for name, value in timings.items():
        print(f"{name.removesuffix('_ms'):<34}{value:>10.1f}")
    print(f"authors / ours = {ratios['authors_over_ours']:.1f}x, ours / floor = {ratios['ours_over_floor']:.2f}x")

    payload = {
        "shape": list(SHAPE),
        "dtype": "float32",
        "cutoff": CUTOFF,
        "significant_pixels_per_map": {
            "mean": float(significant.mean()), "min": float(significant.min()), "max": float(significant.max()),
        },
        "max_abs_difference_vs_authors_float64_mm": max_difference,
        "repeats": args.repeats,
        **timings,
        **ratios,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()

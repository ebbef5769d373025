"""Benchmark the phantom renderer on one CPU core.

Renders ``--num-images`` cephalograms (default 100 at 640x800, 10 % hard) and
writes images/s to ``benchmarks/results/phantom.json``. Thread pools are
limited to one thread before numpy/OpenCV/torch are imported, and on Linux the
process is pinned to a single core.

Usage::

    python benchmarks/bench_phantom.py [--num-images 100] [--width 640] [--height 800]
"""
from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from chh_lib.data.phantom import PHANTOM_VERSION, hard_case_mask, render_case

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "phantom.json"


def _limit_to_one_core() -> str:
    """Pin the process to one core and one thread per library; describe what was done."""
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "threads limited to 1 (no CPU pinning on this platform)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--hard-fraction", type=float, default=0.1)
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()

    cpu = _limit_to_one_core()
    size = (args.width, args.height)
    mask = hard_case_mask(args.num_images, seed=0, hard_fraction=args.hard_fraction)
    render_case(0, 0, size)  # warm-up (imports, caches)
    start = time.perf_counter()
    for index in range(args.num_images):
        render_case(0, index, size, hard=bool(mask[index]))
    elapsed_s = time.perf_counter() - start
    images_per_s = args.num_images / elapsed_s

    result = {
        "benchmark": "phantom_render",
        "phantom_version": PHANTOM_VERSION,
        "image_size": list(size),
        "num_images": args.num_images,
        "hard_fraction": args.hard_fraction,
        "elapsed_s": round(elapsed_s, 4),
        "images_per_s": round(images_per_s, 2),
        "ms_per_image": round(1000.0 * elapsed_s / args.num_images, 2),
        "cpu": cpu,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{images_per_s:.1f} images/s ({result['ms_per_image']} ms/image) at {size[0]}x{size[1]}, {cpu}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

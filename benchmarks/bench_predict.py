"""Benchmark ``chh predict`` on CPU: images per second with the shipped model.

Writes a phantom (``--num-images`` images of 640 x 800, seed 1: images the shipped
model never saw) into a temporary folder, makes a run directory from the shipped
model (``chh pretrained``), and times :func:`chh_lib.prediction.predict_images` on
its test split three ways: the table only (arg-max), with quadratic decoding, and
with overlay PNGs and heatmap files written too. Each is run ``--repeats`` times
after one warm-up; the medians are reported. Writes ``benchmarks/results/predict.json``.

Usage::

    python benchmarks/bench_predict.py [--num-images 100] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from chh_lib.data.formats import read_landmark_data
from chh_lib.data.phantom_dataset import write_phantom_dataset
from chh_lib.prediction import predict_images
from chh_lib.pretrained import write_pretrained_run

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "predict.json"


def images_per_second(run_dir: Path, images: list[Path], repeats: int, **options) -> float:
    """Median images/s of ``repeats`` calls (after one warm-up call over the same images)."""
    predict_images(run_dir, images, **options)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_images(run_dir, images, **options)
        seconds.append(time.perf_counter() - start)
    return len(images) / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_phantom_dataset(root / "phantom", args.num_images, 1, (640, 800))
        write_pretrained_run(root / "run", root / "phantom")
        images = [record.image_path for record in read_landmark_data(root / "phantom").split("test")]
        result = {
            "images": len(images),
            "image_size": [640, 800],
            "network_grid": [160, 200],
            "torch_threads": torch.get_num_threads(),
            "argmax_images_per_s": images_per_second(root / "run", images, args.repeats),
            "quadratic_images_per_s": images_per_second(root / "run", images, args.repeats, decode="quadratic"),
            "with_overlays_and_heatmaps_images_per_s": images_per_second(
                root / "run", images, args.repeats, overlay_dir=root / "overlays", heatmaps_dir=root / "maps"),
            "repeats": args.repeats,
            "machine": platform.platform(),
        }
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

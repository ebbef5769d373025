"""Benchmark the paper's augmentation at 640 x 800.

Measures (1) augmented samples/s of one worker (LandmarkAugmenter alone, on a
phantom image with its 2 x 19 landmarks) and (2) DataLoader samples/s of the
augmented training set with 0, 2 and N workers (N = CPU count). Writes
``benchmarks/results/augment.json``.

Usage::

    python benchmarks/bench_augment.py [--samples 60]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from chh_lib.config import AugmentConfig, profile_config
from chh_lib.data.augment import LandmarkAugmenter
from chh_lib.data.formats import read_landmark_data
from chh_lib.data.phantom import render_case
from chh_lib.data.phantom_dataset import write_phantom_dataset
from chh_lib.engine import make_training_dataset

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "augment.json"
SIZE = (640, 800)


def augmenter_rate(samples: int) -> float:
    """Samples/s of the augmenter alone in this process."""
    case = render_case(0, 0, SIZE)
    augmenter = LandmarkAugmenter(AugmentConfig(enabled=True), SIZE)
    augmenter(case.image, case.annotations_px, 0)
    start = time.perf_counter()
    for seed in range(samples):
        augmenter(case.image, case.annotations_px, seed)
    return samples / (time.perf_counter() - start)


def loader_rate(data_dir: Path, workers: int, samples: int) -> float:
    """Samples/s through a DataLoader (batch 4) of the augmented training set."""
    config = profile_config("paper")
    dataset = make_training_dataset(config, read_landmark_data(data_dir).split("train"), data_dir / ".chh_cache")
    for index in range(len(dataset)):
        dataset.load_resized(index)  # fill the cache first: the benchmark measures augmentation, not decoding
    loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    seen, start = 0, time.perf_counter()
    while seen < samples:
        for batch in loader:
            seen += len(batch["image"])
            if seen >= samples:
                break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    results = {"augmenter_samples_per_s": augmenter_rate(args.samples)}
    print(f"augmenter alone, one worker: {results['augmenter_samples_per_s']:.1f} samples/s")
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "phantom"
        write_phantom_dataset(data_dir, num_images=24, seed=0, image_size=SIZE)
        for workers in sorted({0, 2, os.cpu_count() or 1}):
            rate = loader_rate(data_dir, workers, args.samples)
            results[f"dataloader_{workers}_workers_samples_per_s"] = rate
            print(f"DataLoader, {workers} workers: {rate:.1f} samples/s")
    payload = {
        "image_size": list(SIZE),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "results": results,
    }
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()

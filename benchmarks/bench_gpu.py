"""Step 6's GPU measurements of the ``paper`` profile, in one run for a lent GPU.

Measures, on the ResNet-34 U-Net at 640 x 800 with the kit's one-hot NLL:

1. training images/s at batch 4 in float32, with bf16 autocast, with bf16 and
   ``channels_last``, and with bf16, ``channels_last`` and ``torch.compile``, each
   with its peak GPU memory;
2. the largest batch that fits (bf16, doubling from 4 until out of memory, at most
   ``--max-batch``) and its images/s;
3. evaluation images/s (float32 logits, as ``chh evaluate`` computes them);
4. samples/s of the augmented training DataLoader with several worker counts,
   against what the fastest training step consumes (the loader must keep up);
5. the Expected Radial Error of a (4, 19, 800, 640) batch on the device;
6. with ``--full-training``: ``chh phantom`` (400 images) + ``chh train --profile
   paper`` (15 epochs) + ``chh calibrate`` + ``chh evaluate``, with wall times and
   the test metrics.

``--quick`` shrinks everything (128 x 160, one timed step, an 8-image phantom and
``--max-steps 2``) so that the script can be checked on a CPU before a GPU session.
Writes ``$OUT/gpu.json`` when ``$OUT`` is set (the device tool's output folder), else
``benchmarks/results/gpu.json`` (nothing for a ``--quick`` dry run).

Usage::

    python benchmarks/bench_gpu.py [--device cuda] [--full-training] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from timing import timed
from torch.utils.data import DataLoader

from chh_lib.cli import main as chh
from chh_lib.config import profile_config
from chh_lib.data.formats import read_landmark_data
from chh_lib.data.phantom_dataset import write_phantom_dataset
from chh_lib.devices import float32_logits
from chh_lib.engine import make_training_dataset
from chh_lib.heatmaps import one_hot_nll, softmax_2d
from chh_lib.metrics import expected_radial_error
from chh_lib.model import build_model

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "gpu.json"
NUM_LANDMARKS = 19


def training_rate(device: torch.device, size: tuple[int, int], batch: int, bf16: bool, channels_last: bool,
                  compiled: bool, warmup: int, iterations: int) -> dict[str, Any]:
    """Images/s of one training step (forward, one-hot NLL, backward, Adam) on random images and targets."""
    torch.manual_seed(0)
    width, height = size
    model = build_model("unet_resnet34", NUM_LANDMARKS).to(device).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    network = torch.compile(model) if compiled else model
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.rand(batch, 1, height, width, device=device).to(memory_format=memory_format)
    targets = torch.randint(0, height * width, (batch, NUM_LANDMARKS), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with autocast:
            logits = network(images)
        one_hot_nll(logits.float(), targets).backward()
        optimiser.step()

    seconds, peak = timed(step, device, warmup, iterations)
    return {"batch": batch, "bf16": bf16, "channels_last": channels_last, "compile": compiled,
            "images_per_s": batch / seconds, "peak_mib": peak}


def largest_batch(device: torch.device, size: tuple[int, int], max_batch: int, iterations: int) -> dict[str, Any]:
    """The largest batch (doubling from 4) whose bf16 training step fits, with its rate."""
    best: dict[str, Any] = {}
    batch = 4
    while batch <= max_batch:
        try:
            best = training_rate(device, size, batch, True, False, False, 1, iterations)
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        batch *= 2
    return best


def evaluation_rate(device: torch.device, size: tuple[int, int], batch: int, iterations: int) -> float:
    """Images/s of the evaluation forward pass (float32 logits under ``no_grad``)."""
    width, height = size
    model = build_model("unet_resnet34", NUM_LANDMARKS).to(device).eval()
    images = torch.rand(batch, 1, height, width, device=device)
    with torch.no_grad():
        seconds, _ = timed(lambda: float32_logits(model, images), device, 1, iterations)
    return batch / seconds


def loader_rates(data_dir: Path, size: tuple[int, int], workers: list[int], batches: int) -> dict[str, float]:
    """Samples/s of the paper profile's augmented training DataLoader for each worker count."""
    config = profile_config("paper")
    config.data.image_size = size
    with tempfile.TemporaryDirectory() as cache:
        dataset = make_training_dataset(config, read_landmark_data(data_dir).split("train"), Path(cache))
        for index in range(len(dataset)):
            dataset.load_resized(index)  # fill the cache first: training reads it after the first epoch
        rates = {}
        for count in workers:
            loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=count, drop_last=True)
            start, seen = time.perf_counter(), 0
            for number, batch in enumerate(loader):
                seen += len(batch["image"])
                if number + 1 >= batches:
                    break
            rates[str(count)] = seen / (time.perf_counter() - start)
    return rates


def ere_seconds(device: torch.device, size: tuple[int, int], iterations: int) -> float:
    """Seconds of the ERE of a (4, 19, H, W) batch of softmax heatmaps on ``device``."""
    width, height = size
    torch.manual_seed(0)
    heatmaps = softmax_2d(4.0 * torch.randn(4, NUM_LANDMARKS, height, width, device=device))
    pixel_size = torch.full((4, 2), 0.1, device=device)
    seconds, _ = timed(lambda: expected_radial_error(heatmaps, pixel_size), device, 1, iterations)
    return seconds


def full_training(root: Path, device: str, quick: bool) -> dict[str, Any]:
    """Phantom, paper training, calibration and evaluation through the command line, with wall times."""
    data_dir, run_dir = root / "phantom", root / "run"
    times: dict[str, float] = {}
    steps = [
        ("phantom", ["phantom", str(data_dir), "--num-images", "8" if quick else "400"]),
        ("train", ["train", "--data", str(data_dir), "--run-dir", str(run_dir), "--profile", "paper",
                   "--device", device, "--no-progress", *(["--max-steps", "2"] if quick else [])]),
        ("calibrate", ["calibrate", "--run-dir", str(run_dir), "--device", device]),
        ("evaluate", ["evaluate", "--run-dir", str(run_dir), "--device", device]),
    ]
    for name, arguments in steps:
        start = time.perf_counter()
        status = chh(arguments)
        times[f"{name}_s"] = time.perf_counter() - start
        if status != 0:
            return {**times, "failed": name, "status": status}
    metrics = json.loads((run_dir / "eval_test" / "metrics.json").read_text())
    keys = ("mre_mm", "mre_sd_mm", "sdr_percent", "ece_percent_before", "ece_percent_after", "auroc", "auroc_ci95",
            "ere_threshold_mm", "ere_threshold_tpr", "num_images")
    return {**times, "metrics": {key: metrics.get(key) for key in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a dry run on a CPU")
    parser.add_argument("--full-training", action="store_true", help="also the 15-epoch paper run on the phantom")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 4, 8, 16])
    args = parser.parse_args()
    device = torch.device(args.device)
    size = (128, 160) if args.quick else (640, 800)
    iterations = 1 if args.quick else 10
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "image_size": list(size), "quick": args.quick,
    }
    configurations = [(False, False, False), (True, False, False), (True, True, False)]
    if not args.quick:
        configurations.append((True, True, True))
    result["training_batch_4"] = [training_rate(device, size, 4, *c, 1 if args.quick else 3, iterations)
                                  for c in configurations]
    result["largest_batch"] = largest_batch(device, size, 8 if args.quick else args.max_batch, iterations)
    result["eval_images_per_s"] = evaluation_rate(device, size, 4, iterations)
    result["ere_seconds"] = ere_seconds(device, (640, 800), 3)
    with tempfile.TemporaryDirectory() as folder:
        write_phantom_dataset(Path(folder) / "phantom", 16 if args.quick else 64, 0, (640, 800))
        result["loader_samples_per_s"] = loader_rates(Path(folder) / "phantom", (640, 800),
                                                      [w for w in args.workers if w <= (os.cpu_count() or 1)],
                                                      2 if args.quick else 20)
    fastest = max(row["images_per_s"] for row in result["training_batch_4"])
    result["step_demand_images_per_s"] = fastest
    result["loader_keeps_up"] = max(result["loader_samples_per_s"].values()) >= fastest
    if args.full_training:
        with tempfile.TemporaryDirectory() as folder:
            result["full_training"] = full_training(Path(folder), args.device, args.quick)
    text = json.dumps(result, indent=2)
    print(text)
    if os.environ.get("OUT"):
        path = Path(os.environ["OUT"]) / "gpu.json"
    elif args.quick:
        return  # a dry run's numbers are not results
    else:
        path = RESULTS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

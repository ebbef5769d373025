"""Training throughput of the registered models.

Measures images per second of a full training step (forward, MSE loss,
backward, Adam step) on random data after warm-up steps:

* CPU: ``unet_small`` at 160x200 (W x H), batch 8, and ``unet_resnet34`` at
  640x800, batch 4;
* CUDA, when available: ``unet_resnet34`` at 640x800, batch 4, in float32 and
  with bfloat16 autocast, with peak GPU memory.

Prints a table and writes ``benchmarks/results/model_training.json``.

Usage::

    python benchmarks/bench_model.py [--cpu-iters 3] [--gpu-iters 20]
"""
from __future__ import annotations

import argparse
import json
import platform
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import timed

from chh_lib.model import build_model, count_parameters

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "model_training.json"
NUM_LANDMARKS = 19


@dataclass
class Result:
    model: str
    device: str
    precision: str
    batch_size: int
    height: int
    width: int
    parameters: int
    iterations: int
    seconds_per_step: float
    images_per_second: float
    ms_per_image: float
    peak_memory_mib: float | None


def bench_training(
    name: str,
    batch_size: int,
    height: int,
    width: int,
    device: torch.device,
    warmup: int,
    iterations: int,
    bf16: bool = False,
) -> Result:
    """Time ``iterations`` training steps of model ``name`` after ``warmup`` steps."""
    torch.manual_seed(0)
    model = build_model(name, NUM_LANDMARKS).to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.randn(batch_size, 1, height, width, device=device)
    targets = torch.rand(batch_size, NUM_LANDMARKS, height, width, device=device)
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    )

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with autocast:
            logits = model(images)
        loss = F.mse_loss(logits.float(), targets)
        loss.backward()
        optimiser.step()

    seconds, peak = timed(step, device, warmup, iterations)
    return Result(
        model=name,
        device=str(device),
        precision="bf16-autocast" if bf16 else "fp32",
        batch_size=batch_size,
        height=height,
        width=width,
        parameters=count_parameters(model),
        iterations=iterations,
        seconds_per_step=seconds,
        images_per_second=batch_size / seconds,
        ms_per_image=1000 * seconds / batch_size,
        peak_memory_mib=peak,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-iters", type=int, default=3, help="timed steps for unet_small")
    parser.add_argument(
        "--cpu-resnet-iters", type=int, default=2, help="timed steps for unet_resnet34 on CPU"
    )
    parser.add_argument("--gpu-iters", type=int, default=20, help="timed steps on CUDA")
    parser.add_argument("--skip-cpu-resnet", action="store_true", help="skip the slow CPU ResNet")
    parser.add_argument("--output", type=Path, default=None, help=f"result file (default {RESULTS_PATH.name})")
    args = parser.parse_args()
    output = args.output or (
        RESULTS_PATH.with_name("model_training_partial.json") if args.skip_cpu_resnet else RESULTS_PATH
    )

    cpu = torch.device("cpu")
    results = [bench_training("unet_small", 8, 200, 160, cpu, warmup=2, iterations=args.cpu_iters)]
    if not args.skip_cpu_resnet:
        results.append(
            bench_training(
                "unet_resnet34", 4, 800, 640, cpu, warmup=1, iterations=args.cpu_resnet_iters
            )
        )
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        for bf16 in (False, True):
            results.append(
                bench_training(
                    "unet_resnet34", 4, 800, 640, gpu,
                    warmup=5, iterations=args.gpu_iters, bf16=bf16,
                )
            )

    header = (
        f"{'model':<14} {'device':<6} {'precision':<14} {'batch':>5} {'H x W':>9} "
        f"{'params':>11} {'img/s':>8} {'ms/img':>8} {'peak MiB':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        peak = f"{r.peak_memory_mib:9.0f}" if r.peak_memory_mib is not None else f"{'-':>9}"
        print(
            f"{r.model:<14} {r.device:<6} {r.precision:<14} {r.batch_size:>5} "
            f"{f'{r.height}x{r.width}':>9} {r.parameters:>11,} {r.images_per_second:8.2f} "
            f"{r.ms_per_image:8.1f} {peak}"
        )

    output.parent.mkdir(parents=True, exist_ok=True)
    environment = {
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    payload = {"environment": environment, "results": [asdict(r) for r in results]}
    output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()

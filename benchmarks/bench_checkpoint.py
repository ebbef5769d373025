"""Benchmark what a durable checkpoint write costs: ``fsync`` of the file and its folder.

Writes the shipped model's payload with its optimiser state restored to full size
(the shape of a ``cpu`` profile checkpoint, about 17 MB: weights plus Adam's two
moments) with :func:`chh_lib.files.write_bytes_atomic`, ``durable=True`` (the
default for checkpoints and results) and ``durable=False`` (what the image cache
uses), ``--repeats`` times each into a temporary folder on the same disk as the
repository, and reports the medians. Writes ``benchmarks/results/checkpoint.json``.

Usage::

    python benchmarks/bench_checkpoint.py [--repeats 9] [--folder DIR]
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from chh_lib.files import write_bytes_atomic
from chh_lib.pretrained import pretrained_path

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "checkpoint.json"


def checkpoint_bytes() -> bytes:
    """A checkpoint of the ``cpu`` profile's size: the shipped weights plus two Adam moments per weight."""
    payload = torch.load(pretrained_path(), map_location="cpu", weights_only=True)
    state = payload["model_state"]
    payload["optimizer_state"] = {"exp_avg": {k: torch.zeros_like(v) for k, v in state.items() if v.is_floating_point()},
                                  "exp_avg_sq": {k: torch.zeros_like(v) for k, v in state.items() if v.is_floating_point()}}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def time_writes(data: bytes, folder: Path, durable: bool, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` atomic writes of ``data`` over the same file."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        write_bytes_atomic(folder / "last.pt", data, durable=durable)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--folder", type=Path, default=Path(__file__).resolve().parents[1] / "runs")
    args = parser.parse_args()
    data = checkpoint_bytes()
    args.folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        time_writes(data, Path(folder), True, 1)  # warm-up
        durable = time_writes(data, Path(folder), True, args.repeats)
        plain = time_writes(data, Path(folder), False, args.repeats)
    result = {
        "checkpoint_mb": len(data) / 1e6,
        "repeats": args.repeats,
        "durable_median_ms": 1e3 * statistics.median(durable),
        "not_durable_median_ms": 1e3 * statistics.median(plain),
        "fsync_cost_ms": 1e3 * (statistics.median(durable) - statistics.median(plain)),
        "machine": platform.platform(),
    }
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

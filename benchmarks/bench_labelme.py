"""Benchmark `chh data check` on a labelme export with embedded images.

Writes ``--num-files`` (default 300) labelme 5 JSON files as public data sets
publish them: ``NNN.json`` beside ``NNN.tif`` in one folder, ``"imagePath":
"N.tif"`` (no zero-padding, so every file is paired by name), 19 ISBI landmarks,
and the image file itself base64-encoded in ``imageData`` (a 750 x 800 8-bit
TIFF: about 0.8 MB of base64 per file). A second copy of the set differs only in
``"imageData": null``, to show what the embedded images cost. Then times:

* ``chh data check`` as a user runs it (a new process: interpreter start and
  imports included);
* :func:`~chh_lib.data.check.check_data` in this process (reads every JSON file
  and image header, then decodes every image);
* :func:`~chh_lib.data.formats.read_landmark_data` alone (JSON and image headers),
  with and without ``imageData``.

The files are freshly written, so they are read from the page cache. Writes
``benchmarks/results/labelme.json``.

Usage::

    python benchmarks/bench_labelme.py [--num-files 300] [--repeats 3]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from chh_lib.data.check import check_data
from chh_lib.data.formats import ProblemLog, read_landmark_data, write_descriptor
from chh_lib.landmarks import ISBI_2015

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "labelme.json"


def write_export(root: Path, num_files: int, size: tuple[int, int], embed: bool, seed: int = 0) -> int:
    """Write the labelme export described above into ``root``; returns the mean ``imageData`` length in bytes."""
    rng = np.random.default_rng(seed)
    width, height = size
    folder = root / "cephalograms"
    folder.mkdir(parents=True, exist_ok=True)
    lengths = []
    for index in range(num_files):
        stem = f"{index + 1:03d}"
        image_path = folder / f"{stem}.tif"
        Image.fromarray(rng.integers(0, 255, (height, width), dtype=np.uint8)).save(image_path)
        points = rng.uniform(5, [width - 6, height - 6], size=(ISBI_2015.num_landmarks, 2))  # (K, 2)
        image_data = base64.b64encode(image_path.read_bytes()).decode("ascii") if embed else None
        lengths.append(len(image_data or ""))
        document = {
            "version": "5.4.1",
            "flags": {},
            "shapes": [
                {"label": name, "points": [[float(x), float(y)]], "group_id": None, "description": "",
                 "shape_type": "point", "flags": {}, "mask": None}
                for name, (x, y) in zip(ISBI_2015.names, points)
            ],
            "imagePath": f"{index + 1}.tif",
            "imageData": image_data,
            "imageHeight": height,
            "imageWidth": width,
        }
        (folder / f"{stem}.json").write_text(json.dumps(document, indent=2))
    write_descriptor(root, {"format": "labelme", "pixel_size_mm": 0.1, "images": "cephalograms",
                            "annotators": {"senior": "cephalograms"}})
    return int(np.mean(lengths))


def _median_s(function: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), [round(t, 3) for t in times]


def _chh_command() -> list[str]:
    """The ``chh`` console script beside this interpreter, else ``python -m chh_lib.cli``."""
    script = Path(sys.executable).with_name("chh")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "chh_lib.cli"]


def time_cli(root: Path, repeats: int) -> tuple[float, list[float], str]:
    """Median wall-clock seconds of ``chh data check ROOT`` in a new process, and its last output line."""
    last_line = ""

    def run() -> None:
        nonlocal last_line
        done = subprocess.run([*_chh_command(), "data", "check", str(root)], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"chh data check failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        last_line = done.stdout.strip().splitlines()[-1]

    median, times = _median_s(run, repeats)
    return median, times, last_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-files", type=int, default=300)
    parser.add_argument("--width", type=int, default=750)
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args()
    size = (args.width, args.height)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    with tempfile.TemporaryDirectory(prefix="chh_bench_labelme_") as temporary:
        embedded, plain = Path(temporary) / "embedded", Path(temporary) / "plain"
        image_data_bytes = write_export(embedded, args.num_files, size, embed=True)
        write_export(plain, args.num_files, size, embed=False)
        json_mb = sum(p.stat().st_size for p in (embedded / "cephalograms").glob("*.json")) / 1e6

        log = ProblemLog(collect=True)
        data = read_landmark_data(embedded, log=log)
        num_records = sum(len(split) for split in data.splits.values())
        if log.problems or num_records != args.num_files:
            raise RuntimeError(f"expected {args.num_files} usable images, got {num_records}: {log.problems[:3]}")
        warnings = log.warnings

        cli_s, cli_times, cli_last_line = time_cli(embedded, args.repeats)
        check_s, check_times = _median_s(lambda: check_data(embedded), args.repeats)
        read_s, read_times = _median_s(lambda: read_landmark_data(embedded), args.repeats)
        read_plain_s, read_plain_times = _median_s(lambda: read_landmark_data(plain), args.repeats)
        check_plain_s, check_plain_times = _median_s(lambda: check_data(plain), args.repeats)

    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {
        "benchmark": "labelme_data_check",
        "num_files": args.num_files,
        "image_size": list(size),
        "image_data_bytes_per_file": image_data_bytes,
        "json_mb_total": round(json_mb, 1),
        "warnings": warnings,
        "chh_data_check_cli_s": round(cli_s, 3),
        "chh_data_check_cli_runs_s": cli_times,
        "chh_data_check_last_line": cli_last_line,
        "check_data_s": round(check_s, 3),
        "check_data_runs_s": check_times,
        "check_data_without_image_data_s": round(check_plain_s, 3),
        "check_data_without_image_data_runs_s": check_plain_times,
        "read_landmark_data_s": round(read_s, 3),
        "read_landmark_data_runs_s": read_times,
        "read_landmark_data_without_image_data_s": round(read_plain_s, 3),
        "read_landmark_data_without_image_data_runs_s": read_plain_times,
        "repeats": args.repeats,
        "load_average_before": [round(v, 2) for v in load_before] if load_before else None,
        "load_average_after": [round(v, 2) for v in load_after] if load_after else None,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "chh": " ".join(_chh_command()),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.num_files} labelme files, {image_data_bytes / 1e6:.2f} MB of imageData each "
          f"({json_mb:.0f} MB of JSON); warnings: {len(warnings)}")
    print(f"chh data check (new process): {cli_s:.2f} s  [{cli_last_line}]")
    print(f"check_data in process: {check_s:.2f} s with imageData, {check_plain_s:.2f} s without")
    print(f"read_landmark_data alone: {read_s:.2f} s with imageData, {read_plain_s:.2f} s without")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

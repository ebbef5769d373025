"""Screen the Gaussian-MSE network's target width: test MRE for several sigmas (cpu profile).

Notebook 02 trains a Gaussian-target MSE network beside the one-hot NLL network and
uses ``mse_sigma_px = 6``. This script backs that choice: for each ``--sigmas`` value
it trains the same network, data, augmentation, seed and schedule as the notebook
(:func:`chh_lib.workflow.train_or_reuse` with ``loss="gaussian_mse"`` and the
calibration split's loss recorded per epoch) into
``--work-dir``/``sigma_<s>px`` (a finished run there is reused), then decodes the test
split by the arg-max as the notebook does and reports MRE, SD, median and SDR<2/4 mm.
The phantom must exist (``chh phantom data/phantom``, or notebook 01 writes it).
Writes ``benchmarks/results/mse_sigma.json``.

Usage::

    python benchmarks/bench_mse_sigma.py [--sigmas 2 4 6] [--data data/phantom]
        [--work-dir runs/bench_mse_sigma] [--profile cpu]
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

from chh_lib.engine import LAST_CHECKPOINT, decode_heatmaps, load_checkpoint, model_from_checkpoint
from chh_lib.evaluation import load_run
from chh_lib.metrics import mean_radial_error, radial_error_mm, success_detection_rate
from chh_lib.workflow import train_or_reuse, training_history

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "mse_sigma.json"


def screen_width(run_dir: Path, data_dir: Path, profile: str, sigma_px: float, seed: int) -> dict[str, float]:
    """Train (or reuse) one Gaussian-MSE network and measure its test errors in mm."""
    outcome = train_or_reuse(run_dir, data_dir, profile, "cpu", seed, loss="gaussian_mse", sigma_px=sigma_px,
                             held_out_split="calibration")
    checkpoint = run_dir / LAST_CHECKPOINT
    model = model_from_checkpoint(load_checkpoint(checkpoint), checkpoint).eval()
    run = load_run(run_dir, data_dir)
    test = run.dataset("test")
    pred_px, _ = decode_heatmaps(model, test, torch.device("cpu"), "heatmap", batch_size=run.config.eval.batch_size)
    errors_mm = radial_error_mm(pred_px, test.target_px, test.pixel_size_mm)
    mre_mm, sd_mm = mean_radial_error(errors_mm)
    rates = success_detection_rate(errors_mm, (2.0, 4.0))
    history = training_history(run_dir)
    return {"sigma_px": sigma_px, "action": outcome.action, "epochs": len(history),
            "train_seconds": float(history["seconds"].sum()),
            "mre_mm": mre_mm, "sd_mm": sd_mm, "median_mm": float(np.nanmedian(errors_mm)),
            "sdr_2mm_percent": rates[2.0], "sdr_4mm_percent": rates[4.0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[2.0, 4.0, 6.0])
    parser.add_argument("--data", type=Path, default=Path("data/phantom"))
    parser.add_argument("--work-dir", type=Path, default=Path("runs/bench_mse_sigma"))
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for sigma_px in args.sigmas:
        row = screen_width(args.work_dir / f"sigma_{sigma_px:g}px", args.data, args.profile, sigma_px, args.seed)
        print(f"sigma {sigma_px:g} px: MRE {row['mre_mm']:.2f} mm (SD {row['sd_mm']:.2f}, median "
              f"{row['median_mm']:.2f}), SDR<2 mm {row['sdr_2mm_percent']:.1f} %, SDR<4 mm "
              f"{row['sdr_4mm_percent']:.1f} %; {row['action']}, {row['train_seconds']:.0f} s of training")
        rows.append(row)
    result = {"profile": args.profile, "seed": args.seed, "data": str(args.data),
              "torch_threads": torch.get_num_threads(), "machine": platform.machine(), "widths": rows}
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()

"""Key numbers of notebook 02 (one-hot heatmap training), picked from its variables for ``metrics.json``."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chh_lib.exercises.answers import is_attempted


def summary(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers notebook 02 reports, as plain JSON-ready values.

    Parameters
    ----------
    namespace : mapping
        The notebook's variables (``globals()`` after its last exercise).

    Returns
    -------
    dict
        The training (action, epochs, optimiser steps, seconds, final training and held-out
        NLL in nats), the one hand-written step, the test-split MRE, SD and SDR (mm, %), the
        baseline and annotator distance, the arg-max quantisation floor (mm), MRE and SD of the
        normal and hard images, the Gaussian-MSE network beside the NLL one, and the exercises
        attempted and passed.
    """
    ns = namespace
    history, mse_history = ns["history"], ns["mse_history"]
    metrics, groups, comparison = ns["metrics"], ns["groups"], ns["comparison"]
    answers = [value for name, value in sorted(ns.items()) if name.startswith("answer_02_")]
    return {
        "profile": ns["profile"],
        "device": ns["torch_device"].type,
        "training": ns["outcome"].action,
        "epochs": len(history),
        "optimiser_steps": int(history["steps"].sum()) if "steps" in history else None,
        "train_seconds": float(ns["train_seconds"]),
        "num_parameters": int(ns["num_parameters"]),
        "step_nll_before": float(ns["loss"].item()),
        "step_nll_after": float(ns["loss_after"].item()),
        "final_train_nll": float(history["loss"].iloc[-1]),
        "final_held_out_nll": float(ns["held_out_nll"]),
        "num_test_images": int(metrics["num_images"]),
        "mre_mm": float(metrics["mre_mm"]),
        "mre_sd_mm": float(metrics["mre_sd_mm"]),
        "sdr_percent": {str(t): float(v) for t, v in ns["sdr"].items()},
        "baseline_mre_mm": float(metrics["baseline_mre_mm"]),
        "mean_annotator_distance_mm": float(metrics["mean_annotator_distance_mm"]),
        "uniform_nll": float(ns["uniform_nll"]),
        "quantisation_floor_mm": float(ns["floor_mm"]),
        "uniform_offset_floor_mm": float(ns["uniform_factor"] * float(ns["pixel_x_mm"])),
        "paper_grid_floor_mm": float(ns["paper_floor_mm"]),
        "mre_by_group_mm": {group: float(groups.loc[group, "MRE (mm)"]) for group in groups.index},
        "sd_by_group_mm": {group: float(groups.loc[group, "SD (mm)"]) for group in groups.index},
        "mse_epochs": len(mse_history),
        "mse_sigma_px": float(ns["sigma_px"]),
        "mse_final_train_loss": float(mse_history["loss"].iloc[-1]),
        "nll_model_mre_mm": float(comparison.loc["one-hot NLL", "MRE (mm)"]),
        "mse_model_mre_mm": float(comparison.loc["Gaussian MSE", "MRE (mm)"]),
        "comparison": {label: {"mre_mm": float(comparison.loc[label, "MRE (mm)"]),
                               "median_spread_mm": float(comparison.loc[label, "median spread (mm)"])}
                       for label in comparison.index},
        "exercises_attempted": sum(is_attempted(answer) for answer in answers),
        "exercises_passed": sum(bool(passed) for passed in ns["exercise_results"].values()),
    }


def headline(summary: dict[str, Any]) -> str:
    """One line: MRE and SDR at 2 mm of the NLL network, the MSE network's MRE, exercises."""
    return (
        f"MRE {summary['mre_mm']:.2f} mm, SDR<2 mm {summary['sdr_percent'].get('2', float('nan')):.1f} %; "
        f"Gaussian-MSE network {summary['mse_model_mre_mm']:.2f} mm; exercises passed "
        f"{summary['exercises_passed']}/{summary['exercises_attempted']} attempted"
    )

"""Key numbers of notebook 05 (uncertainty as an outlier detector), picked from its variables for ``metrics.json``."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chh_lib.exercises.answers import is_attempted
from chh_lib.exercises.notebook_05 import pooled_threshold_05_4, tpr_noise_band


def summary(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers notebook 05 reports, as plain JSON-ready values.

    Parameters
    ----------
    namespace : mapping
        The notebook's variables (``globals()`` after its last exercise).

    Returns
    -------
    dict
        Test-split size, outlier cut and counts, the AUROC of each score with its
        bootstrap interval (all and non-hard images), the paired ERE-minus-entropy
        difference, the calibration threshold with its outlier count and test rates,
        the oracle, the threshold chosen on the pooled held-out splits (exercise 05.4,
        computed here with the library whatever the student answered) and its test
        rates, the good/erroneous splits, the gallery counts, and the exercises.
    """
    ns = namespace
    present, is_outlier, non_hard = ns["present"], ns["is_outlier"], ns["non_hard"]
    pooled = pooled_threshold_05_4(ns["pool_ere_mm"], ns["pool_errors_mm"], ns["predictions"].ere_mm, ns["errors"],
                                   ns["outlier_mm"], ns["target_tpr"])
    answers = (ns["answer_05_1"], ns["answer_05_2"], ns["answer_05_3"], ns["answer_05_4"])
    return {
        "profile": ns["profile"],
        "device": ns["torch_device"].type,
        "num_test_images": int(ns["N"]),
        "num_predictions": int(present.sum()),
        "outlier_mm": float(ns["outlier_mm"]),
        "outlier_fraction": float(ns["outlier_fraction"]),
        "num_outliers": int(is_outlier[present].sum()),
        "num_outliers_non_hard": int(is_outlier[non_hard].sum()),
        "auroc": {k: float(v) for k, v in ns["auroc"].items()},
        "auroc_ci95": {name: [float(x) for x in ci] for name, ci in ns["auroc_ci95"].items()},
        "bootstrap_resamples": int(ns["resamples"]),
        "target_tpr": float(ns["target_tpr"]),
        "ere_threshold_mm": float(ns["ere_threshold"]),
        "ere_threshold_split": "calibration",
        "ere_threshold_num_outliers": int(ns["chosen"]["num_outliers"]),
        "tpr_at_threshold": float(ns["tpr_at"]),
        "fpr_at_threshold": float(ns["fpr_at"]),
        "ere_threshold_oracle_mm": float(ns["oracle_threshold"]),
        "pooled_threshold_splits": list(ns["pool_names"]),
        "pooled_threshold_mm": pooled["threshold_mm"],
        "pooled_threshold_num_outliers": pooled["num_outliers"],
        "pooled_threshold_test_tpr": pooled["test_tpr"],
        "pooled_threshold_test_fpr": pooled["test_fpr"],
        "pooled_threshold_closer_to_target": bool(abs(pooled["test_tpr"] - ns["target_tpr"])
                                                  < abs(ns["tpr_at"] - ns["target_tpr"])),
        "test_tpr_noise_band": tpr_noise_band(ns["target_tpr"], pooled["test_num_outliers"]),
        "auroc_non_hard": {k: float(v) for k, v in ns["auroc_non_hard"].items()},
        "auroc_non_hard_ci95": {name: [float(x) for x in ci] for name, ci in ns["auroc_non_hard_ci95"].items()},
        "num_non_hard_images": len(ns["rows_non_hard"]),
        "outliers_on_hard_images": int(ns["outliers_on_hard"]),
        "auroc_difference_ere_minus_entropy": {k: float(v) for k, v in ns["difference"].items()},
        "auroc_difference_ci95": {images: [float(x) for x in ci] for images, ci in ns["difference_ci95"].items()},
        "split_by_ere": ns["split"],
        "split_by_true_error": ns["by_error"],
        "splits_disagree": int(ns["disagree"]),
        "gallery_outliers": int(ns["top_ere_outliers"]),
        "gallery_kind_counts": ns["kind_counts"],
        "gallery_shown": {kind: len(cells) for kind, cells in ns["gallery"].items()},
        "exercises_attempted": sum(is_attempted(a) for a in answers),
        "exercises_passed": int(sum(ns["exercise_results"].values())),
    }


def headline(summary: dict[str, Any]) -> str:
    """AUROC of the ERE with its interval and outlier count, the threshold's test TPR, and the exercises.

    The pooled threshold of exercise 05.4 stays in ``metrics.json`` only: printed in the
    notebook's last cell, it would give the exercise's answer away.
    """
    low, high = summary["auroc_ci95"]["ere"]
    return (f"AUROC of ERE {summary['auroc']['ere']:.3f} [{low:.3f}, {high:.3f}] over {summary['num_outliers']} "
            f"outliers; threshold {summary['ere_threshold_mm']:.2f} mm (test TPR {summary['tpr_at_threshold']:.3f}); "
            f"exercises passed {summary['exercises_passed']}/{summary['exercises_attempted']} attempted")

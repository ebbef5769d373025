"""Key numbers of notebook 06 (the heatmap inspector), picked from its variables for ``metrics.json``."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chh_lib.exercises.answers import is_attempted


def _pair(reading: Any) -> dict[str, Any]:
    """The numbers of one :class:`chh_lib.widgets.HeatmapReading`."""
    return {"image_id": reading.image_id, "landmark": reading.landmark, "temperature": reading.temperature,
            "ere_mm": reading.ere_mm, "radial_error_mm": reading.radial_error_mm, "mode_prob": reading.mode_prob,
            "significant_pixels": reading.significant_pixels, "flagged": reading.flagged}


def summary(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers notebook 06 reports, as plain JSON-ready values.

    Parameters
    ----------
    namespace : mapping
        The notebook's variables (``globals()`` after its last exercise).

    Returns
    -------
    dict
        The inspector's controls and cache, the stored ERE threshold, the default
        selection, the cutoff sweep, sella, the worst outlier with its ERE rank, the
        outlier / flag / false-alarm counts, the temperature sweep, and the exercises.
    """
    ns = namespace
    reader, inspector = ns["reader"], ns["inspector"]
    cutoff_readings, curve = ns["cutoff_readings"], ns["curve"]
    first_false_alarm = ns["first_false_alarm"]
    answers = (ns["answer_06_1"], ns["answer_06_2"], ns["answer_06_3"])
    return {
        "profile": ns["profile"],
        "device": ns["torch_device"].type,
        "widgets_built": inspector.widget is not None and len(inspector.controls) > 0,
        "num_controls": len(inspector.controls),
        "num_test_images": reader.num_images,
        "cache_max_images": reader.cache.max_images,
        "cached_images": len(reader.cache),
        "ere_threshold_mm": reader.ere_threshold_mm,
        "default_selection": _pair(ns["default_reading"]),
        "cutoff_sweep": {"image_id": reader.image_ids[ns["spread_image"]], "cutoffs": list(ns["cutoff_values"]),
                         "significant_pixels": [r.significant_pixels for r in cutoff_readings],
                         "ere_mm": [r.ere_mm for r in cutoff_readings]},
        "sella": {"ere_mm": ns["pair"][1].ere_mm, "radial_error_mm": ns["pair"][1].radial_error_mm},
        "worst": {**_pair(ns["worst"]), "ere_rank": ns["ere_rank"], "hard_case": ns["worst"].image_id in ns["hard"]},
        "num_outliers": ns["num_outliers"],
        "num_flagged": ns["num_flagged"],
        "num_false_alarms": len(ns["false_alarm_pairs"]),
        "first_false_alarm": None if first_false_alarm is None else _pair(first_false_alarm),
        "median_ere_mm": ns["median_ere"],
        "temperature_sweep": {"temperatures": ns["sweep"].tolist(), "mode_prob": [r.mode_prob for r in curve],
                              "ere_mm": [r.ere_mm for r in curve]},
        "distinct_predictions_over_sweep": ns["distinct_predictions"],
        "exercises_attempted": sum(is_attempted(a) for a in answers),
        "exercises_passed": int(sum(ns["exercise_results"].values())),
    }


def headline(summary: dict[str, Any]) -> str:
    """Controls, the default selection's ERE and error, and the exercises."""
    default = summary["default_selection"]
    return (f"{summary['num_controls']} controls; default selection ERE {default['ere_mm']:.2f} mm, radial error "
            f"{default['radial_error_mm']:.2f} mm; exercises passed {summary['exercises_passed']}/"
            f"{summary['exercises_attempted']} attempted")

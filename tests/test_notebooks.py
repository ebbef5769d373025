"""The teaching notebooks: committed files are clean, and each runs under the smoke profile.

The papermill runs are not marked slow: they run in CI. The whole series shares
one temporary run directory and one small phantom, as ``chh notebooks`` does.
"""
from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from chh_lib.errors import ConfigError, NotebookError
from chh_lib.notebooks import (
    format_summary,
    publish_notebook,
    run_notebooks,
    scrub_text,
    series_notebooks,
)
from chh_lib.workflow import (
    ensure_phantom,
    ensure_trained_run,
    is_phantom,
    notebook_paths,
    notebook_profile,
    repo_root,
    training_history,
)

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
COMMITTED = sorted(NOTEBOOKS.glob("0*.ipynb"))
ABSOLUTE_PATH = re.compile(r"/(home|tmp|work|root)/")
MAX_BYTES = 3 * 1024 * 1024
#: No smoke cell takes a minute; a bound turns a lost kernel reply (nbclient with widgets) into a failure, not a hang.
CELL_TIMEOUT_S = 300


def test_there_are_notebooks():
    assert [p.name[:2] for p in COMMITTED][:2] == ["01", "02"]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_committed_notebook_is_clean(path: Path):
    text = path.read_text(encoding="utf-8")
    assert len(text.encode()) < MAX_BYTES
    raw = json.loads(text)
    assert raw["metadata"]["kernelspec"]["name"] == "python3"
    notebook = nbformat.reads(text, as_version=4)
    nbformat.validate(notebook)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "profile = notebook_profile()" in tagged[0].source
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in notebook.cells)
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert notebook.cells[index - 1].cell_type == "markdown", f"code cell {index} has no explanation before it"
        for output in cell.outputs:
            assert output.output_type != "error", f"cell {index} holds an error output"
            for key, value in _texts(output):
                assert not ABSOLUTE_PATH.search(value), f"cell {index} output {key} holds an absolute path"


def _texts(output) -> list[tuple[str, str]]:
    found = []
    if "text" in output:
        found.append(("text", "".join(output.text) if isinstance(output.text, list) else output.text))
    for key, value in output.get("data", {}).items():
        if not key.startswith("image/"):
            found.append((key, value if isinstance(value, str) else json.dumps(value)))
    return found


def test_sources_build_to_the_committed_cells():
    """notebooks/src/*.py and the committed .ipynb hold the same cell sources (rebuild after editing)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nb_build", NOTEBOOKS / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for source in build.sources():
        committed = nbformat.read(str(NOTEBOOKS / f"{source.stem}.ipynb"), as_version=4)
        built = build.build_notebook(source)
        assert [c.source for c in committed.cells] == [c.source for c in built.cells], source.name
        assert [c.metadata.get("tags", []) for c in committed.cells] == [c.metadata.get("tags", []) for c in built.cells]


def _build_module():
    """notebooks/build.py, imported from its path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("nb_build", NOTEBOOKS / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


def test_build_hides_the_source_of_solution_cells():
    text = (
        '# %% [markdown]\n# Task\n\n# %% tags=["exercise"]\nanswer = ...  # your code here\n\n'
        '# %% [markdown]\n# Solution\n\n# %% tags=["solution"]\nif solutions:\n    answer = 42\n'
    )
    cells = _build_module().parse_percent(text)
    exercise, solution = cells[1], cells[3]
    assert solution.metadata["tags"] == ["solution"]
    assert solution.metadata["jupyter"] == {"source_hidden": True}
    assert solution.source == "if solutions:\n    answer = 42"
    assert "jupyter" not in exercise.metadata and "jupyter" not in cells[0].metadata
    nbformat.validate(nbformat.v4.new_notebook(cells=cells))


def _tagged(cells, tag: str) -> list[int]:
    return [i for i, c in enumerate(cells) if tag in c.metadata.get("tags", [])]


@pytest.mark.parametrize("source", _build_module().sources(), ids=lambda p: p.stem)
def test_exercise_structure(source: Path):
    """Every exercise: placeholder, hidden ``if solutions:`` solution, check cell; at least 3 per notebook."""
    notebook = _build_module().build_notebook(source)
    cells = notebook.cells
    exercises, solutions = _tagged(cells, "exercise"), _tagged(cells, "solution")
    assert len(exercises) == len(solutions), "each cell tagged 'exercise' needs one tagged 'solution'"
    if not exercises:
        return  # this notebook gets its exercises later
    assert len(exercises) >= 3
    parameters = cells[_tagged(cells, "parameters")[0]].source
    assert re.search(r"^solutions = False\b", parameters, re.MULTILINE), "the parameters cell needs solutions = False"
    code = [i for i, c in enumerate(cells) if c.cell_type == "code"]
    for exercise in exercises:
        position = code.index(exercise)
        solution, checking = code[position + 1], code[position + 2]
        assert solution in solutions, f"cell {exercise}: the code cell after an exercise must be its solution"
        assert "= ..." in cells[exercise].source, f"cell {exercise}: the placeholder is Ellipsis"
        assert cells[solution].source.startswith("if solutions:\n"), f"cell {solution} must start with 'if solutions:'"
        assert cells[solution].metadata["jupyter"] == {"source_hidden": True}
        assert "check.exercise_" in cells[checking].source, f"cell {checking}: the check cell must call chh_lib.exercises"
        for index in (exercise, solution, checking):
            assert cells[index - 1].cell_type == "markdown", f"cell {index} has no explanation before it"


def test_notebook_profile(monkeypatch):
    monkeypatch.delenv("CHH_PROFILE", raising=False)
    assert notebook_profile() == "cpu"
    assert notebook_profile("smoke") == "smoke"
    monkeypatch.setenv("CHH_PROFILE", "smoke")
    assert notebook_profile() == "smoke"
    monkeypatch.setenv("CHH_PROFILE", "huge")
    with pytest.raises(ConfigError):
        notebook_profile()


def test_series_selection():
    assert [p.name[:2] for p in series_notebooks(NOTEBOOKS, ["02"])] == ["02"]
    assert [p.name[:2] for p in series_notebooks(NOTEBOOKS, ["1"])] == ["01"]
    with pytest.raises(ConfigError, match="99"):
        series_notebooks(NOTEBOOKS, ["99"])


def test_scrub_text_removes_absolute_paths():
    root = repo_root()
    text = f"saved {root}/runs/x.png and /tmp/abc/metrics.json, /home/u/a.txt"
    assert scrub_text(text, root) == "saved runs/x.png and metrics.json, a.txt"


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory) -> Path:
    """The smoke profile's phantom (24 images), written once for this module."""
    return ensure_phantom(tmp_path_factory.mktemp("notebook_data") / "phantom", "smoke")


def test_ensure_phantom_is_a_no_op_when_present(smoke_data):
    descriptor = smoke_data / "dataset.yaml"
    before = descriptor.stat().st_mtime_ns
    assert ensure_phantom(smoke_data, "smoke") == smoke_data
    assert descriptor.stat().st_mtime_ns == before
    assert is_phantom(smoke_data)


def test_ensure_trained_run_cpu_uses_the_shipped_model(smoke_data, tmp_path):
    run_dir = ensure_trained_run(tmp_path / "model", smoke_data, "cpu")
    checkpoint = run_dir / "checkpoints" / "last.pt"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert checkpoint.is_file() and manifest["pretrained"] is True
    before = checkpoint.stat().st_mtime_ns
    ensure_trained_run(run_dir, smoke_data, "cpu")  # reused, not rewritten
    assert checkpoint.stat().st_mtime_ns == before
    assert len(training_history(run_dir)) == 40  # the history stored with the shipped weights


def test_notebook_paths_resolve_against_the_repository(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    paths = notebook_paths("01_x", "smoke", None, tmp_path / "run")
    assert paths.data_dir == repo_root() / "data" / "phantom_smoke"
    assert paths.output_dir == tmp_path / "run" / "01_x" and paths.output_dir.is_dir()
    assert paths.model_dir == tmp_path / "run" / "model"
    assert paths.show(tmp_path / "run" / "01_x" / "a.png") == "RUN_DIR/01_x/a.png"
    assert notebook_paths("01_x", "cpu", "data/isbi", tmp_path / "run").data_dir == repo_root() / "data" / "isbi"


@pytest.fixture(scope="module")
def smoke_series(tmp_path_factory, smoke_data) -> tuple[Path, pd.DataFrame]:
    """Every notebook, executed once in order with the smoke profile into a temporary run directory."""
    base = tmp_path_factory.mktemp("notebooks")
    data_dir = smoke_data
    run_dir = base / "run"
    summary = run_notebooks(run_dir, "smoke", data_dir=data_dir, device="cpu", timeout_s=CELL_TIMEOUT_S)
    return run_dir, summary


def _metrics(run_dir: Path, stem: str) -> dict:
    return json.loads((run_dir / stem / "metrics.json").read_text())


def test_smoke_series_summary(smoke_series):
    run_dir, summary = smoke_series
    assert list(summary["notebook"]) == [p.stem for p in COMMITTED]
    assert set(summary["status"]) == {"ok"}
    on_disk = pd.read_csv(run_dir / "notebooks" / "summary.csv")
    assert list(on_disk["notebook"]) == list(summary["notebook"])
    for path in COMMITTED:
        assert (run_dir / "notebooks" / path.name).is_file()
    assert "total" in format_summary(summary)


def test_smoke_01_data_exploration(smoke_series):
    run_dir, _ = smoke_series
    metrics = _metrics(run_dir, "01_data_exploration")
    assert metrics["profile"] == "smoke"
    assert metrics["num_images"] == {"train": 7, "calibration": 2, "test": 9, "test2": 6}
    assert metrics["num_images_total"] == 24
    assert metrics["num_landmarks"] == 19 and metrics["num_contour_landmarks"] == 18
    # The phantom's annotators disagree by about 1.7 mm, much more along contours than across.
    assert 1.0 < metrics["mean_annotator_distance_mm"] < 2.5
    assert metrics["min_contour_along_across_ratio"] > 1.5
    assert metrics["median_contour_along_across_ratio"] > 3.0
    assert metrics["point_landmark_along_across_ratio"]["S"] < metrics["median_contour_along_across_ratio"]
    assert len(metrics["per_landmark_mean_distance_mm"]) == 19
    # The along/across ratio is measured along the generator's tangents (the definition `chh phantom`
    # prints) and recovers the generator's parameters within the sampling error of 24 images (~21 %).
    assert metrics["tangent_source"] == "phantom generator"
    measured, generator = metrics["per_landmark_along_across_ratio"], metrics["per_landmark_generator_ratio"]
    assert measured["S"] is None and generator["S"] is None
    gaps = sorted(abs(measured[a] / generator[a] - 1) for a in measured if a != "S")
    assert gaps[len(gaps) // 2] < 0.35 and gaps[-1] < 0.8
    assert metrics["median_contour_pooled_ratio"] > 2.0
    for name in ("examples", "annotator_ellipses", "annotator_ellipses_on_image", "hard_cases",
                 "augmentation_preview"):
        assert (run_dir / "01_data_exploration" / f"{name}.png").stat().st_size > 1000


def test_smoke_02_one_hot_training(smoke_series):
    run_dir, _ = smoke_series
    metrics = _metrics(run_dir, "02_one_hot_heatmap_training")
    assert metrics["training"] == "trained" and metrics["epochs"] == 2
    assert metrics["optimiser_steps"] == 4  # 7 training images, batch 4: 2 steps per epoch
    assert metrics["num_test_images"] == 9
    assert 0 < metrics["train_seconds"] < 60
    assert math.isclose(metrics["uniform_nll"], math.log(64 * 80))
    # Two epochs on seven images: a finite loss below the uniform heatmap's, finite errors.
    assert 0 < metrics["final_train_nll"] < metrics["uniform_nll"] + 1
    assert 0 < metrics["mre_mm"] < 250 and 0 < metrics["baseline_mre_mm"] < 250
    assert set(metrics["sdr_percent"]) == {"2", "2.5", "3", "4"}
    assert all(0 <= v <= 100 for v in metrics["sdr_percent"].values())
    assert (run_dir / "model" / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "model" / "eval_test" / "metrics.json").is_file()
    # the network summary counts the smoke profile's U-Net
    from chh_lib.model import build_model, count_parameters

    assert metrics["num_parameters"] == count_parameters(build_model("unet_small", 19, width_multiplier=0.5))
    # one Adam step on a batch lowers that batch's NLL; the held-out NLL is recorded per epoch
    assert metrics["step_nll_after"] < metrics["step_nll_before"]
    assert 0 < metrics["final_held_out_nll"] < metrics["uniform_nll"] + 1
    # the arg-max floor at 3 mm pixels (64 x 80): measured on the test targets, and 0.383 s for a uniform offset
    assert math.isclose(metrics["uniform_offset_floor_mm"], 3.0 * (math.sqrt(2) + math.asinh(1)) / 6, rel_tol=1e-6)
    assert math.isclose(metrics["quantisation_floor_mm"], metrics["uniform_offset_floor_mm"], rel_tol=0.1)
    assert set(metrics["mre_by_group_mm"]) == {"normal", "hard", "all"}
    assert math.isclose(metrics["mre_by_group_mm"]["all"], metrics["mre_mm"], rel_tol=1e-9)
    assert math.isclose(metrics["sd_by_group_mm"]["all"], metrics["mre_sd_mm"], rel_tol=1e-9)
    # the Gaussian-target MSE network trains with the same schedule; both are decoded on the test split
    assert metrics["mse_epochs"] == 2 and metrics["mse_sigma_px"] == 6.0 and metrics["mse_final_train_loss"] > 0
    assert set(metrics["comparison"]) == {"one-hot NLL", "Gaussian MSE"}
    assert math.isclose(metrics["comparison"]["one-hot NLL"]["mre_mm"], metrics["mre_mm"], rel_tol=1e-6)
    assert metrics["nll_model_mre_mm"] == metrics["comparison"]["one-hot NLL"]["mre_mm"]
    assert metrics["mse_model_mre_mm"] == metrics["comparison"]["Gaussian MSE"]["mre_mm"]
    assert all(row["median_spread_mm"] > 0 for row in metrics["comparison"].values())
    assert (run_dir / "02_one_hot_heatmap_training" / "gaussian_mse_model" / "checkpoints" / "last.pt").is_file()
    assert metrics["exercises_attempted"] == metrics["exercises_passed"] == 0  # the placeholders


def test_smoke_03_temperature_calibration(smoke_series):
    run_dir, _ = smoke_series
    metrics = _metrics(run_dir, "03_temperature_calibration")
    assert metrics["profile"] == "smoke"
    assert metrics["num_calibration_images"] == 2 and 0 < metrics["num_test_pairs"] <= 9 * 19
    # The readable ECE is the library's, exactly; temperature scaling never moves the arg-max.
    assert metrics["readable_ece_matches_library"] is True
    assert metrics["argmax_unchanged"] is True
    # The temperatures minimise the NLL of the calibration split, so it cannot get worse there. On the
    # test split the barely trained smoke model gives no guarantee: only ranges are checked.
    assert metrics["nll_calibration_after"] <= metrics["nll_calibration_before"] + 1e-4
    assert 0 < metrics["nll_before"] < math.log(64 * 80) + 5 and 0 < metrics["nll_after"] < math.log(64 * 80) + 5
    for key in ("ece_percent_before", "ece_percent_after", "adaptive_ece_percent_before", "adaptive_ece_percent_after"):
        assert 0 <= metrics[key] <= 100
    assert 0 < metrics["temperature_min"] <= metrics["temperature_median"] <= metrics["temperature_max"]
    assert len(metrics["temperatures"]) == 19
    assert 0 <= metrics["share_in_last_chh_bin"] <= 1
    # The run's temperatures come from chh calibrate's default scope, the one cross-validation favours.
    assert metrics["stored_scope"] == metrics["cv_better_scope"]
    stored = list(metrics["stored_temperatures"].values())
    if metrics["stored_scope"] == "none":
        assert stored == [1.0] * 19
    elif metrics["stored_scope"] == "global":
        assert stored == pytest.approx([metrics["global_temperature"]] * 19, rel=1e-5)
    else:
        assert stored == pytest.approx(list(metrics["temperatures"].values()), rel=1e-5)
    # Scope none keeps T = 1: nothing changes, and the change intervals are exactly 0.
    assert metrics["run_keeps_t_1"] is (metrics["stored_scope"] == "none")
    if metrics["run_keeps_t_1"]:
        assert metrics["ece_percent_after"] == metrics["ece_percent_before"]
        assert metrics["ece_change_ci"] == [0.0, 0.0] and metrics["nll_change_ci"] == [0.0, 0.0]
    # The paired intervals of the test change from T = 1 to each fitted scope, and verdicts that follow them.
    assert set(metrics["scope_change_ci"]) == set(metrics["scope_change_verdict"]) == {"global", "per_landmark"}
    for scope, by_measure in metrics["scope_change_ci"].items():
        assert set(by_measure) == {"ece", "adaptive_ece", "nll"}
        for measure, (low, high) in by_measure.items():
            assert low <= high
            verdict = metrics["scope_change_verdict"][scope][measure]
            expected = "lower" if high < 0 else "higher" if low > 0 else "within"
            assert verdict.startswith(expected), (scope, measure, low, high, verdict)
    for size in metrics["small_calibration_sets"]["by_size"].values():
        assert 0 <= size["share_temperature_above_1"] <= 1
    for key in ("nll_after_per_landmark", "nll_after_global"):
        assert 0 < metrics[key] < math.log(64 * 80) + 5
    for name in ("toy_temperatures", "confidence_histogram", "reliability_chh_bins", "reliability_adaptive_bins",
                 "temperatures", "temperature_scope"):
        assert (run_dir / "03_temperature_calibration" / f"{name}.png").stat().st_size > 1000
    assert metrics["exercises_attempted"] == 0 and metrics["exercises_passed"] == 0


def test_smoke_04_expected_radial_error(smoke_series):
    run_dir, _ = smoke_series
    metrics = _metrics(run_dir, "04_expected_radial_error")
    assert metrics["profile"] == "smoke"
    # The readable ERE reproduces chh_lib.metrics.expected_radial_error on every real heatmap (float64).
    assert metrics["readable_matches_library"] is True
    assert 0 <= metrics["max_abs_difference_mm"] < 1e-6
    assert 0 < metrics["num_pairs"] <= 9 * 19 and metrics["num_bins"] == metrics["num_pairs"] // 36
    assert 0 < metrics["ere_mean_mm"] < 250 and 0 < metrics["mre_mm"] < 250
    for key in ("pearson", "spearman", "binned_pearson", "binned_pearson_without_top_bin",
                "binned_pearson_shuffled_p95"):
        assert metrics[key] is None or -1 <= metrics[key] <= 1
    assert 0 <= metrics["contour_example_ere_share_beyond_crop"] <= 1
    medians, means = metrics["per_landmark_median_ere_mm"], metrics["per_landmark_mean_ere_mm"]
    assert set(medians) == set(means) and len(medians) == 19
    assert all(0 <= medians[k] < 250 and 0 <= means[k] < 250 for k in medians)
    # A higher cutoff keeps fewer distant pixels: the mean ERE cannot grow with it.
    by_cutoff = [metrics["mean_ere_by_cutoff_mm"][c] for c in sorted(metrics["mean_ere_by_cutoff_mm"], key=float)]
    assert all(a >= b - 1e-9 for a, b in zip(by_cutoff, by_cutoff[1:]))
    assert metrics["sella_elongation"] >= 1 and metrics["median_contour_elongation"] >= 1
    # bootstrap intervals by image (50 resamples under smoke) around the binned r and Spearman rho
    assert metrics["bootstrap_resamples"] == 50
    for key in ("spearman_ci95", "binned_pearson_ci95"):
        low, high = metrics[key]
        assert low is None or -1 <= low <= high <= 1
    low, high = metrics["spearman_ci95"]
    assert low - 1e-9 <= metrics["spearman"] <= high + 1e-9
    (low_r, high_r), (low_rho, high_rho) = metrics["binned_pearson_ci95"], metrics["spearman_ci95"]
    if None not in (low_r, high_r, low_rho, high_rho):
        assert metrics["binned_pearson_and_spearman_ci95_overlap"] is (low_r <= high_rho and low_rho <= high_r)
    # the verdict on the binned r follows the stated threshold
    assert metrics["binned_pearson_sharp_fall"] == 0.2
    if metrics["binned_pearson"] is not None and metrics["binned_pearson_without_top_bin"] is not None:
        fall = metrics["binned_pearson"] - metrics["binned_pearson_without_top_bin"]
        assert metrics["binned_pearson_rests_on_top_bin"] is (fall > 0.2)
    assert 0 <= metrics["num_contour_landmarks_above_sella_median_ere"] <= 18
    for key in ("spearman_median_ere_with_spread_size", "spearman_median_ere_with_elongation"):
        assert -1 <= metrics[key] <= 1
    for name in ("ere_vs_cutoff", "ere_vs_error", "heatmap_elongation", "examples"):
        assert (run_dir / "04_expected_radial_error" / f"{name}.png").stat().st_size > 1000
    # The published notebook runs to the end with the placeholders: no exercise attempted.
    assert metrics["exercises_attempted"] == 0 and metrics["exercises_passed"] == 0


def _exercise_count(source: Path) -> int:
    return len(_tagged(_build_module().build_notebook(source).cells, "exercise"))


_WITH_EXERCISES = [source for source in _build_module().sources() if _exercise_count(source)]


@pytest.fixture(scope="module")
def solutions_series(tmp_path_factory, smoke_data) -> tuple[Path, pd.DataFrame]:
    """The notebooks that have exercises, built from their sources and run in order with ``solutions=True``."""
    base = tmp_path_factory.mktemp("notebooks_solutions")
    folder = base / "notebooks"
    folder.mkdir()
    for source in _WITH_EXERCISES:
        nbformat.write(_build_module().build_notebook(source), str(folder / f"{source.stem}.ipynb"))
    run_dir = base / "run"
    summary = run_notebooks(run_dir, "smoke", only=[source.stem[:2] for source in _WITH_EXERCISES],
                            notebooks_dir=folder, data_dir=smoke_data, device="cpu", timeout_s=CELL_TIMEOUT_S,
                            parameters={"solutions": True})
    return run_dir, summary


@pytest.mark.parametrize("source", _WITH_EXERCISES, ids=lambda p: p.stem)
def test_smoke_solutions(solutions_series, source: Path):
    """With the hidden solutions run, every exercise of the notebook is attempted and its check passes."""
    run_dir, summary = solutions_series
    row = summary.set_index("notebook").loc[source.stem]
    assert row["status"] == "ok"
    metrics = _metrics(run_dir, source.stem)
    assert metrics["exercises_attempted"] == metrics["exercises_passed"] == _exercise_count(source)


def test_smoke_05_uncertainty_roc(smoke_series):
    run_dir, _ = smoke_series
    metrics = _metrics(run_dir, "05_uncertainty_roc")
    assert metrics["profile"] == "smoke" and metrics["num_test_images"] == 9
    assert metrics["num_predictions"] == 9 * 19 and metrics["bootstrap_resamples"] == 50
    assert metrics["outlier_mm"] == 4.0 and 0 <= metrics["outlier_fraction"] <= 1
    # A two-epoch model may fail everywhere (one class only): the AUROC is then undefined (null).
    assert set(metrics["auroc"]) == {"ere", "neg_mode_prob", "entropy", "spread"}
    for value in metrics["auroc"].values():
        assert value is None or 0 <= value <= 1
    low, high = metrics["auroc_ci95"]["ere"]
    assert (low is None and high is None) or 0 <= low <= high <= 1
    # the threshold comes from the calibration split; only the oracle is tuned on the test split
    assert metrics["ere_threshold_split"] == "calibration"
    if metrics["outlier_fraction"] > 0:
        assert metrics["ere_threshold_oracle_mm"] > 0
        assert metrics["tpr_at_threshold"] is None or 0 <= metrics["tpr_at_threshold"] <= 1
    assert set(metrics["auroc_non_hard"]) == set(metrics["auroc"])
    for split in ("split_by_ere", "split_by_true_error"):
        sets = metrics[split]
        assert sets["good_set"]["count"] + sets["erroneous_set"]["count"] == metrics["num_predictions"]
    assert 0 <= metrics["splits_disagree"] <= metrics["num_predictions"]
    # the paired bootstrap of AUROC(ERE) - AUROC(entropy): null with one class only, else an interval in [-1, 1]
    for images in ("all images", "non-hard images"):
        delta = metrics["auroc_difference_ere_minus_entropy"][images]
        low, high = metrics["auroc_difference_ci95"][images]
        assert delta is None or -1 <= delta <= 1
        assert (low is None and high is None) or -1 <= low <= high <= 1
    assert 0 <= metrics["outliers_on_hard_images"] <= metrics["num_predictions"]
    # the gallery: the three kinds partition the outliers and the flagged inliers; at most three shown per kind
    counts, shown = metrics["gallery_kind_counts"], metrics["gallery_shown"]
    assert set(counts) == set(shown) == {"true positive", "false alarm", "missed outlier"}
    assert all(0 <= shown[kind] <= min(3, counts[kind]) for kind in counts)
    outlier_count = round(metrics["outlier_fraction"] * metrics["num_predictions"])
    assert counts["true positive"] + counts["missed outlier"] == outlier_count
    if metrics["ere_threshold_mm"] is not None:  # else the gallery falls back to the oracle threshold
        assert counts["true positive"] + counts["false alarm"] == metrics["split_by_ere"]["erroneous_set"]["count"]
    figures = ["roc_curves"] + (["flagged_gallery"] if any(shown.values()) else [])
    # every AUROC comes with its number of outliers; the pooled threshold (exercise 05.4) is measured on test
    assert metrics["num_outliers"] == round(metrics["outlier_fraction"] * metrics["num_predictions"])
    assert 0 <= metrics["num_outliers_non_hard"] <= metrics["num_outliers"]
    assert metrics["pooled_threshold_splits"][0] == "calibration"
    assert metrics["pooled_threshold_num_outliers"] >= metrics["ere_threshold_num_outliers"]
    for key in ("pooled_threshold_test_tpr", "pooled_threshold_test_fpr"):
        assert metrics[key] is None or 0 <= metrics[key] <= 1
    # the words "closer to the target" follow the two test TPRs; the chance band is 2 binomial standard errors
    target = metrics["target_tpr"]
    if metrics["pooled_threshold_test_tpr"] is not None and metrics["tpr_at_threshold"] is not None:
        assert metrics["pooled_threshold_closer_to_target"] == (
            abs(metrics["pooled_threshold_test_tpr"] - target) < abs(metrics["tpr_at_threshold"] - target))
    if metrics["num_outliers"]:
        band = 2 * (target * (1 - target) / metrics["num_outliers"]) ** 0.5
        assert metrics["test_tpr_noise_band"] == pytest.approx(band)
    for name in figures:
        assert (run_dir / "05_uncertainty_roc" / f"{name}.png").stat().st_size > 1000
    # The published notebook runs to the end with the placeholders: no exercise attempted.
    assert metrics["exercises_attempted"] == 0 and metrics["exercises_passed"] == 0


def test_smoke_06_heatmap_inspector(smoke_series):
    run_dir, _ = smoke_series
    metrics = _metrics(run_dir, "06_heatmap_inspector")
    assert metrics["profile"] == "smoke" and metrics["num_test_images"] == 9
    assert metrics["widgets_built"] is True and metrics["num_controls"] == 12
    assert 1 <= metrics["cached_images"] <= metrics["cache_max_images"]  # the logits cache stays bounded
    shown = metrics["default_selection"]
    assert shown["landmark"] == "gonion" and shown["temperature"] > 0
    assert shown["ere_mm"] >= 0 and shown["radial_error_mm"] >= 0 and 0 < shown["mode_prob"] <= 1
    threshold = metrics["ere_threshold_mm"]  # stored by calibration; None only when it chose none
    if threshold is not None:
        assert shown["flagged"] is (shown["ere_mm"] >= threshold)
        assert metrics["worst"]["flagged"] is (metrics["worst"]["ere_mm"] >= threshold)
    # A lower cutoff can only enlarge the significant set.
    sweep_s = metrics["cutoff_sweep"]
    assert sweep_s["cutoffs"] == sorted(sweep_s["cutoffs"])
    assert all(a >= b >= 1 for a, b in itertools.pairwise(sweep_s["significant_pixels"]))
    # "next outlier" shows the largest radial error of the split first.
    assert metrics["worst"]["radial_error_mm"] >= shown["radial_error_mm"]
    assert 1 <= metrics["worst"]["ere_rank"] <= 9 * 19
    assert 0 <= metrics["num_false_alarms"] <= metrics["num_flagged"] <= 9 * 19
    assert (metrics["first_false_alarm"] is None) == (metrics["num_false_alarms"] == 0)
    # The temperature flattens the heatmap but never moves its arg-max.
    sweep = metrics["temperature_sweep"]
    assert all(a >= b for a, b in itertools.pairwise(sweep["mode_prob"]))
    assert metrics["distinct_predictions_over_sweep"] == 1
    for name in ("inspector_default", "cutoff_outline", "contour_vs_sella", "worst_case", "temperature_effect",
                 "temperature_sweep", "all_heatmaps"):
        assert (run_dir / "06_heatmap_inspector" / f"{name}.png").stat().st_size > 1000


def test_published_copy_is_clean(smoke_series, tmp_path):
    run_dir, _ = smoke_series
    executed = run_dir / "notebooks" / COMMITTED[0].name
    assert str(run_dir) in executed.read_text()  # papermill's injected parameters hold the paths
    target = publish_notebook(executed, tmp_path / COMMITTED[0].name)
    text = target.read_text()
    assert not ABSOLUTE_PATH.search(text)  # nothing machine-specific is left
    assert str(run_dir) not in text
    notebook = nbformat.reads(text, as_version=4)
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in notebook.cells)


def test_a_failing_notebook_names_its_cell(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    good = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("profile = 'cpu'\nrun_dir = data_dir = None\nseed = 0\ndevice = 'auto'",
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("x = 1"),
    ])
    bad = nbformat.v4.new_notebook(cells=[
        *good.cells,
        nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"),
    ])
    for notebook in (good, bad):
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(good, str(folder / "01_good.ipynb"))
    nbformat.write(bad, str(folder / "02_bad.ipynb"))
    nbformat.write(good, str(folder / "03_never.ipynb"))
    with pytest.raises(NotebookError, match=r"02_bad\.ipynb failed in cell \d+.*ValueError: broken on purpose"):
        run_notebooks(tmp_path / "run", "smoke", notebooks_dir=folder, data_dir=tmp_path / "data")
    summary = pd.read_csv(tmp_path / "run" / "notebooks" / "summary.csv")
    assert list(summary["status"]) == ["ok", "failed"]


def test_notebook_02_takes_a_bounded_run(tmp_path, smoke_data):
    """``max_steps`` bounds both trainings of notebook 02, as ``chh train --max-steps`` does."""
    run_dir = tmp_path / "run"
    summary = run_notebooks(run_dir, "smoke", ["02"], data_dir=smoke_data, device="cpu", timeout_s=CELL_TIMEOUT_S,
                            parameters={"max_steps": 1})
    assert list(summary["status"]) == ["ok"]
    metrics = _metrics(run_dir, "02_one_hot_heatmap_training")
    assert metrics["optimiser_steps"] == 1 and metrics["epochs"] == 1 and metrics["mse_epochs"] == 1
    mse_log = pd.read_csv(run_dir / "02_one_hot_heatmap_training" / "gaussian_mse_model" / "train_log.csv")
    assert int(mse_log["steps"].sum()) == 1


def test_extra_parameters_reach_every_notebook(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("profile = 'cpu'\nrun_dir = data_dir = None\nseed = 0\ndevice = 'auto'\n"
                                  "solutions = False", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("from pathlib import Path\nPath(run_dir, 'solutions.txt').write_text(str(solutions))"),
    ])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(folder / "01_echo.ipynb"))
    run_notebooks(tmp_path / "run", "smoke", notebooks_dir=folder, data_dir=tmp_path / "data",
                  parameters={"solutions": True})
    assert (tmp_path / "run" / "solutions.txt").read_text() == "True"
    run_notebooks(tmp_path / "run", "smoke", notebooks_dir=folder, data_dir=tmp_path / "data")  # default unchanged
    assert (tmp_path / "run" / "solutions.txt").read_text() == "False"
    with pytest.raises(ConfigError, match="profile"):
        run_notebooks(tmp_path / "run", "smoke", notebooks_dir=folder, parameters={"profile": "cpu"})


def test_the_series_runs_on_a_custom_labelme_data_set(tmp_path):
    """Pointed at a labelme data set with three landmarks, every notebook runs and reports on it."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import make_tiny_labelme

    from chh_lib.config import load_yaml, save_yaml

    data_dir = tmp_path / "labelme"
    make_tiny_labelme(data_dir, num_images=8, size=(160, 200))
    descriptor = load_yaml(data_dir / "dataset.yaml")
    descriptor["splits"] = {"fractions": {"train": 0.5, "calibration": 0.25, "test": 0.25}, "seed": 0}
    save_yaml(descriptor, data_dir / "dataset.yaml")
    summary = run_notebooks(tmp_path / "run", "smoke", data_dir=data_dir, device="cpu", timeout_s=CELL_TIMEOUT_S)
    assert set(summary["status"]) == {"ok"}
    assert _metrics(tmp_path / "run", "01_data_exploration")["num_landmarks"] == 3
    assert _metrics(tmp_path / "run", "02_one_hot_heatmap_training")["num_test_images"] == 2
    assert _metrics(tmp_path / "run", "04_expected_radial_error")["max_abs_difference_mm"] < 1e-6

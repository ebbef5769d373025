"""The `chh` command line end to end with the smoke profile, and its error messages."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import make_tiny_descriptor, make_tiny_isbi, train_smoke_run

from chh_lib.cli import main


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Phantom -> train (smoke) -> evaluate, once for the module."""
    data_dir, run_dir = train_smoke_run(tmp_path_factory.mktemp("smoke"))
    assert main(["evaluate", "--run-dir", str(run_dir), "--split", "test", "--device", "cpu"]) == 0
    return data_dir, run_dir


def test_smoke_run_writes_every_output(smoke_run, capsys):
    data_dir, run_dir = smoke_run
    for name in ("config.yaml", "manifest.json", "train_log.csv", "train.log", "checkpoints/last.pt"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "eval_test" / "metrics.json").read_text())
    assert metrics["num_images"] == 9 and metrics["num_landmarks"] == 19
    assert set(metrics["sdr_percent"]) == {"2", "2.5", "3", "4"}
    assert all(0.0 <= v <= 100.0 for v in metrics["sdr_percent"].values())
    sdr = list(metrics["sdr_percent"].values())
    assert sdr == sorted(sdr)
    assert metrics["mre_mm"] > 0 and metrics["mre_sd_mm"] >= 0 and metrics["baseline_mre_mm"] > 0
    assert metrics["num_missing"] >= 0 and metrics["sdr_inclusive"] is False
    # the sub-pixel decoding is reported beside the arg-max: within half a pixel's diagonal of it
    subpixel = metrics["subpixel"]
    assert subpixel["decode"] == "quadratic" and set(subpixel["sdr_percent"]) == set(metrics["sdr_percent"])
    assert abs(subpixel["mre_mm"] - metrics["mre_mm"]) <= 0.5 * np.sqrt(2) * 3.0  # smoke pixels: 3 mm
    per_landmark = (run_dir / "eval_test" / "per_landmark.csv").read_text().splitlines()
    assert len(per_landmark) == 20 and per_landmark[0].startswith("landmark,abbreviation,mre_mm")
    per_image = (run_dir / "eval_test" / "per_image.csv").read_text().splitlines()
    assert len(per_image) == 10 and per_image[0].startswith("image_id,mre_mm,S_error_mm")


def test_per_image_errors_average_to_the_reported_mre(smoke_run):
    _, run_dir = smoke_run
    import pandas as pd

    table = pd.read_csv(run_dir / "eval_test" / "per_image.csv")
    errors = table.filter(like="_error_mm").to_numpy()
    metrics = json.loads((run_dir / "eval_test" / "metrics.json").read_text())
    assert np.nanmean(errors) == pytest.approx(metrics["mre_mm"], abs=1e-3)


def test_train_refuses_to_overwrite_a_run(smoke_run, capsys):
    data_dir, run_dir = smoke_run
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    status = main(["train", "--data", str(data_dir), "--run-dir", str(run_dir), "--profile", "smoke", "--no-progress"])
    assert status == 2
    assert "already there; use --resume" in capsys.readouterr().err
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before


def test_missing_data_directory_is_a_clear_error(tmp_path, capsys):
    status = main(["train", "--data", str(tmp_path / "nope"), "--run-dir", str(tmp_path / "run"), "--profile", "smoke"])
    assert status == 2
    err = capsys.readouterr().err
    assert "nope: data directory not found" in err and "Traceback" not in err


def test_evaluate_with_another_landmark_count_is_refused(smoke_run, tmp_path, capsys):
    _, run_dir = smoke_run
    make_tiny_isbi(tmp_path / "five", num_landmarks=5)
    make_tiny_descriptor(tmp_path / "five", num_landmarks=5)
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    status = main(["evaluate", "--run-dir", str(copy), "--data", str(tmp_path / "five")])
    assert status == 2
    assert "trained for 19 landmarks but the data set has 5" in capsys.readouterr().err
    assert not (copy / "eval_test").exists() or (copy / "eval_test" / "metrics.json").read_text() == (
        run_dir / "eval_test" / "metrics.json"
    ).read_text()


def test_corrupt_image_is_named_and_earlier_results_survive(smoke_run, tmp_path, capsys):
    data_dir, run_dir = smoke_run
    data_copy, run_copy = tmp_path / "data", tmp_path / "run"
    shutil.copytree(data_dir, data_copy, ignore=shutil.ignore_patterns(".chh_cache"))
    shutil.copytree(run_dir, run_copy)
    metrics_before = (run_copy / "eval_test" / "metrics.json").read_text()
    victim = sorted((data_copy / "RawImage" / "Test1Data").iterdir())[0]
    victim.write_bytes(b"BM" + b"\x00" * 10)
    status = main(["evaluate", "--run-dir", str(run_copy), "--data", str(data_copy)])
    assert status == 2
    assert f"{victim.name}: not a readable image" in capsys.readouterr().err
    assert (run_copy / "eval_test" / "metrics.json").read_text() == metrics_before


def test_short_annotation_file_is_named(smoke_run, tmp_path, capsys):
    data_dir, _ = smoke_run
    data_copy = tmp_path / "data"
    shutil.copytree(data_dir, data_copy, ignore=shutil.ignore_patterns(".chh_cache"))
    victim = sorted((data_copy / "AnnotationsByMD" / "400_junior").iterdir())[0]
    victim.write_text("\n".join(victim.read_text().splitlines()[:18]) + "\n")
    status = main(["train", "--data", str(data_copy), "--run-dir", str(tmp_path / "run"), "--profile", "smoke"])
    assert status == 2
    assert f"{victim.name}: expected at least 19 'x,y' lines, found 18" in capsys.readouterr().err


@pytest.mark.parametrize("maker", ["labelme", "csv"])
def test_train_and_evaluate_on_custom_formats(tmp_path, maker, capsys):
    from helpers import make_tiny_csv, make_tiny_labelme

    data_dir, run_dir = tmp_path / "data", tmp_path / "run"
    truth = make_tiny_labelme(data_dir) if maker == "labelme" else make_tiny_csv(data_dir)
    num_landmarks = next(iter(truth.values())).shape[1]
    assert main(["train", "--data", str(data_dir), "--run-dir", str(run_dir), "--profile", "smoke",
                 "--device", "cpu", "--no-progress"]) == 0
    assert main(["evaluate", "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    metrics = json.loads((run_dir / "eval_test" / "metrics.json").read_text())
    assert metrics["num_landmarks"] == num_landmarks and metrics["num_images"] == 2
    assert np.isfinite(metrics["mre_mm"]) and np.isfinite(metrics["baseline_mre_mm"])
    assert "MRE" in capsys.readouterr().out


STEP3_KEYS = {
    "nll_before", "nll_after", "ece_percent_before", "ece_percent_after", "adaptive_ece_percent_after",
    "mce_percent_after", "ere_error_binned_pearson", "ere_error_spearman", "outlier_threshold_mm",
    "outlier_fraction", "auroc", "auroc_ci95", "ere_threshold_mm", "ere_threshold_oracle_mm", "good_set", "erroneous_set",
    "temperatures",
}


@pytest.mark.parametrize("method", ["nll", "paper"])
def test_calibrate_then_evaluate(smoke_run, tmp_path, method, capsys):
    _, run_dir = smoke_run
    run_copy = tmp_path / "run"
    shutil.copytree(run_dir, run_copy)
    before = json.loads((run_copy / "eval_test" / "metrics.json").read_text())
    assert before["calibrated"] is False and before["temperatures"] == [1.0] * 19
    assert STEP3_KEYS <= set(before)
    args = ["calibrate", "--run-dir", str(run_copy), "--method", method, "--device", "cpu"]
    assert main(args + (["--epochs", "2"] if method == "paper" else [])) == 0
    printed = capsys.readouterr().out
    assert "fitted 19 temperatures" in printed or "kept T = 1 for all 19 landmarks" in printed
    calibration = json.loads((run_copy / "calibration.json").read_text())
    assert calibration["method"] == method and len(calibration["temperatures"]) == 19
    assert main(["evaluate", "--run-dir", str(run_copy), "--device", "cpu"]) == 0
    after = json.loads((run_copy / "eval_test" / "metrics.json").read_text())
    assert after["calibrated"] is True and after["calibration_overlap_images"] == 0
    assert after["temperatures"] == pytest.approx(list(calibration["temperatures"].values()))
    # temperatures leave the arg-max, hence MRE and SDR, unchanged
    assert after["mre_mm"] == before["mre_mm"] and after["sdr_percent"] == before["sdr_percent"]
    assert after["ece_percent_before"] == pytest.approx(before["ece_percent_after"])
    if method == "nll":
        assert calibration["nll_after"] <= calibration["nll_before"] + 1e-9
        # the default scope is chosen by cross-validation on the calibration split
        cross_validated = calibration["cross_validated_nll"]
        scopes = ("none", "global", "per_landmark")
        assert calibration["scope"] == min(scopes, key=lambda scope: (cross_validated[scope], scopes.index(scope)))
    else:
        assert calibration["scope"] == "per_landmark" and calibration["cross_validated_nll"] is None
    # the ERE threshold is chosen on the held-out split at calibration time and only applied to test
    chosen = calibration["ere_threshold"]
    assert chosen["split"] == "calibration" and chosen["num_outliers"] > 0
    assert before["ere_threshold_mm"] is None and before["good_set"] is None
    assert after["ere_threshold_split"] == "calibration"
    assert after["ere_threshold_mm"] == pytest.approx(chosen["ere_threshold_mm"])
    num_pairs = after["num_images"] * after["num_landmarks"] - after["num_missing"]
    assert after["good_set"]["count"] + after["erroneous_set"]["count"] == num_pairs
    assert np.isfinite(after["ere_threshold_oracle_mm"])
    for name in ("reliability_diagram.png", "ere_vs_error.png", "roc.png", "per_landmark.png"):
        assert (run_copy / "eval_test" / name).stat().st_size > 10_000
    per_landmark = (run_copy / "eval_test" / "per_landmark.csv").read_text().splitlines()[0]
    assert per_landmark.endswith("ere_mm,temperature")
    per_image = (run_copy / "eval_test" / "per_image.csv").read_text().splitlines()[0]
    assert "S_ere_mm" in per_image


@pytest.mark.parametrize("scope", ["global", "per-landmark"])
def test_calibrate_with_a_chosen_scope(smoke_run, tmp_path, scope, capsys):
    _, run_dir = smoke_run
    run_copy = tmp_path / "run"
    shutil.copytree(run_dir, run_copy)
    assert main(["calibrate", "--run-dir", str(run_copy), "--scope", scope, "--device", "cpu"]) == 0
    assert f"(nll, {scope})" in capsys.readouterr().out
    calibration = json.loads((run_copy / "calibration.json").read_text())
    assert calibration["scope"] == scope.replace("-", "_") and calibration["cross_validated_nll"] is None
    temperatures = list(calibration["temperatures"].values())
    if scope == "global":
        assert temperatures == [temperatures[0]] * 19
    else:
        assert len(set(temperatures)) > 1
    assert main(["calibrate", "--run-dir", str(run_copy), "--scope", "global", "--method", "paper"]) == 2
    assert "per landmark" in capsys.readouterr().err


def test_calibrating_on_the_test_split_is_refused(smoke_run, tmp_path, capsys):
    _, run_dir = smoke_run
    run_copy = tmp_path / "run"
    shutil.copytree(run_dir, run_copy)
    checkpoint = (run_copy / "checkpoints" / "last.pt").read_bytes()
    assert main(["calibrate", "--run-dir", str(run_copy), "--split", "test"]) == 2
    assert "may not be fitted on the 'test' split" in capsys.readouterr().err
    assert (run_copy / "checkpoints" / "last.pt").read_bytes() == checkpoint


@pytest.mark.parametrize(("flag", "expected"), [([], None), (["--solutions"], {"solutions": True})])
def test_notebooks_command_passes_the_solutions_flag(monkeypatch, tmp_path, flag, expected):
    import pandas as pd

    import chh_lib.notebooks as runner

    seen = {}

    def fake_run(run_dir, profile, only=None, **kwargs):
        seen.update(kwargs, run_dir=run_dir, profile=profile, only=only)
        return pd.DataFrame([{"notebook": "04_expected_radial_error", "seconds": 1.0, "status": "ok"}])

    monkeypatch.setattr(runner, "run_notebooks", fake_run)
    monkeypatch.setattr(runner, "format_summary", lambda summary: "summary")
    assert main(["notebooks", "--run-dir", str(tmp_path), "--profile", "smoke", "--only", "04", *flag]) == 0
    assert seen["parameters"] == expected and seen["only"] == ["04"] and seen["profile"] == "smoke"


@pytest.mark.parametrize("code, problem, advice", [
    (28, "No space left on device", "free some disk space and run the command again (training: add --resume)"),
    (30, "Read-only file system", "the file system is read-only; choose a writable --run-dir or output path"),
])
def test_an_os_error_while_training_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys,
                                                                               code, problem, advice):
    import chh_lib.engine as engine
    from chh_lib.engine import LAST_CHECKPOINT, load_checkpoint

    make_tiny_isbi(tmp_path / "data", images_per_split=4, size=(48, 60))
    run = tmp_path / "run"
    common = ["--data", str(tmp_path / "data"), "--run-dir", str(run), "--profile", "smoke", "--no-progress"]
    assert main(["train", *common, "--epochs", "1"]) == 0
    good = (run / LAST_CHECKPOINT).read_bytes()
    capsys.readouterr()

    def failing_write(path, data, durable=True):
        raise OSError(code, problem, str(path))

    monkeypatch.setattr(engine, "write_bytes_atomic", failing_write)
    assert main(["train", *common, "--resume", "--epochs", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"chh train: error: {run / LAST_CHECKPOINT}: {problem} (errno {code}); {advice}. "
                       "Files written before are kept.")
    assert not any("Traceback" in line for line in err)
    assert (run / LAST_CHECKPOINT).read_bytes() == good and load_checkpoint(run / LAST_CHECKPOINT)["epoch"] == 1
    assert "Traceback" in (run / "train.log").read_text()  # the traceback went to the run's log instead
    with pytest.raises(OSError, match=problem):  # --debug shows it
        main(["--debug", "train", *common, "--resume", "--epochs", "2"])

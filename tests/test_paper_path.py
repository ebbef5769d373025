"""The paper profile's whole path on a CPU: a bounded training run, calibration and evaluation at 640 x 800."""
from __future__ import annotations

import json
import math

import pytest
import torch

from chh_lib.cli import main
from chh_lib.evaluation import load_run
from chh_lib.heatmaps import one_hot_nll, target_flat_index
from chh_lib.model import build_model


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    """8 phantom images at 640 x 800: 2 train, 1 calibration (clean protocol), 3 test, 2 test2."""
    root = tmp_path_factory.mktemp("paper")
    data_dir, run_dir = root / "data", root / "run"
    assert main(["phantom", str(data_dir), "--num-images", "8", "--image-size", "640", "800"]) == 0
    assert main(["train", "--data", str(data_dir), "--run-dir", str(run_dir), "--profile", "paper",
                 "--max-steps", "3", "--device", "cpu", "--no-progress"]) == 0
    assert main(["calibrate", "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    assert main(["evaluate", "--run-dir", str(run_dir), "--split", "test", "--device", "cpu"]) == 0
    return data_dir, run_dir


def test_bounded_paper_training_writes_a_valid_run(paper_run):
    data_dir, run_dir = paper_run
    run = load_run(run_dir, data_dir)
    assert run.config.profile == "paper" and run.config.model.name == "unet_resnet34"
    assert tuple(run.config.data.image_size) == (640, 800) and run.config.augment.enabled
    assert run.config.train.max_steps == 3
    history = run.payload["history"]
    assert sum(row["steps"] for row in history) == 3
    assert all(math.isfinite(row["loss"]) and 0 < row["loss"] < 30 for row in history)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["encoder_init"] in ("imagenet", "scratch")  # scratch without torchvision, recorded
    assert (run_dir / "train_log.csv").read_text().splitlines()[0].endswith("steps")


def test_paper_run_calibrates_and_evaluates(paper_run):
    _, run_dir = paper_run
    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert len(calibration["temperatures"]) == 19
    assert all(math.isfinite(t) and t > 0 for t in calibration["temperatures"].values())
    metrics = json.loads((run_dir / "eval_test" / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and metrics["image_size"] == [640, 800] and metrics["calibrated"]
    for key in ("mre_mm", "mre_sd_mm", "nll_before", "nll_after", "ece_percent_before", "ece_percent_after",
                "ere_mean_mm", "baseline_mre_mm", "mean_annotator_distance_mm"):
        assert math.isfinite(metrics[key]), key
    # the temperatures were fitted on the calibration split; on the test split they may not help, but the
    # NLL stays bounded by that of a uniform heatmap over 640 x 800 pixels plus a margin
    assert metrics["nll_after"] < math.log(640 * 800) + 5
    for name in ("sdr_percent", "auroc", "ere_threshold_mm", "good_set", "erroneous_set", "auroc_ci95"):
        assert name in metrics
    for figure in ("reliability_diagram.png", "ere_vs_error.png", "roc.png", "per_landmark.png"):
        assert (run_dir / "eval_test" / figure).stat().st_size > 1000


def test_bf16_forward_gives_the_float32_nll():
    """Under bf16 autocast the network runs in bf16 but the softmax and NLL stay float32 (to 1e-2 nats)."""
    torch.manual_seed(0)
    model = build_model("unet_small", 19, width_multiplier=0.5).eval()
    images = torch.rand(2, 1, 200, 160)
    target = target_flat_index(torch.rand(2, 19, 2) * torch.tensor([159.0, 199.0]), 160, 200)
    with torch.no_grad():
        float32_nll = one_hot_nll(model(images), target)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            bf16_logits = model(images)
        bf16_nll = one_hot_nll(bf16_logits, target)
    assert bf16_logits.dtype == torch.bfloat16  # autocast really ran the network in bf16
    assert bf16_nll.dtype == torch.float32
    assert abs(float(bf16_nll) - float(float32_nll)) < 1e-2

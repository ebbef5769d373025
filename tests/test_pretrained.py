"""The shipped phantom model: size, safe loading, provenance and accuracy on a phantom it never saw."""
from __future__ import annotations

import json

import pytest

from chh_lib.cli import main
from chh_lib.engine import load_checkpoint
from chh_lib.errors import CheckpointError
from chh_lib.pretrained import pretrained_path, write_pretrained_run


def test_asset_is_small_and_loads_with_weights_only():
    path = pretrained_path()
    assert path.is_file()
    assert path.stat().st_size <= 10 * 1024 * 1024
    payload = load_checkpoint(path)  # torch.load(..., weights_only=True)
    assert payload["num_landmarks"] == 19 and payload["model_name"] == "unet_small"
    assert "optimizer_state" not in payload
    assert {"command", "hardware", "training_time"} <= set(payload["provenance"])


@pytest.mark.slow
def test_pretrained_model_on_a_fresh_phantom(tmp_path, capsys):
    data_dir, run_dir = tmp_path / "phantom", tmp_path / "run"
    assert main(["phantom", str(data_dir), "--num-images", "48", "--seed", "777"]) == 0
    assert main(["pretrained", str(run_dir), "--data", str(data_dir)]) == 0
    assert main(["evaluate", "--run-dir", str(run_dir), "--device", "cpu"]) == 0
    metrics = json.loads((run_dir / "eval_test" / "metrics.json").read_text())
    assert metrics["num_images"] == 18
    assert metrics["mre_mm"] <= 2.0 * metrics["mean_annotator_distance_mm"]
    assert metrics["mre_mm"] <= 0.4 * metrics["baseline_mre_mm"]
    assert metrics["sdr_percent"]["4"] >= 90.0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["pretrained"] is True


def test_pretrained_run_is_not_written_over(tmp_path):
    write_pretrained_run(tmp_path / "run")
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match="already there"):
        write_pretrained_run(tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before

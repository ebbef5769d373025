"""Data-parallel training: two gloo processes on a CPU against one process with the same global batch."""
from __future__ import annotations

import json
import math

import pytest
import torch

from chh_lib.cli import _without_nproc, main
from chh_lib.distributed import (
    SINGLE_PROCESS,
    DistributedContext,
    context_from_environment,
    launch_command,
    per_process_batch_size,
    sum_over_processes,
)
from chh_lib.engine import LAST_CHECKPOINT, load_checkpoint
from chh_lib.errors import ConfigError

#: Relative tolerance on the first epoch's mean loss of a 2-process run against one process (measured: 0.24 %).
FIRST_EPOCH_LOSS_RTOL = 0.01


def test_context_from_the_environment():
    assert context_from_environment({}) == SINGLE_PROCESS
    assert not SINGLE_PROCESS.enabled and SINGLE_PROCESS.is_main
    second = context_from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert second == DistributedContext(1, 2, 1) and second.enabled and not second.is_main
    assert second.device(torch.device("cuda")) == torch.device("cuda", 1)
    assert second.device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ConfigError, match="impossible process rank 2 of 2"):
        context_from_environment({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="must be integers"):
        context_from_environment({"RANK": "first"})


def test_the_global_batch_is_split_evenly():
    assert per_process_batch_size(8, 1) == 8
    assert per_process_batch_size(8, 4) == 2
    with pytest.raises(ConfigError, match="batch of 4 images cannot be split evenly over 3 processes"):
        per_process_batch_size(4, 3)
    assert sum_over_processes([1.5, 2], SINGLE_PROCESS) == [1.5, 2.0]


def test_launch_command_and_argument_stripping():
    command = launch_command(2, ["train", "--data", "d"])
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    assert command[6:] == ["chh_lib.cli", "train", "--data", "d"]
    with pytest.raises(ConfigError, match="at least 2 processes"):
        launch_command(1, ["train"])
    assert _without_nproc(["train", "--nproc", "2", "--data", "d", "--nproc=3"]) == ["train", "--data", "d"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data_dir = root / "data"
    assert main(["phantom", str(data_dir), "--num-images", "24", "--image-size", "160", "200", "--seed", "3"]) == 0
    common = ["--data", str(data_dir), "--profile", "smoke", "--device", "cpu", "--no-progress"]
    assert main(["train", "--run-dir", str(root / "one"), *common]) == 0
    assert main(["train", "--run-dir", str(root / "two"), "--nproc", "2", *common]) == 0
    return root, common


def _history(run_dir):
    return load_checkpoint(run_dir / LAST_CHECKPOINT)["history"]


def test_two_processes_train_like_one_with_the_same_global_batch(two_runs):
    root, _ = two_runs
    one, two = _history(root / "one"), _history(root / "two")
    assert [row["steps"] for row in two] == [row["steps"] for row in one] == [2, 2]
    assert math.isclose(two[0]["loss"], one[0]["loss"], rel_tol=FIRST_EPOCH_LOSS_RTOL)
    assert two[0]["loss"] != one[0]["loss"]  # another image order: close, not identical
    manifest = json.loads((root / "two" / "manifest.json").read_text())
    assert manifest["processes"] == 2
    # the checkpoint holds the bare network (no DDP wrapper) and loads like any other
    state = load_checkpoint(root / "two" / LAST_CHECKPOINT)["model_state"]
    assert not any(key.startswith("module.") for key in state)
    assert state.keys() == load_checkpoint(root / "one" / LAST_CHECKPOINT)["model_state"].keys()


def test_rank_zero_alone_writes_and_resume_works(two_runs):
    root, common = two_runs
    log = (root / "two" / "train.log").read_text()
    assert log.count("training unet_small") == 1 and log.count("epoch 1/2") == 1
    assert (root / "two" / "train_log.csv").read_text().count("\n") == 3  # header + 2 epochs, written once each
    before = _history(root / "two")
    assert main(["train", "--run-dir", str(root / "two"), "--nproc", "2", "--resume", "--epochs", "3", *common]) == 0
    after = _history(root / "two")
    assert [row["epoch"] for row in after] == [1, 2, 3]
    assert [row["loss"] for row in after[:2]] == [row["loss"] for row in before]
    assert math.isfinite(after[2]["loss"]) and after[2]["loss"] < after[0]["loss"]
    assert (root / "two" / "train.log").read_text().count("resuming") == 1


def test_a_batch_that_does_not_split_is_refused_before_training(two_runs, capsys):
    root, common = two_runs
    status = main(["train", "--run-dir", str(root / "three"), "--batch-size", "3", "--lr", "0.002", *common,
                   "--nproc", "2"])
    assert status == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "chh train: error: the batch of 3 images cannot be split evenly over 2 processes; "
        "use a number of processes that divides it")
    assert not (root / "three").exists()


def test_process_group_on_cuda_uses_nccl_and_the_local_gpu(monkeypatch):
    """The CUDA branch, with torch.distributed and torch.cuda mocked (no GPU here)."""
    import torch.distributed as dist

    from chh_lib.distributed import process_group

    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: calls.append(("set_device", index)))
    monkeypatch.setattr(dist, "init_process_group",
                        lambda backend, rank, world_size: calls.append(("init", backend, rank, world_size)))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append(("destroy",)))
    context = DistributedContext(rank=3, world_size=4, local_rank=1)
    with process_group(context, context.device(torch.device("cuda"))):
        calls.append(("inside",))
    assert calls == [("set_device", 1), ("init", "nccl", 3, 4), ("inside",), ("destroy",)]
    calls.clear()
    with process_group(context, torch.device("cpu")):
        pass
    assert calls == [("init", "gloo", 3, 4), ("destroy",)]
    calls.clear()
    with process_group(SINGLE_PROCESS, torch.device("cuda")):
        pass
    assert calls == []  # one process joins no group


def test_the_manifest_names_the_gpu(monkeypatch, tmp_path):
    from chh_lib.config import profile_config
    from chh_lib.engine import run_manifest

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: f"Mock GPU {device}")
    manifest = run_manifest(profile_config("paper"), torch.device("cuda", 1), tmp_path)
    assert manifest["device"] == "cuda:1" and manifest["device_name"] == "Mock GPU cuda:1"

"""The notebooks' training helper: bounded runs (max_steps), reuse and resumption."""
from __future__ import annotations

from chh_lib.workflow import ensure_phantom, train_or_reuse, training_history


def test_a_bounded_run_is_reused_and_a_larger_budget_resumes_it(tmp_path):
    data_dir = ensure_phantom(tmp_path / "phantom", "smoke")
    run_dir = tmp_path / "model"
    first = train_or_reuse(run_dir, data_dir, "smoke", device="cpu", epochs=4, max_steps=2)
    history = training_history(run_dir)
    assert first.action == "trained" and int(history["steps"].sum()) == 2 and len(history) == 1
    again = train_or_reuse(run_dir, data_dir, "smoke", device="cpu", max_steps=2)
    assert again.action == "reused" and training_history(run_dir).equals(history)
    more = train_or_reuse(run_dir, data_dir, "smoke", device="cpu", max_steps=3)
    more_history = training_history(run_dir)
    assert more.action == "resumed" and int(more_history["steps"].sum()) == 3
    full = train_or_reuse(run_dir, data_dir, "smoke", device="cpu")  # None: the whole schedule
    finished = training_history(run_dir)
    steps_per_epoch = int(finished["steps"].iloc[-1])
    assert full.action == "resumed" and len(finished) == 4 and int(finished["steps"].sum()) > 3
    assert int(finished["steps"].sum()) == 3 + (4 - len(more_history)) * steps_per_epoch
    assert train_or_reuse(run_dir, data_dir, "smoke", device="cpu").action == "reused"

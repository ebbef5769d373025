"""One writer per run directory: a second command fails at once naming the first; a killed one is cleaned up."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from chh_lib.runlock import LOCK_NAME, RunLockedError, remove_stale_temporaries, run_lock

pytest.importorskip("fcntl")


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    with run_lock(tmp_path / "run", command="chh train --run-dir run"):
        holder = json.loads((tmp_path / "run" / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "chh train --run-dir run"
        with pytest.raises(RunLockedError, match=rf"another chh command is writing here \(pid {os.getpid()} on "):
            with run_lock(tmp_path / "run"):
                pass
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""  # released cleanly
    with run_lock(tmp_path / "run"):  # and free again
        pass


def test_a_concurrent_chh_train_exits_2_with_one_line(tmp_path, capsys):
    from chh_lib.cli import main

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from chh_lib.runlock import run_lock\n"
         f"with run_lock({str(tmp_path / 'run')!r}, command='chh train (first)'):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        status = main(["train", "--data", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run"),
                       "--profile", "smoke"])
        err = capsys.readouterr().err.strip().splitlines()
        assert status == 2
        assert err[-1].startswith(f"chh train: error: {tmp_path / 'run'}: another chh command is writing here "
                                  f"(pid {holder.pid} on ")
        assert err[-1].endswith(": chh train (first)); wait for it to finish or use another run directory")
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_is_reported_and_its_temporaries_removed(tmp_path, caplog):
    run = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", "import os, signal; from chh_lib.runlock import run_lock\n"
         f"with run_lock({str(run)!r}, command='chh train (killed)'):\n"
         "    os.kill(os.getpid(), signal.SIGKILL)"])
    assert killed.returncode == -9
    (run / "checkpoints").mkdir(parents=True)
    orphan = run / "checkpoints" / ".last.pt.abc123.tmp"
    orphan.write_bytes(b"x" * 1000)
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    fresh = run / "checkpoints" / ".last.pt.def456.tmp"  # a live writer's, seconds old: kept
    fresh.write_bytes(b"y")
    with caplog.at_level("WARNING"), run_lock(run):
        pass
    assert "the previous command (pid " in caplog.text and "chh train (killed)) did not finish" in caplog.text
    assert "1 temporary file(s)" in caplog.text
    assert not orphan.exists() and fresh.exists()
    assert remove_stale_temporaries(run, older_than_s=-1) == [fresh]

"""Readers share a run's lock (two `chh predict` at once); a writer is refused while any reader holds it."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from chh_lib.runlock import LOCK_NAME, READERS_NAME, RunLockedError, read_readers, run_lock

pytest.importorskip("fcntl")


def _holder_process(run_dir, command, shared):
    """A second process holding ``run_dir``'s lock until killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; from chh_lib.runlock import run_lock\n"
         f"with run_lock({str(run_dir)!r}, command={command!r}, shared={shared!r}):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def _stop(process):
    process.kill()
    process.wait()


def test_two_readers_coexist_and_a_writer_is_refused_naming_both(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    first = _holder_process(run, "chh predict (first)", shared=True)
    try:
        with run_lock(run, command="chh predict (second)", shared=True):
            readers = read_readers(run)
            assert sorted(r["command"] for r in readers) == ["chh predict (first)", "chh predict (second)"]
            assert sorted(r["pid"] for r in readers) == sorted([first.pid, os.getpid()])
            with pytest.raises(RunLockedError) as refused:
                with run_lock(run, command="chh evaluate"):
                    pass
            message = str(refused.value)
            assert message.startswith(f"{run}: 2 chh command(s) reading here (pid ")
            assert f"pid {first.pid} on " in message and f"pid {os.getpid()} on " in message
            assert message.endswith("; wait for them to finish or use another run directory")
        assert [r["command"] for r in read_readers(run)] == ["chh predict (first)"]  # the second's record is gone
    finally:
        _stop(first)
    # the killed reader's record is left out (its pid is dead) and the next writer removes it
    assert read_readers(run) == []
    assert len(list((run / READERS_NAME).glob("*.json"))) == 1
    with run_lock(run, command="chh evaluate"):
        assert json.loads((run / LOCK_NAME).read_text())["command"] == "chh evaluate"
        assert not (run / READERS_NAME).exists()


def test_a_reader_is_refused_while_a_writer_holds_the_lock(tmp_path):
    run = tmp_path / "run"
    writer = _holder_process(run, "chh train (writer)", shared=False)
    try:
        with pytest.raises(RunLockedError) as refused:
            with run_lock(run, command="chh predict", shared=True):
                pass
        assert str(refused.value).startswith(f"{run}: another chh command is writing here (pid {writer.pid} on ")
        assert str(refused.value).endswith(": chh train (writer)); wait for it to finish or use another run directory")
        assert read_readers(run) == []
    finally:
        _stop(writer)
    with run_lock(run, shared=True):  # free once the writer is gone
        assert len(read_readers(run)) == 1


def test_two_descriptors_in_one_process_share_it_and_exclude_a_writer(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with run_lock(run, command="reader 1", shared=True), run_lock(run, command="reader 2", shared=True):
        assert sorted(r["command"] for r in read_readers(run)) == ["reader 1", "reader 2"]
        with pytest.raises(RunLockedError, match="2 chh command"):
            with run_lock(run):
                pass
    assert (run / LOCK_NAME).read_text() == ""  # readers never write their details into the lock file
    with run_lock(run, command="writer"):
        with pytest.raises(RunLockedError, match="another chh command is writing here .*: writer\\)"):
            with run_lock(run, shared=True):
                pass


def test_the_cli_shares_the_lock_for_predict_and_export_only(tmp_path):
    from chh_lib.cli import _run_lock_for

    run = tmp_path / "run"
    run.mkdir()
    reader = _holder_process(run, "chh predict (other)", shared=True)
    try:
        for command in ("predict", "export"):
            args = argparse.Namespace(command=command, run_dir=run, argv=[command, str(run)])
            with _run_lock_for(args):
                assert {r["command"] for r in read_readers(run)} == {"chh predict (other)", f"chh {command} {run}"}
        for command in ("evaluate", "calibrate", "pretrained", "notebooks"):
            args = argparse.Namespace(command=command, run_dir=run, argv=[command])
            with pytest.raises(RunLockedError, match=r"1 chh command\(s\) reading here .*chh predict \(other\)\)"):
                with _run_lock_for(args):
                    pass
    finally:
        _stop(reader)


def test_a_failed_writer_leaves_no_folder_or_lock_file_it_made(tmp_path):
    fresh = tmp_path / "a" / "b" / "run"
    with pytest.raises(ValueError):
        with run_lock(fresh):
            raise ValueError("refused")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("kept")
    with pytest.raises(ValueError):
        with run_lock(existing):
            raise ValueError("refused")
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt"]
    with run_lock(existing):  # a lock file that was there before stays
        pass
    with pytest.raises(ValueError):
        with run_lock(existing):
            raise ValueError("refused")
    assert sorted(p.name for p in existing.iterdir()) == [LOCK_NAME, "notes.txt"]
    kept = tmp_path / "kept"
    with pytest.raises(ValueError):
        with run_lock(kept):
            (kept / "train.log").write_text("what went wrong")
            raise ValueError("refused")
    assert sorted(p.name for p in kept.iterdir()) == ["train.log"]  # it holds more than the lock


def test_a_reader_of_a_run_it_may_not_write_locks_read_only_and_writes_nothing(tmp_path, monkeypatch):
    import errno

    import chh_lib.runlock as runlock

    run = tmp_path / "run"
    with run_lock(run):
        pass
    real_open = os.open

    def read_only(path, flags, *rest):
        if flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *rest)

    monkeypatch.setattr(runlock.os, "open", read_only)  # (os.open itself, for the duration)
    with run_lock(run, command="chh predict", shared=True):
        assert read_readers(run) == []
        with pytest.raises(PermissionError):  # a writer cannot work there at all
            with run_lock(run):
                pass
        monkeypatch.setattr(runlock.os, "open", real_open)
        with pytest.raises(RunLockedError, match=r"another chh command is using it \(owner unknown\)"):
            with run_lock(run):  # a writer that may write is still kept out, though the reader is unrecorded
                pass
        monkeypatch.setattr(runlock.os, "open", read_only)
    with run_lock(tmp_path / "new", shared=True):  # no lock file and none can be made: no lock
        pass
    monkeypatch.setattr(runlock.os, "open", real_open)
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]
    assert (run / LOCK_NAME).read_text() == ""


def test_a_lock_file_removed_while_being_locked_is_opened_again(tmp_path, monkeypatch):
    import chh_lib.runlock as runlock

    run = tmp_path / "run"
    run.mkdir()
    real_flock, calls = runlock.fcntl.flock, []

    def flock_after_removal(fd, operation):
        calls.append(os.fstat(fd).st_ino)
        if len(calls) == 1:  # a failing writer removed the file between our open and our flock
            (run / LOCK_NAME).unlink()
        return real_flock(fd, operation)

    monkeypatch.setattr(runlock.fcntl, "flock", flock_after_removal)
    with run_lock(run, command="chh evaluate"):
        assert len(calls) == 2  # the second try locks the file now at the path
        assert json.loads((run / LOCK_NAME).read_text())["command"] == "chh evaluate"

"""Atomic writes: old or new file, never a mixture; durable writes reach the disk before and after the rename."""
from __future__ import annotations

import os

import numpy as np
import pytest

from chh_lib import files


def _record_fsyncs(monkeypatch) -> list[str]:
    calls: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append("folder" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    return calls


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to tell files from folders")
def test_a_durable_write_syncs_the_file_then_the_folder(tmp_path, monkeypatch):
    calls = _record_fsyncs(monkeypatch)
    files.write_bytes_atomic(tmp_path / "a.bin", b"new")
    assert calls == ["file", "folder"]
    assert (tmp_path / "a.bin").read_bytes() == b"new"
    calls.clear()
    files.save_npy_atomic(tmp_path / "cache.npy", np.arange(3), durable=False)
    assert calls == []  # a rebuildable cache skips the cost
    np.testing.assert_array_equal(np.load(tmp_path / "cache.npy"), np.arange(3))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    target.write_bytes(b"old")

    def fail(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", fail)
    with pytest.raises(OSError, match="No space left"):
        files.write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]

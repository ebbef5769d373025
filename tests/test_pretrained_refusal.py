"""A refused or failed `chh pretrained` leaves no run directory behind, and an existing one as it was."""
from __future__ import annotations

import errno

import pytest
from helpers import make_tiny_descriptor, make_tiny_isbi

import chh_lib.pretrained as pretrained
from chh_lib.cli import main
from chh_lib.errors import CheckpointError
from chh_lib.pretrained import write_pretrained_run


def _tree(folder):
    """{relative path: bytes} of every file under ``folder`` (folders as None)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


@pytest.fixture()
def five_landmarks(tmp_path):
    data = tmp_path / "five"
    make_tiny_isbi(data, num_landmarks=5)
    make_tiny_descriptor(data, 5)
    return data


def test_a_refused_chh_pretrained_creates_no_run_directory(tmp_path, five_landmarks, capsys):
    run = tmp_path / "new" / "run"
    assert main(["pretrained", str(run), "--data", str(five_landmarks)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint was trained for 19 landmarks but the data set" in err and "has 5" in err
    assert not (tmp_path / "new").exists()
    assert main(["pretrained", str(run), "--data", str(tmp_path / "missing")]) == 2
    assert not (tmp_path / "new").exists()


def test_a_refused_chh_pretrained_leaves_an_existing_folder_as_it_was(tmp_path, five_landmarks):
    run = tmp_path / "run"
    (run / "notes").mkdir(parents=True)
    (run / "notes" / "README.txt").write_text("mine")
    before = _tree(run)
    assert main(["pretrained", str(run), "--data", str(five_landmarks)]) == 2
    assert _tree(run) == before  # no lock file, config or checkpoint left
    assert main(["pretrained", str(run)]) == 0
    written = _tree(run)
    assert {"config.yaml", "manifest.json", "checkpoints/last.pt"} <= set(written)
    assert main(["pretrained", str(run)]) == 2  # a checkpoint is already there: refused, nothing changed
    after = _tree(run)
    assert {name: after[name] for name in written if name != ".chh.lock"} == \
        {name: written[name] for name in written if name != ".chh.lock"}


def test_a_write_that_fails_part_way_removes_what_it_created(tmp_path, monkeypatch):
    def full_disk(payload, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pretrained, "save_checkpoint", full_disk)
    fresh = tmp_path / "a" / "run"
    with pytest.raises(OSError, match="No space left"):
        write_pretrained_run(fresh)
    assert not (tmp_path / "a").exists()  # config.yaml written, then removed with the folders
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(OSError, match="No space left"):
        write_pretrained_run(existing)
    assert _tree(existing) == {"notes.txt": b"mine"}
    assert main(["pretrained", str(tmp_path / "b" / "run")]) == 2  # the CLI: one line, and no folder
    assert not (tmp_path / "b").exists()


def test_an_unreadable_checkpoint_is_refused_before_anything_is_written(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        write_pretrained_run(tmp_path / "run", checkpoint=bad)
    assert not (tmp_path / "run").exists()

"""One writer per run directory: an exclusive lock that every writing ``chh`` command takes.

``RUN/.chh.lock`` is locked with ``fcntl.flock`` for as long as the command runs
and holds its owner (pid, host, command, start time) as JSON. The operating
system releases the lock when the process ends, however it ends; a killed
command leaves its owner's details behind, so the next command that takes the
lock reports the unfinished one and removes the temporary files its atomic
writes left (``.NAME.*.tmp``, untouched for :data:`STALE_TEMPORARY_SECONDS`). A second
command while the first runs fails at once with :class:`RunLockedError`, naming
the holder. Where ``fcntl`` does not exist (Windows) the lock is not taken.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chh_lib.errors import ChhError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

logger = logging.getLogger(__name__)

#: Name of the lock file inside a run directory.
LOCK_NAME = ".chh.lock"
#: A temporary file of an atomic write untouched for this long belongs to a writer that died.
STALE_TEMPORARY_SECONDS = 60.0


class RunLockedError(ChhError):
    """Another command is writing into the run directory."""


@contextlib.contextmanager
def run_lock(run_dir: Path, command: str | None = None) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block (creating the folder when needed).

    Parameters
    ----------
    run_dir : Path
        The run directory.
    command : str, optional
        Recorded as the holder's command (default: this process's command line).

    Raises
    ------
    RunLockedError
        When another process holds the lock.
    """
    if fcntl is None:
        yield
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(f"{run_dir}: another chh command is writing here ({describe_holder(_read_holder(fd))}); "
                                 "wait for it to finish or use another run directory") from None
        previous = _read_holder(fd)
        removed = remove_stale_temporaries(run_dir)
        if previous:
            logger.warning("%s: the previous command (%s) did not finish; %d temporary file(s) it left were removed",
                           run_dir, describe_holder(previous), len(removed))
        elif removed:
            logger.warning("%s: removed %d temporary file(s) left by an interrupted write", run_dir, len(removed))
        _write_holder(fd, {"pid": os.getpid(), "host": socket.gethostname(),
                           "command": command or " ".join(["chh", *sys.argv[1:]]),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        try:
            yield
        finally:
            _write_holder(fd, None)  # a clean release leaves the file empty
    finally:
        os.close(fd)  # closing releases the flock


def describe_holder(holder: dict[str, Any] | None) -> str:
    """``pid N on HOST since TIME: COMMAND`` (or ``owner unknown``)."""
    if not holder:
        return "owner unknown"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: {holder.get('command')}"


def remove_stale_temporaries(run_dir: Path, older_than_s: float = STALE_TEMPORARY_SECONDS) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files of atomic writes under ``run_dir`` untouched for ``older_than_s`` seconds."""
    now = time.time()
    removed = []
    for path in Path(run_dir).rglob(".*.tmp"):
        try:
            if path.is_file() and now - path.stat().st_mtime > older_than_s:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue
    return removed


def _read_holder(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 65536).decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {"command": "unreadable lock file"}
    return holder if isinstance(holder, dict) else None


def _write_holder(fd: int, holder: dict[str, Any] | None) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    if holder is not None:
        os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
    os.fsync(fd)

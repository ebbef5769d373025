"""Run-directory locks: one writer, or any number of readers, per run directory.

``RUN/.chh.lock`` is locked with ``fcntl.flock`` for as long as a ``chh`` command
runs: exclusively (``LOCK_EX``) by a command that writes into the run (``train``,
``calibrate``, ``evaluate``, ``pretrained``, ``notebooks``), shared (``LOCK_SH``) by
one that only reads it (``predict`` and ``export``, whose outputs go elsewhere), so
two ``chh predict`` on one run go ahead side by side while a writer waits for
neither and is refused while either runs. A writer's details (pid, host, command,
start time) go into the lock file as JSON; a reader's into its own file under
``RUN/.chh.readers/``, removed when it finishes. The operating system releases the
lock when the process ends, however it ends; a killed writer leaves its details
behind, so the next command that takes the lock reports the unfinished one and
removes the temporary files its atomic writes left (``.NAME.*.tmp``, untouched for
:data:`STALE_TEMPORARY_SECONDS`). A command that cannot take the lock fails at once
with :class:`RunLockedError`, naming the holder(s). A writer that fails leaves no
trace of the lock: the folders it created are removed again when nothing but the
lock is in them, and the lock file when it made it. Where ``fcntl`` does not exist
(Windows) no lock is taken.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time
import uuid
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
#: Folder inside a run directory holding one ``HOST.PID.ID.json`` per reader holding the shared lock.
READERS_NAME = ".chh.readers"
#: A temporary file of an atomic write untouched for this long belongs to a writer that died.
STALE_TEMPORARY_SECONDS = 60.0


class RunLockedError(ChhError):
    """Another command is writing into (or, for a writer, reading) the run directory."""


@contextlib.contextmanager
def run_lock(run_dir: Path, command: str | None = None, shared: bool = False) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block: exclusive for a writer, shared for a reader.

    Parameters
    ----------
    run_dir : Path
        The run directory; a writer creates it when needed (and removes what it
        created when the block raises and left nothing but the lock there).
    command : str, optional
        Recorded as the holder's command (default: this process's command line).
    shared : bool
        Take the shared lock of a command that only reads the run (any number may
        hold it at once; no writer meanwhile). A reader creates nothing but the
        lock file and its own holder file; in a run directory it may not write into,
        it takes the lock read-only (without recording itself) or, when there is
        no lock file either, none (no writer can work there).

    Raises
    ------
    RunLockedError
        A writer while another command holds the lock, or a reader while a writer does.
    """
    if fcntl is None:
        yield
        return
    run_dir = Path(run_dir)
    created = [] if shared else _make_folders(run_dir)
    path = run_dir / LOCK_NAME
    fd, made_lock_file = _open_locked(path, run_dir, shared)
    if fd is None:
        yield
        return
    holder = {"pid": os.getpid(), "host": socket.gethostname(),
              "command": command or " ".join(["chh", *sys.argv[1:]]), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    reader_file = None
    failed = False
    try:
        writable = _writable(fd)
        _clean_up_after_a_killed_writer(fd, run_dir, writable)
        if shared:
            reader_file = _record_reader(run_dir, holder) if writable else None
        else:
            _remove_reader_files(run_dir)  # under the exclusive lock, no reader is alive
            _write_holder(fd, holder)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            if reader_file is not None:
                with contextlib.suppress(OSError):
                    reader_file.unlink()
            elif not shared:
                _write_holder(fd, None)  # a clean release leaves the file empty
                if failed:
                    _remove_what_the_lock_made(run_dir, made_lock_file, created)
    finally:
        os.close(fd)  # closing releases the flock


def describe_holder(holder: dict[str, Any] | None) -> str:
    """``pid N on HOST since TIME: COMMAND`` (or ``owner unknown``)."""
    if not holder:
        return "owner unknown"
    return f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: {holder.get('command')}"


def read_readers(run_dir: Path) -> list[dict[str, Any]]:
    """The recorded holders of ``run_dir``'s shared lock, oldest first (dead processes of this host left out)."""
    readers = []
    folder = Path(run_dir) / READERS_NAME
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            holder = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(holder, dict) and _may_be_alive(holder):
            readers.append(holder)
    return sorted(readers, key=lambda h: str(h.get("since")))


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


def _make_folders(run_dir: Path) -> list[Path]:
    """Create ``run_dir`` and its missing parents; returns the folders created, deepest first."""
    missing = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    return missing


def _open_locked(path: Path, run_dir: Path, shared: bool) -> tuple[int | None, bool]:
    """Open and flock the lock file; returns (descriptor, whether this call created the file).

    The file a descriptor locks must still be the one at ``path`` (a failing writer
    may remove it while another command opens it); otherwise it is opened again.
    """
    while True:
        made = not path.exists()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            if not shared or error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            try:  # a run directory this reader may not write into
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return None, False
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(_blocked_message(run_dir, holder, shared)) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, made
        os.close(fd)


def _blocked_message(run_dir: Path, holder: dict[str, Any] | None, shared: bool) -> str:
    """Why the lock could not be taken, naming the writer or the readers that hold it."""
    readers = [] if shared or holder else read_readers(run_dir)
    if readers:
        names = "; ".join(describe_holder(reader) for reader in readers)
        return (f"{run_dir}: {len(readers)} chh command(s) reading here ({names}); "
                "wait for them to finish or use another run directory")
    doing = "writing here" if shared or holder else "using it"
    return (f"{run_dir}: another chh command is {doing} ({describe_holder(holder)}); "
            "wait for it to finish or use another run directory")


def _clean_up_after_a_killed_writer(fd: int, run_dir: Path, writable: bool) -> None:
    """Report a writer that died holding the lock and remove its temporaries (no writer can be running now)."""
    previous = _read_holder(fd)
    if not writable:
        if previous:
            logger.warning("%s: the previous command (%s) did not finish", run_dir, describe_holder(previous))
        return
    try:
        removed = remove_stale_temporaries(run_dir)
    except OSError:  # a reader that may not delete there leaves it to the next writer
        removed = []
    if previous:
        logger.warning("%s: the previous command (%s) did not finish; %d temporary file(s) it left were removed",
                       run_dir, describe_holder(previous), len(removed))
        _write_holder(fd, None)
    elif removed:
        logger.warning("%s: removed %d temporary file(s) left by an interrupted write", run_dir, len(removed))


def _record_reader(run_dir: Path, holder: dict[str, Any]) -> Path | None:
    """Write a reader's details to its own file (None where the run directory is read-only)."""
    folder = run_dir / READERS_NAME
    path = folder / f"{holder['host']}.{holder['pid']}.{uuid.uuid4().hex[:8]}.json"
    try:
        folder.mkdir(exist_ok=True)
        path.write_text(json.dumps(holder) + "\n", encoding="utf-8")
    except OSError:
        return None
    return path


def _remove_reader_files(run_dir: Path) -> None:
    folder = run_dir / READERS_NAME
    if not folder.is_dir():
        return
    for path in folder.glob("*.json"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def _remove_what_the_lock_made(run_dir: Path, made_lock_file: bool, created: list[Path]) -> None:
    """Undo a failed writer's lock: its lock file when it made it, and its folders when nothing else is in them."""
    lock = run_dir / LOCK_NAME
    if made_lock_file:  # unlinked while still locked: a command that opened it meanwhile opens it again
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
    for folder in created:  # deepest first; a folder holding anything else stays
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            break


def _may_be_alive(holder: dict[str, Any]) -> bool:
    """False only for a process of this host that no longer exists."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        pid = int(holder.get("pid", 0))
    except (TypeError, ValueError):
        return True
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _writable(fd: int) -> bool:
    return (fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE) == os.O_RDWR


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

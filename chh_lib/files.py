"""Atomic file writes: every result the kit writes goes through a temporary file and a rename.

An interrupted write therefore leaves either the old file or the new one, never
a truncated mixture; results and checkpoints are also flushed to the disk, so
that this holds after a power cut too.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def write_bytes_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    With ``durable`` (the default) the file is flushed to the disk (``fsync``) before the
    rename and the folder after it, so that a power cut, not only a killed process, leaves
    the old file or the new one. Files that can be rebuilt (the image cache) skip it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to the disk; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the file itself is already on the disk
    finally:
        os.close(fd)


def _current_umask() -> int:
    """The process umask (read by setting and restoring it; mkstemp files are 0600 otherwise)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def json_ready(value: Any) -> Any:
    """A copy of ``value`` that strict JSON can hold.

    NaN and infinity become None (null), NumPy scalars plain numbers, tuples
    lists, keys strings and paths their file name (never an absolute path).
    """
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, Path):
        return value.name
    return value


def write_json_atomic(values: dict[str, Any], path: Path) -> None:
    """Write ``values`` as indented, strict JSON (see :func:`json_ready`) atomically."""
    write_text_atomic(path, json.dumps(json_ready(values), indent=2, allow_nan=False) + "\n")


def save_npy_atomic(path: Path, array: np.ndarray, durable: bool = True) -> None:
    """Save ``array`` in ``.npy`` format atomically (no pickles); see :func:`write_bytes_atomic` for ``durable``."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    write_bytes_atomic(path, buffer.getvalue(), durable=durable)


def save_npz_atomic(path: Path, durable: bool = True, **arrays: np.ndarray) -> None:
    """Save named arrays in compressed ``.npz`` format atomically (no pickles)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue(), durable=durable)

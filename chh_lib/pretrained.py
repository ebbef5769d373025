"""The phantom model that ships with the package, and how it is made.

``chh_lib/assets/phantom_unet_small.pt`` is a slim checkpoint (model weights,
configuration and provenance; no optimiser state) exported from a ``chh train``
run with :func:`export_slim_checkpoint` (``chh export``). ``chh pretrained RUN_DIR``
turns it into a run directory that ``chh evaluate`` and the notebooks accept.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from chh_lib.config import config_from_dict, save_config
from chh_lib.data.formats import read_landmark_data
from chh_lib.engine import LAST_CHECKPOINT, load_checkpoint, save_checkpoint
from chh_lib.errors import CheckpointError
from chh_lib.files import write_json_atomic
from chh_lib.run_info import run_landmarks, run_pixel_size_mm

PRETRAINED_NAME = "phantom_unet_small.pt"


def pretrained_path() -> Path:
    """Path of the shipped phantom checkpoint."""
    return Path(str(resources.files("chh_lib") / "assets" / PRETRAINED_NAME))


def export_slim_checkpoint(run_dir: Path, out_path: Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``run_dir``'s last checkpoint without optimiser or scheduler state.

    The file keeps the weights, configuration, temperatures and ERE threshold (when
    calibrated), the landmark names and the training images' pixel spacing
    (:mod:`chh_lib.run_info`), so that ``chh pretrained --checkpoint FILE`` and
    ``chh predict`` need nothing else.

    Parameters
    ----------
    provenance : dict, optional
        Free-form facts to keep with the weights (command, hardware, training time).
    """
    source = Path(run_dir) / LAST_CHECKPOINT
    payload = load_checkpoint(source)
    slim = {key: value for key, value in payload.items() if key not in ("optimizer_state", "scheduler_state")}
    landmarks = run_landmarks(payload, run_dir)
    slim["landmarks"] = {"names": list(landmarks.names), "abbreviations": list(landmarks.abbreviations)}
    spacing = run_pixel_size_mm(payload, run_dir)
    slim["pixel_size_mm"] = None if spacing is None else list(spacing)
    slim["provenance"] = dict(provenance or {})
    save_checkpoint(slim, Path(out_path))
    return Path(out_path)


def write_pretrained_run(run_dir: Path, data_dir: Path | None = None, checkpoint: Path | None = None) -> Path:
    """Make a run directory from the shipped (or given) slim checkpoint.

    Writes ``config.yaml``, ``manifest.json`` (``pretrained: true`` and ``data_dir``
    when given) and ``checkpoints/last.pt``. The checkpoint is read with
    ``weights_only=True``; with ``data_dir`` it must have been trained for that data
    set's landmarks (the same number, and the same names when it stores them).

    Raises
    ------
    CheckpointError
        A checkpoint that is not readable, stores no configuration, or was trained for
        other landmarks than those of ``data_dir``; an existing checkpoint in ``run_dir``.

    Returns
    -------
    Path
        The checkpoint written.

    Notes
    -----
    A refused call writes nothing and creates no folder. When a write fails part-way
    (e.g. a full disk), the files and folders this call created are removed again, so
    a folder that existed before holds what it held (a file it overwrote, such as an
    old ``config.yaml``, keeps the new content).
    """
    source = Path(checkpoint) if checkpoint is not None else pretrained_path()
    payload = load_checkpoint(source)
    if "config" not in payload:
        raise CheckpointError(f"{source}: no configuration stored with the weights")
    if data_dir is not None:
        _check_landmarks_fit(payload, source, Path(data_dir))
    run_dir = Path(run_dir)
    target = run_dir / LAST_CHECKPOINT
    if target.exists():
        raise CheckpointError(f"{target}: a checkpoint is already there; choose another run directory")
    config = config_from_dict(payload["config"])
    manifest = {
        "pretrained": True,
        "source": source.name,
        "data_dir": str(Path(data_dir).resolve()) if data_dir is not None else None,
        "provenance": payload.get("provenance", {}),
    }
    writes = (
        (run_dir / "config.yaml", lambda path: save_config(config, path)),
        (target, lambda path: save_checkpoint(payload, path)),
        (run_dir / "manifest.json", lambda path: write_json_atomic(manifest, path)),
    )
    new_folders = [folder for folder in (target.parent, run_dir, *run_dir.parents) if not folder.exists()]
    new_files = [path for path, _ in writes if not path.exists()]
    try:
        for path, write in writes:
            write(path)
    except BaseException:
        _remove_new(new_files, new_folders)
        raise
    return target


def _remove_new(files: list[Path], folders: list[Path]) -> None:
    """Undo a failed :func:`write_pretrained_run`: the files it created, then its folders left empty (deepest first)."""
    for path in files:
        path.unlink(missing_ok=True)
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:  # never made (the write failed before it)
            continue
        except OSError:  # not empty (e.g. the run's lock is there)
            break


def _check_landmarks_fit(payload: dict[str, Any], source: Path, data_dir: Path) -> None:
    """Refuse a checkpoint trained for other landmarks than those of the data set at ``data_dir``."""
    protocol = config_from_dict(payload["config"]).data.protocol
    landmarks = read_landmark_data(data_dir, protocol=protocol).landmarks
    if int(payload["num_landmarks"]) != landmarks.num_landmarks:
        raise CheckpointError(f"{source}: checkpoint was trained for {payload['num_landmarks']} landmarks but "
                              f"the data set {data_dir} has {landmarks.num_landmarks}")
    stored = (payload.get("landmarks") or {}).get("names")
    if stored and tuple(stored) != landmarks.names:
        differing = next(k for k, (a, b) in enumerate(zip(stored, landmarks.names)) if a != b)
        raise CheckpointError(f"{source}: checkpoint was trained for other landmarks than the data set {data_dir} "
                              f"(landmark {differing + 1}: {stored[differing]!r} in the checkpoint, "
                              f"{landmarks.names[differing]!r} in the data set)")

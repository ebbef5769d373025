"""Helpers that let each teaching notebook run on its own from a fresh clone.

Every notebook of the series calls these functions instead of defining code
that another notebook needs. They are idempotent: a phantom or a trained model
that is already on disk is reused, so a notebook runs in seconds when an
earlier notebook (or ``make demo``) has done the expensive part.

Layout of the run directory shared by the series::

    RUN_DIR/model/             a normal chh run directory (notebook 02 trains it)
    RUN_DIR/<notebook stem>/   metrics.json and the figures of one notebook
    RUN_DIR/notebooks/         executed copies and summary.csv (chh_lib.notebooks)
"""
from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chh_lib.config import load_yaml, profile_config
from chh_lib.errors import ConfigError
from chh_lib.files import write_bytes_atomic, write_json_atomic

#: Environment variable naming the notebook profile (``smoke``, ``cpu`` or ``paper``).
PROFILE_VARIABLE = "CHH_PROFILE"

#: Phantom arguments (``num_images``, ``image_size``) of each profile.
PHANTOM_SETTINGS: dict[str, dict[str, Any]] = {
    "smoke": {"num_images": 24, "image_size": (640, 800)},
    "cpu": {"num_images": 400, "image_size": (640, 800)},
    "paper": {"num_images": 400, "image_size": (640, 800)},
}

#: Sub-folder of the run directory that holds the model shared by the series.
MODEL_FOLDER = "model"


def notebook_profile(default: str = "cpu") -> str:
    """The profile a notebook runs with: ``$CHH_PROFILE`` when set, else ``default``.

    Parameters
    ----------
    default : str
        Profile used when the environment variable is unset or empty.

    Returns
    -------
    str
        ``smoke``, ``cpu`` or ``paper``.

    Raises
    ------
    ConfigError
        When the chosen name is not a known profile.
    """
    name = os.environ.get(PROFILE_VARIABLE, "").strip() or default
    if name not in PHANTOM_SETTINGS:
        raise ConfigError(f"unknown profile {name!r} (from ${PROFILE_VARIABLE} or the default); "
                          f"choose one of {', '.join(PHANTOM_SETTINGS)}")
    return name


def repo_root(start: Path | None = None) -> Path:
    """The repository root: the nearest folder at or above ``start`` holding ``pyproject.toml``.

    Parameters
    ----------
    start : Path, optional
        Where to begin the search (default: the current directory). When no
        ``pyproject.toml`` is found above it, the folder above this package is
        tried; failing that, ``start`` itself is returned.

    Returns
    -------
    Path
        An absolute path.
    """
    start = Path(start if start is not None else Path.cwd()).resolve()
    package_parent = Path(__file__).resolve().parent.parent
    for candidate in (start, package_parent):
        for folder in (candidate, *candidate.parents):
            if (folder / "pyproject.toml").is_file():
                return folder
    return start


def default_data_dir(profile: str) -> Path:
    """Data folder of a profile, relative to the repository root.

    ``data/phantom`` for ``cpu`` and ``paper`` (the folder ``make demo`` uses),
    ``data/phantom_smoke`` for the small ``smoke`` phantom.
    """
    return Path("data/phantom_smoke") if profile == "smoke" else Path("data/phantom")


def default_run_dir(profile: str) -> Path:
    """Run directory shared by the notebook series, relative to the repository root."""
    return Path("runs") / "notebooks" / profile


@dataclass(frozen=True)
class NotebookPaths:
    """Absolute folders a notebook works in.

    Attributes
    ----------
    root : Path
        The repository root.
    data_dir, run_dir : Path
        The data set and the run directory shared by the series.
    output_dir : Path
        ``run_dir / <notebook stem>``: metrics.json and figures of this notebook.
    model_dir : Path
        ``run_dir / model``: the trained model shared by the series.
    """

    root: Path
    data_dir: Path
    run_dir: Path
    output_dir: Path
    model_dir: Path

    def show(self, path: Path) -> str:
        """``path`` for printing: relative to the run or data directory or the repository, never absolute."""
        return display_path(path, self)


def notebook_paths(
    stem: str, profile: str, data_dir: str | Path | None = None, run_dir: str | Path | None = None,
    root: Path | None = None,
) -> NotebookPaths:
    """Resolve a notebook's folders and create its output folder.

    Parameters
    ----------
    stem : str
        Notebook name without suffix, e.g. ``01_data_exploration``.
    profile : str
    data_dir, run_dir : str or Path, optional
        Absolute, or relative to the repository root (not to the current
        directory, which differs between Jupyter, papermill and nbval); ``None``
        selects :func:`default_data_dir` / :func:`default_run_dir`.
    root : Path, optional
        Repository root (default: :func:`repo_root`).
    """
    if profile not in PHANTOM_SETTINGS:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PHANTOM_SETTINGS)}")
    root = Path(root) if root is not None else repo_root()
    data = Path(data_dir) if data_dir not in (None, "") else default_data_dir(profile)
    run = Path(run_dir) if run_dir not in (None, "") else default_run_dir(profile)
    data = data if data.is_absolute() else root / data
    run = run if run.is_absolute() else root / run
    output = run / stem
    output.mkdir(parents=True, exist_ok=True)
    return NotebookPaths(root, data, run, output, run / MODEL_FOLDER)


def display_path(path: Path, paths: NotebookPaths | None = None) -> str:
    """A short, machine-independent name for ``path``.

    ``RUN_DIR/...`` or ``DATA_DIR/...`` inside those folders, else relative to the
    repository root, else just the file name: notebooks print these so that
    their committed outputs hold no absolute paths.
    """
    path = Path(path)
    anchors: list[tuple[str, Path]] = []
    if paths is not None:
        anchors = [("RUN_DIR", paths.run_dir), ("DATA_DIR", paths.data_dir)]
    for label, anchor in anchors:
        try:
            relative = path.resolve().relative_to(anchor.resolve())
        except ValueError:
            continue
        return label if str(relative) == "." else f"{label}/{relative.as_posix()}"
    try:
        return path.resolve().relative_to(repo_root()).as_posix()
    except ValueError:
        return path.name


def is_phantom(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a phantom written by ``chh phantom`` (its ``dataset.yaml`` says so)."""
    descriptor = Path(data_dir) / "dataset.yaml"
    if not descriptor.is_file():
        return False
    generator = load_yaml(descriptor).get("generator") or {}
    return isinstance(generator, dict) and generator.get("name") == "chh phantom"


def ensure_phantom(data_dir: Path, profile: str, seed: int = 0) -> Path:
    """Write the profile's phantom into ``data_dir`` unless a data set is already there.

    Parameters
    ----------
    data_dir : Path
        Target folder. A folder holding a ``dataset.yaml`` (any phantom, labelme
        or CSV data) or an ISBI 2015 ``RawImage`` folder is left untouched.
    profile : str
        ``smoke`` writes 24 images of 640 x 800; ``cpu`` and ``paper`` the default
        400 images of 640 x 800 (see :data:`PHANTOM_SETTINGS`).
    seed : int
        Seed of the phantom generator (0: the phantom the shipped model was trained on).

    Returns
    -------
    Path
        ``data_dir``.

    Raises
    ------
    DataFormatError
        When ``data_dir`` holds other files and no data set.
    """
    data_dir = Path(data_dir)
    if (data_dir / "dataset.yaml").is_file() or (data_dir / "RawImage").is_dir():
        return data_dir
    from chh_lib.data.phantom_dataset import write_phantom_dataset

    settings = PHANTOM_SETTINGS.get(profile)
    if settings is None:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PHANTOM_SETTINGS)}")
    write_phantom_dataset(data_dir, settings["num_images"], seed, settings["image_size"])
    return data_dir


@dataclass
class TrainingOutcome:
    """What :func:`train_or_reuse` did.

    Attributes
    ----------
    run_dir : Path
    action : str
        ``trained``, ``resumed``, ``reused`` or ``pretrained``.
    seconds : float
        Wall-clock seconds spent in this call.
    """

    run_dir: Path
    action: str
    seconds: float


def _checkpoint_progress(run_dir: Path) -> tuple[int, int, int] | None:
    """(epochs finished, epochs configured, optimiser steps taken) of a run, or None without a checkpoint."""
    from chh_lib.config import load_config
    from chh_lib.engine import LAST_CHECKPOINT, load_checkpoint

    checkpoint = Path(run_dir) / LAST_CHECKPOINT
    if not checkpoint.is_file():
        return None
    payload = load_checkpoint(checkpoint)
    configured = load_config(Path(run_dir) / "config.yaml").train.epochs if (Path(run_dir) / "config.yaml").is_file() \
        else int(payload["epoch"])
    steps = sum(int(row.get("steps", 0)) for row in payload.get("history", []))
    return int(payload["epoch"]), int(configured), steps


def train_or_reuse(
    run_dir: Path, data_dir: Path, profile: str, device: str = "auto", seed: int = 0,
    retrain: bool = False, progress: bool = False, loss: str = "one_hot_nll", epochs: int | None = None,
    held_out_split: str | None = None, max_steps: int | None = None,
    on_epoch_end: Callable[[dict[str, float], int], None] | None = None, sigma_px: float | None = None,
) -> TrainingOutcome:
    """Train the profile's model into ``run_dir``, or reuse (or finish) the one already there.

    Parameters
    ----------
    run_dir : Path
        A chh run directory (``RUN_DIR/model`` in the notebooks).
    data_dir : Path
    profile : str
        ``smoke``, ``cpu`` or ``paper`` (see :func:`chh_lib.config.profile_config`).
    device : str
        ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda`` or ``mps``.
    seed : int
        Training seed (``config.train.seed``).
    retrain : bool
        Train anew even when a checkpoint exists (its checkpoint, configuration and
        training log are replaced).
    progress : bool
        Show tqdm progress bars.
    loss : str
        ``one_hot_nll`` (the paper's) or ``gaussian_mse`` (see :func:`chh_lib.engine.train`).
    epochs : int, optional
        Train this many epochs instead of the profile's (a new run only).
    held_out_split : str, optional
        A split (e.g. ``calibration``) whose loss is recorded after every epoch as ``held_out_loss``.
    max_steps : int, optional
        Stop after this many optimiser steps in all (``chh train --max-steps``): a bounded run,
        e.g. of the ``paper`` profile on a CPU. A run that has taken them counts as finished and is
        reused; one resumed with a larger budget (or None: the whole schedule) goes on.
    on_epoch_end : callable, optional
        ``on_epoch_end(stats, num_epochs)`` after each epoch (e.g. :func:`chh_lib.engine.print_epoch`).
    sigma_px : float, optional
        Width of the Gaussian targets in pixels (``gaussian_mse`` only; None:
        :data:`chh_lib.heatmaps.DEFAULT_SIGMA_PX`). A resumed run must use the width it began with.
    """
    from chh_lib.data.dataset import LandmarkDataset
    from chh_lib.data.formats import log_data_handling, read_landmark_data
    from chh_lib.devices import choose_device
    from chh_lib.engine import LAST_CHECKPOINT, make_training_dataset, train
    from chh_lib.evaluation import default_cache_dir

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    start = time.perf_counter()
    state = _checkpoint_progress(run_dir)
    if state is not None and retrain:
        (run_dir / LAST_CHECKPOINT).unlink()
        state = None
    if state is not None and (state[0] >= state[1] or (max_steps is not None and state[2] >= max_steps)):
        return TrainingOutcome(run_dir, "reused", time.perf_counter() - start)
    resume = state is not None
    if resume:
        from chh_lib.config import load_config

        config = load_config(run_dir / "config.yaml")
    else:
        config = profile_config(profile)
        config.train.seed = int(seed)
        if epochs is not None:
            config.train.epochs = int(epochs)
    config.train.max_steps = None if max_steps is None else int(max_steps)
    data = read_landmark_data(data_dir, protocol=config.data.protocol)
    log_data_handling(data)
    cache_dir = default_cache_dir(data_dir, run_dir)
    dataset = make_training_dataset(config, data.split("train"), cache_dir)
    held_out = None if held_out_split is None else LandmarkDataset(data.split(held_out_split),
                                                                   config.data.image_size, cache_dir)
    widths = {} if sigma_px is None else {"sigma_px": float(sigma_px)}
    train(config, dataset, run_dir, data_dir, choose_device(device), resume=resume, progress=progress, loss=loss,
          held_out=held_out, on_epoch_end=on_epoch_end, data_handling=data.handling(), **widths)
    return TrainingOutcome(run_dir, "resumed" if resume else "trained", time.perf_counter() - start)


def ensure_trained_run(
    run_dir: Path, data_dir: Path, profile: str, device: str = "auto", seed: int = 0, progress: bool = False
) -> Path:
    """A run directory holding a trained model, made as cheaply as the profile allows.

    Parameters
    ----------
    run_dir : Path
        Reused as it is when ``run_dir/checkpoints/last.pt`` exists.
    data_dir : Path
    profile : str
        ``smoke``: train the smoke profile (seconds). ``cpu``: write the shipped
        pretrained phantom model when ``data_dir`` is a phantom, else train the
        cpu profile. ``paper``: train the paper profile.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    seed : int
        Training seed.
    progress : bool
        Show tqdm progress bars while training.

    Returns
    -------
    Path
        ``run_dir``.
    """
    from chh_lib.engine import LAST_CHECKPOINT

    run_dir = Path(run_dir)
    if (run_dir / LAST_CHECKPOINT).is_file():
        return run_dir
    if profile == "cpu" and is_phantom(data_dir):
        from chh_lib.pretrained import write_pretrained_run

        write_pretrained_run(run_dir, data_dir)
        return run_dir
    train_or_reuse(run_dir, data_dir, profile, device, seed, progress=progress)
    return run_dir


def ensure_calibrated(run_dir: Path, data_dir: Path | None = None, device: str = "auto") -> np.ndarray:
    """Per-landmark temperatures of ``run_dir``, fitting them on its calibration split when missing.

    Returns
    -------
    ndarray, shape (K,)
        The temperatures stored with the run's checkpoint.
    """
    from chh_lib.devices import choose_device
    from chh_lib.engine import LAST_CHECKPOINT, load_checkpoint
    from chh_lib.evaluation import calibrate_run

    payload = load_checkpoint(Path(run_dir) / LAST_CHECKPOINT)
    if payload.get("temperatures") is not None:
        return np.asarray(payload["temperatures"], dtype=np.float64)
    return calibrate_run(run_dir, data_dir=data_dir, device=choose_device(device)).temperatures


def training_history(run_dir: Path) -> pd.DataFrame:
    """Per-epoch training log of a run: ``train_log.csv``, else the history stored in its checkpoint.

    Returns
    -------
    DataFrame
        Columns ``epoch``, ``loss`` (mean NLL in nats), ``lr``, ``images_per_s``,
        ``seconds`` (and ``held_out_loss``, ``steps`` when recorded); empty when the run records no history.
    """
    from chh_lib.engine import LAST_CHECKPOINT, load_checkpoint

    run_dir = Path(run_dir)
    log = run_dir / "train_log.csv"
    if log.is_file():
        return pd.read_csv(log)
    history = load_checkpoint(run_dir / LAST_CHECKPOINT).get("history", [])
    return pd.DataFrame(history, columns=["epoch", "loss", "lr", "images_per_s", "seconds"])


def save_figure(figure: Any, path: Path, dpi: int = 110, show: bool = True) -> None:
    """Save a matplotlib figure as PNG (atomically) and display it inline in a notebook.

    Returns nothing, so that a cell ending with this call shows only the figure.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
    path : Path
        Target ``.png`` file (its folder is created).
    dpi : int
        Resolution of both the file and the inline image (keep notebooks small).
    show : bool
        Display the PNG with IPython when running in a kernel.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    write_bytes_atomic(Path(path), buffer.getvalue())
    if show:
        from IPython.display import Image, display

        display(Image(data=buffer.getvalue(), format="png"))


def write_notebook_metrics(output_dir: Path, metrics: dict[str, Any]) -> Path:
    """Write a notebook's key numbers to ``output_dir/metrics.json`` atomically (NaN as null).

    Returns
    -------
    Path
        The file written.
    """
    path = Path(output_dir) / "metrics.json"
    write_json_atomic(metrics, path)
    return path


def read_notebook_metrics(output_dir: Path) -> dict[str, Any]:
    """The ``metrics.json`` a notebook wrote into ``output_dir`` (empty when absent)."""
    path = Path(output_dir) / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

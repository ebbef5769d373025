"""Execute the teaching notebooks (``notebooks/0*.ipynb``) in order with papermill.

Every notebook receives the same parameters (``profile``, ``run_dir``,
``data_dir``, ``seed``, ``device``), so the series shares one run directory: the
model notebook 02 trains in ``RUN_DIR/model`` is reused by the later ones.
Executed copies land in ``RUN_DIR/notebooks/`` with a ``summary.csv``. Extra
parameters (``parameters={"solutions": True}`` runs the exercises' hidden
solutions, see ``chh_lib.exercises``) go to every notebook as well.

:func:`publish_notebook` turns an executed copy into the committed form: the
injected parameters cell and papermill's machine-specific metadata are removed
and absolute paths in outputs are replaced.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from chh_lib.errors import ConfigError, NotebookError
from chh_lib.files import write_text_atomic
from chh_lib.workflow import default_data_dir, read_notebook_metrics, repo_root

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.csv"
NOTEBOOK_PATTERN = "0*.ipynb"
#: Keys of a notebook's metrics.json that are not numbers worth a summary column.
_SKIPPED_KEYS = {"profile", "device", "data_dir", "run_dir", "seed"}
#: Parameters that :func:`run_notebooks` always passes, from its own arguments.
_BASE_PARAMETERS = ("profile", "run_dir", "data_dir", "seed", "device")


def series_notebooks(notebooks_dir: Path | None = None, only: Sequence[str] | None = None) -> list[Path]:
    """The notebooks of the series in order, optionally only those whose name starts with one of ``only``.

    Parameters
    ----------
    notebooks_dir : Path, optional
        Default: ``notebooks/`` of the repository.
    only : sequence of str, optional
        Number prefixes such as ``["03", "04"]`` (``"3"`` is read as ``"03"``).

    Raises
    ------
    ConfigError
        When the folder holds no notebook, or a prefix in ``only`` matches none.
    """
    folder = Path(notebooks_dir) if notebooks_dir is not None else repo_root() / "notebooks"
    found = sorted(folder.glob(NOTEBOOK_PATTERN))
    if not found:
        raise ConfigError(f"{folder}: no notebooks matching {NOTEBOOK_PATTERN}")
    if not only:
        return found
    prefixes = [str(p).strip().zfill(2) for p in only if str(p).strip()]
    unknown = [p for p in prefixes if not any(nb.name.startswith(p) for nb in found)]
    if unknown:
        names = ", ".join(nb.stem for nb in found)
        raise ConfigError(f"no notebook numbered {', '.join(unknown)} in {folder} (have {names})")
    return [nb for nb in found if any(nb.name.startswith(p) for p in prefixes)]


def _key_numbers(metrics: dict[str, Any], limit: int = 8) -> str:
    """``key=value`` pairs of a metrics dict: top-level numbers first, then those of nested dicts."""
    scalars, nested = [], []
    for key, value in metrics.items():
        if key in _SKIPPED_KEYS:
            continue
        if isinstance(value, dict):
            nested.extend((f"{key}.{k}", v) for k, v in value.items())
        else:
            scalars.append((key, value))
    parts = []
    for name, item in scalars + nested:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        parts.append(f"{name}={item:.4g}" if isinstance(item, float) and math.isfinite(item) else f"{name}={item}")
    return "; ".join(parts[:limit])


def _failure_message(notebook: Path, error: Exception) -> str:
    cell = getattr(error, "cell_index", None)
    ename = getattr(error, "ename", type(error).__name__)
    evalue = str(getattr(error, "evalue", error)).strip().splitlines()
    first_line = ""
    source = getattr(error, "source", "") or ""
    for line in source.splitlines():
        if line.strip() and not line.startswith("#"):
            first_line = line.strip()
            break
    where = f"cell {cell}" if cell is not None else "start-up"
    exec_count = getattr(error, "exec_count", None)
    if exec_count is not None:
        where += f" (In [{exec_count}]: {first_line[:60]})"
    return f"notebook {notebook.name} failed in {where}: {ename}: {evalue[0] if evalue else ''}"


def run_notebooks(
    run_dir: Path,
    profile: str,
    only: Sequence[str] | None = None,
    notebooks_dir: Path | None = None,
    kernel: str = "python3",
    *,
    data_dir: Path | None = None,
    seed: int = 0,
    device: str = "auto",
    timeout_s: int | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Execute the notebook series with papermill and summarise it.

    Parameters
    ----------
    run_dir : Path
        Shared run directory; executed notebooks go to ``run_dir/notebooks/``
        with ``summary.csv`` (notebook, seconds, status, key numbers).
    profile : str
        ``smoke``, ``cpu`` or ``paper``, passed to every notebook.
    only : sequence of str, optional
        Number prefixes to run, e.g. ``["03", "04"]``; default all.
    notebooks_dir : Path, optional
        Default: the repository's ``notebooks/``; the kernel runs there.
    kernel : str
        Jupyter kernel name.
    data_dir : Path, optional
        Data set; default the profile's phantom (``data/phantom`` or
        ``data/phantom_smoke`` under the repository root).
    seed : int
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    timeout_s : int, optional
        Per-cell time limit (papermill's ``execution_timeout``); default none.
    parameters : mapping, optional
        Extra papermill parameters for every notebook, e.g. ``{"solutions": True}``
        to run the exercises' hidden solutions; they may not replace the ones
        above (``profile``, ``run_dir``, ``data_dir``, ``seed``, ``device``).

    Returns
    -------
    DataFrame
        One row per notebook run: ``notebook``, ``seconds``, ``status``, ``key_numbers``.

    Raises
    ------
    NotebookError
        When a notebook fails: naming it and the failing cell. The notebooks
        after it are not run; the summary up to it is written.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    if profile not in ("smoke", "cpu", "paper"):
        raise ConfigError(f"unknown profile {profile!r}; choose smoke, cpu or paper")
    extra = dict(parameters or {})
    clashing = sorted(set(extra) & set(_BASE_PARAMETERS))
    if clashing:
        raise ConfigError(f"parameters {clashing} have their own arguments in run_notebooks; pass them there")
    run_dir = Path(run_dir).resolve()
    notebooks = series_notebooks(notebooks_dir, only)
    root = repo_root()
    data = Path(data_dir) if data_dir is not None else default_data_dir(profile)
    data = (data if data.is_absolute() else root / data).resolve()
    out_dir = run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    injected = {"profile": profile, "run_dir": str(run_dir), "data_dir": str(data), "seed": int(seed),
                "device": device, **extra}
    rows: list[dict[str, Any]] = []
    for notebook in notebooks:
        start = time.perf_counter()
        output = out_dir / notebook.name
        failure: Exception | None = None
        try:
            papermill.execute_notebook(
                str(notebook), str(output), parameters=injected, kernel_name=kernel, progress_bar=False,
                log_output=False, cwd=str(notebook.parent), execution_timeout=timeout_s,
            )
        except PapermillExecutionError as error:
            failure = error
        except Exception as error:  # noqa: BLE001  (kernel died, timeout, no kernel: still name the notebook)
            failure = error
        seconds = time.perf_counter() - start
        logger.info("%s: %s in %.0f s", notebook.stem, "ok" if failure is None else "FAILED", seconds)
        metrics = read_notebook_metrics(run_dir / notebook.stem) if failure is None else {}
        rows.append({"notebook": notebook.stem, "seconds": round(seconds, 1),
                     "status": "ok" if failure is None else "failed", "key_numbers": _key_numbers(metrics)})
        _write_summary(rows, out_dir / SUMMARY_NAME)
        if failure is not None:
            raise NotebookError(_failure_message(notebook, failure) + f" (executed copy: {output})") from failure
    return pd.DataFrame(rows, columns=["notebook", "seconds", "status", "key_numbers"])


def _write_summary(rows: list[dict[str, Any]], path: Path) -> None:
    table = pd.DataFrame(rows, columns=["notebook", "seconds", "status", "key_numbers"])
    write_text_atomic(path, table.to_csv(index=False))


def format_summary(df: pd.DataFrame) -> str:
    """A plain-text table of :func:`run_notebooks`'s result, with the total time."""
    if df.empty:
        return "no notebooks were run"
    width = max(len("notebook"), *(len(str(n)) for n in df["notebook"]))
    lines = [f"{'notebook':<{width}}  {'seconds':>8}  {'status':<6}  key numbers"]
    for row in df.itertuples(index=False):
        lines.append(f"{row.notebook:<{width}}  {row.seconds:>8.1f}  {row.status:<6}  {row.key_numbers}")
    lines.append(f"{'total':<{width}}  {df['seconds'].sum():>8.1f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- committing executed copies

_ABSOLUTE = re.compile(r"(?<![\w.])/(?:home|tmp|work|root|Users|private|var/folders)/[^\s'\"<>]*")


def scrub_text(text: str, root: Path | None = None) -> str:
    """Replace absolute paths in ``text``: the repository root by ``.``, any other by its file name."""
    root_text = str((root or repo_root()).resolve())
    text = text.replace(root_text + "/", "").replace(root_text, ".")
    return _ABSOLUTE.sub(lambda match: Path(match.group(0)).name or "...", text)


def _scrub(value: Any, root: Path) -> Any:
    if isinstance(value, str):
        return scrub_text(value, root)
    if isinstance(value, list):
        return [_scrub(v, root) for v in value]
    if isinstance(value, dict):
        return {k: (v if k in ("image/png", "image/jpeg") else _scrub(v, root)) for k, v in value.items()}
    return value


#: MIME type of a displayed ipywidget (its saved view; the model state is in the notebook's metadata).
WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"
#: What a published copy shows as plain text in place of a widget's repr (``VBox(children=(...``).
WIDGET_PLACEHOLDER = "[interactive widget: run this notebook in Jupyter to use it]"


def _without_widget_repr(output: dict[str, Any]) -> dict[str, Any]:
    """``output`` with a widget's plain-text repr replaced by :data:`WIDGET_PLACEHOLDER`; others unchanged."""
    data = output.get("data")
    if not isinstance(data, dict) or WIDGET_VIEW_MIME not in data:
        return output
    return {**output, "data": {**data, "text/plain": WIDGET_PLACEHOLDER}}


def publish_notebook(executed: Path, target: Path, root: Path | None = None) -> Path:
    """Copy an executed notebook to ``target`` in its committed form.

    Removes papermill's injected parameters cell and its metadata (paths,
    timings), clears per-cell execution metadata, replaces absolute paths in
    the outputs (see :func:`scrub_text`) and the plain-text repr of every
    displayed widget (see :data:`WIDGET_PLACEHOLDER`; the widget view itself is
    kept). Outputs themselves are kept.
    """
    import nbformat

    root = (root or repo_root()).resolve()
    notebook = nbformat.read(str(executed), as_version=4)
    cells = []
    for cell in notebook.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            continue
        cell = copy.deepcopy(cell)
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [nbformat.from_dict(_without_widget_repr(_scrub(dict(o), root))) for o in cell.outputs]
        cells.append(cell)
    notebook.cells = cells
    notebook.metadata.pop("papermill", None)
    nbformat.validate(notebook)
    text = nbformat.writes(notebook) + "\n"
    write_text_atomic(Path(target), text)
    json.loads(text)
    return Path(target)

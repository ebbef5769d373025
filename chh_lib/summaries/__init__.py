"""The key numbers each teaching notebook writes to its ``metrics.json`` (one module per notebook).

A notebook ends with one line, out of the student's way::

    write_summary("04", globals())

which calls ``chh_lib.summaries.notebook_04.summary(namespace)`` to pick the
notebook's key numbers out of its variables, writes them atomically to
``paths.output_dir / "metrics.json"`` (NaN as null) and prints one line saying
where they went (``headline(summary)``). The test suite asserts on these files.
Each module defines:

``summary(namespace: Mapping[str, Any]) -> dict[str, Any]``
    the numbers, as plain JSON-ready Python values;
``headline(summary: dict[str, Any]) -> str``
    a short line naming the most important of them.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chh_lib.workflow import write_notebook_metrics

#: Notebook numbers that have a summary module.
NOTEBOOKS = ("01", "02", "03", "04", "05", "06")


def write_summary(notebook: str, namespace: Mapping[str, Any]) -> Path:
    """Write notebook ``notebook``'s key numbers, taken from its ``namespace``, to ``metrics.json``.

    Parameters
    ----------
    notebook : str
        Two digits, ``"01"`` to ``"06"``.
    namespace : mapping
        The notebook's variables (``globals()``); must hold ``paths`` (a
        :class:`chh_lib.workflow.NotebookPaths`).

    Returns
    -------
    Path
        The file written.
    """
    if notebook not in NOTEBOOKS:
        raise ValueError(f"no summary for notebook {notebook!r}; known: {', '.join(NOTEBOOKS)}")
    module = importlib.import_module(f"chh_lib.summaries.notebook_{notebook}")
    summary = module.summary(namespace)
    paths = namespace["paths"]
    written = write_notebook_metrics(paths.output_dir, summary)
    print(f"wrote {paths.show(written)}: {module.headline(summary)}")
    return written

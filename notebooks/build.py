"""Build the teaching notebooks from their percent-format sources in ``notebooks/src/``.

Usage (from the repository root)::

    .venv/bin/python notebooks/build.py                 # every src/0*.py -> 0*.ipynb, no outputs
    .venv/bin/python notebooks/build.py 01 02           # only these numbers
    .venv/bin/python notebooks/build.py --publish --profile cpu --run-dir /tmp/nb_cpu
        # build, execute with papermill into RUN_DIR, and copy the executed
        # notebooks (outputs kept, absolute paths removed) back into notebooks/
    .venv/bin/python notebooks/build.py 03 --keep-outputs
        # rebuild from the source but keep the committed outputs of every code
        # cell whose source did not change (edited cells lose theirs until the
        # next --publish), so that an edit can be committed between publications

Source format (as jupytext's "percent" format)::

    # %% [markdown]
    # # Title
    # Text, LaTeX $p_k(i)$ ...

    # %% tags=["parameters"]
    profile = notebook_profile()

    # %%
    # NBVAL_CHECK_OUTPUT
    print("deterministic output that nbval compares")

Text before the first ``# %%`` marker (a module docstring) is ignored. A code
cell's tags come from ``tags=[...]`` on its marker; a code cell whose first line
is ``# NBVAL_CHECK_OUTPUT`` is compared by ``pytest --nbval-lax``.

Exercises (see ``chh_lib.exercises``) are three code cells, each after a
markdown cell: one tagged ``exercise`` (the student's placeholder), one tagged
``solution`` whose body is ``if solutions:`` and the indented solution, and a
check cell. A cell tagged ``solution`` is built with its source collapsed
(``metadata["jupyter"] = {"source_hidden": True}``)::

    # %% tags=["exercise"]
    answer_04_1 = ...  # your code here

    # %% tags=["solution"]
    if solutions:
        answer_04_1 = 42
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import nbformat

NOTEBOOKS_DIR = Path(__file__).resolve().parent
SOURCE_DIR = NOTEBOOKS_DIR / "src"
_MARKER = re.compile(r"^# %%(?P<rest>.*)$")
_TAGS = re.compile(r"tags\s*=\s*(\[[^\]]*\])")
#: Tag of an exercise's solution cell; such a cell is built with its source hidden.
SOLUTION_TAG = "solution"


def parse_percent(text: str) -> list[nbformat.NotebookNode]:
    """Cells of a percent-format source."""
    cells: list[nbformat.NotebookNode] = []
    kind: str | None = None
    tags: list[str] = []
    lines: list[str] = []

    def flush() -> None:
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(_uncomment(line) for line in body.splitlines())
            cell = nbformat.v4.new_markdown_cell(body)
        else:
            cell = nbformat.v4.new_code_cell(body)
        if tags:
            cell.metadata["tags"] = list(tags)
        if SOLUTION_TAG in tags:
            cell.metadata["jupyter"] = {"source_hidden": True}
        cells.append(cell)

    for line in text.splitlines():
        match = _MARKER.match(line)
        if match:
            flush()
            rest = match.group("rest").strip()
            kind = "markdown" if rest.startswith("[markdown]") else "code"
            tag_match = _TAGS.search(rest)
            tags = list(ast.literal_eval(tag_match.group(1))) if tag_match else []
            lines = []
        elif kind is not None:
            lines.append(line)
    flush()
    return cells


def _uncomment(line: str) -> str:
    if line.startswith("# "):
        return line[2:]
    if line.strip() == "#":
        return ""
    return line


def build_notebook(source: Path) -> nbformat.NotebookNode:
    """A notebook (kernel python3, no outputs) from one source file; checks one ``parameters`` cell."""
    cells = parse_percent(source.read_text(encoding="utf-8"))
    parameter_cells = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    if len(parameter_cells) != 1:
        raise SystemExit(f"{source}: expected exactly one cell tagged 'parameters', found {len(parameter_cells)}")
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    for index, cell in enumerate(notebook.cells):
        cell["id"] = f"{source.stem[:2]}-{index:03d}"
    nbformat.validate(notebook)
    return notebook


def carry_outputs(built: nbformat.NotebookNode, committed: nbformat.NotebookNode) -> int:
    """Copy into ``built`` the outputs of ``committed``'s code cells whose source is unchanged.

    Cells are matched by source text, in order (the first unused committed cell with
    the same source). Returns the number of code cells of ``built`` left without outputs.
    """
    unused: dict[str, list[nbformat.NotebookNode]] = {}
    for cell in committed.cells:
        if cell.cell_type == "code":
            unused.setdefault(cell.source, []).append(cell)
    missing = 0
    for cell in built.cells:
        if cell.cell_type != "code":
            continue
        matches = unused.get(cell.source)
        if matches:
            old = matches.pop(0)
            cell.outputs = old.get("outputs", [])
            cell.execution_count = old.get("execution_count")
            if "papermill" in old.metadata:
                cell.metadata["papermill"] = old.metadata["papermill"]
        else:
            missing += 1
    return missing


def sources(selected: list[str] | None = None) -> list[Path]:
    """Source files ``src/0*.py``, optionally only those whose name starts with one of ``selected``."""
    found = sorted(SOURCE_DIR.glob("0*.py"))
    if selected:
        prefixes = [s.zfill(2) for s in selected]
        found = [s for s in found if any(s.name.startswith(p) for p in prefixes)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("numbers", nargs="*", help="notebook numbers to build (default: all)")
    parser.add_argument("--publish", action="store_true",
                        help="execute the built notebooks and copy the executed versions back into notebooks/")
    parser.add_argument("--keep-outputs", action="store_true",
                        help="keep the committed outputs of unchanged code cells (see carry_outputs)")
    parser.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "paper"))
    parser.add_argument("--run-dir", type=Path, help="run directory for --publish (required with it)")
    parser.add_argument("--data", type=Path, help="data directory for --publish (default: the profile's phantom)")
    args = parser.parse_args(argv)
    built = []
    for source in sources(args.numbers):
        target = NOTEBOOKS_DIR / f"{source.stem}.ipynb"
        notebook = build_notebook(source)
        note = ""
        if args.keep_outputs and target.is_file():
            committed = nbformat.read(str(target), as_version=4)
            notebook.metadata = committed.metadata | {"kernelspec": notebook.metadata["kernelspec"]}
            note = f" ({carry_outputs(notebook, committed)} code cells without outputs until the next --publish)"
        nbformat.write(notebook, str(target))
        built.append(target)
        print(f"built {target.relative_to(NOTEBOOKS_DIR.parent)}{note}")
    if not built:
        print("no sources matched", file=sys.stderr)
        return 1
    if args.publish:
        if args.run_dir is None:
            parser.error("--publish needs --run-dir")
        from chh_lib.notebooks import format_summary, publish_notebook, run_notebooks

        summary = run_notebooks(args.run_dir, args.profile, only=[p.name[:2] for p in built],
                                notebooks_dir=NOTEBOOKS_DIR, data_dir=args.data)
        print(format_summary(summary))
        for target in built:
            publish_notebook(args.run_dir / "notebooks" / target.name, target)
            print(f"published {target.relative_to(NOTEBOOKS_DIR.parent)} ({target.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The committed form of an executed notebook: widget reprs give way to a placeholder, nothing else changes."""
from __future__ import annotations

import nbformat

from chh_lib.notebooks import WIDGET_PLACEHOLDER, WIDGET_VIEW_MIME, publish_notebook


def _executed(tmp_path, outputs):
    cell = nbformat.v4.new_code_cell("display(box)", outputs=outputs, execution_count=1)
    notebook = nbformat.v4.new_notebook(cells=[cell])
    path = tmp_path / "executed.ipynb"
    nbformat.write(notebook, str(path))
    return path


def test_widget_repr_is_replaced_and_its_view_kept(tmp_path):
    view = {"model_id": "abc123", "version_major": 2, "version_minor": 0}
    widget = nbformat.v4.new_output("display_data", data={
        "text/plain": "VBox(children=(FloatLogSlider(value=1.0, description='T'),))",
        WIDGET_VIEW_MIME: view,
    })
    printed = nbformat.v4.new_output("stream", name="stdout", text="T = 1.04\n")
    table = nbformat.v4.new_output("execute_result", data={"text/plain": "   a\n0  1"}, execution_count=1)
    target = publish_notebook(_executed(tmp_path, [widget, printed, table]), tmp_path / "out.ipynb", root=tmp_path)
    outputs = nbformat.read(str(target), as_version=4).cells[0].outputs
    assert outputs[0].data["text/plain"] == WIDGET_PLACEHOLDER
    assert outputs[0].data[WIDGET_VIEW_MIME] == view
    assert "VBox" not in target.read_text()
    assert outputs[1].text == "T = 1.04\n"
    assert outputs[2].data == {"text/plain": "   a\n0  1"}

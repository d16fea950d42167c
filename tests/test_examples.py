"""The examples in examples/ run as documented.

Every ``examples/*.py`` is found on disk and run as its own process; it must exit 0 and end
by printing ``OK: <the fact it demonstrates>`` (each script asserts its fact before printing
it). Every ``examples/*.ipynb`` is executed in a Jupyter kernel of this interpreter.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
FACTS = {
    "hooks.py": "OK: hooked gradient equals torch.autograd.grad",
    "weight_sharing.py": "OK: shared gradient equals the sum of the per-use gradients",
    "sequential_vs_subclass.py": "OK: identical outputs and training trajectory for 5 steps",
}
"""The last line each known script prints; a new script only has to end with ``OK: ...``."""


def quiet_environment(tmp_path: Path) -> dict[str, str]:
    """One thread; data dir and temporary folders (the notebook's runs) inside the test's folder."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DLZOO_DATA_DIR": str(tmp_path / "data"),
        "TMPDIR": str(tmp_path),
    }


def test_every_documented_example_exists() -> None:
    found = {path.name for path in SCRIPTS}
    assert set(FACTS) <= found, f"missing examples: {sorted(set(FACTS) - found)}"
    assert NOTEBOOKS, "examples/ should hold at least one notebook"
    readme = (EXAMPLES / "README.md").read_text()
    undocumented = [p.name for p in SCRIPTS + NOTEBOOKS if p.name not in readme]
    assert not undocumented, f"examples/README.md does not mention {undocumented}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_script_runs_and_prints_its_fact(script: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=quiet_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{script.name} failed:\n{done.stderr[-3000:]}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"{script.name} printed nothing"
    assert lines[-1].startswith("OK: "), f"{script.name} must end by printing 'OK: <its fact>'"
    assert lines[-1] == FACTS.get(script.name, lines[-1])


class RecordingClient(NotebookClient):
    """A notebook client that also keeps the type of every kernel message carrying a PNG image."""

    def __init__(self, notebook: nbformat.NotebookNode, **options: Any) -> None:
        super().__init__(notebook, **options)
        self.png_messages: list[str] = []

    def process_message(
        self, msg: dict[str, Any], cell: nbformat.NotebookNode, cell_index: int
    ) -> nbformat.NotebookNode | None:
        if "image/png" in (msg["content"].get("data") or {}):
            self.png_messages.append(msg["msg_type"])
        return super().process_message(msg, cell, cell_index)


def _outputs(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def _stdout(outputs: list[nbformat.NotebookNode]) -> str:
    return "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")


def test_live_plot_notebook_redraws_one_plot_per_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in quiet_environment(tmp_path).items():
        monkeypatch.setenv(name, value)  # the kernel process inherits this environment
    notebook = nbformat.read(EXAMPLES / "live_plot.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.prefix)"))
    client = RecordingClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = _outputs(notebook)
    assert not [o for o in outputs if o.output_type == "error"]
    kernel_prefix = "".join(o.text for o in notebook.cells[-1].outputs if o.output_type == "stream").strip()
    assert kernel_prefix == sys.prefix, f"the kernel ran {kernel_prefix}, not this venv ({sys.prefix})"

    plotted = re.search(r"(\d+) epochs plotted", _stdout(outputs))
    assert plotted, f"the notebook did not report its epochs:\n{_stdout(outputs)}"
    epochs = int(plotted.group(1))
    assert epochs >= 2
    assert _stdout(outputs).count("plot redrawn") == epochs
    assert client.png_messages == ["update_display_data"] * epochs  # redrawn in place, each epoch
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 1, "the plot should be one output updated in place, not one per epoch"

"""Example notebooks run top to bottom, headless, and say what they should."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).parent.parent / "examples"


def _run(name: str, tmp_path: Path):
    work = tmp_path / "nb"
    work.mkdir()
    shutil.copy(EXAMPLES / name, work / name)
    nb = nbformat.read(work / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    return nb




@pytest.mark.slow
def test_quickstart_runs_and_learns(tmp_path):
    nb = _run("01_quickstart.ipynb", tmp_path)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    text = {c.source.splitlines()[0]: "".join(o.get("data", {}).get("text/plain", "") for o in c.outputs) for c in nb.cells if c.cell_type == "code" and c.source}
    held = next(v for k, v in text.items() if "held_out" in k)
    accuracy = float(held.strip().splitlines()[-2].split("┆")[-1].strip(" │"))
    assert accuracy > 0.85  # the stated floor: efficientnet_lite0 features + logistic on held-out digits
    top3 = next(v for k, v in text.items() if "-o labels" in k)
    assert "Egyptian cat" in top3 and "espresso" in top3

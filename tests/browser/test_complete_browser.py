"""%%mlsql in a real JupyterLab (and Notebook 7): Tab shows a frame's column names, and the cell
is highlighted as SQL by the prebuilt extension. Screenshots go to test-output/."""

from __future__ import annotations

import time

import nbformat
import pytest
from test_labeler_browser import OUT, _page, _run_first_cell

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SETUP = (
    "%load_ext mlnb\n"
    "import polars as pl\n"
    "images = pl.DataFrame({'path': ['a.jpg'], 'label': ['cat'], 'width': [640], 'window_id': [7]})"
)
SQL = "%%mlsql\nSELECT path FROM images WHERE label = 'cat' AND width > 100"
PYTHON = "SELECT = 'not sql here'"
LINE = "n = 1\nr = %mlsql -o r SELECT path FROM images WHERE width > 100"


def _notebook(root, name: str) -> str:
    cells = [nbformat.v4.new_code_cell(src) for src in (SETUP, "", SQL, PYTHON, LINE)]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    (root / name).write_text(nbformat.writes(nb))
    return name


def _colour(page, cell: int, word: str) -> str | None:
    """The computed colour of the first element in code cell ``cell`` whose text is exactly ``word``."""
    return page.evaluate(
        """([cell, word]) => {
            const cells = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell');
            const lines = cells[cell].querySelectorAll('.cm-content .cm-line *');
            for (const el of lines) {
                if (el.childElementCount === 0 && el.textContent === word) return getComputedStyle(el).color;
            }
            return null;
        }""",
        [cell, word],
    )


def _plain_colour(page, cell: int) -> str:
    return page.evaluate(
        "(cell) => getComputedStyle(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')[cell]"
        ".querySelector('.cm-line')).color",
        cell,
    )


def _wait_idle(page, cell: int = 0) -> None:
    prompt = page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").nth(cell)
    deadline = time.time() + 120
    while time.time() < deadline:
        text = prompt.inner_text().strip()
        if text.startswith("[") and text[1:-2].isdigit():
            return
        time.sleep(0.3)
    raise AssertionError(f"cell {cell} did not finish: {prompt.inner_text()!r}")


def _check_highlighting(page, shot: str) -> None:
    # the SQL cell: keywords take the editor's keyword colour, strings the string colour, like Python's own
    for cell in (0, 2):
        page.wait_for_function(
            "(cell) => { const c = document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell')[cell];"
            " return c && c.querySelectorAll('.cm-line span').length > 3; }",
            arg=cell,
            timeout=60_000,
        )
    page.screenshot(path=str(OUT / shot))
    py_keyword = _colour(page, 0, "import")
    py_string = _colour(page, 0, "'a.jpg'")
    assert py_keyword and py_string
    assert _colour(page, 2, "SELECT") == py_keyword
    assert _colour(page, 2, "WHERE") == py_keyword
    assert _colour(page, 2, "'cat'") == py_string
    py_number = _colour(page, 0, "640")
    # a Python cell that merely contains the word SELECT is not highlighted as SQL
    assert _colour(page, 3, "SELECT") in (None, _plain_colour(page, 3))
    assert _colour(page, 3, "SELECT") != py_keyword
    # a %mlsql line in a Python cell: its SQL is highlighted, the Python around it stays Python
    assert _colour(page, 4, "SELECT") == _colour(page, 4, "FROM") == _colour(page, 4, "WHERE") == py_keyword
    assert _colour(page, 4, "100") == py_number
    assert _colour(page, 4, "path") != py_keyword


def test_tab_shows_a_column_and_the_cell_is_sql(lab_server):
    url, root = lab_server
    name = _notebook(root, "complete.ipynb")
    with _page(900) as page:
        try:
            _run_first_cell(page, url, name)
            _wait_idle(page, 0)
            _check_highlighting(page, "complete-highlighted.png")

            # type a new %%mlsql cell in the empty second cell, then Tab after a partial column name
            page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".cm-content").click()
            page.keyboard.type("%%mlsql")
            page.keyboard.press("Enter")
            page.keyboard.type("SELECT wi")
            page.keyboard.press("Tab")
            popup = page.wait_for_selector(".jp-Completer .jp-Completer-item", timeout=30_000)
            assert popup is not None
            items = page.locator(".jp-Completer .jp-Completer-item .jp-Completer-match").all_inner_texts()
            assert "width" in items and "window_id" in items
            assert "with" not in items  # no Python keywords in a %%mlsql cell
            page.screenshot(path=str(OUT / "complete-popup.png"))
            # pick "width" and see it in the cell
            page.locator(".jp-Completer .jp-Completer-item", has_text="width").first.click()
            page.wait_for_function(
                "() => document.querySelectorAll('.jp-Notebook .jp-Cell')[1].querySelector('.cm-content').textContent.includes('SELECT width')",
                timeout=10_000,
            )
            page.keyboard.type(" FROM images")
            # the typed cell turned into SQL as soon as it started with %%mlsql
            assert _colour(page, 1, "SELECT") == _colour(page, 0, "import")
            page.screenshot(path=str(OUT / "complete-picked.png"))
        finally:
            page.screenshot(path=str(OUT / "complete-final.png"))


def test_notebook7_highlights_mlsql_cells(lab_server):
    url, root = lab_server
    name = _notebook(root, "nb7.ipynb")
    with _page(900) as page:
        page.goto(f"{url}/notebooks/{name}", wait_until="domcontentloaded")
        page.wait_for_selector(".jp-Notebook .jp-CodeCell .cm-line", timeout=60_000)
        _check_highlighting(page, "complete-notebook7.png")

"""A real browser reviews suspected label errors (issue 17) as a person would.

300 scikit-learn digits with 15 labels flipped on purpose; ``mlnb.label_issues`` on the raw
pixels finds the suspects and ``mlnb.label(frame, review=issues)`` walks them most suspicious
first. In Chromium: the first tile says "review: current label X, suggested Y" for the rank-1
suspect; Enter writes Y for that item, the walk moves on; ``k`` on the next keeps its label.
The label store is read on disk and through ``SELECT ... FROM labels`` in a second cell.
Screenshots go to test-output/.
"""

from __future__ import annotations

import json
import time

import pytest
from test_labeler_browser import OUT, _page, _run_first_cell, _selected_tile_png, _write_notebook, lab_server  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SETUP = """\
import json, mlnb, numpy as np, polars as pl
d = mlnb.datasets.digits('digits').head(300)
flip = np.random.default_rng(0).choice(300, 15, replace=False)  # 5% of the labels wrong on purpose
given = d['label'].to_list()
for i in flip:
    given[i] = str((int(given[i]) + 3) % 10)
d = d.with_columns(pl.Series('label', given), pl.col('pixels').alias('f'))
issues = mlnb.label_issues(d, features='f', label='label').filter(pl.col('is_issue'))
first = issues.row(0, named=True)
open('issues.json', 'w').write(json.dumps(issues.select('path', 'given_label', 'suggested_label', 'rank').to_dicts()))
lab = mlnb.label(d, image='path', classes=[str(i) for i in range(10)], review=issues, page_size=24)
lab"""

CHECK = "print('STORE', mlnb.sql(\"SELECT item, label, kind FROM labels ORDER BY item\").to_pandas().to_json(orient='records'))"


def _events(log, start: int, n: int) -> list[dict]:
    deadline = time.time() + 30
    while time.time() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= start + n:
            return [json.loads(x) for x in lines[start:]]
        time.sleep(0.2)
    raise AssertionError(f"the label store has {len(lines) - start} new events, expected {n}")


def _selected(page) -> dict:
    """The tile shown selected: its review tag and its position."""
    cell = page.locator(".mlnb-labeler .cell.selected")
    assert cell.count() == 1, cell.count()
    return {"tag": cell.locator(".tag").inner_text(), "pos": int(cell.get_attribute("data-pos")), "title": cell.get_attribute("title")}


def _shown_item(page, root, paths: list[str]) -> str:
    """Which item the selected tile shows, judged from its own pixels: the nearest (8x8 gray) of the
    suspects' image files. The tile's ids and texts are not read."""
    import io

    import numpy as np
    from PIL import Image


    def small(img: Image.Image) -> np.ndarray:
        return np.asarray(img.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=float).reshape(-1)

    x = small(Image.open(io.BytesIO(_selected_tile_png(page))))
    return min(paths, key=lambda p: float(((small(Image.open(root / p)) - x) ** 2).sum()))


def test_reviewing_label_issues_in_the_browser(lab_server):  # noqa: F811 - the fixture imported above
    url, root = lab_server
    name = _write_notebook(root, "review.ipynb", SETUP)
    import nbformat

    nb = nbformat.read(root / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(CHECK))
    nbformat.write(nb, root / name)
    log = root / ".mlnb" / "labels" / "labels.jsonl"
    start = len(log.read_text().splitlines()) if log.exists() else 0
    with _page(900) as page:
        try:
            _run_first_cell(page, url, name)
            page.wait_for_selector(".mlnb-labeler .cell.selected .tag.review", timeout=180_000)
            page.wait_for_selector(".mlnb-labeler .cell img[src^='blob:']", timeout=30_000)
            issues = json.loads((root / "issues.json").read_text())
            assert len(issues) >= 5, issues  # cleanlab finds a good part of the 15 flipped labels
            first, second = issues[0], issues[1]
            assert first["rank"] == min(r["rank"] for r in issues)
            page.screenshot(path=str(OUT / "review-first.png"))
            shown = _selected(page)
            assert shown["pos"] == 0
            assert shown["tag"] == f"review: current label {first['given_label']}, suggested {first['suggested_label']}", shown
            paths = [r["path"] for r in issues]
            assert _shown_item(page, root, paths) == first["path"]  # the picture on screen is the rank-1 suspect
            assert page.locator(".mlnb-labeler .status").inner_text().startswith(f"reviewing {len(issues)} suspected label errors")

            page.locator(".mlnb-labeler .cell.selected").click()  # focus the widget on the tile shown
            page.keyboard.press("Enter")
            ev = _events(log, start, 1)
            assert [(e["item"], e["label"], e["kind"]) for e in ev] == [(first["path"], first["suggested_label"], "label")]
            # the walk moves to the next suspect; the answered tile shows its new label
            page.wait_for_function("() => document.querySelector('.mlnb-labeler .cell.selected')?.dataset.pos === '1'", timeout=30_000)
            done = page.locator(".mlnb-labeler .cell[data-pos='0']")
            assert done.locator(".tag.label").inner_text() == first["suggested_label"]
            shown = _selected(page)
            assert shown["tag"] == f"review: current label {second['given_label']}, suggested {second['suggested_label']}", shown
            assert _shown_item(page, root, paths) == second["path"]
            page.screenshot(path=str(OUT / "review-accepted.png"))

            page.keyboard.press("k")
            ev = _events(log, start, 2)
            assert [(e["item"], e["label"]) for e in ev] == [(first["path"], first["suggested_label"]), (second["path"], second["given_label"])]
            page.wait_for_function("() => document.querySelector('.mlnb-labeler .cell.selected')?.dataset.pos === '2'", timeout=30_000)
            assert page.locator(".mlnb-labeler .cell[data-pos='1'] .tag.label").inner_text() == second["given_label"]
            page.screenshot(path=str(OUT / "review-kept.png"))
            # the keys stayed in the widget: the notebook still has its two cells, nothing inserted or deleted
            assert page.locator(".jp-NotebookPanel:visible .jp-Cell").count() == 2
            assert page.locator(".mlnb-labeler .error").count() == 0

            # the labels table in SQL, from the same kernel
            page.locator(".jp-Cell .jp-InputArea-editor").nth(1).click()
            page.keyboard.press("Shift+Enter")
            out = page.wait_for_selector(".jp-Cell >> nth=1 >> .jp-OutputArea-output:has-text('STORE')", timeout=60_000)
            rows = json.loads(out.inner_text().split("STORE", 1)[1].strip())
            got = {r["item"]: (r["label"], r["kind"]) for r in rows}
            assert got == {first["path"]: (first["suggested_label"], "label"), second["path"]: (second["given_label"], "label")}, got
        finally:
            page.screenshot(path=str(OUT / "review-final.png"))

"""Result tables as a person sees them in JupyterLab: readable floats, summarised arrays and top-k
lists, bare file names as text, and ``%config MlsqlMagic.displaylimit`` for every result."""

from __future__ import annotations

import pytest
from test_labeler_browser import OUT, _page, _run_first_cell, _write_notebook

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CELL = """%load_ext mlnb
%config MlsqlMagic.displaylimit = 5
import numpy as np, polars as pl
from IPython.display import display
top = [{"label": "Egyptian cat", "probability": 0.3412}, {"label": "tabby", "probability": 0.2123},
       {"label": "tiger cat", "probability": 0.1}, {"label": "lynx", "probability": 0.05}]
t = pl.DataFrame({"file": ["a.jpg", "b.png"], "p": [0.00044450530549511313, 0.5],
                  "f": [np.linspace(0, 1, 1280, dtype=np.float32)] * 2, "top3": [top, top]},
                 schema_overrides={"f": pl.Array(pl.Float32, 1280)})
r = %mlsql SELECT * FROM t
display(r)
%mlsql SELECT range AS i FROM range(50)"""


def test_results_read_well(lab_server):
    url, root = lab_server
    name = _write_notebook(root, "output.ipynb", CELL)
    with _page(900) as page:
        try:
            _run_first_cell(page, url, name)
            page.wait_for_selector(".mlnb-result >> nth=1", timeout=120_000)
            first, second = page.locator(".mlnb-result").all_inner_texts()[:2]
            assert "0.0004445" in first and "0.00044450530549511313" not in first
            assert "FLOAT[1280] [0, 0.0007819, 0.001564, …]" in first
            assert "Egyptian cat 0.34, tabby 0.21, tiger cat 0.1, …" in first
            assert "a.jpg" in first and "⚠" not in first and "not found" not in first
            assert page.locator(".mlnb-result >> nth=1").locator("tbody tr").count() == 5 and "45 more rows" in second
        finally:
            page.screenshot(path=str(OUT / "output-tables.png"), full_page=True)
